"""The pure planner: desired guests + `xl list` + memory -> what to do now.

`plan` is given one scan of the guests directory, one listing of the toolstack
(or None when the listing failed), the remembered state, the names with an
`xl create` in flight, the current time and the settings, and returns a `Plan`:
the creates to start now, one status per guest, the updated memory, events worth
logging and the earliest time a pass could decide something new. `record_create`
folds the end of one create into memory. Nothing here reads the clock, the disk
or the global random generator: the same input always gives the same output.

Decisions, for a desired guest that is not listed under its own name:

* Never created while held (`hold` or the config's `guests.NAME.hold`), uncertain
  (its hold or migrated mark may have been lost with a damaged state file), migrating
  (`NAME--incoming` or `NAME--migratedaway` listed), migrated, in flight, failed
  (`give_up_after` reached), in backoff (`next_retry` in the future) or inside
  `missing_grace` after having been seen running in this daemon's life.
* Order: a guest waits while a desired guest of a lower `order` is still to be
  created or being created (pending, creating, in grace, or itself waiting).
  SPEC says a guest waits "until every guest of a lower order is running, held or
  failed"; we read "failed" as "has had its try": a lower-order guest that is in
  backoff, migrated, stale, dying, duplicate or invalid does not block the next
  group, otherwise one guest with a bad disk would keep all later groups down
  for as long as it keeps failing.
* Preconditions: a guest that could be created now but whose disk, kernel,
  ramdisk or bridge is missing (`unmet`, gathered by `preflight`) is WAITING
  "waiting for PATH": no create, no failure, no backoff. Once it has waited
  `precondition_timeout` it is reported once (WAITING_TOO_LONG) and no longer
  keeps guests of a higher order waiting (like a guest that has had its try).
* Concurrency: in-flight creates plus new creates never exceed `concurrency`;
  the lowest order goes first, then the name. With `start_delay` > 0 at most one
  create per pass, and none before `last_create_at + start_delay`.

Failure accounting: a create that fails (see `record_create`) or a guest that
vanishes within `stable_after` of a successful create counts one failure and
schedules a retry (`backoff.retry_delay`); a guest listed running `stable_after`
after its create resets the count. A change of the file's content resets the
count and is tried at once (also for a failed guest), but never sooner than
`backoff.initial` after the last failure (`last_failure_at`): a tool that
rewrites a failing guest's file every second must not turn backoff into a loop.

Leftovers: a create killed at `xl_timeout` while xl builds the domain leaves it
listed paused (`--p---`), because xl's own clean-up never runs (real xl 4.17
does this). After a failed create (`leftover_unchecked`), a paused domain listed
under the name in the next trusted listing is taken for that leftover and its
domid remembered: it is LEFTOVER (never running, never seen running, a problem
for `run --once`), notified once, and never destroyed by us. The mark goes when
that domid is no longer listed paused (destroyed, or unpaused by the admin); a
guest the admin paused is never mistaken for one (it has another domid, and no
failed create before it).

Memory survives any state of the file. A name whose file is invalid, unreadable,
duplicate or missing is not acted on, but its memory is kept whole (backoff,
`seen_running`, the leftover mark) and its live migration is still tracked:
`NAME--migratedaway` seen, then gone, makes NAME migrated even while it has no
usable file, so a file fixed or moved back after the migration does not start a
guest that runs on the other host. A name with no file, no domain, no migration
and no create in flight (an invalid file without a readable name counts as no
file) is stamped `absent_at`; its memory is dropped `FORGET_AFTER` (one day)
later, except its hold and migrated mark, which are kept forever. A day covers
an admin moving a file aside for an edit, a long parse error or a slow migration,
and bounds the memory by the names seen in a day.

Drift is known only for guests this daemon created: `created_hash` is forgotten
when the guest is seen missing, so a guest somebody else started is never
reported as drifted. (A guest destroyed and recreated by hand between two passes
is not seen missing and keeps being reported as drifted until we create it.)

Other choices where SPEC is silent:

* A held guest shows HELD even while it runs (the detail says it is listed); a
  held guest that vanishes within `stable_after` is not counted as a failure.
* A guest that vanishes while `NAME--migratedaway` or `NAME--incoming` is listed,
  or after it was marked migrated, is neither VANISHED nor a failure.
* Without a trusted listing: desired guests are UNKNOWN, except held (HELD) and
  in-flight (CREATING) ones, which do not depend on the listing.
* An unusable guests directory (`desired.error`): no creates, memory kept as it
  is (a passing problem must not wipe backoff) except for live migrations, which
  are tracked as above; listed domains shown UNMANAGED with the reason.
* A cfg whose name is `Domain-0` is shown INVALID and never created.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from . import exitpolicy
from .backoff import retry_delay
from .exits import ExitReason, Life
from .models import (
    DOM0_NAME,
    INCOMING_SUFFIX,
    MIGRATEDAWAY_SUFFIX,
    NULL_NAME,
    CreateAction,
    CreateResult,
    DesiredGuest,
    DesiredState,
    Domain,
    Event,
    EventKind,
    GuestMemory,
    GuestPhase,
    GuestStatus,
    LastExit,
    Memory,
    Plan,
    PlannerSettings,
    PoolGate,
    split_migration_name,
)

# States of a desired guest that keep guests of a higher order waiting.
BLOCKING_STATES = frozenset(
    {
        GuestPhase.PENDING,
        GuestPhase.CREATING,
        GuestPhase.GRACE,
        GuestPhase.WAITING,
        GuestPhase.UNKNOWN,
    }
)
# States of a desired guest that do not depend on the listing: a suspect keeps them.
_LISTING_FREE_STATES = frozenset({GuestPhase.HELD, GuestPhase.CREATING, GuestPhase.STOPPED})
# How long the memory of a name with no file, domain, migration or create is kept.
FORGET_AFTER = 24 * 3600.0


# --- one pass ---------------------------------------------------------------------------


@dataclass
class _Pass:
    """What one trusted pass knows and accumulates while it walks the guests."""

    now: float
    settings: PlannerSettings
    in_flight: frozenset[str]
    listed: dict[str, Domain]
    suspects: Mapping[str, str] = field(default_factory=dict)
    lives: Mapping[str, Life | None] = field(default_factory=dict)
    nameless: tuple[Domain, ...] = ()
    withheld: Mapping[str, str] = field(default_factory=dict)
    unmet: Mapping[str, Sequence[str]] = field(default_factory=dict)
    starting: bool = False
    pool: PoolGate | None = None
    events: list[Event] = field(default_factory=list)
    wakes: list[float] = field(default_factory=list)

    def event(
        self, kind: EventKind, name: str, error: str | None = None, reason: str | None = None
    ) -> None:
        """Record a decision worth a log line."""
        self.events.append(Event(kind, name, error, reason))

    def exited(self, name: str, end: exitpolicy.End) -> None:
        """Tell how a life of `name` ended: on this pass's VANISHED event of the
        guest when there is one, else as an EXITED event."""
        for index, event in enumerate(self.events):
            if event.kind is EventKind.VANISHED and event.name == name:
                self.events[index] = replace(event, reason=str(end.reason))
                return
        code = "" if end.code is None else f" (reason code {end.code})"
        self.event(EventKind.EXITED, name, f"{end.reason}{code}", reason=str(end.reason))

    def wake(self, at: float) -> None:
        """Remember a future time at which this pass's decision would change."""
        if at > self.now:
            self.wakes.append(at)

    def migrating(self, name: str) -> bool:
        """True when a live migration of `name` is listed."""
        return name + INCOMING_SUFFIX in self.listed or name + MIGRATEDAWAY_SUFFIX in self.listed


