"""Plain values shared by the planner and the adapters.

Everything here is immutable data with no I/O: the directory scan produces
`DesiredGuest` and `InvalidFile`, the xl adapter produces `Domain`, the state
store persists `Memory`, and the planner turns all of them into a `Plan`
(deciding with `PlannerSettings`, the config schema's part it needs).
Times are seconds of the monotonic clock, always passed in by the caller: a
step of the wall clock must not move a deadline. state.json holds them as
epoch seconds instead; `clock.to_epoch` and `clock.from_epoch` convert every
field listed in `GUEST_TIME_FIELDS` and `MEMORY_TIME_FIELDS` (docs/design.md, "Time").
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from xenreconcile import schema

# The settings the planner needs are config keys: they live in the schema, with
# their defaults, and are named here with the other values.
Backoff = schema.Backoff
GuestOverride = schema.GuestOverride
PlannerSettings = schema.PlannerSettings

DOM0_NAME = "Domain-0"
INCOMING_SUFFIX = "--incoming"
MIGRATEDAWAY_SUFFIX = "--migratedaway"
# The name xl lists for a domain whose name is already gone (being torn down); any
# number of rows may carry it.
NULL_NAME = "(null)"


def split_migration_name(name: str) -> tuple[str, str | None]:
    """Given a listed domain name, return (guest name, "incoming" | "migratedaway"
    | None): xl lists a guest in live migration as `NAME--incoming` or
    `NAME--migratedaway`; a bare suffix is no guest's migration."""
    for suffix in (INCOMING_SUFFIX, MIGRATEDAWAY_SUFFIX):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], suffix.lstrip("-")
    return name, None


# --- desired state: the guests directory -------------------------------------------------


@dataclass(frozen=True, slots=True)
class DesiredGuest:
    """A valid guest cfg file: the guest `name`, the file's absolute `path`, and
    `cfg_hash` (hex sha256 of the file's bytes) that tells a changed file."""

    name: str
    path: str
    cfg_hash: str


@dataclass(frozen=True, slots=True)
class InvalidFile:
    """A cfg file that cannot be used. `name` is the guest name when it could be
    read (duplicates, for example), `line`/`column` point at the problem when known."""

    path: str
    reason: str
    name: str | None = None
    line: int | None = None
    column: int | None = None


@dataclass(frozen=True, slots=True)
class DesiredState:
    """One scan of the guests directory: the valid guests (unique names), the
    invalid files, the names carried by two or more files (with those files), and
    `error`, set when the directory itself cannot be used (missing, a file, unsafe
    permissions); then there are no guests."""

    guests: tuple[DesiredGuest, ...] = ()
    invalid: tuple[InvalidFile, ...] = ()
    duplicates: dict[str, tuple[str, ...]] = field(default_factory=dict)
    error: str | None = None


# --- actual state: the toolstack -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Domain:
    """One row of `xl list`. `flags` is its 6-letter State column, e.g. `-b----`
    (named apart from the daemon's own words for a guest, `GuestPhase`)."""

    name: str
    domid: int
    mem: int
    vcpus: int
    flags: str
    time: float

    @property
    def dying(self) -> bool:
        """True when the hypervisor is tearing the domain down (`d`)."""
        return "d" in self.flags

    @property
    def stale(self) -> bool:
        """True when the domain crashed (`c`) or shut down (`s`) but is preserved."""
        return not self.dying and ("c" in self.flags or "s" in self.flags)

    @property
    def paused(self) -> bool:
        """True when the domain is paused (`p`) and neither dying nor stale."""
        return "p" in self.flags and not self.dying and not self.stale


