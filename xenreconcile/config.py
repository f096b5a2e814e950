"""The daemon config: read and check a YAML file against the schema (`schema`),
and render the schema as the sample config and the man page's key list.

The YAML text is composed into nodes (not constructed into Python values at once)
so that every check knows the key path, the line, and how the value was written:
an unquoted `no` given for a string key, or `010` given for a duration, is a YAML
1.1 trap that is reported instead of silently becoming `False` or `8`. Every
problem of a file is reported (`ConfigErrors`), not only the first.

Run `python -m xenreconcile.config --sample` to print the sample config, or
`--table` for the key list (tab separated: key, type, default, description).
"""

from __future__ import annotations

import math
import os
import re
import stat
import sys
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from xenreconcile import schema, trust
from xenreconcile.errors import SetupError
from xenreconcile.schema import Kind, Option, Spec, options

Config = schema.Config  # the loader's result, named here for its callers

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

    @property
    def errors(self) -> tuple[ConfigError, ...]:
        """Every problem this error stands for: itself alone (see `ConfigErrors`)."""
        return (self,)

    def located(self, source: str | None = None, line: int | None = None) -> ConfigError:
        """A copy of this error with `source` and `line` filled in where not yet known."""
        return ConfigError(
            self.message,
            source=self.source if self.source is not None else source,
            key=self.key,
            line=self.line if self.line is not None else line,
        )


class ConfigErrors(ConfigError):
    """Several problems of one config (in the order of the file). It reads as
    its first problem (`message`, `key`, `line`); its text lists them all, one a
    line, and `errors` holds each."""

    def __init__(self, errors: Sequence[ConfigError]) -> None:
        self._errors = tuple(problem for error in errors for problem in error.errors)
        first = self._errors[0]
        super().__init__(first.message, source=first.source, key=first.key, line=first.line)

    def __str__(self) -> str:
        return "\n".join(str(error) for error in self._errors)

    @property
    def errors(self) -> tuple[ConfigError, ...]:
        """Each problem, as a single ConfigError."""
        return self._errors

    def located(self, source: str | None = None, line: int | None = None) -> ConfigErrors:
        """A copy with `source` and `line` filled in, in each problem, where not yet known."""
        return ConfigErrors([error.located(source, line) for error in self._errors])


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
    """Validate the YAML `text` read from `source` (a name used in errors) into a
    Config. Raises ConfigError; problems in the keys are all reported at once
    (a ConfigErrors)."""
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
            f"the top level must be a mapping of keys, not {_a(_node_type(root))}",
            source=source,
            line=_line(root),
        )
    try:
        values = _read_section(root, Config, "")
    except ConfigError as e:
        raise ConfigErrors(sorted(e.located(source).errors, key=_line_order)) from None
    return Config(**values, source=source)


def _line_order(error: ConfigError) -> float:
    """Sort key: the error's line; one that spans several keys (no line) goes last."""
    return math.inf if error.line is None else error.line


def _read_section(node: yaml.MappingNode, section: type[Any], prefix: str) -> dict[str, Any]:
    """The values of the keys in mapping `node` (only those present), checked
    against the schema dataclass `section`; `prefix` is the key path of the
    mapping (`backoff.`). Raises ConfigErrors with every problem found."""
    known = {option.key: option for option in options(section)}
    values: dict[str, Any] = {}
    invalid: set[str] = set()
    errors: list[ConfigError] = []
    for key, key_node, value_node in _mapping_items(node, prefix, errors):
        option = known.get(key)
        if option is None:
            message = _unknown_key_message(key, known)
            errors.append(ConfigError(message, key=prefix + key, line=_line(key_node)))
            continue
        try:
            values[key] = _read_value(value_node, option.spec, prefix + key)
        except ConfigError as e:
            errors.append(e)
            invalid.add(key)
    errors += _relation_errors(values, known, invalid, prefix)
    errors += _required_errors(values, known, invalid, prefix)
    if errors:
        raise ConfigErrors(errors)
    return values


def _relation_errors(
    values: Mapping[str, Any], known: Mapping[str, Option], invalid: set[str], prefix: str
) -> list[ConfigError]:
    """The `not_below` rules of a section broken by its `values` (defaults for the
    keys not given); a rule that involves an `invalid` key is not checked."""
    errors = []
    for option in known.values():
        other = option.spec.not_below
        if other is None or {option.key, other} & invalid:
            continue
        value = values.get(option.key, option.default)
        bound = values.get(other, known[other].default)
        if value < bound:
            errors.append(
                ConfigError(
                    f"must not be smaller than {prefix}{other} ({format_duration(bound)})",
                    key=prefix + option.key,
                )
            )
    return errors