@dataclass(frozen=True)
class _Verdict:
    """The state of one desired guest before ordering and slots are applied;
    `state` None means it is missing and may be created."""

    guest: DesiredGuest
    memory: GuestMemory
    state: GuestPhase | None
    detail: str | None = None
    awaiting: bool = False  # waits for a missing precondition
    blocks: bool = True  # may keep guests of a higher order waiting


def plan(  # noqa: PLR0917 - the positional API the daemon and CLI share
    desired: DesiredState,
    listing: Sequence[Domain] | None,
    memory: Memory,
    in_flight: Collection[str],
    now: float,
    settings: PlannerSettings,
    *,
    suspects: Mapping[str, str] | None = None,
    lives: Mapping[str, Life | None] | None = None,
    withheld: Mapping[str, str] | None = None,
    unmet: Mapping[str, Sequence[str]] | None = None,
    starting: bool = False,
    pool: PoolGate | None = None,
) -> Plan:
    """Given the desired state, the toolstack listing (None: failed or not trusted),
    the memory, the names being created, the time and the settings, return the Plan
    of this pass. Without a trusted listing nothing is created and memory is kept.
    `suspects` (name -> reason) are guests an unreadable row of the listing could
    be: nothing is decided about them (see `partial`). `lives` (name -> the life
    of its remembered `life_domid` in xl's monitor log, None: not there) tell how
    a guest's last life ended (see `exitpolicy`). `withheld` (name -> reason)
    are guests the caller forbids to create now (the daemon stood down for the
    host's shutdown, a save image to restore first): WAITING with the reason, and
    they block higher orders as any waiting guest does. `unmet` (name -> what is
    missing) are guests whose disks, kernel, ramdisk or bridges Dom0 lacks now
    (see `preflight`): they wait instead of being created. `starting`: the caller
    starts the plan's creates at once, so their status is CREATING (else PENDING,
    as in a dry run). `pool` (pool mode only): a missing guest is created only
    when the gate is confirmed and names it this host's."""
    flying = frozenset(in_flight)
    if listing is None:
        return _untrusted_plan(desired, memory, flying, settings)
    listed = {d.name: d for d in listing if d.name != DOM0_NAME}
    ctx = _Pass(
        now=now,
        settings=settings,
        in_flight=flying,
        listed=listed,
        suspects=suspects or {},
        lives=lives or {},
        nameless=tuple(d for d in listing if d.name == NULL_NAME),
        withheld=withheld or {},
        unmet=unmet or {},
        starting=starting,
        pool=pool,
    )
    if desired.error is not None:
        return _unusable_dir_plan(desired.error, memory, ctx)
    guests = _managed_guests(desired)
    verdicts = [_verdict(g, memory.guest(g.name), ctx) for g in guests]
    creates, statuses = _schedule(verdicts, memory, ctx)
    updated = dict(memory.guests)
    updated.update({v.guest.name: v.memory for v in verdicts})
    updated.update(_observe_without_file(updated, {g.name for g in guests}, ctx))
    statuses += _side_statuses(desired, updated, listed)
    new_memory = replace(
        memory,
        guests=_unchanged_suspects(_pruned(updated, desired, ctx), memory, ctx.suspects),
        last_create_at=now if creates else memory.last_create_at,
    )
    return Plan(
        creates=tuple(creates),
        statuses=_sorted(statuses),
        memory=new_memory,
        events=tuple(e for e in ctx.events if e.name not in ctx.suspects),
        wake_at=min(ctx.wakes, default=None),
    )


def _verdict(guest: DesiredGuest, gm: GuestMemory, ctx: _Pass) -> _Verdict:
    """The verdict on one desired guest: a suspect is not observed, and shown
    `unknown` unless a create in flight or a hold decides its state."""
    reason = ctx.suspects.get(guest.name)
    if reason is None:
        return _ended_wait(_judge(guest, _observe(guest, gm, ctx), ctx))
    standing = _standing(guest.name, gm, ctx.in_flight, ctx.settings)
    if standing is not None and standing[0] in _LISTING_FREE_STATES:
        return _Verdict(guest, gm, *standing)
    return _Verdict(guest, gm, GuestPhase.UNKNOWN, reason)


def _unchanged_suspects(
    guests: dict[str, GuestMemory], before: Memory, suspects: Mapping[str, str]
) -> dict[str, GuestMemory]:
    """`guests` with each suspect's memory as it was before the pass."""
    if not suspects:
        return guests
    kept = dict(guests)
    for name in suspects:
        if name in before.guests:
            kept[name] = before.guests[name]
        else:
            kept.pop(name, None)
    return kept