# --- remembered state ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GuestMemory:
    """What the daemon remembers about one guest name.

    attempts         consecutive failed creates (reset when the guest stays up `stable_after`)
    next_retry       earliest time of the next create after a failure, None if not waiting
    last_error       one-line reason of the last failure
    held, hold_reason  set by `xenreconcile hold`; a held guest is never created
    migrated         the guest left by live migration; not created until release or seen again
    migrating_away   `NAME--migratedaway` was in the last trusted listing
    cfg_hash         the file content the failure count belongs to (a new content resets it)
    created_hash     the file content of the last successful create (drift detection)
    created_at       time of the last successful create still inside its `stable_after` window
    seen_running     the guest was listed running during this daemon's life
    missing_since    first pass that found a seen-running guest missing
    last_failure_at  time of the last failed create (or early death): the next create
                     waits `backoff.initial` from it, whatever happens to the file
    leftover_unchecked  the last create failed and no trusted listing was seen since:
                     a paused domain listed under the name then is what it left
    leftover_domid   domid of the paused domain a failed create left behind (not running)
    absent_at        first pass that found no file, domain, migration or create for the
                     name; its memory (beyond holds and migrated marks) is forgotten later
    uncertain        why its hold or migrated mark may have been lost (a damaged
                     state file); never created while set, until hold, release or
                     accept-state
    life_domid       domid of the life last seen running whose end is not settled yet
    life_before_boot that life belongs to an earlier Dom0 boot
    intent           our own reason for ending that life: "stop", "restart" or
                     "host-shutdown" (the drain); decides before xl's records
    exit_reason, exit_code, exit_at  how the last life ended (`exits.ExitReason`
                     word, xl's reason code or None, when it was noticed)
    stopped          why the guest is kept down (`stop`, or its restart policy);
                     never created while set, until `start`
    crashes, last_crash_at  crashes and watchdog resets within `exits`' window
    ended_domid      domid of the last life whose end was settled: a domain still listed
                     under it, dying or nameless, is a zombie that blocks a create
    waiting_since    first pass of the current wait for a missing disk, kernel,
                     ramdisk or bridge (`preconditions`); None when not waiting
    waiting_reported that wait outlasted `precondition_timeout` and was reported
    """

    attempts: int = 0
    next_retry: float | None = None
    last_error: str | None = None
    held: bool = False
    hold_reason: str | None = None
    migrated: bool = False
    migrating_away: bool = False
    cfg_hash: str | None = None
    created_hash: str | None = None
    created_at: float | None = None
    seen_running: bool = False
    missing_since: float | None = None
    last_failure_at: float | None = None
    leftover_unchecked: bool = False
    leftover_domid: int | None = None
    absent_at: float | None = None
    uncertain: str | None = None
    life_domid: int | None = None
    life_before_boot: bool = False
    intent: str | None = None
    exit_reason: str | None = None
    exit_code: int | None = None
    exit_at: float | None = None
    stopped: str | None = None
    crashes: int = 0
    last_crash_at: float | None = None
    ended_domid: int | None = None
    waiting_since: float | None = None
    waiting_reported: bool = False


_FRESH_GUEST = GuestMemory()


@dataclass(frozen=True, slots=True)
class Memory:
    """All remembered state: per-guest memory, when the last create started (for
    `start_delay`), the Dom0 boot it belongs to: the kernel's boot id (None
    where the kernel has none), the boot time (epoch seconds) and the Dom0's
    uptime when the state was saved (see `state.same_boot`); and `uncertain`:
    set when the state file could not be read as a whole, the reason every name
    without memory of its own is uncertain."""

    guests: dict[str, GuestMemory] = field(default_factory=dict)
    last_create_at: float | None = None
    boot_time: float | None = None
    boot_id: str | None = None
    saved_uptime: float | None = None
    uncertain: str | None = None

    def guest(self, name: str) -> GuestMemory:
        """The memory of `name`, or a fresh one (uncertain when the whole memory is)."""
        found = self.guests.get(name)
        if found is not None:
            return found
        return _FRESH_GUEST if self.uncertain is None else GuestMemory(uncertain=self.uncertain)