def _required_errors(
    values: Mapping[str, Any], known: Mapping[str, Option], invalid: set[str], prefix: str
) -> list[ConfigError]:
    """A section that sets any key to other than its default must give each of its
    `required` keys a non-empty value (so an all-defaults section means "not used")."""
    if not any(value != known[key].default for key, value in values.items()):
        return []
    return [
        ConfigError("is required in this section", key=prefix + key)
        for key, option in known.items()
        if option.spec.required and not values.get(key) and key not in invalid
    ]


def _mapping_items(
    node: yaml.MappingNode, prefix: str, errors: list[ConfigError]
) -> list[tuple[str, yaml.Node, yaml.Node]]:
    """The (key, key node, value node) pairs of `node`; a duplicate key, or one
    that is not a plain string, is left out and added to `errors`."""
    seen: dict[str, int | None] = {}
    items: list[tuple[str, yaml.Node, yaml.Node]] = []
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR_TAG:
            shown = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            message = f"key {shown!r} is a YAML {_node_type(key_node)}, not a string; quote it"
            errors.append(
                ConfigError(message, key=prefix.rstrip(".") or None, line=_line(key_node))
            )
            continue
        key = str(key_node.value)
        if key in seen:
            message = f"duplicate key (first given on line {seen[key]})"
            errors.append(ConfigError(message, key=prefix + key, line=_line(key_node)))
            continue
        seen[key] = _line(key_node)
        items.append((key, key_node, value_node))
    return items


def _unknown_key_message(key: str, known: Mapping[str, Option]) -> str:
    import difflib  # noqa: PLC0415 - deferred: a config error only

    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"
    return f"unknown key{hint}"


def _read_value(node: yaml.Node, spec: Spec, key: str) -> Any:
    """The checked value at `node` of the key `spec` describes, as the Config holds it."""
    try:
        return _VALUE_READERS[spec.kind](node, spec, key)
    except ConfigErrors:
        raise  # a nested section's problems, each located where it was found
    except ConfigError as e:
        raise e.located(line=_line(node)) from None


def _read_path(node: yaml.Node, spec: Spec, key: str) -> str:
    value = _scalar_str(node, spec, key)
    if (spec.kind is Kind.LOG_PATH and value in ("-", "syslog")) or (
        spec.allow_empty and value == ""
    ):
        return value
    if not os.path.isabs(value):
        raise ConfigError(f"must be an absolute path, got {value!r}", key=key)
    return os.path.normpath(value)


def _read_optional_path(node: yaml.Node, spec: Spec, key: str) -> str | None:
    return None if _is_null(node) else _read_path(node, spec, key)


def _read_address(node: yaml.Node, spec: Spec, key: str) -> str | None:
    if _is_null(node):
        return None
    value = _scalar_str(node, spec, key)
    try:
        host, port = split_address(value)
    except ValueError as exc:
        raise ConfigError(str(exc), key=key) from None
    return join_address(host, port)


def _read_command(node: yaml.Node, spec: Spec, key: str) -> tuple[str, ...]:
    if isinstance(node, yaml.SequenceNode):
        argv = _read_argv(node, spec, key)
        if not argv:
            raise ConfigError("must name a program, got an empty list", key=key)
        return argv
    value = _scalar_str(node, spec, key)
    if not value:
        raise ConfigError("must name a program, got an empty string", key=key)
    return (value,)


def _read_argv(node: yaml.Node, spec: Spec, key: str) -> tuple[str, ...]:
    if _is_null(node):
        return ()
    if not isinstance(node, yaml.SequenceNode):
        raise ConfigError(
            f"expected {_a(spec.type_name)} (program and arguments, no shell), "
            f"got {_a(_node_type(node))}",
            key=key,
        )
    argv = tuple(
        _scalar_str(item, spec, f"{key}[{index}]") for index, item in enumerate(node.value)
    )
    if argv and not argv[0]:
        raise ConfigError("the program must not be an empty string", key=f"{key}[0]")
    return argv


def _read_text(node: yaml.Node, spec: Spec, key: str) -> str:
    value = _scalar_str(node, spec, key)
    if value != value.strip() or any(not c.isprintable() for c in value):
        raise ConfigError(f"must be printable, without surrounding blanks, got {value!r}", key=key)
    return value