def _managed_guests(desired: DesiredState) -> list[DesiredGuest]:
    """The valid guests the planner acts on, sorted by name. A name that is also
    a duplicate is left out (the duplicate wins), and so is `Domain-0` (shown invalid)."""
    managed = (
        g for g in desired.guests if g.name not in desired.duplicates and g.name != DOM0_NAME
    )
    return sorted(managed, key=lambda g: g.name)


# --- observing the listing: memory updates ----------------------------------------------


def _observe(guest: DesiredGuest, gm: GuestMemory, ctx: _Pass) -> GuestMemory:
    """Given a desired guest and its memory, return the memory updated with what
    this trusted listing shows (file change, migration, running, vanished)."""
    if gm.cfg_hash is not None and gm.cfg_hash != guest.cfg_hash:
        next_retry = _failure_spacing_end(gm, ctx.now, ctx.settings)
        gm = replace(gm, attempts=0, next_retry=next_retry, last_error=None, created_at=None)
        ctx.event(EventKind.FILE_CHANGED, guest.name)
    if gm.cfg_hash != guest.cfg_hash:
        gm = replace(gm, cfg_hash=guest.cfg_hash)
    if guest.name in ctx.in_flight:
        # Its create decides (record_create). The domain xl is still building shows
        # up paused, or vanishes again when the create fails: neither is "running".
        return gm
    domain = ctx.listed.get(guest.name)
    gm = _observe_migration(guest.name, gm, domain, ctx)
    gm = _observe_leftover(guest.name, gm, domain, ctx)
    if gm.leftover_domid is not None:
        return gm  # listed, but not running: neither seen running nor missing
    if domain is not None:
        return _observe_listed(guest.name, gm, domain, ctx)
    return _observe_missing(guest.name, gm, ctx)


def _failure_spacing_end(gm: GuestMemory, now: float, settings: PlannerSettings) -> float | None:
    """The time before which a guest that failed at `gm.last_failure_at` must not be
    tried again whatever its file does (`backoff.initial` later), or None if passed."""
    if gm.last_failure_at is None:
        return None
    end = gm.last_failure_at + settings.backoff.initial
    return end if end > now else None


def _observe_without_file(
    guests: dict[str, GuestMemory], managed: set[str], ctx: _Pass
) -> dict[str, GuestMemory]:
    """Given all memory and the names acted on this pass, return the changed memory
    of the other names (no usable file): their live migrations are tracked all the
    same, so that a guest that migrated away while its file was bad or gone is
    migrated, not started again, once the file is back."""
    away = {base for base, kind in map(split_migration_name, ctx.listed) if kind == "migratedaway"}
    names = (set(guests) | away) - managed - ctx.in_flight
    changed: dict[str, GuestMemory] = {}
    for name in sorted(names):
        before = guests.get(name, GuestMemory())
        after = _observe_migration(name, before, ctx.listed.get(name), ctx)
        if after != before:
            changed[name] = after
    return changed


def _observe_migration(
    name: str, gm: GuestMemory, domain: Domain | None, ctx: _Pass
) -> GuestMemory:
    """Track `NAME--migratedaway`: seen, then gone with no NAME => migrated; a
    migrated guest seen running here again is back."""
    if gm.migrated and domain is not None and _is_running(domain):
        gm = replace(gm, migrated=False)
        ctx.event(EventKind.RETURNED, name)
    if name + MIGRATEDAWAY_SUFFIX in ctx.listed:
        return replace(gm, migrating_away=True)
    if not gm.migrating_away:
        return gm
    gm = replace(gm, migrating_away=False)
    if domain is None:
        gm = replace(gm, migrated=True)
        ctx.event(EventKind.MIGRATED, name)
    return gm


def _observe_leftover(name: str, gm: GuestMemory, domain: Domain | None, ctx: _Pass) -> GuestMemory:
    """After a failed create, take a paused domain listed under `name` for what the
    create left behind (LEFTOVER event); forget the leftover once its domid is no
    longer listed paused."""
    paused_domid = domain.domid if domain is not None and domain.paused else None
    if gm.leftover_unchecked:
        if paused_domid is not None:
            ctx.event(EventKind.LEFTOVER, name, _leftover_text(gm, paused_domid))
        return replace(gm, leftover_unchecked=False, leftover_domid=paused_domid)
    if gm.leftover_domid is not None and gm.leftover_domid != paused_domid:
        return replace(gm, leftover_domid=None)
    return gm


def _leftover_text(gm: GuestMemory, domid: int) -> str:
    """What the admin must know about the paused leftover `domid` of a failed create."""
    cause = f" ({gm.last_error})" if gm.last_error else ""
    return (
        f"paused leftover of a failed create{cause}, domid {domid}: not running;"
        f" destroy it with `xl destroy {domid}`"
    )


def _observe_listed(name: str, gm: GuestMemory, domain: Domain, ctx: _Pass) -> GuestMemory:
    """A listed guest: seen, not missing; a create that stayed up `stable_after`
    resets the failure count."""
    if not gm.seen_running or gm.missing_since is not None:
        # Copy only when something changes: this runs for every listed guest every pass.
        gm = replace(gm, seen_running=True, missing_since=None)
    if _is_running(domain) and gm.life_domid != domain.domid:
        gm = _new_life(name, gm, domain.domid, ctx)
    if gm.created_at is None or not _is_running(domain):
        return gm
    stable_at = gm.created_at + ctx.settings.stable_after
    if ctx.now < stable_at:
        ctx.wake(stable_at)
        return gm
    if gm.attempts > 0:
        ctx.event(EventKind.RECOVERED, name)
    return replace(gm, attempts=0, next_retry=None, created_at=None, last_failure_at=None)


def _new_life(name: str, gm: GuestMemory, domid: int, ctx: _Pass) -> GuestMemory:
    """A guest listed running with another domid than the life remembered: that
    life ended unseen (xl restarted it after a reboot or crash, or somebody
    recreated it); settle its end, then remember the new one."""
    if gm.life_domid is not None:
        end = exitpolicy.classify(gm, ctx.lives.get(name))
        gm = _settled(name, gm, end, ctx, keep_running=True)
    return replace(gm, life_domid=domid)