# --- the time fields of the remembered state ----------------------------------------------

# How far from now a remembered time may lie, given the settings: (seconds before
# now, seconds after now), None for no bound. Every deadline the daemon loads from
# state.json is clamped to these bounds, so a wall clock that was wrong when the
# file was written (a bad RTC, a step by NTP) can neither stretch nor skip a wait.
TimeBounds = Callable[[PlannerSettings], tuple[float | None, float | None]]

GUEST_TIME_FIELDS: Mapping[str, TimeBounds] = {
    # A retry is never further away than the longest delay backoff can give.
    "next_retry": lambda s: (None, s.backoff.max + s.backoff.jitter),
    # The stable_after window started at most stable_after ago, and not in the future.
    "created_at": lambda s: (s.stable_after, 0.0),
    # (Forgotten at start anyway: a fresh daemon has seen nothing missing yet.)
    "missing_since": lambda s: (s.missing_grace, 0.0),
    # Only its last backoff.initial matters; never in the future, so it cannot hold
    # back a retry for longer than backoff.initial.
    "last_failure_at": lambda s: (None, 0.0),
    # Counts towards forgetting a name with no file; never in the future.
    "absent_at": lambda s: (None, 0.0),
    # When the last end was noticed, and the last crash: never in the future.
    "exit_at": lambda s: (None, 0.0),
    "last_crash_at": lambda s: (None, 0.0),
    # Counts towards precondition_timeout; never in the future.
    "waiting_since": lambda s: (None, 0.0),
}
MEMORY_TIME_FIELDS: Mapping[str, TimeBounds] = {
    # start_delay counts from a create that started, at the latest, now.
    "last_create_at": lambda s: (None, 0.0),
}


# --- the planner's output ------------------------------------------------------------------


class GuestPhase(enum.StrEnum):
    """What `status` shows for a guest."""

    RUNNING = "running"  # listed, not dying or stale
    DRIFT = "drift"  # running, but its file changed since we created it
    CREATING = "creating"  # an `xl create` is in flight
    PENDING = "pending"  # missing; a create is planned now or as soon as a slot frees
    WAITING = "waiting"  # missing; waits for lower `order` guests, `start_delay` or a disk/bridge
    GRACE = "grace"  # missing; inside `missing_grace` after having been seen running
    BACKOFF = "backoff"  # missing; failed, next try at `next_retry`
    FAILED = "failed"  # gave up after `give_up_after` failures
    HELD = "held"  # held by the admin or the config; never created
    MIGRATING = "migrating"  # a `--incoming`/`--migratedaway` domain exists
    MIGRATED = "migrated"  # left by live migration; not created until release
    UNCERTAIN = "uncertain"  # its hold or migrated mark may be lost; not created until decided
    STOPPED = "stopped"  # kept down by `stop` or its restart policy; `start` lets it run
    STALE = "stale"  # listed crashed/shut down and preserved; not touched
    DYING = "dying"  # listed as dying; wait
    LEFTOVER = "leftover"  # a failed create left its domain listed paused; not running
    UNMANAGED = "unmanaged"  # running with no file
    DUPLICATE = "duplicate"  # two or more files carry this name
    INVALID = "invalid"  # the file cannot be used
    UNKNOWN = "unknown"  # the toolstack listing (or, in pool mode, its claim) is not trusted
    ELSEWHERE = "elsewhere"  # pool mode: claimed by, or running on, another host


@dataclass(frozen=True, slots=True)
class LastExit:
    """How a guest's last life ended: the reason word (`exits.ExitReason`), xl's
    shutdown reason code (None when xl gave none) and when it was noticed."""

    reason: str
    code: int | None
    at: float


@dataclass(frozen=True, slots=True)
class GuestStatus:
    """One row of `status`: a guest name (or the file name for an invalid file
    without one), its state, its file(s) and what is remembered about it."""

    name: str
    state: GuestPhase
    paths: tuple[str, ...] = ()
    attempts: int = 0
    next_retry: float | None = None
    last_error: str | None = None
    detail: str | None = None
    last_exit: LastExit | None = None