def _read_choice(node: yaml.Node, spec: Spec, key: str) -> str:
    value = _scalar_str(node, spec, key)
    if value not in spec.choices and not (spec.allow_empty and value == ""):
        raise ConfigError(f"must be one of {', '.join(spec.choices)}; got {value!r}", key=key)
    return value


def _read_duration(node: yaml.Node, spec: Spec, key: str) -> float:
    scalar = _scalar(node, spec, key)
    if scalar.tag in (_INT_TAG, _FLOAT_TAG):
        _require_decimal(scalar, key)
        seconds = float(scalar.value)
    elif scalar.tag == _STR_TAG:
        seconds = parse_duration(scalar.value, key)
    else:
        raise _type_error(scalar, spec, key)
    return _check_minimum(seconds, spec, key)


def _read_int(node: yaml.Node, spec: Spec, key: str) -> int:
    scalar = _scalar(node, spec, key)
    if scalar.tag != _INT_TAG:
        raise _type_error(scalar, spec, key)
    _require_decimal(scalar, key)
    return int(_check_minimum(int(scalar.value), spec, key))


def _read_number(node: yaml.Node, spec: Spec, key: str) -> float:
    scalar = _scalar(node, spec, key)
    if scalar.tag not in (_INT_TAG, _FLOAT_TAG):
        raise _type_error(scalar, spec, key)
    _require_decimal(scalar, key)
    return _check_minimum(float(scalar.value), spec, key)


def _read_bool(node: yaml.Node, spec: Spec, key: str) -> bool:
    scalar = _scalar(node, spec, key)
    if scalar.tag != _BOOL_TAG:
        raise _type_error(scalar, spec, key)
    return scalar.value.lower() in ("true", "yes", "on")


def _read_subsection(node: yaml.Node, spec: Spec, key: str) -> Any:
    """A nested section (`backoff`): an instance of its schema dataclass."""
    section = _section_of(spec)
    if _is_null(node):
        return section()
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"expected a mapping, got {_a(_node_type(node))}", key=key)
    return section(**_read_section(node, section, key + "."))


def _read_named_sections(node: yaml.Node, spec: Spec, key: str) -> dict[str, Any]:
    """A mapping of guest names to sections (`guests`): name -> schema dataclass."""
    section = _section_of(spec)
    if _is_null(node):
        return {}
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(
            f"expected a mapping of guest names to settings, got {_a(_node_type(node))}", key=key
        )
    named: dict[str, Any] = {}
    errors: list[ConfigError] = []
    for name, name_node, settings in _mapping_items(node, key + ".", errors):
        if not name:
            errors.append(
                ConfigError("a guest name must not be empty", key=key, line=_line(name_node))
            )
            continue
        try:
            named[name] = _read_named_section(settings, section, f"{key}.{name}")
        except ConfigError as e:
            errors.append(e)
    if errors:
        raise ConfigErrors(errors)
    return named


def _read_named_section(node: yaml.Node, section: type[Any], key: str) -> Any:
    if _is_null(node):
        return section()
    if not isinstance(node, yaml.MappingNode):
        names = [option.key for option in options(section)]
        raise ConfigError(
            f"expected a mapping with {_and(names)}, got {_a(_node_type(node))}",
            key=key,
            line=_line(node),
        )
    return section(**_read_section(node, section, key + "."))


def _section_of(spec: Spec) -> type[Any]:
    if spec.section is None:
        raise TypeError(f"schema error: a {spec.kind.name} key without its section")
    return spec.section


_VALUE_READERS = {
    Kind.PATH: _read_path,
    Kind.LOG_PATH: _read_path,
    Kind.OPTIONAL_PATH: _read_optional_path,
    Kind.ADDRESS: _read_address,
    Kind.COMMAND: _read_command,
    Kind.ARGV: _read_argv,
    Kind.CHOICE: _read_choice,
    Kind.DURATION: _read_duration,
    Kind.INT: _read_int,
    Kind.NUMBER: _read_number,
    Kind.BOOL: _read_bool,
    Kind.TEXT: _read_text,
    Kind.SECTION: _read_subsection,
    Kind.GUESTS: _read_named_sections,
}


def _scalar(node: yaml.Node, spec: Spec, key: str) -> yaml.ScalarNode:
    if _is_null(node):
        raise ConfigError(
            f"has no value; give {_a(spec.type_name)} or remove the key for the default",
            key=key,
        )
    if not isinstance(node, yaml.ScalarNode):
        raise ConfigError(f"expected {_a(spec.type_name)}, got {_a(_node_type(node))}", key=key)
    return node