def _settled(
    name: str, gm: GuestMemory, end: exitpolicy.End, ctx: _Pass, *, keep_running: bool = False
) -> GuestMemory:
    """The memory with the end of its life recorded (EXITED event), a crash counted
    as a failure whatever the uptime, and the restart policy applied unless the
    guest runs again already (`keep_running`)."""
    stopped_before = gm.stopped
    settled = exitpolicy.settle(gm, end, ctx.now, ctx.settings, name)
    if keep_running:
        settled = replace(settled, stopped=stopped_before)
    ctx.exited(name, end)
    if settled.stopped is not None and settled.stopped != stopped_before:
        ctx.event(EventKind.STOPPED, name, settled.stopped, reason=str(end.reason))
    if not exitpolicy.is_failure(end):
        return settled
    settled = replace(settled, attempts=exitpolicy.attempts_before_crash(settled))
    settled, events = _count_failure(
        name, settled, f"guest {end.reason}", had_run=True, now=ctx.now, settings=ctx.settings
    )
    ctx.events.extend(replace(e, reason=str(end.reason)) for e in events)
    return settled


def _observe_missing(name: str, gm: GuestMemory, ctx: _Pass) -> GuestMemory:
    """A guest not listed under its name: start the grace period if it had been
    seen running, settle how its life ended, and count a failure if it crashed or
    died within `stable_after` of its create without a clean end."""
    if ctx.migrating(name) or gm.migrated:
        return replace(gm, created_at=None, created_hash=None, life_domid=None, intent=None)
    if gm.created_hash is not None:
        gm = replace(gm, created_hash=None)
    if gm.seen_running and gm.missing_since is None:
        gm = replace(gm, missing_since=ctx.now)
        ctx.event(EventKind.VANISHED, name)
    if gm.life_domid is not None:
        life = ctx.lives.get(name)
        # Not seen missing in this daemon's life: it went while we were down, and
        # the monitor had its time to write the final line.
        grace_end = (gm.missing_since or ctx.now) + ctx.settings.missing_grace
        grace_over = gm.missing_since is None or ctx.now >= grace_end
        if exitpolicy.waits_for_log(gm, life, grace_over=grace_over):
            ctx.wake(grace_end)
            return gm
        ours = gm.intent is not None  # we ended it (stop, restart, the drain): no failure
        end = exitpolicy.classify(gm, life)
        gm = _settled(name, gm, end, ctx)
        if ours or end.reason is not ExitReason.UNKNOWN:
            return replace(gm, created_at=None)
    if gm.created_at is None:
        return gm
    age = ctx.now - gm.created_at
    gm = replace(gm, created_at=None)
    if age >= ctx.settings.stable_after or _is_held(name, gm, ctx.settings):
        return gm
    error = f"died {age:.0f}s after create"
    ctx.event(EventKind.DIED_EARLY, name, error)
    gm, events = _count_failure(name, gm, error, had_run=True, now=ctx.now, settings=ctx.settings)
    ctx.events.extend(events)
    return gm


def _count_failure(
    name: str, gm: GuestMemory, error: str, *, had_run: bool, now: float, settings: PlannerSettings
) -> tuple[GuestMemory, list[Event]]:
    """Given a guest's memory and the reason of a failure, return the memory with
    one more failure and its retry scheduled, and the FAILING / GAVE_UP events."""
    attempts = gm.attempts + 1
    events: list[Event] = []
    if gm.attempts == 0 and had_run:
        events.append(Event(EventKind.FAILING, name, error))
    give_up_after = settings.backoff.give_up_after
    next_retry: float | None = now + retry_delay(name, attempts, settings.backoff)
    if give_up_after > 0 and attempts >= give_up_after:
        next_retry = None
        if gm.attempts < give_up_after:
            events.append(Event(EventKind.GAVE_UP, name, error))
    gm = replace(
        gm, attempts=attempts, last_error=error, next_retry=next_retry, last_failure_at=now
    )
    return gm, events


# --- judging: the state of each desired guest --------------------------------------------


def _judge(guest: DesiredGuest, gm: GuestMemory, ctx: _Pass) -> _Verdict:
    """Given a desired guest and its updated memory, return its state, or a
    verdict with state None when it is missing and may be created now."""
    name = guest.name
    domain = ctx.listed.get(name)
    if gm.migrated and ctx.pool is not None and name in ctx.pool.fresh:
        gm = replace(gm, migrated=False)  # freed and claimed anew: it runs nowhere
    standing = _standing(name, gm, ctx.in_flight, ctx.settings)
    if standing is not None:
        state, detail = standing
        return _Verdict(guest, gm, state, _join(detail, _running_detail(domain)))
    if domain is not None:
        return _listed_verdict(guest, gm, domain)
    zombie = _zombie(gm, ctx)
    if zombie is not None:
        detail = (
            f"blocked by zombie domid {zombie.domid} ({zombie.name}, {zombie.flags}): it still "
            "holds the guest's devices; no create until the hypervisor frees it"
        )
        return _Verdict(guest, gm, GuestPhase.DYING, detail)
    if ctx.migrating(name):
        return _Verdict(guest, gm, GuestPhase.MIGRATING, "live migration in progress")
    if gm.migrated:
        return _Verdict(guest, gm, GuestPhase.MIGRATED, "left by live migration; release to start")
    if name in ctx.withheld:
        return _Verdict(guest, gm, GuestPhase.WAITING, ctx.withheld[name])
    if _is_failed(gm, ctx.settings):
        detail = f"gave up after {gm.attempts} failures; retry or change the file"
        return _Verdict(guest, gm, GuestPhase.FAILED, detail)
    if gm.next_retry is not None and gm.next_retry > ctx.now:
        ctx.wake(gm.next_retry)
        return _Verdict(
            guest, gm, GuestPhase.BACKOFF, f"next try in {gm.next_retry - ctx.now:.0f}s"
        )
    if gm.missing_since is not None:
        grace_end = gm.missing_since + _missing_grace(ctx)
        if ctx.now < grace_end:
            ctx.wake(grace_end)
            return _Verdict(guest, gm, GuestPhase.GRACE, "missing; within missing_grace")
    return (
        _precondition_wait(guest, gm, ctx)
        or _pool_verdict(guest, gm, ctx.pool)
        or _Verdict(guest, gm, None)
    )


