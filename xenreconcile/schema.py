"""The config schema: every key of the daemon config, written once.

A key is a field of a frozen dataclass: `Config` for the top level, `Backoff`
and `GuestOverride` for the nested sections `backoff` and `guests.NAME`. The
field's default is the key's default; its metadata (a `Spec`, attached by the
helpers `path`, `duration`, `section`...) says what the loader checks and what
the sample config and the man page show. `config` reads YAML against these
fields and renders the sample and the key table by iterating them, so a new key
is one field here. `PlannerSettings`, the planner's part of the config, takes
its defaults from `Config` by name.

Pure: no I/O and no YAML, so the planner can import it.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any, TypeVar

from xenreconcile.watch import CHOICES as WATCH_CHOICES

_T = TypeVar("_T")
_SPEC = "xenreconcile.schema.Spec"
"""The metadata key under which a field carries its `Spec`."""


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
class Spec:
    """What the schema says about one key besides its name and default: its kind,
    a description (with `code` spans), and its limits. `not_below` names a key
    of the same section this one must not be smaller than; `section` is the
    dataclass of a nested section's keys (for SECTION and GUESTS)."""

    kind: Kind
    description: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    exclusive_minimum: bool = False
    not_below: str | None = None
    example: str | None = None
    section: type[Any] | None = None

    @property
    def type_name(self) -> str:
        """The type as shown in errors and the man page."""
        if self.kind is Kind.CHOICE:
            return " | ".join(self.choices)
        return str(self.kind)


@dataclass(frozen=True)
class Option:
    """One key of a schema section as the loader and the generators see it."""

    key: str
    default: Any
    spec: Spec

    @property
    def children(self) -> tuple[Option, ...]:
        """The keys of a nested section; () for a plain key."""
        return options(self.spec.section) if self.spec.section else ()


def options(section: type[Any]) -> tuple[Option, ...]:
    """Given a schema dataclass, its keys in the order they are written (fields
    without a `Spec`, such as `Config.source`, are not keys)."""
    return tuple(
        Option(f.name, _default_value(f), f.metadata[_SPEC])
        for f in dataclasses.fields(section)
        if _SPEC in f.metadata
    )


