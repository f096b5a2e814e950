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
HOST_SHUTDOWN_CHOICES = ("shutdown", "save", "leave")
"""Values of `on_host_shutdown`; a guest's own key defaults to "" (the top-level one)."""
_SPEC = "xenreconcile.schema.Spec"
"""The metadata key under which a field carries its `Spec`."""


class Kind(enum.StrEnum):
    """The value types of the schema, named as the man page and errors show them."""

    PATH = "absolute path"
    LOG_PATH = "absolute path, - or syslog"
    OPTIONAL_PATH = "absolute path or empty"
    ADDRESS = "HOST:PORT or empty"
    COMMAND = "program or list"
    ARGV = "list of strings"
    CHOICE = "choice"
    DURATION = "duration"
    INT = "integer"
    NUMBER = "number"
    BOOL = "boolean"
    TEXT = "string"
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
    allow_empty: bool = False
    required: bool = False  # must be given whenever its section is

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


def path(default: str, description: str, *, allow_empty: bool = False) -> str:
    """A key holding an absolute path (or, with `allow_empty`, "" for a derived default)."""
    return _key(default, Spec(Kind.PATH, description, allow_empty=allow_empty))


def log_path(default: str, description: str) -> str:
    """A key holding an absolute path, or `-` for stderr."""
    return _key(default, Spec(Kind.LOG_PATH, description))


def optional_path(description: str, *, example: str | None = None) -> str | None:
    """A key holding an absolute path; unset (None) by default, which turns it off."""
    return _key(None, Spec(Kind.OPTIONAL_PATH, description, example=example))


def address(description: str, *, example: str) -> str | None:
    """A key holding HOST:PORT to listen on; unset (None) by default, which turns it off."""
    return _key(None, Spec(Kind.ADDRESS, description, example=example))


def command(default: tuple[str, ...], description: str, *, example: str) -> tuple[str, ...]:
    """A key holding a program name or path, or a list of program and arguments."""
    return _key(default, Spec(Kind.COMMAND, description, example=example))


def argv(description: str, *, example: str, required: bool = False) -> tuple[str, ...]:
    """A key holding a list of program and arguments (or of strings); empty by default."""
    return _key((), Spec(Kind.ARGV, description, example=example, required=required))


def text(description: str, *, required: bool = False) -> str:
    """A key holding a non-empty string; empty (not set) by default."""
    return _key("", Spec(Kind.TEXT, description, required=required))


def choice(
    default: str, choices: tuple[str, ...], description: str, *, allow_empty: bool = False
) -> str:
    """A key holding one of `choices` (or, with `allow_empty`, "" for "inherited")."""
    spec = Spec(Kind.CHOICE, description, choices=choices, allow_empty=allow_empty)
    return _key(default, spec)


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


RESTART_CHOICES = ("always", "on-failure", "never")

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
    restart: str | None = _key(
        None,
        Spec(
            Kind.CHOICE,
            "This guest's restart policy (see the global `restart`); unset: the global one.",
            choices=RESTART_CHOICES,
        ),
    )
    on_host_shutdown: str = choice(
        "",
        HOST_SHUTDOWN_CHOICES,
        "What `xenreconcile shutdown-guests` does with this guest; empty: the "
        "top-level `on_host_shutdown`.",
        allow_empty=True,
    )
    pool_host: str = text(
        "Pool mode: the host that claims this guest while it is alive (docs/pool.md, Placement)."
    )


@dataclass(frozen=True, slots=True)
class Fence:
    """The `pool.fence` section: the watchdog that resets a host cut off from etcd."""

    feed: tuple[str, ...] = argv(
        "Program and arguments (no shell) run after every successful lease renewal "
        "and at no other time; it arms and feeds the Xen watchdog for Dom0 with "
        "XR_FENCE_TIMEOUT seconds (the shipped xenreconcile-watchdog-feed does that). "
        "Empty: no fencing, so the guests of a lost host "
        "move only after `xenreconcile pool takeover HOST --yes`.",
        example="[/usr/local/bin/xenreconcile-watchdog-feed]",
    )
    timeout: float = duration(
        30.0,
        "The watchdog's timeout: a host not fed this long resets. Other hosts start "
        "the guests of a host gone from etcd only after timeout + lease_ttl.",
        exclusive_minimum=True,
    )