def _precondition_wait(guest: DesiredGuest, gm: GuestMemory, ctx: _Pass) -> _Verdict | None:
    """The WAITING verdict of a guest that could be created now but lacks a
    disk, kernel, ramdisk or bridge, with the wait's start remembered; the wait
    that reaches `precondition_timeout` is reported once. None: nothing missing."""
    missing = ctx.unmet.get(guest.name)
    if not missing:
        return None
    name = guest.name
    detail = "waiting for " + ", ".join(missing)
    if gm.waiting_since is None:
        gm = replace(gm, waiting_since=ctx.now)
        ctx.event(EventKind.WAITING, name, detail)
    since = gm.waiting_since if gm.waiting_since is not None else ctx.now
    deadline = since + ctx.settings.precondition_timeout
    if ctx.now < deadline:
        ctx.wake(deadline)
        return _Verdict(guest, gm, GuestPhase.WAITING, detail, awaiting=True)
    detail += f" for {ctx.now - since:.0f}s, over precondition_timeout"
    if not gm.waiting_reported:
        gm = replace(gm, waiting_reported=True)
        ctx.event(EventKind.WAITING_TOO_LONG, name, detail)
    return _Verdict(guest, gm, GuestPhase.WAITING, detail, awaiting=True, blocks=False)


def _ended_wait(verdict: _Verdict) -> _Verdict:
    """The verdict with a wait for preconditions forgotten once it is over."""
    gm = verdict.memory
    if verdict.awaiting or (gm.waiting_since is None and not gm.waiting_reported):
        return verdict
    return replace(verdict, memory=replace(gm, waiting_since=None, waiting_reported=False))


def _missing_grace(ctx: _Pass) -> float:
    """How long a guest seen running stays missing before it is recreated: in pool
    mode at least the gate's `vanish_grace`, time for another host to show it."""
    pool_grace = ctx.pool.vanish_grace if ctx.pool is not None else 0.0
    return max(ctx.settings.missing_grace, pool_grace)


def _pool_verdict(guest: DesiredGuest, gm: GuestMemory, gate: PoolGate | None) -> _Verdict | None:
    """In pool mode, the state of a missing guest this host may not create now
    (claim unconfirmed, held elsewhere, or not yet claimed); None: create it."""
    if gate is None:
        return None
    if not gate.confirmed:
        return _Verdict(guest, gm, GuestPhase.UNKNOWN, f"pool claim not confirmed: {gate.reason}")
    other = gate.elsewhere.get(guest.name)
    if other is not None:
        return _Verdict(guest, gm, GuestPhase.ELSEWHERE, f"pool host {other}")
    if guest.name not in gate.mine:
        return _Verdict(guest, gm, GuestPhase.WAITING, "waiting for its pool claim")
    return None


def _standing(
    name: str, gm: GuestMemory, in_flight: Collection[str], settings: PlannerSettings
) -> tuple[GuestPhase, str] | None:
    """The state of a desired guest that no listing can change, with its detail,
    in the one precedence every pass uses: a create in flight, then a hold, then
    a doubt about the hold; None when the listing decides."""
    if name in in_flight:
        return GuestPhase.CREATING, "xl create in flight"
    if _is_held(name, gm, settings):
        reason = gm.hold_reason if gm.held else "held by the config"
        return GuestPhase.HELD, reason or "held"
    if gm.uncertain is not None:
        return GuestPhase.UNCERTAIN, _doubt(name, gm)
    if gm.stopped is not None:
        return GuestPhase.STOPPED, gm.stopped
    return None


def _listed_verdict(guest: DesiredGuest, gm: GuestMemory, domain: Domain) -> _Verdict:
    """The state of a desired guest listed under its own name."""
    if gm.leftover_domid == domain.domid:
        return _Verdict(guest, gm, GuestPhase.LEFTOVER, _leftover_text(gm, domain.domid))
    if domain.dying:
        detail = f"dying ({domain.flags}); waiting: blocked by zombie domid {domain.domid}"
        return _Verdict(guest, gm, GuestPhase.DYING, detail)
    if domain.stale:
        detail = f"crashed or shut down and preserved ({domain.flags}); not touched"
        return _Verdict(guest, gm, GuestPhase.STALE, detail)
    if gm.created_hash is not None and gm.created_hash != guest.cfg_hash:
        detail = "file changed since the guest was created; restart it to apply"
        return _Verdict(guest, gm, GuestPhase.DRIFT, detail)
    return _Verdict(guest, gm, GuestPhase.RUNNING, f"domid {domain.domid}")


def _zombie(gm: GuestMemory, ctx: _Pass) -> Domain | None:
    """The domain of the guest's last life still listed under another name (xl
    shows `(null)` once its name is gone) or dying, or None: a zombie."""
    domids = {gm.life_domid, gm.ended_domid} - {None}
    if not domids:
        return None
    for domain in (*ctx.listed.values(), *ctx.nameless):
        if domain.domid in domids and (domain.dying or domain.name == NULL_NAME):
            return domain
    return None


def _is_running(domain: Domain) -> bool:
    """True for a listed domain that is neither dying nor stale."""
    return not domain.dying and not domain.stale


def _is_held(name: str, gm: GuestMemory, settings: PlannerSettings) -> bool:
    """True when the admin or the config holds `name`."""
    return gm.held or settings.override(name).hold


def _is_failed(gm: GuestMemory, settings: PlannerSettings) -> bool:
    """True when the guest reached `give_up_after` consecutive failures."""
    give_up_after = settings.backoff.give_up_after
    return give_up_after > 0 and gm.attempts >= give_up_after


def _doubt(name: str, gm: GuestMemory) -> str:
    """The detail of an uncertain guest: why, and what the admin can do."""
    return (
        f"state uncertain: {gm.uncertain}; `xenreconcile hold {name}` keeps it down, "
        f"`release {name}` lets it start"
    )