def _default_value(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


# --- the helpers that declare a key: each returns the field, typed as its value ----------


def _key(default: _T, spec: Spec) -> _T:
    return dataclasses.field(default=default, metadata={_SPEC: spec})


def path(default: str, description: str) -> str:
    """A key holding an absolute path."""
    return _key(default, Spec(Kind.PATH, description))


def log_path(default: str, description: str) -> str:
    """A key holding an absolute path, or `-` for stderr."""
    return _key(default, Spec(Kind.LOG_PATH, description))


def command(default: tuple[str, ...], description: str, *, example: str) -> tuple[str, ...]:
    """A key holding a program name or path, or a list of program and arguments."""
    return _key(default, Spec(Kind.COMMAND, description, example=example))


def argv(description: str, *, example: str) -> tuple[str, ...]:
    """A key holding a list of program and arguments; empty by default."""
    return _key((), Spec(Kind.ARGV, description, example=example))


def choice(default: str, choices: tuple[str, ...], description: str) -> str:
    """A key holding one of `choices`."""
    return _key(default, Spec(Kind.CHOICE, description, choices=choices))


def duration(
    default: float,
    description: str,
    *,
    minimum: float = 0,
    exclusive_minimum: bool = False,
    not_below: str | None = None,
) -> float:
    """A key holding seconds, written as a number or with units (30s, 5m, 1h)."""
    spec = Spec(
        Kind.DURATION,
        description,
        minimum=minimum,
        exclusive_minimum=exclusive_minimum,
        not_below=not_below,
    )
    return _key(default, spec)


def integer(default: int, description: str, *, minimum: int | None = None) -> int:
    """A key holding a decimal integer."""
    return _key(default, Spec(Kind.INT, description, minimum=minimum))


def number(default: float, description: str, *, minimum: float | None = None) -> float:
    """A key holding a decimal number."""
    return _key(default, Spec(Kind.NUMBER, description, minimum=minimum))


def boolean(default: bool, description: str) -> bool:
    """A key holding true or false."""
    return _key(default, Spec(Kind.BOOL, description))


def section(keys: type[_T], description: str) -> _T:
    """A nested mapping whose keys are the fields of the dataclass `keys`."""
    spec = Spec(Kind.SECTION, description, section=keys)
    return dataclasses.field(default_factory=keys, metadata={_SPEC: spec})


def named_sections(keys: type[_T], description: str, *, example: str) -> dict[str, _T]:
    """A mapping of guest names, each to a mapping of the fields of `keys`;
    `example` is the name the sample config shows."""
    spec = Spec(Kind.GUESTS, description, example=example, section=keys)
    return dataclasses.field(default_factory=dict, metadata={_SPEC: spec})


# --- the keys -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Backoff:
    """The `backoff` section: after n consecutive failed creates the next waits
    initial * multiplier**(n-1), capped at max, plus up to jitter; give_up_after
    failures make the guest failed (0 = never)."""

    initial: float = duration(
        10.0,
        "Delay before the first retry of a failed create. Also the shortest time "
        "between two tries of a failing guest, however often its file changes.",
    )
    multiplier: float = number(
        2.0, "Each further failure multiplies the delay by this factor.", minimum=1
    )
    max: float = duration(600.0, "Upper bound of the retry delay.", not_below="initial")
    jitter: float = duration(
        5.0,
        "Up to this much random delay is added to each retry, so that guests "
        "failing together do not retry together.",
    )
    give_up_after: int = integer(
        0,
        "After this many consecutive failures the guest is failed until "
        "`xenreconcile retry NAME` or a change of its file; 0 = never give up.",
        minimum=0,
    )


@dataclass(frozen=True, slots=True)
class GuestOverride:
    """The `guests.NAME` section: settings of one guest."""

    order: int = integer(
        50,
        "Start order: a guest waits until every guest of a lower order is running, held or failed.",
    )
    hold: bool = boolean(False, "Never create this guest (a running one is left alone).")


@dataclass(frozen=True)
class Config:
    """The daemon config: every key, with its default. `source` is the file it
    was read from (None: defaults only)."""

    guests_dir: str = path(
        "/usr/local/etc/xen/guests",
        "Directory of guest xl.cfg files: every `*.cfg` directly in it is a guest to keep running.",
    )
    xl: tuple[str, ...] = command(
        ("xl",),
        "The xl program: a path or a name looked up on PATH, or a list of the program "
        "and leading arguments (no shell).",
        example="[/usr/local/sbin/xl]",
    )
    state_dir: str = path(
        "/var/db/xenreconcile",
        "Directory of the daemon's memory (state.json, its last good copy state.json.prev), "
        "lock file and requests; it and every directory above it must be owned by root (or "
        "the daemon's user) and not writable by group or others (a root-owned sticky "
        "directory such as /tmp is fine above it); created 0700.",
    )
    log_file: str = log_path(
        "/var/log/xen/xenreconcile.log",
        "Log file; reopened by itself after rotation, and on SIGHUP; `-` logs to stderr.",
    )
    log_format: str = choice(
        "logfmt",
        ("logfmt", "json"),
        "One event per line as key=value pairs (logfmt) or JSON objects (json).",
    )
    log_level: str = choice(
        "info", ("debug", "info", "warning", "error"), "Least severe level written to the log."
    )
    interval: float = duration(
        30.0,
        "Time between two full passes (a change in guests_dir triggers one sooner).",
        exclusive_minimum=True,
    )
    watch: str = choice(
        "auto",
        WATCH_CHOICES,
        "How changes in guests_dir are noticed: inotify (Linux), kqueue (FreeBSD), "
        "poll, or auto (the best one available).",
    )
    concurrency: int = integer(4, "Most `xl create` commands in flight at once.", minimum=1)
    start_delay: float = duration(0.0, "Pause between two creates, against boot storms.")
    xl_timeout: float = duration(
        120.0,
        "An `xl create` still running after this long is killed (its process group) "
        "and counts as a failure. Time it only waits for xl's create lock (xl.conf's "
        "`lockfile`) while another process builds does not count.",
        exclusive_minimum=True,
    )
    list_timeout: float = duration(
        30.0,
        "An `xl list` still running after this long is killed; that pass takes no action.",
        exclusive_minimum=True,
    )
    missing_grace: float = duration(
        5.0,
        "A guest seen running earlier must stay missing this long before it is "
        "recreated, so that xl's own on_reboot=restart is never raced.",
    )
    stable_after: float = duration(
        60.0,
        "A created guest that vanishes within this time counts as a failed create; "
        "one that stays up this long has its failure count reset.",
    )
    stop_timeout: float = duration(
        15.0,
        "On SIGTERM, how long to wait for creates in flight before exiting "
        "(they are left to finish on their own, never killed).",
    )
    notify_command: tuple[str, ...] = argv(
        "Program and arguments (a list, no shell) run when a guest gives up, first "
        "fails after running, recovers, or a failed create leaves its domain behind "
        "paused, and at start while a damaged state file left guests uncertain; it "
        "gets XR_GUEST, XR_EVENT and XR_ERROR in its environment. "
        "Empty: no notifications.",
        example="[/usr/local/libexec/xr-notify, --mail, root]",
    )
    backoff: Backoff = section(
        Backoff,
        "Retry delays after a failed create: initial * multiplier ** (failures - 1), "
        "capped at max, plus up to jitter.",
    )
    strict_permissions: bool = boolean(
        True,
        "Refuse the guests directory and cfg files unless they, and every directory "
        "and symlink on the way to them, are owned by root (or the daemon's user) and "
        "not writable by group or others (a root-owned sticky directory such as /tmp "
        "may be on the way): a cfg names programs that Dom0 runs as root. The config "
        "file itself is always checked so, whatever this key says.",
    )
    precondition_timeout: float = duration(
        600.0,
        "A guest whose disk, `kernel`, `ramdisk` or vif `bridge` does not exist yet "
        "waits for it, with no create and no failure counted; after this long it is "
        "also reported as a problem and notified once. Not acted on yet: read and "
        "checked only.",
    )
    guests: dict[str, GuestOverride] = named_sections(
        GuestOverride,
        "Per-guest settings, keyed by the guest's name (the cfg's `name`, not the file name).",
        example="web",
    )
    source: str | None = None

    def planner_settings(self) -> PlannerSettings:
        """The part of this config the planner decides with."""
        names = (f.name for f in dataclasses.fields(PlannerSettings))
        return PlannerSettings(**{name: getattr(self, name) for name in names})


def _config_default(key: str) -> Any:
    """A field whose default is the default of the config key `key`."""
    f = Config.__dataclass_fields__[key]
    if f.default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=f.default_factory)
    return dataclasses.field(default=f.default)


@dataclass(frozen=True, slots=True)
class PlannerSettings:
    """The config keys that decide what a pass does (each field is the config key
    of the same name, with its default)."""

    concurrency: int = _config_default("concurrency")
    start_delay: float = _config_default("start_delay")
    missing_grace: float = _config_default("missing_grace")
    stable_after: float = _config_default("stable_after")
    backoff: Backoff = _config_default("backoff")
    guests: dict[str, GuestOverride] = _config_default("guests")

    def override(self, name: str) -> GuestOverride:
        """The per-guest settings of `name`, or the (shared, immutable) defaults."""
        return self.guests.get(name, _DEFAULT_OVERRIDE)


_DEFAULT_OVERRIDE = GuestOverride()
