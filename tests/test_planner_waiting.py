"""The planner's *waiting* phase: a guest whose disk, kernel or bridge is missing."""

from __future__ import annotations

from xenreconcile.models import (
    DesiredGuest,
    DesiredState,
    Domain,
    EventKind,
    GuestMemory,
    GuestOverride,
    GuestPhase,
    Memory,
    Plan,
    PlannerSettings,
)
from xenreconcile.planner import plan

NOW = 100_000.0
TIMEOUT = 600.0
DISK = "/dev/zvol/tank/xendisk0"


def desired(*names: str) -> DesiredState:
    """A scan with these valid guests."""
    return DesiredState(guests=tuple(DesiredGuest(n, f"/g/{n}.cfg", f"h-{n}") for n in names))


def listing(*names: str) -> tuple[Domain, ...]:
    """Domain-0 plus these guests running."""
    rows = [Domain("Domain-0", 0, 1024, 1, "r-----", 1.0)]
    rows += [Domain(n, 5 + i, 128, 1, "-b----", 1.0) for i, n in enumerate(names)]
    return tuple(rows)


def settings(**orders: int) -> PlannerSettings:
    """Default settings but for per-guest orders."""
    return PlannerSettings(
        guests={n: GuestOverride(order=o) for n, o in orders.items()},
        precondition_timeout=TIMEOUT,
    )


def run(
    memory: Memory,
    now: float,
    unmet: dict[str, tuple[str, ...]],
    names: tuple[str, ...] = ("web",),
    **orders: int,
) -> Plan:
    """One pass at `now` with nothing listed but Dom0."""
    return plan(desired(*names), listing(), memory, (), now, settings(**orders), unmet=unmet)


def state_of(p: Plan, name: str) -> tuple[GuestPhase, str | None]:
    """The state and detail `p` gives `name`."""
    row = next(s for s in p.statuses if s.name == name)
    return row.state, row.detail


def test_missing_disk_waits_without_a_create_or_failure() -> None:
    """No create, no failure counted, no backoff; the log hears of the wait once."""
    p = run(Memory(), NOW, {"web": (DISK,)})
    assert p.creates == ()
    assert state_of(p, "web") == (GuestPhase.WAITING, f"waiting for {DISK}")
    web = p.memory.guest("web")
    assert (web.attempts, web.next_retry, web.last_failure_at) == (0, None, None)
    assert web.waiting_since == NOW
    assert [(e.kind, e.name) for e in p.events] == [(EventKind.WAITING, "web")]
    assert p.wake_at == NOW + TIMEOUT
    again = run(p.memory, NOW + 5, {"web": (DISK,)})
    assert again.events == ()
    assert again.memory.guest("web").waiting_since == NOW


def test_created_once_the_disk_appears() -> None:
    """The first pass that finds everything present creates it; the wait is forgotten."""
    waiting = run(Memory(), NOW, {"web": (DISK, "bridge bridge0")}).memory
    p = run(waiting, NOW + 20, {})
    assert [c.name for c in p.creates] == ["web"]
    web = p.memory.guest("web")
    assert (web.attempts, web.waiting_since, web.waiting_reported) == (0, None, False)


def test_timeout_reported_once() -> None:
    """After precondition_timeout the wait is a problem, notified once, still no create."""
    first = run(Memory(), NOW, {"web": (DISK,)}).memory
    late = run(first, NOW + TIMEOUT, {"web": (DISK,)})
    assert late.creates == ()
    state, detail = state_of(late, "web")
    assert state is GuestPhase.WAITING
    assert detail == f"waiting for {DISK} for 600s, over precondition_timeout"
    assert [(e.kind, e.name) for e in late.events] == [(EventKind.WAITING_TOO_LONG, "web")]
    assert late.memory.guest("web").attempts == 0
    later = run(late.memory, NOW + TIMEOUT + 60, {"web": (DISK,)})
    assert later.events == ()
    assert later.memory.guest("web").waiting_reported


def test_a_new_wait_is_reported_again() -> None:
    """A guest that got its disk and lost it again waits (and times out) anew."""
    reported = run(run(Memory(), NOW, {"web": (DISK,)}).memory, NOW + TIMEOUT, {"web": (DISK,)})
    listed = plan(desired("web"), listing("web"), reported.memory, (), NOW + 700, settings())
    assert listed.memory.guest("web").waiting_since is None
    assert not listed.memory.guest("web").waiting_reported


def test_waiting_blocks_higher_orders_until_the_timeout() -> None:
    """A lower-order guest waiting for its disk keeps the next group down, but only
    until precondition_timeout: then it counts as having had its try."""
    names = ("db", "web")
    unmet = {"db": (DISK,)}
    first = run(Memory(), NOW, unmet, names, db=1, web=2)
    assert first.creates == ()
    assert state_of(first, "web") == (GuestPhase.WAITING, "waits for order 1: db")
    late = run(first.memory, NOW + TIMEOUT, unmet, names, db=1, web=2)
    assert [c.name for c in late.creates] == ["web"]


def test_running_guest_is_not_waiting() -> None:
    """A listed guest is running whatever its needs: nothing is ever done to it."""
    p = plan(desired("web"), listing("web"), Memory(), (), NOW, settings(), unmet={"web": (DISK,)})
    assert state_of(p, "web")[0] is GuestPhase.RUNNING
    assert p.events == ()


def test_backoff_comes_before_waiting() -> None:
    """A guest in backoff shows its backoff; the wait starts when it may be tried."""
    memory = Memory(guests={"web": GuestMemory(attempts=1, next_retry=NOW + 30, cfg_hash="h-web")})
    p = run(memory, NOW, {"web": (DISK,)})
    assert state_of(p, "web")[0] is GuestPhase.BACKOFF
    assert p.memory.guest("web").waiting_since is None