def _running_detail(domain: Domain | None) -> str | None:
    """A note for a guest whose state hides that it is listed, or None."""
    if domain is None:
        return None
    return f"listed as {domain.flags} (domid {domain.domid})"


def _join(*parts: str | None) -> str:
    """The non-empty parts joined with '; '."""
    return "; ".join(p for p in parts if p)


# --- scheduling: order, concurrency, start_delay -----------------------------------------

START_DELAY_DETAIL = (
    "start_delay between creates"  # a WAITING guest's detail while start_delay runs
)


def _schedule(
    verdicts: Sequence[_Verdict], memory: Memory, ctx: _Pass
) -> tuple[list[CreateAction], list[GuestStatus]]:
    """Given the verdicts of all desired guests, return the creates to start now
    and a status for every one of them."""
    settings = ctx.settings
    order = {v.guest.name: settings.override(v.guest.name).order for v in verdicts}
    candidates = sorted(
        (v for v in verdicts if v.state is None), key=lambda v: (order[v.guest.name], v.guest.name)
    )
    blocking = [order[v.guest.name] for v in verdicts if _blocks(v)]
    first_order = min(blocking + [order[v.guest.name] for v in candidates], default=0)
    free = max(0, settings.concurrency - len(ctx.in_flight))
    allowed = _start_delay_allowance(free, memory, ctx)

    creates: list[CreateAction] = []
    statuses = [_status(v, v.state, v.detail) for v in verdicts if v.state is not None]
    eligible = [v for v in candidates if order[v.guest.name] == first_order]
    for index, v in enumerate(eligible):
        if index < allowed:
            creates.append(CreateAction(v.guest.name, v.guest.path, v.guest.cfg_hash))
            started = GuestPhase.CREATING if ctx.starting else GuestPhase.PENDING
            statuses.append(_status(v, started, "create started"))
        elif index < free:
            ready_at = (ctx.now if creates else memory.last_create_at or ctx.now) + (
                settings.start_delay
            )
            ctx.wake(ready_at)
            statuses.append(_status(v, GuestPhase.WAITING, START_DELAY_DETAIL))
        else:
            statuses.append(_status(v, GuestPhase.PENDING, "waits for a free create slot"))
    first = sorted(
        v.guest.name
        for v in verdicts
        if order[v.guest.name] == first_order and (v.state is None or _blocks(v))
    )
    for v in candidates[len(eligible) :]:
        detail = f"waits for order {first_order}: {', '.join(first)}"
        statuses.append(_status(v, GuestPhase.WAITING, detail))
    return creates, statuses


def _blocks(v: _Verdict) -> bool:
    """True when the verdict keeps guests of a higher order waiting."""
    return v.state in BLOCKING_STATES and v.blocks


def _start_delay_allowance(free: int, memory: Memory, ctx: _Pass) -> int:
    """How many creates this pass may start given `free` slots and `start_delay`:
    at most one per pass, none before `last_create_at + start_delay`."""
    delay = ctx.settings.start_delay
    if delay <= 0:
        return free
    last = memory.last_create_at
    # Times are monotonic and loaded ones clamped to now (clock.from_epoch), so a
    # last create "in the future" cannot happen; if it did, it would not be waited for.
    if last is not None and last <= ctx.now < last + delay:
        return 0
    return min(free, 1)


def _status(v: _Verdict, state: GuestPhase, detail: str | None) -> GuestStatus:
    """The status row of a desired guest."""
    gm = v.memory
    return GuestStatus(
        name=v.guest.name,
        state=state,
        paths=(v.guest.path,),
        attempts=gm.attempts,
        next_retry=gm.next_retry,
        last_error=gm.last_error,
        detail=detail,
        last_exit=last_exit(gm),
    )


def last_exit(gm: GuestMemory) -> LastExit | None:
    """How the guest's last life ended, as remembered, or None."""
    if gm.exit_reason is None or gm.exit_at is None:
        return None
    return LastExit(gm.exit_reason, gm.exit_code, gm.exit_at)


# --- everything that is not a valid desired guest ----------------------------------------


def _side_statuses(
    desired: DesiredState, guests: dict[str, GuestMemory], listed: dict[str, Domain] | None
) -> list[GuestStatus]:
    """Statuses of duplicate names, invalid files, unmanaged domains (when the
    listing is trusted) and held or migrated names that have no file."""
    statuses = _duplicate_statuses(desired, guests, listed) + _invalid_statuses(
        desired, guests, listed
    )
    with_file = _names_with_file(desired)
    if listed is not None:
        statuses += _unmanaged_statuses(with_file, guests, listed)
    shown = with_file | set(listed or ())
    statuses += _fileless_statuses(guests, shown)
    return statuses


def _duplicate_statuses(
    desired: DesiredState, guests: dict[str, GuestMemory], listed: dict[str, Domain] | None
) -> list[GuestStatus]:
    """One DUPLICATE row per name carried by several files."""
    rows = []
    for name, paths in desired.duplicates.items():
        gm = guests.get(name, GuestMemory())
        detail = f"{len(paths)} files carry this name; none is acted on"
        rows.append(
            GuestStatus(
                name=name,
                state=GuestPhase.DUPLICATE,
                paths=tuple(sorted(paths)),
                attempts=gm.attempts,
                next_retry=gm.next_retry,
                last_error=gm.last_error,
                detail=_join(detail, _running_detail((listed or {}).get(name))),
            )
        )
    return rows


def _invalid_statuses(
    desired: DesiredState, guests: dict[str, GuestMemory], listed: dict[str, Domain] | None
) -> list[GuestStatus]:
    """One INVALID row per invalid file not already shown as a duplicate."""
    rows = [
        GuestStatus(
            name=g.name,
            state=GuestPhase.INVALID,
            paths=(g.path,),
            detail=f"the name {DOM0_NAME} is reserved for Dom0",
        )
        for g in desired.guests
        if g.name == DOM0_NAME
    ]
    for bad in desired.invalid:
        if bad.name is not None and bad.path in desired.duplicates.get(bad.name, ()):
            continue
        where = f"line {bad.line}" if bad.line is not None else None
        if where is not None and bad.column is not None:
            where += f", column {bad.column}"
        reason = f"{where}: {bad.reason}" if where else bad.reason
        running = _running_detail((listed or {}).get(bad.name)) if bad.name else None
        gm = guests.get(bad.name, GuestMemory()) if bad.name else GuestMemory()
        rows.append(
            GuestStatus(
                name=bad.name or bad.path,
                state=GuestPhase.INVALID,
                paths=(bad.path,),
                attempts=gm.attempts,
                last_error=gm.last_error,
                detail=_join(reason, running),
            )
        )
    return rows