@dataclass(frozen=True, slots=True)
class Pool:
    """The `pool` section: several Dom0s on shared storage, one claim per guest in etcd."""

    name: str = text("The pool's name, the same on every host of it.", required=True)
    host: str = text("This host's name, unique in the pool.", required=True)
    etcd: tuple[str, ...] = argv(
        "URLs of the etcd members (http:// or https://).",
        example="[https://10.0.0.1:2379, https://10.0.0.2:2379]",
        required=True,
    )
    lease_ttl: float = duration(
        15.0,
        "TTL of this host's liveness lease, renewed every third of it; the host "
        "creates only while its last renewal was sent less than two thirds of it ago.",
        minimum=2,
    )
    ca_cert: str | None = optional_path("CA certificate that signs the etcd members' certificates.")
    cert: str | None = optional_path("Client certificate for etcd (with `key`).")
    key: str | None = optional_path("Private key of the client certificate.")
    fence: Fence = section(Fence, "Self-fencing through the Xen watchdog (docs/pool.md).")

    @property
    def enabled(self) -> bool:
        """True when the config names a pool (the `pool` section is given)."""
        return bool(self.etcd)


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
        "Log file; reopened by itself after rotation, and on SIGHUP; `-` logs to stderr, "
        "`syslog` to the local syslog daemon (/var/run/log on FreeBSD, /dev/log on Linux; "
        "facility daemon, tag xenreconcile).",
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
        "fails after running, recovers, a failed create leaves its domain behind "
        "paused, or it has waited precondition_timeout for a disk or bridge, and at "
        "start while a damaged state file left guests uncertain; it "
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
    on_host_shutdown: str = choice(
        "shutdown",
        HOST_SHUTDOWN_CHOICES,
        "What `xenreconcile shutdown-guests` (the host going down) does with each "
        "running managed guest: a clean `xl shutdown` (`-F` for HVM guests), `xl save` "
        "into save_dir (restored at the next boot), or leave it running.",
    )
    host_shutdown_timeout: float = duration(
        80.0,
        "The whole drain of `shutdown-guests` ends by this deadline; guests still "
        "up then are logged and left to the host. FreeBSD's rcshutdown_timeout is "
        "90 s for every service together.",
        exclusive_minimum=True,
    )
    save_dir: str = path(
        "",
        "Directory of save images (NAME.save), checked as state_dir is; empty: "
        "state_dir/save (created 0700). Another directory must already exist: an "
        "unmounted file system is not saved into.",
        allow_empty=True,
    )
    on_restore_failure: str = choice(
        "hold",
        ("hold", "boot"),
        "When `xl restore` of a save image fails: the image is moved aside "
        "(NAME.save.failed-TIME) and the guest held with the reason, or booted "
        "fresh from its file (boot).",
    )
    precondition_timeout: float = duration(
        600.0,
        "A guest whose disk, `kernel`, `ramdisk` or vif `bridge` does not exist yet "
        "waits for it, with no create and no failure counted; after this long it is "
        "also reported as a problem and notified once, and no longer keeps guests of a "
        "higher `order` waiting. A missing cdrom image never blocks.",
    )
    metrics_listen: str | None = address(
        "Serve Prometheus metrics over HTTP at http://HOST:PORT/metrics (a bracketed "
        "IPv6 HOST such as '[::1]:9101' works too, quoted for YAML). Unset: no HTTP server.",
        example="127.0.0.1:9101",
    )
    metrics_textfile: str | None = optional_path(
        "Write the metrics to this file after every pass, atomically (a hidden temp file "
        "in the same directory renamed over it), for node_exporter's textfile collector; "
        "node_exporter reads only names ending in .prom. Unset: no file.",
        example="/var/tmp/node_exporter/xenreconcile.prom",
    )
    restart: str = choice(
        "always",
        RESTART_CHOICES,
        "Whether a guest that went away while Dom0 runs is created again: `always` "
        "(whatever the reason), `on-failure` (after a crash, a watchdog reset or an "
        "unknown end; a clean poweroff or an `xl destroy` leaves it *stopped*), or "
        "`never` (it stays *stopped* until `xenreconcile start NAME`). At Dom0 boot "
        "every guest that is not stopped or held is created, whatever its policy.",
    )
    pool: Pool = section(
        Pool,
        "Pool mode: several Dom0s sharing the guests directory and storage; each "
        "guest runs on at most one of them, decided in etcd (docs/pool.md).",
    )
    guests: dict[str, GuestOverride] = named_sections(
        GuestOverride,
        "Per-guest settings, keyed by the guest's name (the cfg's `name`, not the file name).",
        example="web",
    )
    source: str | None = None

    @property
    def save_path(self) -> str:
        """The directory of save images: `save_dir`, or state_dir/save."""
        return self.save_dir or self.state_dir.rstrip("/") + "/save"

    def host_shutdown_action(self, name: str) -> str:
        """What the drain does with guest `name`: its own key, else the top-level one."""
        own = self.guests[name].on_host_shutdown if name in self.guests else ""
        return own or self.on_host_shutdown

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
    restart: str = _config_default("restart")
    precondition_timeout: float = _config_default("precondition_timeout")

    def override(self, name: str) -> GuestOverride:
        """The per-guest settings of `name`, or the (shared, immutable) defaults."""
        return self.guests.get(name, _DEFAULT_OVERRIDE)

    def restart_of(self, name: str) -> str:
        """The restart policy of `name`: its own, else the global one."""
        return self.override(name).restart or self.restart


_DEFAULT_OVERRIDE = GuestOverride()
