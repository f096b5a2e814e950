"""The daemon config: one schema drives validation, defaults, the sample config and
the man page's key list.

The YAML text is composed into nodes (not constructed into Python values at once)
so that every check knows the key path, the line, and how the value was written:
an unquoted `no` given for a string key, or `010` given for a duration, is a YAML
1.1 trap that is reported instead of silently becoming `False` or `8`.

Run `python -m xenreconcile.config --sample` to print the sample config, or
`--table` for the key list (tab separated: key, type, default, description).
"""

from __future__ import annotations

import difflib
import enum
import math
import os
import re
import stat
import sys
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from xenreconcile import trust
from xenreconcile.errors import SetupError
from xenreconcile.models import Backoff, GuestOverride, PlannerSettings
from xenreconcile.watch import CHOICES as WATCH_CHOICES

DEFAULT_CONFIG_PATH = "/usr/local/etc/xenreconcile.yaml"
CONFIG_ENV = "XENRECONCILE_CONFIG"

_STR_TAG = "tag:yaml.org,2002:str"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_BOOL_TAG = "tag:yaml.org,2002:bool"
_NULL_TAG = "tag:yaml.org,2002:null"
_TAG_NAMES = {
    _STR_TAG: "string",
    _INT_TAG: "integer",
    _FLOAT_TAG: "number",
    _BOOL_TAG: "boolean",
    _NULL_TAG: "null (no value)",
    "tag:yaml.org,2002:timestamp": "date/time",
    "tag:yaml.org,2002:map": "mapping",
    "tag:yaml.org,2002:seq": "list",
}
_DECIMAL_INT = re.compile(r"[-+]?(0|[1-9][0-9]*)")
_DECIMAL_NUMBER = re.compile(r"[-+]?(0|[1-9][0-9]*)(\.[0-9]*)?")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(h|m|s)")
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}