def _unmanaged_statuses(
    with_file: set[str], guests: dict[str, GuestMemory], listed: dict[str, Domain]
) -> list[GuestStatus]:
    """One UNMANAGED row per listed domain that has no file (a migration name of a
    guest with a file is not unmanaged)."""
    rows = []
    for name, domain in listed.items():
        if name in with_file or _migration_base(name) in with_file:
            continue
        gm = guests.get(name, GuestMemory())
        detail = _join(f"no cfg file; {domain.flags} (domid {domain.domid})", _mark(name, gm))
        rows.append(GuestStatus(name=name, state=GuestPhase.UNMANAGED, detail=detail))
    return rows


def _fileless_statuses(guests: dict[str, GuestMemory], shown: set[str]) -> list[GuestStatus]:
    """HELD or MIGRATED rows for remembered names with no file and no domain."""
    rows = []
    for name, gm in guests.items():
        if name in shown or not (gm.held or gm.migrated or gm.uncertain is not None):
            continue
        if gm.held:
            state = GuestPhase.HELD
        elif gm.uncertain is not None:
            state = GuestPhase.UNCERTAIN
        else:
            state = GuestPhase.MIGRATED
        rows.append(
            GuestStatus(name=name, state=state, detail=_join("no cfg file", _mark(name, gm)))
        )
    return rows


def _mark(name: str, gm: GuestMemory) -> str | None:
    """A note on a hold, a doubt or a migrated mark kept for `name`, or None."""
    if gm.held:
        return _join("held", gm.hold_reason)
    if gm.uncertain is not None:
        return _doubt(name, gm)
    if gm.migrated:
        return "migrated"
    return None


def _names_with_file(desired: DesiredState) -> set[str]:
    """Every guest name some file in the directory carries (valid, duplicate or
    invalid with a readable name)."""
    names = {g.name for g in desired.guests} | set(desired.duplicates)
    return names | {bad.name for bad in desired.invalid if bad.name is not None}


def _migration_base(name: str) -> str | None:
    """`X` for `X--incoming` or `X--migratedaway`, else None."""
    base, kind = split_migration_name(name)
    return base if kind is not None else None


def _pruned(
    guests: dict[str, GuestMemory], desired: DesiredState, ctx: _Pass
) -> dict[str, GuestMemory]:
    """The per-guest memory worth keeping: everything about names with a file, a
    domain, a migration or a create in flight; for other names everything until
    `FORGET_AFTER` after `absent_at`, then only the hold and migrated mark."""
    present = _names_with_file(desired) | set(ctx.listed) | ctx.in_flight
    present |= {b for b in map(_migration_base, ctx.listed) if b is not None}
    kept: dict[str, GuestMemory] = {}
    for name, gm in sorted(guests.items()):
        entry = _kept_entry(gm, name in present, ctx.now)
        if entry is not None:
            kept[name] = entry
    return kept


def _kept_entry(gm: GuestMemory, present: bool, now: float) -> GuestMemory | None:
    """Given one name's memory and whether the name is present (file, domain,
    migration or create), return what is kept of it at `now`, or None."""
    if present:
        return gm if gm.absent_at is None else replace(gm, absent_at=None)
    marks = _marks_only(gm)
    if gm != marks:  # more than the marks: kept whole for a while
        if gm.absent_at is None:
            return replace(gm, absent_at=now)
        if now < gm.absent_at + FORGET_AFTER:
            return gm
    return marks if _has_marks(marks) else None


def _has_marks(gm: GuestMemory) -> bool:
    """True when the memory holds a mark kept forever: hold, migrated, doubt, stopped."""
    return gm.held or gm.migrated or gm.uncertain is not None or gm.stopped is not None


def _marks_only(gm: GuestMemory) -> GuestMemory:
    """The part of a guest's memory that is kept forever (and outlives a Dom0
    reboot): its hold, its migrated mark and the doubt about them."""
    return GuestMemory(
        held=gm.held,
        hold_reason=gm.hold_reason,
        migrated=gm.migrated,
        uncertain=gm.uncertain,
        stopped=gm.stopped,
        exit_reason=gm.exit_reason,
        exit_code=gm.exit_code,
        exit_at=gm.exit_at,
    )


def _sorted(statuses: Iterable[GuestStatus]) -> tuple[GuestStatus, ...]:
    """Statuses sorted by name (then file, for invalid files sharing a name)."""
    return tuple(sorted(statuses, key=lambda s: (s.name, s.paths)))


# --- passes without a trusted listing or without a usable directory ---------------------


def _untrusted_plan(
    desired: DesiredState, memory: Memory, in_flight: frozenset[str], settings: PlannerSettings
) -> Plan:
    """The listing failed: no creates, memory unchanged, desired guests UNKNOWN
    (held ones HELD: that does not depend on the listing)."""
    statuses: list[GuestStatus] = []
    for guest in _managed_guests(desired):
        gm = memory.guest(guest.name)
        standing = _standing(guest.name, gm, in_flight, settings)
        state, detail = standing or (GuestPhase.UNKNOWN, "toolstack listing failed")
        statuses.append(_status(_Verdict(guest, gm, None), state, detail))
    statuses += _side_statuses(desired, memory.guests, None)
    return Plan(creates=(), statuses=_sorted(statuses), memory=memory, trusted=False)