def _scalar_str(node: yaml.Node, spec: Spec, key: str) -> str:
    """The string at `node`; an unquoted value YAML reads as another type
    (`no`, `on`, `0755`, `1:30`) is an error that says to quote it."""
    scalar = _scalar(node, spec, key)
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


def _check_minimum(value: float, spec: Spec, key: str) -> float:
    if spec.minimum is None:
        return value
    if spec.exclusive_minimum and value <= spec.minimum:
        raise ConfigError(f"must be greater than {spec.minimum:g}, got {value:g}", key=key)
    if value < spec.minimum:
        raise ConfigError(f"must be at least {spec.minimum:g}, got {value:g}", key=key)
    return value


def _type_error(scalar: yaml.ScalarNode, spec: Spec, key: str) -> ConfigError:
    return ConfigError(
        f"expected {_a(spec.type_name)}, got the YAML {_node_type(scalar)} {scalar.value!r}",
        key=key,
    )


def _a(type_name: str) -> str:
    """`type_name` with its article: "an integer", "a duration", "one of: a | b"."""
    if " | " in type_name:
        return f"one of: {type_name}"
    return ("an " if type_name[0] in "aeiou" else "a ") + type_name


def _and(words: Sequence[str]) -> str:
    """`words` as a list in prose: "a", "a and b", "a, b and c"."""
    if len(words) < 2:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


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
    value, kind = option.default, option.spec.kind
    if value is None:
        return ""
    if kind is Kind.DURATION:
        return format_duration(value)
    if kind is Kind.COMMAND:
        return value[0] if len(value) == 1 else "[" + ", ".join(value) + "]"
    if kind is Kind.ARGV:
        return "[" + ", ".join(value) + "]"
    if kind is Kind.BOOL:
        return "true" if value else "false"
    if kind is Kind.NUMBER:
        return f"{value:g}"
    if kind in (Kind.TEXT, Kind.PATH) and value == "":
        return '""'
    if kind is Kind.SECTION:
        return ""
    if kind is Kind.GUESTS:
        return "{}"
    if value is None:
        return ""
    if value == "":
        return '""'
    return str(value)


def _comment_lines(text: str, indent: str) -> list[str]:
    prefix = "#" + indent + "# " if indent else "# "
    width = 88 - len(prefix)
    return [prefix + line for line in textwrap.wrap(text, width)]


def _sample_option(option: Option, indent: str) -> list[str]:
    spec = option.spec
    lines = _comment_lines(spec.description, indent)
    if spec.example and spec.kind not in (Kind.SECTION, Kind.GUESTS):
        lines += _comment_lines(f"Example: {option.key}: {spec.example}", indent)
    if option.default is None and spec.choices:  # unset by default: shown as an example only
        return lines + _comment_lines(f"Example: {option.key}: {spec.choices[-1]}", indent)
    if spec.kind not in (Kind.SECTION, Kind.GUESTS):
        return [*lines, f"#{indent}{option.key}: {_format_default(option)}".rstrip()]
    lines.append(f"#{indent}{option.key}:")
    child_indent = indent + "  "
    if spec.kind is Kind.GUESTS:
        lines.append(f"#{child_indent}{spec.example}:")
        child_indent += "  "
    for child in option.children:
        lines += _sample_option(child, child_indent)
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
    for option in options(Config):
        lines.append("")
        lines += _sample_option(option, "")
    return "\n".join(lines) + "\n"


def option_table() -> list[tuple[str, str, str, str]]:
    """(key, type, default, description) of every key, nested ones as dotted paths
    (`backoff.max`, `guests.NAME.order`), for the man page."""
    rows = []
    for option in options(Config):
        rows.append(_table_row(option.key, option))
        prefix = option.key + (".NAME." if option.spec.kind is Kind.GUESTS else ".")
        rows += [_table_row(prefix + child.key, child) for child in option.children]
    return rows


def _table_row(key: str, option: Option) -> tuple[str, str, str, str]:
    spec = option.spec
    return (key, spec.type_name, _format_default(option), spec.description)


def split_address(text: str) -> tuple[str, int]:
    """Given `HOST:PORT` (HOST may be a bracketed IPv6 address), return the host
    (brackets removed) and port; raises ValueError saying what is wrong."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"put an IPv6 address in brackets: [{host}]:{port_text}")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"the port must be a number from 1 to 65535, got {port_text!r}")
    return host, int(port_text)


def join_address(host: str, port: int) -> str:
    """`HOST:PORT`, an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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