@dataclass(frozen=True, slots=True)
class CreateAction:
    """Run `xl create <path>` for guest `name`; `cfg_hash` is the content it creates from."""

    name: str
    path: str
    cfg_hash: str


class EventKind(enum.StrEnum):
    """Decisions the planner made that are worth a log line or a notification."""

    VANISHED = "vanished"  # a running guest is no longer listed
    DIED_EARLY = "died_early"  # it vanished within `stable_after` of its create: a failure
    RECOVERED = "recovered"  # stayed up `stable_after` after failures
    GAVE_UP = "gave_up"  # reached `give_up_after`
    FAILING = "failing"  # first failure after having run
    FILE_CHANGED = "file_changed"  # content changed: backoff reset
    MIGRATED = "migrated"  # left by live migration
    RETURNED = "returned"  # a migrated guest runs here again
    LEFTOVER = "leftover"  # a failed create left its domain listed paused
    EXITED = "exited"  # how a life ended is known (reason in the event)
    STOPPED = "stopped"  # kept down (by `stop` or the guest's restart policy)
    WAITING = "waiting"  # a disk, kernel, ramdisk or bridge it needs is missing
    WAITING_TOO_LONG = "precondition_timeout"  # still waiting after `precondition_timeout`


@dataclass(frozen=True, slots=True)
class Event:
    """A decision worth telling: `kind` for guest `name`, with an optional `error`
    and the `reason` of the guest's last end (an `exits.ExitReason` word)."""

    kind: EventKind
    name: str
    error: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class PoolGate:
    """Pool mode's word on one pass: whether the pool view is confirmed (etcd
    answered and this host's lease is known alive; else `reason` says why), the
    desired guests claimed by this host, those another host claims or runs
    (guest -> that host), and how long a guest seen running must stay missing
    before it is recreated (so that a host it migrated to has shown it). `fresh`:
    guests this host claimed this pass where no claim existed (so no host may run
    them): a *migrated* mark of such a guest is outdated."""

    confirmed: bool
    mine: frozenset[str] = frozenset()
    elsewhere: Mapping[str, str] = field(default_factory=dict)
    reason: str = ""
    vanish_grace: float = 0.0
    fresh: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Plan:
    """What a pass decided: creates to start now, a status per guest, the updated
    memory, events to log, and `wake_at`, the earliest time at which a pass could
    decide something new without any outside change (None: nothing scheduled)."""

    creates: tuple[CreateAction, ...]
    statuses: tuple[GuestStatus, ...]
    memory: Memory
    events: tuple[Event, ...] = ()
    wake_at: float | None = None
    trusted: bool = True


@dataclass(frozen=True, slots=True)
class CreateResult:
    """How an `xl create` ended: `ok`, its exit code (None if killed at the timeout),
    whether it `timed_out`, the last lines of its stderr, and how long it took."""

    ok: bool
    exit_code: int | None
    timed_out: bool = False
    stderr_tail: str = ""
    duration: float = 0.0

    @property
    def error(self) -> str:
        """A one-line reason for a failed create, suitable for `last_error`."""
        if self.ok:
            return ""
        if self.timed_out:
            return f"xl create timed out after {self.duration:.0f}s"
        return f"xl create exited {self.exit_code}: {self.cause}"

    @property
    def cause(self) -> str:
        """The line of xl's output that says why it failed: the first error line
        (libxl's later lines only report the clean-up), else the last line."""
        lines = [
            ln.strip()
            for ln in self.stderr_tail.splitlines()
            if ln.strip() and not ln.startswith("Parsing config from")
        ]
        for line in lines:
            if "error" in line.lower() or "failed" in line.lower():
                return line
        return lines[-1] if lines else "no error output"