def _unusable_dir_plan(error: str, memory: Memory, ctx: _Pass) -> Plan:
    """The guests directory cannot be used: nothing desired, nothing created,
    memory unchanged (a passing problem must not wipe backoff or holds) but for
    the live migrations the listing shows; every listed domain is shown as
    unmanaged with the reason."""
    listed = ctx.listed
    guests = {**memory.guests, **_observe_without_file(memory.guests, set(), ctx)}
    statuses = [
        GuestStatus(
            name=name,
            state=GuestPhase.UNMANAGED,
            detail=f"guests directory unusable: {error}; {domain.flags} (domid {domain.domid})",
        )
        for name, domain in listed.items()
    ]
    statuses += _fileless_statuses(guests, set(listed))
    new_memory = memory if guests == memory.guests else replace(memory, guests=guests)
    return Plan(creates=(), statuses=_sorted(statuses), memory=new_memory, events=tuple(ctx.events))


# --- folding results and admin requests into memory --------------------------------------


def record_create(
    memory: Memory,
    action: CreateAction,
    result: CreateResult,
    now: float,
    settings: PlannerSettings,
) -> tuple[Memory, tuple[Event, ...]]:
    """Given the memory, a create and how it ended at `now`, return the memory with
    the result folded in and the FAILING / GAVE_UP events it caused. A failure of
    content the file no longer has is not counted: the new content is tried
    `backoff.initial` after it. Any failure may have left a paused domain behind:
    the next trusted listing tells (`leftover_unchecked`)."""
    gm = memory.guest(action.name)
    if result.ok:
        gm = replace(
            gm,
            created_at=now,
            created_hash=action.cfg_hash,
            next_retry=None,
            leftover_unchecked=False,
            leftover_domid=None,
        )
        return _with_guest(memory, action.name, gm), ()
    gm = replace(gm, leftover_unchecked=True)
    if gm.cfg_hash is not None and gm.cfg_hash != action.cfg_hash:
        spaced = now + settings.backoff.initial
        next_retry = spaced if gm.next_retry is None else max(gm.next_retry, spaced)
        gm = replace(gm, last_error=result.error, last_failure_at=now, next_retry=next_retry)
        return _with_guest(memory, action.name, gm), ()
    had_run = gm.seen_running or gm.created_at is not None
    gm, events = _count_failure(
        action.name, gm, result.error, had_run=had_run, now=now, settings=settings
    )
    return _with_guest(memory, action.name, gm), tuple(events)


def hold(memory: Memory, name: str, reason: str | None, now: float) -> Memory:
    """Given the memory, a guest name, a reason and the time, return the memory
    with the guest held (never created until released). `now` is part of the
    uniform admin API; GuestMemory has no field for when a hold began."""
    del now
    gm = replace(memory.guest(name), held=True, hold_reason=reason, uncertain=None)
    return _with_guest(memory, name, gm)


def release(memory: Memory, name: str) -> Memory:
    """Return the memory with the hold, the migrated mark and the doubt about
    them (`uncertain`) of `name` cleared."""
    gm = replace(memory.guest(name), held=False, hold_reason=None, migrated=False, uncertain=None)
    return _with_guest(memory, name, gm)


def accept_state(memory: Memory) -> Memory:
    """Return the memory with every doubt cleared: the holds and migrated marks
    recovered from a damaged state file are taken as they are."""
    guests = {name: replace(gm, uncertain=None) for name, gm in memory.guests.items()}
    return replace(memory, guests=guests, uncertain=None)


def stop(memory: Memory, name: str) -> Memory:
    """Return the memory with `name` stopped by the admin: kept down whatever its
    restart policy, and the end of its running life taken as ours (`stop`)."""
    gm = memory.guest(name)
    intent = exitpolicy.STOP if gm.life_domid is not None else None
    gm = replace(gm, stopped=exitpolicy.STOPPED_BY_ADMIN, intent=intent)
    return _with_guest(memory, name, gm)


def start(memory: Memory, name: str) -> Memory:
    """Return the memory with `name` allowed to run again and created at the next
    pass: not stopped, no intent of ours, no backoff (as `retry`)."""
    gm = replace(memory.guest(name), stopped=None, intent=None)
    return retry(_with_guest(memory, name, gm), name)


def intend(memory: Memory, name: str, intent: str) -> Memory:
    """Return the memory with our own `intent` ("restart", or "host-shutdown" for
    the drain) for the end of the running life of `name`: it decides how that end
    is classified and whether the guest runs again (`exitpolicy`)."""
    gm = memory.guest(name)
    stopped = None if intent == exitpolicy.RESTART else gm.stopped
    known = intent if gm.life_domid is not None else gm.intent
    return _with_guest(memory, name, replace(gm, intent=known, stopped=stopped))


def retry(memory: Memory, name: str) -> Memory:
    """Return the memory with the failure count and backoff of `name` cleared, so
    that the next pass creates it at once (also when it had given up)."""
    gm = replace(memory.guest(name), attempts=0, next_retry=None, last_failure_at=None)
    return _with_guest(memory, name, gm)


def new_boot(memory: Memory, boot_time: float | None) -> Memory:
    """Given the memory and the current Dom0 boot time, return the memory of a new
    boot: counters, backoff, create times and sightings cleared; holds, migrated
    marks and doubts about them kept. A guest that was migrating away when Dom0 went down may
    run on the other host now, so it is marked migrated (not created until released)."""
    guests: dict[str, GuestMemory] = {}
    for name, gm in sorted(memory.guests.items()):
        migrated = gm.migrated or gm.migrating_away
        kept = _marks_only(replace(gm, migrated=migrated))
        if gm.life_domid is not None:
            # Its end is read from xl's log at the first pass (exitpolicy.classify).
            kept = replace(kept, life_domid=gm.life_domid, life_before_boot=True, intent=gm.intent)
        if _has_marks(kept) or kept.life_domid is not None:
            guests[name] = kept
    return replace(memory, guests=guests, last_create_at=None, boot_time=boot_time)


def forget_runtime(memory: Memory) -> Memory:
    """Return the memory as a freshly started daemon must see it: no guest has been
    seen running in this daemon's life yet, so none is inside a grace period."""
    guests = {
        name: replace(gm, seen_running=False, missing_since=None)
        for name, gm in memory.guests.items()
    }
    return replace(memory, guests=guests)


def _with_guest(memory: Memory, name: str, gm: GuestMemory) -> Memory:
    """The memory with the entry of `name` replaced."""
    return replace(memory, guests={**memory.guests, name: gm})