class ConfigError(SetupError):
    """A config that cannot be used. The message names the file, the line when
    known, and the key path (e.g. `backoff.max`)."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        key: str | None = None,
        line: int | None = None,
    ) -> None:
        self.message = message
        self.source = source
        self.key = key
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.source is not None:
            where = self.source if self.line is None else f"{self.source}, line {self.line}"
            where += ": "
        what = f"{self.key}: " if self.key else ""
        return f"{where}{what}{self.message}"

    def located(self, source: str | None = None, line: int | None = None) -> ConfigError:
        """A copy of this error with `source` and `line` filled in where not yet known."""
        return ConfigError(
            self.message,
            source=self.source if self.source is not None else source,
            key=self.key,
            line=self.line if self.line is not None else line,
        )


class Kind(enum.StrEnum):
    """The value types of the schema, named as the man page and errors show them."""

    PATH = "absolute path"
    LOG_PATH = "absolute path or -"
    COMMAND = "program or list"
    ARGV = "list of strings"
    CHOICE = "choice"
    DURATION = "duration"
    INT = "integer"
    NUMBER = "number"
    BOOL = "boolean"
    SECTION = "mapping"
    GUESTS = "mapping of guest names"


@dataclass(frozen=True)
class Option:
    """One config key: its type, default (the parsed value), description, and
    limits. `children` are the keys of a nested section (`backoff`, `guests.NAME`)."""

    key: str
    kind: Kind
    default: Any
    description: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    exclusive_minimum: bool = False
    children: tuple[Option, ...] = ()
    example: str | None = None

    @property
    def type_name(self) -> str:
        """The type as shown in errors and the man page."""
        if self.kind is Kind.CHOICE:
            return " | ".join(self.choices)
        return str(self.kind)


BACKOFF_OPTIONS: tuple[Option, ...] = (
    Option(
        "initial",
        Kind.DURATION,
        10.0,
        "Delay before the first retry of a failed create. Also the shortest time "
        "between two tries of a failing guest, however often its file changes.",
        minimum=0,
    ),
    Option(
        "multiplier",
        Kind.NUMBER,
        2.0,
        "Each further failure multiplies the delay by this factor.",
        minimum=1,
    ),
    Option("max", Kind.DURATION, 600.0, "Upper bound of the retry delay.", minimum=0),
    Option(
        "jitter",
        Kind.DURATION,
        5.0,
        "Up to this much random delay is added to each retry, so that guests "
        "failing together do not retry together.",
        minimum=0,
    ),
    Option(
        "give_up_after",
        Kind.INT,
        0,
        "After this many consecutive failures the guest is failed until "
        "`xenreconcile retry NAME` or a change of its file; 0 = never give up.",
        minimum=0,
    ),
)

GUEST_OPTIONS: tuple[Option, ...] = (
    Option(
        "order",
        Kind.INT,
        50,
        "Start order: a guest waits until every guest of a lower order is running, held or failed.",
    ),
    Option(
        "hold",
        Kind.BOOL,
        False,
        "Never create this guest (a running one is left alone).",
    ),
)

OPTIONS: tuple[Option, ...] = (
    Option(
        "guests_dir",
        Kind.PATH,
        "/usr/local/etc/xen/guests",
        "Directory of guest xl.cfg files: every `*.cfg` directly in it is a guest to keep running.",
    ),
    Option(
        "xl",
        Kind.COMMAND,
        ("xl",),
        "The xl program: a path or a name looked up on PATH, or a list of the program "
        "and leading arguments (no shell).",
        example="[/usr/local/sbin/xl]",
    ),
    Option(
        "state_dir",
        Kind.PATH,
        "/var/db/xenreconcile",
        "Directory of the daemon's memory (state.json, its last good copy state.json.prev), "
        "lock file and requests; it and every directory above it must be owned by root (or "
        "the daemon's user) and not writable by group or others (a root-owned sticky "
        "directory such as /tmp is fine above it); created 0700.",
    ),
    Option(
        "log_file",
        Kind.LOG_PATH,
        "/var/log/xen/xenreconcile.log",
        "Log file; reopened by itself after rotation, and on SIGHUP; `-` logs to stderr.",
    ),
    Option(
        "log_format",
        Kind.CHOICE,
        "logfmt",
        "One event per line as key=value pairs (logfmt) or JSON objects (json).",
        choices=("logfmt", "json"),
    ),
    Option(
        "log_level",
        Kind.CHOICE,
        "info",
        "Least severe level written to the log.",
        choices=("debug", "info", "warning", "error"),
    ),
    Option(
        "interval",
        Kind.DURATION,
        30.0,
        "Time between two full passes (a change in guests_dir triggers one sooner).",
        minimum=0,
        exclusive_minimum=True,
    ),
    Option(
        "watch",
        Kind.CHOICE,
        "auto",
        "How changes in guests_dir are noticed: inotify (Linux), kqueue (FreeBSD), "
        "poll, or auto (the best one available).",
        choices=WATCH_CHOICES,
    ),
    Option(
        "concurrency",
        Kind.INT,
        4,
        "Most `xl create` commands in flight at once.",
        minimum=1,
    ),
    Option(
        "start_delay",
        Kind.DURATION,
        0.0,
        "Pause between two creates, against boot storms.",
        minimum=0,
    ),
    Option(
        "xl_timeout",
        Kind.DURATION,
        120.0,
        "An `xl create` still running after this long is killed (its process group) "
        "and counts as a failure.",
        minimum=0,
        exclusive_minimum=True,
    ),
    Option(
        "list_timeout",
        Kind.DURATION,
        30.0,
        "An `xl list` still running after this long is killed; that pass takes no action.",
        minimum=0,
        exclusive_minimum=True,
    ),
    Option(
        "missing_grace",
        Kind.DURATION,
        5.0,
        "A guest seen running earlier must stay missing this long before it is "
        "recreated, so that xl's own on_reboot=restart is never raced.",
        minimum=0,
    ),
    Option(
        "stable_after",
        Kind.DURATION,
        60.0,
        "A created guest that vanishes within this time counts as a failed create; "
        "one that stays up this long has its failure count reset.",
        minimum=0,
    ),
    Option(
        "stop_timeout",
        Kind.DURATION,
        15.0,
        "On SIGTERM, how long to wait for creates in flight before exiting "
        "(they are left to finish on their own, never killed).",
        minimum=0,
    ),
    Option(
        "notify_command",
        Kind.ARGV,
        (),
        "Program and arguments (a list, no shell) run when a guest gives up, first "
        "fails after running, recovers, or a failed create leaves its domain behind "
        "paused, and at start while a damaged state file left guests uncertain; it "
        "gets XR_GUEST, XR_EVENT and XR_ERROR in its environment. "
        "Empty: no notifications.",
        example="[/usr/local/libexec/xr-notify, --mail, root]",
    ),
    Option(
        "backoff",
        Kind.SECTION,
        Backoff(),
        "Retry delays after a failed create: initial * multiplier ** (failures - 1), "
        "capped at max, plus up to jitter.",
        children=BACKOFF_OPTIONS,
    ),
    Option(
        "strict_permissions",
        Kind.BOOL,
        True,
        "Refuse the guests directory and cfg files unless they, and every directory "
        "and symlink on the way to them, are owned by root (or the daemon's user) and "
        "not writable by group or others (a root-owned sticky directory such as /tmp "
        "may be on the way): a cfg names programs that Dom0 runs as root. The config "
        "file itself is always checked so, whatever this key says.",
    ),
    Option(
        "guests",
        Kind.GUESTS,
        {},
        "Per-guest settings, keyed by the guest's name (the cfg's `name`, not the file name).",
        children=GUEST_OPTIONS,
        example="web",
    ),
)

_OPTIONS_BY_KEY = {option.key: option for option in OPTIONS}


def _default(key: str) -> Any:
    return _OPTIONS_BY_KEY[key].default


@dataclass(frozen=True)
class Config:
    """The daemon config. Defaults come from the schema (`OPTIONS`); `source` is
    the file it was read from (None: defaults only)."""

    guests_dir: str = _default("guests_dir")
    xl: tuple[str, ...] = _default("xl")
    state_dir: str = _default("state_dir")
    log_file: str = _default("log_file")
    log_format: str = _default("log_format")
    log_level: str = _default("log_level")
    interval: float = _default("interval")
    watch: str = _default("watch")
    concurrency: int = _default("concurrency")
    start_delay: float = _default("start_delay")
    xl_timeout: float = _default("xl_timeout")
    list_timeout: float = _default("list_timeout")
    missing_grace: float = _default("missing_grace")
    stable_after: float = _default("stable_after")
    stop_timeout: float = _default("stop_timeout")
    notify_command: tuple[str, ...] = _default("notify_command")
    backoff: Backoff = field(default_factory=lambda: _default("backoff"))
    strict_permissions: bool = _default("strict_permissions")
    guests: dict[str, GuestOverride] = field(default_factory=dict)
    source: str | None = None

    def planner_settings(self) -> PlannerSettings:
        """The part of this config the planner decides with."""
        return PlannerSettings(
            concurrency=self.concurrency,
            start_delay=self.start_delay,
            missing_grace=self.missing_grace,
            stable_after=self.stable_after,
            backoff=self.backoff,
            guests=dict(self.guests),
        )


# --- loading ------------------------------------------------------------------------------


def load_config(path: str | None, *, env: Mapping[str, str] = os.environ) -> Config:
    """Read the config at `path`, else at $XENRECONCILE_CONFIG, else at the default
    path. A missing default file gives all defaults; a missing named file, or any
    invalid content, raises ConfigError."""
    named = path or env.get(CONFIG_ENV) or None
    source = named or DEFAULT_CONFIG_PATH
    try:
        data = _read_trusted(source)
    except FileNotFoundError:
        if named is None:
            return Config()
        raise ConfigError("config file not found", source=source) from None
    except OSError as e:
        raise ConfigError(f"cannot read config file: {e.strerror or e}", source=source) from e
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(f"not UTF-8 (byte offset {e.start})", source=source, line=line) from None
    return parse_config(text, source)


def _read_trusted(source: str) -> bytes:
    """The content of the config file `source`, which must be one only root (or
    the daemon's own user) controls, as must every component on the way to it
    (see `trust`): it names programs run as root (`xl`, `notify_command`). This
    holds whatever the file says about `strict_permissions`, since a file anyone
    may write could just say `false`. Raises ConfigError when it is unsafe and
    OSError when it cannot be read."""
    steps = trust.resolve(os.path.abspath(source))
    final = steps[-1]
    allowed = trust.allowed_uids()
    problem = trust.passage_problem(steps, allowed)
    if problem is not None:
        problem = f"on the way to it, {problem}"
    elif stat.S_ISREG(final.st.st_mode):
        problem = trust.owner_problem(final.st, allowed) or trust.mode_problem(final.st)
    if problem is not None:
        raise ConfigError(
            f"unsafe config file: {problem}. It names programs run as root (xl, "
            "notify_command): chown root and chmod go-w (strict_permissions does not "
            "apply to the config file)",
            source=source,
        )
    with open(final.path, "rb") as f:
        opened = os.fstat(f.fileno())
        if (opened.st_dev, opened.st_ino) != (final.st.st_dev, final.st.st_ino):
            raise ConfigError("config file replaced while being read; try again", source=source)
        return f.read()


def parse_config(text: str, source: str) -> Config:
    """Validate the YAML `text` read from `source` (a name used in errors) into a Config."""
    try:
        root = yaml.SafeLoader(text).get_single_node()
    except yaml.MarkedYAMLError as e:
        line = e.problem_mark.line + 1 if e.problem_mark else None
        raise ConfigError(f"not valid YAML: {e.problem or e}", source=source, line=line) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"not valid YAML: {e}", source=source) from None
    if root is None or _is_null(root):
        return Config(source=source)
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(
            f"the top level must be a mapping of keys, not a {_node_type(root)}",
            source=source,
            line=_line(root),
        )
    try:
        values = _read_section(root, OPTIONS, "")
        _check_relations(values)
    except ConfigError as e:
        raise e.located(source) from None
    return Config(**values, source=source)


def _check_relations(values: dict[str, Any]) -> None:
    backoff = values.get("backoff")
    if isinstance(backoff, Backoff) and backoff.max < backoff.initial:
        raise ConfigError(
            f"must not be smaller than backoff.initial ({backoff.initial:g}s)", key="backoff.max"
        )


def _read_section(node: yaml.MappingNode, options: Sequence[Option], prefix: str) -> dict[str, Any]:
    """The values of the keys in mapping `node` (only those present), checked
    against `options`; `prefix` is the key path of the mapping (`backoff.`)."""
    by_key = {option.key: option for option in options}
    values: dict[str, Any] = {}
    for key, key_node, value_node in _mapping_items(node, prefix):
        option = by_key.get(key)
        if option is None:
            raise ConfigError(
                _unknown_key_message(key, by_key), key=prefix + key, line=_line(key_node)
            )
        values[key] = _read_value(value_node, option, prefix + key)
    return values


def _mapping_items(node: yaml.MappingNode, prefix: str) -> list[tuple[str, yaml.Node, yaml.Node]]:
    """The (key, key node, value node) pairs of `node`; duplicate keys and keys
    that are not plain strings are errors."""
    seen: dict[str, int | None] = {}
    items: list[tuple[str, yaml.Node, yaml.Node]] = []
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR_TAG:
            shown = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            raise ConfigError(
                f"key {shown!r} is a YAML {_node_type(key_node)}, not a string; quote it",
                key=prefix.rstrip(".") or None,
                line=_line(key_node),
            )
        key = str(key_node.value)
        if key in seen:
            raise ConfigError(
                f"duplicate key (first given on line {seen[key]})",
                key=prefix + key,
                line=_line(key_node),
            )
        seen[key] = _line(key_node)
        items.append((key, key_node, value_node))
    return items


def _unknown_key_message(key: str, known: Mapping[str, Option]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"
    return f"unknown key{hint}"


def _read_value(node: yaml.Node, option: Option, key: str) -> Any:
    """The checked value of `option` at `node`, as the Config holds it."""
    try:
        return _VALUE_READERS[option.kind](node, option, key)
    except ConfigError as e:
        raise e.located(line=_line(node)) from None


def _read_path(node: yaml.Node, option: Option, key: str) -> str:
    value = _scalar_str(node, option, key)
    if option.kind is Kind.LOG_PATH and value == "-":
        return value
    if not os.path.isabs(value):
        raise ConfigError(f"must be an absolute path, got {value!r}", key=key)
    return os.path.normpath(value)


def _read_command(node: yaml.Node, option: Option, key: str) -> tuple[str, ...]:
    if isinstance(node, yaml.SequenceNode):
        argv = _read_argv(node, option, key)
        if not argv:
            raise ConfigError("must name a program, got an empty list", key=key)
        return argv
    value = _scalar_str(node, option, key)
    if not value:
        raise ConfigError("must name a program, got an empty string", key=key)
    return (value,)


def _read_argv(node: yaml.Node, option: Option, key: str) -> tuple[str, ...]:
    if _is_null(node):
        return ()
    if not isinstance(node, yaml.SequenceNode):
        raise ConfigError(
            f"expected {_a(option.type_name)} (program and arguments, no shell), "
            f"got a {_node_type(node)}",
            key=key,
        )
    argv = tuple(
        _scalar_str(item, option, f"{key}[{index}]") for index, item in enumerate(node.value)
    )
    if argv and not argv[0]:
        raise ConfigError("the program must not be an empty string", key=f"{key}[0]")
    return argv


def _read_choice(node: yaml.Node, option: Option, key: str) -> str:
    value = _scalar_str(node, option, key)
    if value not in option.choices:
        raise ConfigError(f"must be one of {', '.join(option.choices)}; got {value!r}", key=key)
    return value


def _read_duration(node: yaml.Node, option: Option, key: str) -> float:
    scalar = _scalar(node, option, key)
    if scalar.tag in (_INT_TAG, _FLOAT_TAG):
        _require_decimal(scalar, key)
        seconds = float(scalar.value)
    elif scalar.tag == _STR_TAG:
        seconds = parse_duration(scalar.value, key)
    else:
        raise _type_error(scalar, option, key)
    return _check_minimum(seconds, option, key)


def _read_int(node: yaml.Node, option: Option, key: str) -> int:
    scalar = _scalar(node, option, key)
    if scalar.tag != _INT_TAG:
        raise _type_error(scalar, option, key)
    _require_decimal(scalar, key)
    return int(_check_minimum(int(scalar.value), option, key))


def _read_number(node: yaml.Node, option: Option, key: str) -> float:
    scalar = _scalar(node, option, key)
    if scalar.tag not in (_INT_TAG, _FLOAT_TAG):
        raise _type_error(scalar, option, key)
    _require_decimal(scalar, key)
    return _check_minimum(float(scalar.value), option, key)


def _read_bool(node: yaml.Node, option: Option, key: str) -> bool:
    scalar = _scalar(node, option, key)
    if scalar.tag != _BOOL_TAG:
        raise _type_error(scalar, option, key)
    return scalar.value.lower() in ("true", "yes", "on")


def _read_backoff(node: yaml.Node, option: Option, key: str) -> Backoff:
    if _is_null(node):
        return Backoff()
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"expected a mapping, got a {_node_type(node)}", key=key)
    return Backoff(**_read_section(node, option.children, key + "."))


def _read_guests(node: yaml.Node, option: Option, key: str) -> dict[str, GuestOverride]:
    if _is_null(node):
        return {}
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(
            f"expected a mapping of guest names to settings, got a {_node_type(node)}", key=key
        )
    guests = {}
    for name, _name_node, settings in _mapping_items(node, key + "."):
        if not name:
            raise ConfigError("a guest name must not be empty", key=key, line=_line(_name_node))
        guest_key = f"{key}.{name}"
        if _is_null(settings):
            guests[name] = GuestOverride()
            continue
        if not isinstance(settings, yaml.MappingNode):
            raise ConfigError(
                f"expected a mapping with order and hold, got a {_node_type(settings)}",
                key=guest_key,
                line=_line(settings),
            )
        guests[name] = GuestOverride(**_read_section(settings, option.children, guest_key + "."))
    return guests


_VALUE_READERS = {
    Kind.PATH: _read_path,
    Kind.LOG_PATH: _read_path,
    Kind.COMMAND: _read_command,
    Kind.ARGV: _read_argv,
    Kind.CHOICE: _read_choice,
    Kind.DURATION: _read_duration,
    Kind.INT: _read_int,
    Kind.NUMBER: _read_number,
    Kind.BOOL: _read_bool,
    Kind.SECTION: _read_backoff,
    Kind.GUESTS: _read_guests,
}


def _scalar(node: yaml.Node, option: Option, key: str) -> yaml.ScalarNode:
    if _is_null(node):
        raise ConfigError(
            f"has no value; give {_a(option.type_name)} or remove the key for the default",
            key=key,
        )
    if not isinstance(node, yaml.ScalarNode):
        raise ConfigError(f"expected {_a(option.type_name)}, got a {_node_type(node)}", key=key)
    return node


def _scalar_str(node: yaml.Node, option: Option, key: str) -> str:
    """The string at `node`; an unquoted value YAML reads as another type
    (`no`, `on`, `0755`, `1:30`) is an error that says to quote it."""
    scalar = _scalar(node, option, key)
    if scalar.tag != _STR_TAG:
        raise ConfigError(
            f"expected a string, but the unquoted {scalar.value!r} is a YAML "
            f"{_node_type(scalar)}; quote it: {scalar.value!r}",
            key=key,
        )
    return str(scalar.value)


def _require_decimal(scalar: yaml.ScalarNode, key: str) -> None:
    """Refuse YAML 1.1 number spellings that do not mean what they look like:
    `010` (octal 8), `0x10`, `1:30` (sexagesimal 90), `1_000`, `.inf`."""
    pattern = _DECIMAL_INT if scalar.tag == _INT_TAG else _DECIMAL_NUMBER
    if not pattern.fullmatch(scalar.value):
        raise ConfigError(
            f"{scalar.value!r} is not a plain decimal number (YAML reads a leading 0 as "
            f"octal, and 1:30 as base 60); write it without them, or quote a duration "
            f"such as '90s'",
            key=key,
        )


def _check_minimum(value: float, option: Option, key: str) -> float:
    if option.minimum is None:
        return value
    if option.exclusive_minimum and value <= option.minimum:
        raise ConfigError(f"must be greater than {option.minimum:g}, got {value:g}", key=key)
    if value < option.minimum:
        raise ConfigError(f"must be at least {option.minimum:g}, got {value:g}", key=key)
    return value


def _type_error(scalar: yaml.ScalarNode, option: Option, key: str) -> ConfigError:
    return ConfigError(
        f"expected {_a(option.type_name)}, got the YAML {_node_type(scalar)} {scalar.value!r}",
        key=key,
    )


def _a(type_name: str) -> str:
    """`type_name` with its article: "an integer", "a duration", "one of: a | b"."""
    if " | " in type_name:
        return f"one of: {type_name}"
    return ("an " if type_name[0] in "aeiou" else "a ") + type_name


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG


def _node_type(node: yaml.Node) -> str:
    return _TAG_NAMES.get(node.tag, node.tag)


def _line(node: yaml.Node) -> int | None:
    mark = getattr(node, "start_mark", None)
    return None if mark is None else int(mark.line) + 1


def parse_duration(value: object, key: str) -> float:
    """Seconds given as a number (30, 30.5) or a string: "30", "30s", "5m", "1h",
    "1h30m". Raises ConfigError naming `key` for anything else or a negative value."""
    if isinstance(value, bool):
        raise ConfigError(f"expected a duration, got the boolean {value}", key=key)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_duration_text(value.strip(), key)
    else:
        raise ConfigError(f"expected a duration, got {type(value).__name__}", key=key)
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"must be a finite duration of 0 or more, got {value!r}", key=key)
    return seconds


def _parse_duration_text(text: str, key: str) -> float:
    if _DECIMAL_NUMBER.fullmatch(text) and not text.startswith(("+", "-")):
        return float(text)
    parts = _DURATION_PART.findall(text)
    rebuilt = "".join(number + unit for number, unit in parts)
    units = [unit for _number, unit in parts]
    in_order = units == sorted(set(units), key="hms".index)
    if not parts or rebuilt != text or not in_order:
        raise ConfigError(
            f"{text!r} is not a duration; use seconds (30) or units h, m, s (30s, 5m, 1h30m)",
            key=key,
        )
    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


def format_duration(seconds: float) -> str:
    """`seconds` as the sample config writes it: 30s, 600s, 2.5s, 1h."""
    if seconds > 0 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    return f"{seconds:g}s"


# --- sample config and key table ----------------------------------------------------------


def _format_default(option: Option) -> str:
    value = option.default
    if option.kind is Kind.DURATION:
        return format_duration(value)
    if option.kind is Kind.COMMAND:
        return value[0] if len(value) == 1 else "[" + ", ".join(value) + "]"
    if option.kind is Kind.ARGV:
        return "[" + ", ".join(value) + "]"
    if option.kind is Kind.BOOL:
        return "true" if value else "false"
    if option.kind is Kind.NUMBER:
        return f"{value:g}"
    if option.kind in (Kind.SECTION, Kind.GUESTS):
        return "{}" if option.kind is Kind.GUESTS else ""
    return str(value)


def _comment_lines(text: str, indent: str) -> list[str]:
    prefix = "#" + indent + "# " if indent else "# "
    width = 88 - len(prefix)
    return [prefix + line for line in textwrap.wrap(text, width)]


def _sample_option(option: Option, indent: str) -> list[str]:
    lines = _comment_lines(option.description, indent)
    if option.example and option.kind in (Kind.COMMAND, Kind.ARGV):
        lines += _comment_lines(f"Example: {option.key}: {option.example}", indent)
    if option.kind is Kind.SECTION:
        lines.append(f"#{indent}{option.key}:")
        for child in option.children:
            lines += _sample_option(child, indent + "  ")
        return lines
    if option.kind is Kind.GUESTS:
        lines.append(f"#{indent}{option.key}:")
        lines.append(f"#{indent}  {option.example}:")
        for child in option.children:
            lines += _sample_option(child, indent + "    ")
        return lines
    lines.append(f"#{indent}{option.key}: {_format_default(option)}")
    return lines


def render_sample() -> str:
    """The sample config: every key, commented out, with its description and default."""
    lines = [
        "# xenreconcile configuration (YAML).",
        "# Every key is optional; each is shown commented out with its default value.",
        "# Durations are seconds (30) or take units h, m, s (30s, 5m, 1h30m).",
        "# Quote strings that YAML could read as something else: 'no', 'on', '0755'.",
        "# Generated by `python -m xenreconcile.config --sample`; do not edit by hand.",
    ]
    for option in OPTIONS:
        lines.append("")
        lines += _sample_option(option, "")
    return "\n".join(lines) + "\n"


def option_table() -> list[tuple[str, str, str, str]]:
    """(key, type, default, description) of every key, nested ones as dotted paths
    (`backoff.max`, `guests.NAME.order`), for the man page."""
    rows = []
    for option in OPTIONS:
        rows.append((option.key, option.type_name, _format_default(option), option.description))
        prefix = option.key + (".NAME." if option.kind is Kind.GUESTS else ".")
        rows += [
            (prefix + child.key, child.type_name, _format_default(child), child.description)
            for child in option.children
        ]
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m xenreconcile.config --sample | --table`: print the sample config or key table."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--sample"]:
        sys.stdout.write(render_sample())
        return 0
    if args == ["--table"]:
        for row in option_table():
            sys.stdout.write("\t".join(row) + "\n")
        return 0
    sys.stderr.write("usage: python -m xenreconcile.config --sample | --table\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
