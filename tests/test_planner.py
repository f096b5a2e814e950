"""The planner's rules, one table-driven case each, with plain values and a fixed `now`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from xenreconcile.backoff import retry_delay
from xenreconcile.models import (
    Backoff,
    CreateAction,
    CreateResult,
    DesiredGuest,
    DesiredState,
    Domain,
    EventKind,
    GuestMemory,
    GuestOverride,
    GuestPhase,
    InvalidFile,
    Memory,
    Plan,
    PlannerSettings,
)
from xenreconcile.planner import (
    FORGET_AFTER,
    forget_runtime,
    hold,
    new_boot,
    plan,
    record_create,
    release,
    retry,
)

NOW = 100_000.0
S = GuestPhase
E = EventKind

# --- builders ------------------------------------------------------------------------------


def guest(name: str, cfg_hash: str | None = None) -> DesiredGuest:
    """A valid desired guest with a file named after it."""
    return DesiredGuest(name, f"/guests/{name}.cfg", cfg_hash or f"hash-{name}")


def desired(*names: str, **kwargs: Any) -> DesiredState:
    """A directory scan with these valid guests (plus any DesiredState field)."""
    return DesiredState(guests=tuple(guest(n) for n in names), **kwargs)


def dom(name: str, state: str = "-b----", domid: int = 7) -> Domain:
    """One `xl list` row."""
    return Domain(name=name, domid=domid, mem=512, vcpus=1, flags=state, time=1.0)


def listing(*rows: str | Domain) -> tuple[Domain, ...]:
    """A trusted listing: Domain-0 plus running guests (names) or given rows."""
    domains = [r if isinstance(r, Domain) else dom(r) for r in rows]
    return (dom("Domain-0", "r-----", 0), *domains)


def mem(last_create_at: float | None = None, **guests: GuestMemory) -> Memory:
    """A memory with these guest entries."""
    return Memory(guests=dict(guests), last_create_at=last_create_at)


def gm(name: str = "", **fields: Any) -> GuestMemory:
    """A guest memory whose cfg_hash matches `guest(name)` unless told otherwise."""
    if name and "cfg_hash" not in fields:
        fields["cfg_hash"] = f"hash-{name}"
    return GuestMemory(**fields)


def settings(**kwargs: Any) -> PlannerSettings:
    """Planner settings; `orders` and `held` build the per-guest overrides."""
    orders: Mapping[str, int] = kwargs.pop("orders", {})
    held: Iterable[str] = kwargs.pop("held", ())
    names = set(orders) | set(held)
    overrides = {n: GuestOverride(order=orders.get(n, 50), hold=n in held) for n in names}
    return PlannerSettings(guests=overrides, **kwargs)


ANY = object()


@dataclass(frozen=True)
class Case:
    """One rule: the input of `plan` and what must come out."""

    desired: DesiredState
    listing: tuple[Domain, ...] | None = field(default_factory=listing)
    memory: Memory = field(default_factory=Memory)
    in_flight: frozenset[str] = frozenset()
    settings: PlannerSettings = field(default_factory=PlannerSettings)
    now: float = NOW
    creates: tuple[str, ...] = ()
    states: Mapping[str, GuestPhase] = field(default_factory=dict)
    events: tuple[tuple[EventKind, str], ...] = ()
    memory_after: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    wake_at: object = ANY


def run(case: Case) -> Plan:
    """Plan the case."""
    return plan(case.desired, case.listing, case.memory, case.in_flight, case.now, case.settings)


def check(case: Case) -> Plan:
    """Plan the case and assert every expectation it states."""
    result = run(case)
    assert [c.name for c in result.creates] == list(case.creates)
    states = {s.name: s.state for s in result.statuses}
    for name, state in case.states.items():
        assert states.get(name) == state, f"{name}: {states.get(name)} != {state}"
    assert [(e.kind, e.name) for e in result.events] == list(case.events)
    for name, fields in case.memory_after.items():
        after = result.memory.guest(name)
        for key, value in fields.items():
            assert getattr(after, key) == value, f"{name}.{key}"
    if case.wake_at is not ANY:
        assert result.wake_at == case.wake_at
    return result


def cases(table: Mapping[str, Case]) -> pytest.MarkDecorator:
    """pytest parameters for a table of named cases."""
    return pytest.mark.parametrize("case", list(table.values()), ids=list(table))


# --- when a missing guest is created ------------------------------------------------------

CREATE_OR_NOT = {
    "missing-is-created": Case(desired("web"), creates=("web",), states={"web": S.PENDING}),
    "listed-is-not-created": Case(desired("web"), listing("web"), states={"web": S.RUNNING}),
    "held-by-admin": Case(
        desired("web"), memory=mem(web=gm("web", held=True)), states={"web": S.HELD}
    ),
    "held-by-config": Case(desired("web"), settings=settings(held=["web"]), states={"web": S.HELD}),
    "migrated": Case(
        desired("web"), memory=mem(web=gm("web", migrated=True)), states={"web": S.MIGRATED}
    ),
    "incoming-listed": Case(desired("web"), listing("web--incoming"), states={"web": S.MIGRATING}),
    "migratedaway-listed": Case(
        desired("web"),
        listing("web--migratedaway"),
        states={"web": S.MIGRATING},
        memory_after={"web": {"migrating_away": True}},
    ),
    "in-flight": Case(desired("web"), in_flight=frozenset({"web"}), states={"web": S.CREATING}),
    "in-flight-half-built-domain-is-not-seen-running": Case(
        desired("web"),
        listing(dom("web", "--p---")),
        in_flight=frozenset({"web"}),
        states={"web": S.CREATING},
        memory_after={"web": {"seen_running": False}},
    ),
    "in-flight-domain-gone-again-is-no-vanish": Case(
        desired("web"),
        memory=mem(web=gm("web", seen_running=True)),
        in_flight=frozenset({"web"}),
        states={"web": S.CREATING},
        memory_after={"web": {"missing_since": None}},
    ),
    "in-backoff": Case(
        desired("web"),
        memory=mem(web=gm("web", attempts=1, next_retry=NOW + 5)),
        states={"web": S.BACKOFF},
    ),
    "backoff-elapsed": Case(
        desired("web"),
        memory=mem(web=gm("web", attempts=1, next_retry=NOW)),
        creates=("web",),
    ),
    "failed": Case(
        desired("web"),
        memory=mem(web=gm("web", attempts=3)),
        settings=settings(backoff=Backoff(give_up_after=3)),
        states={"web": S.FAILED},
    ),
    "give-up-zero-means-never": Case(
        desired("web"), memory=mem(web=gm("web", attempts=50)), creates=("web",)
    ),
    "in-grace": Case(
        desired("web"),
        memory=mem(web=gm("web", seen_running=True, missing_since=NOW - 1)),
        states={"web": S.GRACE},
    ),
}


@cases(CREATE_OR_NOT)
def test_create_or_not(case: Case) -> None:
    check(case)


def test_create_action_carries_path_and_hash() -> None:
    result = run(Case(desired("web")))
    assert result.creates == (CreateAction("web", "/guests/web.cfg", "hash-web"),)


# --- concurrency and order ------------------------------------------------------------------

ORDER_AND_SLOTS = {
    "concurrency-caps-creates-by-name": Case(
        desired("d", "c", "b", "a"),
        settings=settings(concurrency=2),
        creates=("a", "b"),
        states={"c": S.PENDING, "d": S.PENDING},
    ),
    "in-flight-uses-slots": Case(
        desired("a", "b", "c"),
        in_flight=frozenset({"x", "y"}),
        settings=settings(concurrency=3),
        creates=("a",),
        states={"b": S.PENDING},
    ),
    "no-free-slot": Case(
        desired("a"), in_flight=frozenset({"x"}), settings=settings(concurrency=1)
    ),
    "lower-order-first": Case(
        desired("a", "b"),
        settings=settings(orders={"b": 10}),
        creates=("b",),
        states={"a": S.WAITING},
    ),
    "waits-for-lower-order-creating": Case(
        desired("a", "b"),
        in_flight=frozenset({"b"}),
        settings=settings(orders={"b": 10}),
        states={"a": S.WAITING, "b": S.CREATING},
    ),
    "waits-for-lower-order-in-grace": Case(
        desired("a", "b"),
        memory=mem(b=gm("b", seen_running=True, missing_since=NOW - 1)),
        settings=settings(orders={"b": 10}),
        states={"a": S.WAITING, "b": S.GRACE},
    ),
    "waits-for-lower-order-waiting": Case(
        desired("a", "b", "c"),
        in_flight=frozenset({"c"}),
        settings=settings(orders={"c": 1, "b": 10}),
        states={"a": S.WAITING, "b": S.WAITING},
    ),
    "waits-for-lower-order-without-slot": Case(
        desired("a", "b"),
        in_flight=frozenset({"x"}),
        settings=settings(concurrency=1, orders={"b": 10}),
        states={"a": S.WAITING, "b": S.PENDING},
    ),
    "lower-order-running-does-not-block": Case(
        desired("a", "b"), listing("b"), settings=settings(orders={"b": 10}), creates=("a",)
    ),
    "lower-order-held-does-not-block": Case(
        desired("a", "b"), settings=settings(orders={"b": 10}, held=["b"]), creates=("a",)
    ),
    "lower-order-in-backoff-does-not-block": Case(
        desired("a", "b"),
        memory=mem(b=gm("b", attempts=2, next_retry=NOW + 60)),
        settings=settings(orders={"b": 10}),
        creates=("a",),
    ),
    "lower-order-failed-does-not-block": Case(
        desired("a", "b"),
        memory=mem(b=gm("b", attempts=2)),
        settings=settings(orders={"b": 10}, backoff=Backoff(give_up_after=2)),
        creates=("a",),
    ),
    "lower-order-stale-or-dying-does-not-block": Case(
        desired("a", "b", "c"),
        listing(dom("b", "---s--"), dom("c", "----d-")),
        settings=settings(orders={"b": 10, "c": 10}),
        creates=("a",),
        states={"b": S.STALE, "c": S.DYING},
    ),
    "lower-order-migrated-does-not-block": Case(
        desired("a", "b"),
        memory=mem(b=gm("b", migrated=True)),
        settings=settings(orders={"b": 10}),
        creates=("a",),
    ),
    "lower-order-duplicate-or-invalid-does-not-block": Case(
        desired(
            "a",
            duplicates={"b": ("/guests/b1.cfg", "/guests/b2.cfg")},
            invalid=(InvalidFile("/guests/c.cfg", "bad value", name="c", line=3),),
        ),
        settings=settings(orders={"b": 10, "c": 10}),
        creates=("a",),
    ),
    "same-order-created-together": Case(
        desired("a", "b"), settings=settings(orders={"a": 10, "b": 10}), creates=("a", "b")
    ),
}


@cases(ORDER_AND_SLOTS)
def test_order_and_concurrency(case: Case) -> None:
    check(case)


# --- start_delay -----------------------------------------------------------------------------

START_DELAY = {
    "one-create-per-pass": Case(
        desired("a", "b"),
        settings=settings(start_delay=3.0),
        creates=("a",),
        states={"b": S.WAITING},
        wake_at=NOW + 3.0,
    ),
    "none-before-delay-elapsed": Case(
        desired("a"),
        memory=mem(last_create_at=NOW - 1.0),
        settings=settings(start_delay=3.0),
        states={"a": S.WAITING},
        wake_at=NOW + 2.0,
    ),
    "create-once-delay-elapsed": Case(
        desired("a"),
        memory=mem(last_create_at=NOW - 3.0),
        settings=settings(start_delay=3.0),
        creates=("a",),
        wake_at=None,
    ),
    "clock-went-back-does-not-stall": Case(
        desired("a"),
        memory=mem(last_create_at=NOW + 500.0),
        settings=settings(start_delay=3.0),
        creates=("a",),
    ),
}


@cases(START_DELAY)
def test_start_delay(case: Case) -> None:
    check(case)


def test_last_create_at_is_set_only_when_creating() -> None:
    created = run(Case(desired("a"), memory=mem(last_create_at=5.0)))
    idle = run(Case(desired("a"), listing("a"), memory=mem(last_create_at=5.0)))
    assert created.memory.last_create_at == NOW
    assert idle.memory.last_create_at == 5.0


# --- missing_grace -----------------------------------------------------------------------------

GRACE = {
    "first-sight-missing-starts-grace": Case(
        desired("web"),
        memory=mem(web=gm("web", seen_running=True)),
        states={"web": S.GRACE},
        events=((E.VANISHED, "web"),),
        memory_after={"web": {"missing_since": NOW}},
        wake_at=NOW + 5.0,
    ),
    "still-in-grace-no-second-vanished": Case(
        desired("web"),
        memory=mem(web=gm("web", seen_running=True, missing_since=NOW - 4.9)),
        states={"web": S.GRACE},
        memory_after={"web": {"missing_since": NOW - 4.9}},
    ),
    "grace-over-created": Case(
        desired("web"),
        memory=mem(web=gm("web", seen_running=True, missing_since=NOW - 5.0)),
        creates=("web",),
    ),
    "never-seen-created-at-once": Case(desired("web"), creates=("web",)),
    "zero-grace-created-at-once": Case(
        desired("web"),
        memory=mem(web=gm("web", seen_running=True)),
        settings=settings(missing_grace=0.0),
        creates=("web",),
        events=((E.VANISHED, "web"),),
    ),
    "listed-marks-seen-and-clears-missing": Case(
        desired("web"),
        listing("web"),
        memory=mem(web=gm("web", missing_since=NOW - 2)),
        memory_after={"web": {"seen_running": True, "missing_since": None}},
    ),
}


@cases(GRACE)
def test_missing_grace(case: Case) -> None:
    check(case)


# --- failure accounting --------------------------------------------------------------------

FAILURES = {
    "died-early-is-a-failure": Case(
        desired("web"),
        memory=mem(web=gm("web", created_at=NOW - 10, seen_running=True)),
        states={"web": S.BACKOFF},
        events=((E.VANISHED, "web"), (E.DIED_EARLY, "web"), (E.FAILING, "web")),
        memory_after={
            "web": {
                "attempts": 1,
                "created_at": None,
                "last_error": "died 10s after create",
                "next_retry": NOW + retry_delay("web", 1, Backoff()),
            }
        },
    ),
    "died-early-again-is-not-failing-again": Case(
        desired("web"),
        memory=mem(web=gm("web", created_at=NOW - 10, attempts=2)),
        events=((E.DIED_EARLY, "web"),),
        memory_after={"web": {"attempts": 3}},
    ),
    "died-early-unseen-first-failure-is-failing": Case(
        desired("web"),
        memory=mem(web=gm("web", created_at=NOW - 1)),
        events=((E.DIED_EARLY, "web"), (E.FAILING, "web")),
        memory_after={"web": {"attempts": 1}},
    ),
    "died-after-stable-is-no-failure": Case(
        desired("web"),
        memory=mem(web=gm("web", created_at=NOW - 60, attempts=2)),
        creates=("web",),
        memory_after={"web": {"attempts": 2, "created_at": None}},
    ),
    "stable-resets-and-recovers": Case(
        desired("web"),
        listing("web"),
        memory=mem(web=gm("web", created_at=NOW - 60, attempts=2, next_retry=NOW - 100)),
        events=((E.RECOVERED, "web"),),
        memory_after={"web": {"attempts": 0, "created_at": None, "next_retry": None}},
    ),
    "stable-without-failures-no-event": Case(
        desired("web"),
        listing("web"),
        memory=mem(web=gm("web", created_at=NOW - 60)),
        memory_after={"web": {"created_at": None}},
    ),
    "running-inside-stable-window-waits": Case(
        desired("web"),
        listing("web"),
        memory=mem(web=gm("web", created_at=NOW - 20, attempts=2)),
        memory_after={"web": {"attempts": 2, "created_at": NOW - 20}},
        wake_at=NOW + 40,
    ),
    "dying-inside-window-not-counted-yet": Case(
        desired("web"),
        listing(dom("web", "----d-")),
        memory=mem(web=gm("web", created_at=NOW - 20)),
        memory_after={"web": {"attempts": 0, "created_at": NOW - 20}},
    ),
    "reaching-give-up-fails": Case(
        desired("web"),
        memory=mem(web=gm("web", created_at=NOW - 10, attempts=2)),
        settings=settings(backoff=Backoff(give_up_after=3)),
        states={"web": S.FAILED},
        events=((E.DIED_EARLY, "web"), (E.GAVE_UP, "web")),
        memory_after={"web": {"attempts": 3, "next_retry": None}},
    ),
    "held-guest-dying-early-is-no-failure": Case(
        desired("web"),
        memory=mem(web=gm("web", created_at=NOW - 10, held=True)),
        memory_after={"web": {"attempts": 0, "created_at": None}},
    ),
    "migrating-guest-is-no-failure": Case(
        desired("web"),
        listing("web--migratedaway"),
        memory=mem(web=gm("web", created_at=NOW - 10, seen_running=True)),
        memory_after={"web": {"attempts": 0, "created_at": None, "missing_since": None}},
    ),
}


@cases(FAILURES)
def test_failure_accounting(case: Case) -> None:
    check(case)


# --- file changes ----------------------------------------------------------------------------

FILE_CHANGES = {
    "changed-file-resets-backoff": Case(
        desired("web"),
        memory=mem(web=gm(cfg_hash="old", attempts=4, next_retry=NOW + 300, last_error="boom")),
        creates=("web",),
        events=((E.FILE_CHANGED, "web"),),
        memory_after={
            "web": {"attempts": 0, "next_retry": None, "last_error": None, "cfg_hash": "hash-web"}
        },
    ),
    "changed-file-unfails": Case(
        desired("web"),
        memory=mem(web=gm(cfg_hash="old", attempts=3)),
        settings=settings(backoff=Backoff(give_up_after=3)),
        creates=("web",),
        events=((E.FILE_CHANGED, "web"),),
    ),
    "first-hash-is-no-change": Case(
        desired("web"),
        memory=mem(web=gm(attempts=1, next_retry=NOW + 300)),
        states={"web": S.BACKOFF},
        memory_after={"web": {"cfg_hash": "hash-web", "attempts": 1}},
    ),
    "running-with-changed-file-is-drift": Case(
        desired("web"),
        listing("web"),
        memory=mem(web=gm("web", created_hash="old")),
        states={"web": S.DRIFT},
    ),
    "running-with-created-file-is-running": Case(
        desired("web"),
        listing("web"),
        memory=mem(web=gm("web", created_hash="hash-web")),
        states={"web": S.RUNNING},
    ),
    "created-hash-forgotten-when-missing": Case(
        desired("web"),
        memory=mem(web=gm("web", created_hash="old")),
        creates=("web",),
        memory_after={"web": {"created_hash": None}},
    ),
    "changed-file-soon-after-a-failure-waits-backoff-initial": Case(
        desired("web"),
        memory=mem(
            web=gm(cfg_hash="old", attempts=3, next_retry=NOW + 70, last_failure_at=NOW - 4)
        ),
        states={"web": S.BACKOFF},
        events=((E.FILE_CHANGED, "web"),),
        memory_after={"web": {"attempts": 0, "next_retry": NOW + 6, "last_failure_at": NOW - 4}},
        wake_at=NOW + 6,
    ),
    "changed-file-backoff-initial-after-a-failure-is-tried-at-once": Case(
        desired("web"),
        memory=mem(
            web=gm(cfg_hash="old", attempts=3, next_retry=NOW + 70, last_failure_at=NOW - 10)
        ),
        creates=("web",),
        events=((E.FILE_CHANGED, "web"),),
        memory_after={"web": {"attempts": 0, "next_retry": None}},
    ),
    "changed-failed-guest-soon-after-its-failure-waits": Case(
        desired("web"),
        memory=mem(web=gm(cfg_hash="old", attempts=3, last_failure_at=NOW - 1)),
        settings=settings(backoff=Backoff(give_up_after=3)),
        states={"web": S.BACKOFF},
        events=((E.FILE_CHANGED, "web"),),
    ),
    "stable-guest-forgets-its-last-failure": Case(
        desired("web"),
        listing("web"),
        memory=mem(web=gm("web", created_at=NOW - 60, attempts=1, last_failure_at=NOW - 70)),
        events=((E.RECOVERED, "web"),),
        memory_after={"web": {"last_failure_at": None}},
    ),
}


@cases(FILE_CHANGES)
def test_file_changes(case: Case) -> None:
    check(case)


# --- holds and live migration ----------------------------------------------------------------

HOLD_AND_MIGRATION = {
    "held-running-guest-shows-held": Case(
        desired("web"),
        listing("web"),
        memory=mem(web=gm("web", held=True, hold_reason="maintenance")),
        states={"web": S.HELD},
    ),
    "migratedaway-gone-becomes-migrated": Case(
        desired("web"),
        memory=mem(web=gm("web", migrating_away=True, seen_running=True)),
        states={"web": S.MIGRATED},
        events=((E.MIGRATED, "web"),),
        memory_after={"web": {"migrated": True, "migrating_away": False, "missing_since": None}},
    ),
    "localhost-migration-done-is-not-migrated": Case(
        desired("web"),
        listing("web"),
        memory=mem(web=gm("web", migrating_away=True)),
        states={"web": S.RUNNING},
        memory_after={"web": {"migrated": False, "migrating_away": False}},
    ),
    "still-migrating-away": Case(
        desired("web"),
        listing("web--migratedaway"),
        memory=mem(web=gm("web", migrating_away=True)),
        states={"web": S.MIGRATING},
    ),
    "migrated-seen-running-returns": Case(
        desired("web"),
        listing("web"),
        memory=mem(web=gm("web", migrated=True)),
        states={"web": S.RUNNING},
        events=((E.RETURNED, "web"),),
        memory_after={"web": {"migrated": False}},
    ),
    "migrated-listed-dying-has-not-returned": Case(
        desired("web"),
        listing(dom("web", "----d-")),
        memory=mem(web=gm("web", migrated=True)),
        states={"web": S.DYING},
        memory_after={"web": {"migrated": True}},
    ),
    "migrated-stays-migrated": Case(
        desired("web"),
        memory=mem(web=gm("web", migrated=True, seen_running=True)),
        states={"web": S.MIGRATED},
    ),
}


@cases(HOLD_AND_MIGRATION)
def test_hold_and_migration(case: Case) -> None:
    check(case)


# --- memory survives any state of the file (bad, duplicate, gone) ---------------------------------

SYNTAX_ERROR = InvalidFile("/guests/web.cfg", "config parsing error", line=2)
NAMED_BAD = InvalidFile("/guests/web.cfg", "bad value", name="web", line=3)
WEB_DUPLICATES = {"web": ("/guests/web.cfg", "/guests/web2.cfg")}

WITHOUT_USABLE_FILE = {
    "migratedaway-seen-while-file-has-syntax-error": Case(
        desired(invalid=(SYNTAX_ERROR,)),
        listing("web--migratedaway"),
        memory=mem(web=gm("web", seen_running=True)),
        memory_after={"web": {"migrating_away": True, "seen_running": True}},
    ),
    "migratedaway-seen-while-file-invalid-with-name": Case(
        desired(invalid=(NAMED_BAD,)),
        listing("web--migratedaway"),
        memory=mem(web=gm("web")),
        memory_after={"web": {"migrating_away": True}},
    ),
    "migratedaway-seen-while-duplicate": Case(
        desired(duplicates=WEB_DUPLICATES),
        listing("web--migratedaway"),
        memory_after={"web": {"migrating_away": True}},
    ),
    "migratedaway-seen-while-file-gone": Case(
        desired(),
        listing("web--migratedaway"),
        memory=mem(web=gm("web", attempts=2)),
        memory_after={"web": {"migrating_away": True, "attempts": 2, "absent_at": None}},
    ),
    "migratedaway-seen-while-directory-unusable": Case(
        desired(error="guests directory is writable by others"),
        listing("web--migratedaway"),
        memory_after={"web": {"migrating_away": True}},
    ),
    "migration-done-while-file-has-syntax-error": Case(
        desired(invalid=(SYNTAX_ERROR,)),
        memory=mem(web=gm("web", migrating_away=True, seen_running=True)),
        states={"web": S.MIGRATED},
        events=((E.MIGRATED, "web"),),
        memory_after={"web": {"migrated": True, "migrating_away": False}},
    ),
    "migration-done-while-duplicate": Case(
        desired(duplicates=WEB_DUPLICATES),
        memory=mem(web=gm("web", migrating_away=True)),
        events=((E.MIGRATED, "web"),),
        memory_after={"web": {"migrated": True}},
    ),
    "migration-done-while-directory-unusable": Case(
        desired(error="guests directory is writable by others"),
        listing(),
        memory=mem(web=gm("web", migrating_away=True)),
        states={"web": S.MIGRATED},
        events=((E.MIGRATED, "web"),),
        memory_after={"web": {"migrated": True}},
    ),
    "syntax-error-keeps-backoff-and-sightings": Case(
        desired(invalid=(SYNTAX_ERROR,)),
        memory=mem(
            web=gm("web", attempts=2, next_retry=NOW + 30, last_error="boom", seen_running=True)
        ),
        memory_after={
            "web": {
                "attempts": 2,
                "next_retry": NOW + 30,
                "last_error": "boom",
                "seen_running": True,
                "absent_at": NOW,
            }
        },
    ),
    "file-gone-keeps-leftover-mark": Case(
        desired(),
        memory=mem(web=gm("web", attempts=1, leftover_domid=5)),
        memory_after={"web": {"leftover_domid": 5, "absent_at": NOW}},
    ),
    "absence-stamp-is-not-moved": Case(
        desired(),
        memory=mem(web=gm("web", attempts=1, absent_at=NOW - 100)),
        memory_after={"web": {"attempts": 1, "absent_at": NOW - 100}},
    ),
    "file-back-keeps-backoff-and-clears-the-stamp": Case(
        desired("web"),
        memory=mem(web=gm("web", attempts=2, next_retry=NOW + 30, absent_at=NOW - 100)),
        states={"web": S.BACKOFF},
        memory_after={"web": {"attempts": 2, "absent_at": None}},
    ),
    "forgotten-a-day-after-the-file-went": Case(
        desired(),
        memory=mem(web=gm("web", attempts=2, absent_at=NOW - FORGET_AFTER)),
        memory_after={"web": {"attempts": 0, "cfg_hash": None}},
    ),
    "migrated-without-file-seen-running-returns": Case(
        desired(),
        listing("web"),
        memory=mem(web=GuestMemory(migrated=True)),
        states={"web": S.UNMANAGED},
        events=((E.RETURNED, "web"),),
        memory_after={"web": {"migrated": False}},
    ),
}


@cases(WITHOUT_USABLE_FILE)
def test_memory_without_a_usable_file(case: Case) -> None:
    check(case)


def _web_pass(scan: DesiredState, listed: tuple[Domain, ...], memory: Memory, now: float) -> Plan:
    """One pass of the migration stories below, with the default settings."""
    return plan(scan, listed, memory, (), now, PlannerSettings())


@pytest.mark.parametrize(
    "meanwhile",
    [desired(invalid=(SYNTAX_ERROR,)), desired(invalid=(NAMED_BAD,)), desired()],
    ids=["syntax-error", "invalid-with-name", "moved-away"],
)
def test_guest_that_migrated_while_its_file_was_bad_is_not_started_again(
    meanwhile: DesiredState,
) -> None:
    """Running; `xl migrate` starts while the file is broken (or moved away);
    the migration completes; the file is fixed (or moved back): not created."""
    good = desired("web")
    running = _web_pass(good, listing("web"), Memory(), NOW)
    moving = _web_pass(meanwhile, listing("web--migratedaway"), running.memory, NOW + 10)
    done = _web_pass(meanwhile, listing(), moving.memory, NOW + 20)
    assert [e.kind for e in done.events] == [E.MIGRATED]
    for later in (NOW + 30, NOW + 30 + FORGET_AFTER):
        fixed = _web_pass(good, listing(), done.memory, later)
        assert fixed.creates == ()
        assert [s.state for s in fixed.statuses] == [S.MIGRATED]


def test_migration_run_entirely_while_the_file_was_bad_is_still_seen() -> None:
    """The migration starts and ends while the file does not parse."""
    broken = desired(invalid=(SYNTAX_ERROR,))
    first = _web_pass(broken, listing("web"), mem(web=gm("web", seen_running=True)), NOW)
    moving = _web_pass(broken, listing("web--migratedaway"), first.memory, NOW + 10)
    done = _web_pass(broken, listing(), moving.memory, NOW + 20)
    fixed = _web_pass(desired("web"), listing(), done.memory, NOW + 30)
    assert (fixed.creates, [s.state for s in fixed.statuses]) == ((), [S.MIGRATED])


@pytest.mark.parametrize(
    "meanwhile",
    [desired(invalid=(SYNTAX_ERROR,)), desired(), desired(error="guests dir mode 0777")],
    ids=["parse-error", "chmod-of-the-file", "chmod-of-the-directory"],
)
def test_passing_file_problem_keeps_backoff_and_seen_running(meanwhile: DesiredState) -> None:
    """A failing guest stays in backoff, and a guest seen running keeps its grace,
    across a pass in which its file could not be used."""
    failing = mem(web=gm("web", attempts=3, next_retry=NOW + 60, last_error="boom"))
    bad = _web_pass(meanwhile, listing(), failing, NOW)
    back = _web_pass(desired("web"), listing(), bad.memory, NOW + 1)
    assert (back.creates, [s.state for s in back.statuses]) == ((), [S.BACKOFF])
    assert back.memory.guests["web"].attempts == 3

    up = _web_pass(desired("web"), listing("web"), Memory(), NOW)
    bad = _web_pass(meanwhile, listing("web"), up.memory, NOW + 1)
    vanished = _web_pass(desired("web"), listing(), bad.memory, NOW + 2)
    assert (vanished.creates, [s.state for s in vanished.statuses]) == ((), [S.GRACE])


# --- the paused leftover of a failed create ----------------------------------------------------

TIMED_OUT = "xl create timed out after 120s"


def failed_create(**fields: Any) -> Memory:
    """The memory of `web` right after a create of it timed out."""
    base: dict[str, Any] = {
        "attempts": 1,
        "next_retry": NOW + 10,
        "last_error": TIMED_OUT,
        "last_failure_at": NOW - 1,
        "leftover_unchecked": True,
    }
    return mem(web=gm("web", **{**base, **fields}))


LEFTOVERS = {
    "paused-after-failed-create-is-leftover": Case(
        desired("web"),
        listing(dom("web", "--p---", domid=5)),
        memory=failed_create(),
        states={"web": S.LEFTOVER},
        events=((E.LEFTOVER, "web"),),
        memory_after={
            "web": {
                "leftover_domid": 5,
                "leftover_unchecked": False,
                "seen_running": False,
                "attempts": 1,
            }
        },
        wake_at=None,
    ),
    "leftover-stays-leftover-without-a-second-event": Case(
        desired("web"),
        listing(dom("web", "--p---", domid=5)),
        memory=failed_create(leftover_unchecked=False, leftover_domid=5),
        states={"web": S.LEFTOVER},
        memory_after={"web": {"leftover_domid": 5}},
    ),
    "leftover-destroyed-waits-for-backoff": Case(
        desired("web"),
        memory=failed_create(leftover_unchecked=False, leftover_domid=5),
        states={"web": S.BACKOFF},
        memory_after={"web": {"leftover_domid": None, "missing_since": None}},
    ),
    "leftover-destroyed-after-backoff-is-created": Case(
        desired("web"),
        memory=failed_create(leftover_unchecked=False, leftover_domid=5, next_retry=NOW),
        creates=("web",),
    ),
    "leftover-dying-is-dying": Case(
        desired("web"),
        listing(dom("web", "--p-d-", domid=5)),
        memory=failed_create(leftover_unchecked=False, leftover_domid=5),
        states={"web": S.DYING},
        memory_after={"web": {"leftover_domid": None}},
    ),
    "leftover-unpaused-by-the-admin-runs": Case(
        desired("web"),
        listing(dom("web", "-b----", domid=5)),
        memory=failed_create(leftover_unchecked=False, leftover_domid=5),
        states={"web": S.RUNNING},
        memory_after={"web": {"leftover_domid": None, "seen_running": True}},
    ),
    "paused-with-another-domid-is-not-the-leftover": Case(
        desired("web"),
        listing(dom("web", "--p---", domid=9)),
        memory=failed_create(leftover_unchecked=False, leftover_domid=5),
        states={"web": S.RUNNING},
        memory_after={"web": {"leftover_domid": None}},
    ),
    "admin-paused-guest-without-failed-create-is-running": Case(
        desired("web"),
        listing(dom("web", "--p---", domid=5)),
        memory=mem(web=gm("web", seen_running=True)),
        states={"web": S.RUNNING},
        memory_after={"web": {"leftover_domid": None}},
    ),
    "failed-create-that-left-nothing": Case(
        desired("web"),
        memory=failed_create(),
        states={"web": S.BACKOFF},
        memory_after={"web": {"leftover_unchecked": False, "leftover_domid": None}},
    ),
    "failed-create-whose-domain-runs-is-running": Case(
        desired("web"),
        listing(dom("web", "-b----", domid=5)),
        memory=failed_create(),
        states={"web": S.RUNNING},
        memory_after={"web": {"leftover_unchecked": False, "leftover_domid": None}},
    ),
    "leftover-check-waits-while-in-flight": Case(
        desired("web"),
        listing(dom("web", "--p---", domid=6)),
        memory=failed_create(),
        in_flight=frozenset({"web"}),
        states={"web": S.CREATING},
        memory_after={"web": {"leftover_unchecked": True, "leftover_domid": None}},
    ),
    "held-leftover-shows-held": Case(
        desired("web"),
        listing(dom("web", "--p---", domid=5)),
        memory=failed_create(held=True),
        states={"web": S.HELD},
        events=((E.LEFTOVER, "web"),),
    ),
    "leftover-does-not-block-a-higher-order": Case(
        desired("a", "web"),
        listing(dom("web", "--p---", domid=5)),
        memory=failed_create(leftover_unchecked=False, leftover_domid=5),
        settings=settings(orders={"web": 10}),
        creates=("a",),
        states={"web": S.LEFTOVER},
    ),
}


@cases(LEFTOVERS)
def test_leftover_of_a_failed_create(case: Case) -> None:
    check(case)


def test_leftover_status_says_what_it_is_and_how_to_clear_it() -> None:
    result = run(Case(desired("web"), listing(dom("web", "--p---", domid=5)), failed_create()))
    (row,) = result.statuses
    assert row.detail == (
        f"paused leftover of a failed create ({TIMED_OUT}), domid 5: not running;"
        " destroy it with `xl destroy 5`"
    )
    (event,) = result.events
    assert event.error == row.detail


def test_timed_out_create_then_paused_leftover_story() -> None:
    """A create is killed at xl_timeout while xl builds the domain: the failure is
    counted, the paused domain it left is a LEFTOVER (not running) until the admin
    destroys it, then the guest is created again when its backoff is due."""
    config = PlannerSettings()
    started = plan(desired("web"), listing(), Memory(), (), NOW, config)
    assert [c.name for c in started.creates] == ["web"]
    timeout = CreateResult(ok=False, exit_code=None, timed_out=True, duration=120.0)
    memory, _ = record_create(started.memory, ACTION, timeout, NOW + 120, config)
    assert memory.guests["web"].attempts == 1
    left = plan(desired("web"), listing(dom("web", "--p---", 4)), memory, (), NOW + 121, config)
    assert [s.state for s in left.statuses] == [S.LEFTOVER]
    assert [e.kind for e in left.events] == [E.LEFTOVER]
    next_retry = left.memory.guests["web"].next_retry
    assert next_retry is not None
    due = plan(
        desired("web"), listing(dom("web", "--p---", 4)), left.memory, (), next_retry, config
    )
    assert (due.creates, [s.state for s in due.statuses]) == ((), [S.LEFTOVER])
    destroyed = plan(desired("web"), listing(), due.memory, (), next_retry + 1, config)
    assert [c.name for c in destroyed.creates] == ["web"]


# --- listed states, unmanaged, duplicate, invalid ----------------------------------------------

LISTED = {
    "dying": Case(desired("web"), listing(dom("web", "----d-")), states={"web": S.DYING}),
    "crashed-is-stale": Case(
        desired("web"), listing(dom("web", "----c-")), states={"web": S.STALE}
    ),
    "shutdown-is-stale": Case(
        desired("web"), listing(dom("web", "---s--")), states={"web": S.STALE}
    ),
    "shutdown-and-dying-is-dying": Case(
        desired("web"), listing(dom("web", "---sd-")), states={"web": S.DYING}
    ),
    "blocked-is-running": Case(
        desired("web"), listing(dom("web", "-b----")), states={"web": S.RUNNING}
    ),
    "paused-is-running": Case(
        desired("web"), listing(dom("web", "--p---")), states={"web": S.RUNNING}
    ),
    "unmanaged": Case(desired(), listing("other"), states={"other": S.UNMANAGED}),
    "migration-names-of-desired-not-unmanaged": Case(
        desired("a", "b"),
        listing("a--incoming", "b--migratedaway", "c--incoming"),
        states={"a": S.MIGRATING, "b": S.MIGRATING, "c--incoming": S.UNMANAGED},
    ),
    "duplicate-missing-not-created": Case(
        desired(duplicates={"web": ("/guests/w2.cfg", "/guests/w1.cfg")}),
        states={"web": S.DUPLICATE},
    ),
    "duplicate-running-stays-duplicate-not-unmanaged": Case(
        desired(duplicates={"web": ("/guests/w1.cfg", "/guests/w2.cfg")}),
        listing("web"),
        states={"web": S.DUPLICATE},
    ),
    "invalid-named-running-not-unmanaged": Case(
        desired(invalid=(InvalidFile("/guests/w.cfg", "unterminated string", name="web", line=4),)),
        listing("web"),
        states={"web": S.INVALID},
    ),
    "invalid-without-name-by-path": Case(
        desired(invalid=(InvalidFile("/guests/x.cfg", "no name key"),)),
        states={"/guests/x.cfg": S.INVALID},
    ),
    "domain-0-cfg-is-invalid": Case(
        desired("Domain-0"), listing=(dom("x"),), states={"Domain-0": S.INVALID}
    ),
    "unusable-directory-creates-nothing": Case(
        desired("web", error="guests directory is writable by others"),
        listing("web"),
        states={"web": S.UNMANAGED},
    ),
}


@cases(LISTED)
def test_listed_and_side_states(case: Case) -> None:
    check(case)


def test_duplicate_row_has_all_paths_and_says_running() -> None:
    dup = desired(duplicates={"web": ("/guests/w2.cfg", "/guests/w1.cfg")})
    (row,) = [s for s in run(Case(dup, listing("web"))).statuses if s.name == "web"]
    assert row.paths == ("/guests/w1.cfg", "/guests/w2.cfg")
    assert row.detail is not None
    assert "listed as -b----" in row.detail


def test_duplicate_name_in_guests_is_not_created() -> None:
    scan = DesiredState(guests=(guest("web"),), duplicates={"web": ("/a.cfg", "/b.cfg")})
    result = run(Case(scan))
    assert result.creates == ()
    assert [s.state for s in result.statuses] == [S.DUPLICATE]


def test_invalid_row_names_file_and_line() -> None:
    bad = InvalidFile("/guests/w.cfg", "unterminated string", name="web", line=4, column=9)
    (row,) = run(Case(desired(invalid=(bad,)))).statuses
    assert (row.name, row.paths) == ("web", ("/guests/w.cfg",))
    assert row.detail == "line 4, column 9: unterminated string"


def test_invalid_file_of_a_duplicate_is_shown_once() -> None:
    scan = desired(
        duplicates={"web": ("/guests/w1.cfg", "/guests/w2.cfg")},
        invalid=(InvalidFile("/guests/w2.cfg", "duplicate name", name="web"),),
    )
    assert [s.state for s in run(Case(scan)).statuses] == [S.DUPLICATE]


def test_statuses_sorted_one_per_name() -> None:
    scan = desired(
        "m",
        "b",
        duplicates={"d": ("/d1.cfg", "/d2.cfg")},
        invalid=(InvalidFile("/guests/z.cfg", "bad"),),
    )
    memory = mem(gone=GuestMemory(held=True), left=GuestMemory(migrated=True))
    result = run(Case(scan, listing("b", "u"), memory=memory))
    rows = [(s.name, s.state) for s in result.statuses]
    assert rows == [
        ("/guests/z.cfg", S.INVALID),
        ("b", S.RUNNING),
        ("d", S.DUPLICATE),
        ("gone", S.HELD),
        ("left", S.MIGRATED),
        ("m", S.PENDING),
        ("u", S.UNMANAGED),
    ]


def test_status_rows_carry_memory() -> None:
    memory = mem(web=gm("web", attempts=2, next_retry=NOW + 9, last_error="exit 3"))
    (row,) = run(Case(desired("web"), memory=memory)).statuses
    assert (row.attempts, row.next_retry, row.last_error) == (2, NOW + 9, "exit 3")
    assert row.paths == ("/guests/web.cfg",)


# --- an untrusted listing -----------------------------------------------------------------------


def test_untrusted_listing_changes_nothing() -> None:
    memory = mem(
        web=gm("web", attempts=2, last_error="boom", seen_running=True),
        db=gm("db", held=True),
    )
    scan = desired("web", "db", "new", invalid=(InvalidFile("/guests/x.cfg", "bad"),))
    result = run(Case(scan, listing=None, memory=memory, in_flight=frozenset({"new"})))
    assert result.creates == ()
    assert result.trusted is False
    assert result.memory == memory
    assert result.events == ()
    assert result.wake_at is None
    rows = {s.name: (s.state, s.last_error) for s in result.statuses}
    assert rows == {
        "/guests/x.cfg": (S.INVALID, None),
        "db": (S.HELD, None),
        "new": (S.CREATING, None),
        "web": (S.UNKNOWN, "boom"),
    }


def test_trusted_listing_is_marked_trusted() -> None:
    assert run(Case(desired("web"))).trusted is True


# --- wake_at ----------------------------------------------------------------------------------

WAKE = {
    "nothing-scheduled": Case(desired("web"), listing("web"), wake_at=None),
    "earliest-of-backoff-grace-stable": Case(
        desired("a", "b", "c"),
        listing("c"),
        memory=mem(
            a=gm("a", attempts=1, next_retry=NOW + 30),
            b=gm("b", seen_running=True, missing_since=NOW - 2),
            c=gm("c", created_at=NOW - 50),
        ),
        wake_at=NOW + 3,
    ),
    "stable-window": Case(
        desired("c"), listing("c"), memory=mem(c=gm("c", created_at=NOW - 50)), wake_at=NOW + 10
    ),
    "backoff": Case(
        desired("a"), memory=mem(a=gm("a", attempts=1, next_retry=NOW + 30)), wake_at=NOW + 30
    ),
    "held-backoff-wakes-nothing": Case(
        desired("a"),
        memory=mem(a=gm("a", held=True, attempts=1, next_retry=NOW + 30)),
        wake_at=None,
    ),
    "slot-wait-wakes-nothing": Case(
        desired("a"), in_flight=frozenset({"x"}), settings=settings(concurrency=1), wake_at=None
    ),
}


@cases(WAKE)
def test_wake_at(case: Case) -> None:
    check(case)


# --- memory pruning -----------------------------------------------------------------------------


def test_memory_drops_names_with_no_file_domain_hold_or_mark() -> None:
    """A name without a file is kept whole for FORGET_AFTER, then reduced to its marks."""
    memory = mem(
        gone=gm(attempts=3, cfg_hash="x"),
        kept=gm(held=True, hold_reason="disk", attempts=3, next_retry=NOW + 5, cfg_hash="x"),
        left=gm(migrated=True, attempts=1),
        listed=gm(attempts=1, created_hash="y"),
        flying=gm(attempts=1),
    )
    case = Case(desired("web"), listing("listed"), memory=memory, in_flight=frozenset({"flying"}))
    stamped = run(case).memory
    assert stamped.guests["gone"] == replace(memory.guests["gone"], absent_at=NOW)
    result = run(replace(case, memory=stamped, now=NOW + FORGET_AFTER))
    assert set(result.memory.guests) == {"kept", "left", "listed", "flying", "web"}
    assert result.memory.guests["kept"] == GuestMemory(held=True, hold_reason="disk")
    assert result.memory.guests["left"] == GuestMemory(migrated=True)
    assert result.memory.guests["listed"] == memory.guests["listed"]


def test_memory_keeps_duplicate_and_invalid_names() -> None:
    memory = mem(dup=gm(attempts=2), bad=gm(attempts=1))
    scan = desired(
        duplicates={"dup": ("/a.cfg", "/b.cfg")},
        invalid=(InvalidFile("/c.cfg", "oops", name="bad"),),
    )
    assert run(Case(scan, memory=memory)).memory.guests == memory.guests


def test_every_desired_guest_gets_its_hash_remembered() -> None:
    result = run(Case(desired("a", "b"), listing("a")))
    assert {n: g.cfg_hash for n, g in result.memory.guests.items()} == {
        "a": "hash-a",
        "b": "hash-b",
    }


def test_unusable_directory_keeps_memory() -> None:
    memory = mem(web=gm("web", attempts=2, next_retry=NOW + 5))
    result = run(Case(desired(error="missing"), listing(), memory=memory))
    assert result.memory == memory
    assert result.creates == ()


def test_plan_is_repeatable_and_leaves_input_alone() -> None:
    memory = mem(web=gm("web", seen_running=True, created_at=NOW - 5))
    case = Case(desired("web", "db"), listing("x"), memory=memory)
    snapshot = replace(memory, guests=dict(memory.guests))
    assert run(case) == run(case)
    assert memory == snapshot


# --- record_create -----------------------------------------------------------------------------

ACTION = CreateAction("web", "/guests/web.cfg", "hash-web")
OK = CreateResult(ok=True, exit_code=0)
FAIL = CreateResult(ok=False, exit_code=3, stderr_tail="libxl: error: disk missing\n")


def test_success_starts_the_stable_window() -> None:
    before = mem(web=gm("web", attempts=2, next_retry=NOW - 1))
    after, events = record_create(before, ACTION, OK, NOW, PlannerSettings())
    assert events == ()
    assert after.guests["web"] == replace(
        before.guests["web"], created_at=NOW, created_hash="hash-web", next_retry=None
    )


RECORD_FAILURES = {
    "first-failure-never-ran": (gm("web"), PlannerSettings(), 1, ()),
    "first-failure-after-running": (
        gm("web", seen_running=True),
        PlannerSettings(),
        1,
        (E.FAILING,),
    ),
    "first-failure-inside-stable-window": (
        gm("web", created_at=NOW - 5),
        PlannerSettings(),
        1,
        (E.FAILING,),
    ),
    "later-failure": (gm("web", attempts=2, seen_running=True), PlannerSettings(), 3, ()),
    "reaching-give-up": (
        gm("web", attempts=2),
        settings(backoff=Backoff(give_up_after=3)),
        3,
        (E.GAVE_UP,),
    ),
    "already-failed-no-second-gave-up": (
        gm("web", attempts=3),
        settings(backoff=Backoff(give_up_after=3)),
        4,
        (),
    ),
    "first-failure-gives-up-at-once": (
        gm("web", seen_running=True),
        settings(backoff=Backoff(give_up_after=1)),
        1,
        (E.FAILING, E.GAVE_UP),
    ),
}


@pytest.mark.parametrize(
    ("before", "config", "attempts", "kinds"),
    list(RECORD_FAILURES.values()),
    ids=list(RECORD_FAILURES),
)
def test_failure_is_counted_and_scheduled(
    before: GuestMemory, config: PlannerSettings, attempts: int, kinds: tuple[EventKind, ...]
) -> None:
    after, events = record_create(mem(web=before), ACTION, FAIL, NOW, config)
    web = after.guests["web"]
    assert web.attempts == attempts
    assert web.last_error == "xl create exited 3: libxl: error: disk missing"
    assert tuple(e.kind for e in events) == kinds
    assert all(e.name == "web" and e.error == web.last_error for e in events)
    give_up_after = config.backoff.give_up_after
    failed = 0 < give_up_after <= attempts
    expected = None if failed else NOW + retry_delay("web", attempts, config.backoff)
    assert web.next_retry == expected


def test_failure_of_outdated_content_is_not_counted_but_spaces_the_next_try() -> None:
    before = mem(web=gm(cfg_hash="new-content"))
    after, events = record_create(before, ACTION, FAIL, NOW, PlannerSettings())
    assert events == ()
    assert after.guests["web"] == replace(
        before.guests["web"],
        last_error=FAIL.error,
        last_failure_at=NOW,
        next_retry=NOW + Backoff().initial,
        leftover_unchecked=True,
    )


def test_failure_records_its_time_and_the_check_for_a_leftover() -> None:
    after, _ = record_create(mem(web=gm("web")), ACTION, FAIL, NOW, PlannerSettings())
    assert (after.guests["web"].last_failure_at, after.guests["web"].leftover_unchecked) == (
        NOW,
        True,
    )


def test_success_clears_the_leftover_marks() -> None:
    before = failed_create(leftover_domid=5)
    after, _ = record_create(before, ACTION, OK, NOW, PlannerSettings())
    web = after.guests["web"]
    assert (web.leftover_unchecked, web.leftover_domid) == (False, None)


def test_file_rewritten_every_100ms_for_8s_is_created_at_most_once() -> None:
    """A config-management tool stamps a time into a failing guest's file every
    100 ms; with backoff.initial 30 s, 8 s of it give at most one create."""
    config = settings(backoff=Backoff(initial=30.0, jitter=0.0))
    memory, creates = Memory(), 0
    for tick in range(80):
        now = NOW + tick * 0.1
        scan = DesiredState(guests=(guest("web", f"hash-stamp-{tick}"),))
        result = plan(scan, listing(), memory, (), now, config)
        memory = result.memory
        for action in result.creates:
            creates += 1
            memory, _ = record_create(memory, action, FAIL, now + 0.05, config)
    assert creates <= 1


def test_failure_then_plan_shows_backoff_then_creates_when_due() -> None:
    config = PlannerSettings()
    memory, _ = record_create(mem(web=gm("web")), ACTION, FAIL, NOW, config)
    next_retry = memory.guests["web"].next_retry
    assert next_retry is not None
    waiting = plan(desired("web"), listing(), memory, (), NOW + 1, config)
    assert [s.state for s in waiting.statuses] == [S.BACKOFF]
    assert waiting.wake_at == next_retry
    due = plan(desired("web"), listing(), waiting.memory, (), next_retry, config)
    assert [c.name for c in due.creates] == ["web"]


# --- admin requests and lifecycle ------------------------------------------------------------


def test_hold_and_release() -> None:
    held = hold(mem(web=gm("web", migrated=True)), "web", "disk swap", NOW)
    assert (held.guests["web"].held, held.guests["web"].hold_reason) == (True, "disk swap")
    released = release(held, "web")
    web = released.guests["web"]
    assert (web.held, web.hold_reason, web.migrated) == (False, None, False)
    assert web.cfg_hash == "hash-web"


def test_hold_of_unknown_name_creates_an_entry() -> None:
    assert hold(Memory(), "new", None, NOW).guests["new"] == GuestMemory(held=True)


def test_retry_clears_backoff_and_failure() -> None:
    memory = mem(web=gm("web", attempts=5, next_retry=NOW + 500, last_error="boom"))
    config = settings(backoff=Backoff(give_up_after=5))
    assert run(Case(desired("web"), memory=memory, settings=config)).creates == ()
    memory = replace(memory, guests={"web": replace(memory.guests["web"], last_failure_at=NOW)})
    retried = retry(memory, "web")
    assert (retried.guests["web"].attempts, retried.guests["web"].next_retry) == (0, None)
    assert retried.guests["web"].last_failure_at is None
    result = run(Case(desired("web"), memory=retried, settings=config))
    assert [c.name for c in result.creates] == ["web"]


def test_new_boot_keeps_only_holds_and_migrated_marks() -> None:
    memory = Memory(
        guests={
            "web": gm("web", attempts=3, next_retry=NOW, created_at=NOW, seen_running=True),
            "db": gm("db", held=True, hold_reason="r", attempts=2, missing_since=NOW),
            "old": gm("old", migrated=True, last_error="x"),
            "away": gm("away", migrating_away=True),
        },
        last_create_at=NOW,
        boot_time=1.0,
    )
    booted = new_boot(memory, 2.0)
    assert booted == Memory(
        guests={
            "away": GuestMemory(migrated=True),
            "db": GuestMemory(held=True, hold_reason="r"),
            "old": GuestMemory(migrated=True),
        },
        last_create_at=None,
        boot_time=2.0,
    )


def test_forget_runtime_clears_sightings_only() -> None:
    web = gm("web", attempts=2, seen_running=True, missing_since=NOW, created_at=NOW)
    forgotten = forget_runtime(mem(last_create_at=NOW, web=web))
    assert forgotten.guests["web"] == replace(web, seen_running=False, missing_since=None)
    assert forgotten.last_create_at == NOW


def test_after_restart_a_missing_guest_is_created_without_grace() -> None:
    memory = mem(web=gm("web", seen_running=True, missing_since=NOW - 1))
    assert run(Case(desired("web"), memory=memory)).creates == ()
    assert [c.name for c in run(Case(desired("web"), memory=forget_runtime(memory))).creates] == [
        "web"
    ]


def test_planner_reads_no_clock_and_no_global_random(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*_args: object) -> float:
        raise AssertionError("the planner must not read the clock or the global random")

    for target in ("time.time", "random.random", "random.uniform"):
        monkeypatch.setattr(target, forbidden)
    memory = mem(web=gm("web", seen_running=True, created_at=NOW - 5))
    result = run(Case(desired("web", "db"), memory=memory))
    record_create(result.memory, ACTION, FAIL, NOW, PlannerSettings())
    assert [e.kind for e in result.events] == [E.VANISHED, E.DIED_EARLY, E.FAILING]


def test_story_of_a_crashing_guest() -> None:
    """Seen running, vanishes, grace, recreated, dies early, backoff, recreated,
    stays up: each step's decision and event."""
    config = PlannerSettings()
    scan = desired("web")
    action = CreateAction("web", "/guests/web.cfg", "hash-web")

    def step(memory: Memory, listed: tuple[Domain, ...], now: float) -> Plan:
        return plan(scan, listed, memory, (), now, config)

    up = step(Memory(), listing("web"), NOW)
    assert [s.state for s in up.statuses] == [S.RUNNING]
    gone = step(up.memory, listing(), NOW + 30)
    assert ([e.kind for e in gone.events], gone.creates) == ([E.VANISHED], ())
    assert gone.wake_at == NOW + 35
    again = step(gone.memory, listing(), NOW + 35)
    assert [c.name for c in again.creates] == ["web"]
    memory, _ = record_create(again.memory, action, OK, NOW + 36, config)
    back = step(memory, listing("web"), NOW + 40)
    assert (back.events, back.wake_at) == ((), NOW + 96)
    died = step(back.memory, listing(), NOW + 50)
    assert [e.kind for e in died.events] == [E.VANISHED, E.DIED_EARLY, E.FAILING]
    next_retry = died.memory.guests["web"].next_retry
    assert next_retry == NOW + 50 + retry_delay("web", 1, config.backoff)
    assert died.wake_at == next_retry
    retried = step(died.memory, listing(), next_retry)
    assert [c.name for c in retried.creates] == ["web"]
    memory, _ = record_create(retried.memory, action, OK, next_retry + 1, config)
    young = step(memory, listing("web"), next_retry + 30)
    assert (young.events, young.wake_at) == ((), next_retry + 61)
    stable = step(young.memory, listing("web"), next_retry + 61)
    assert [e.kind for e in stable.events] == [E.RECOVERED]
    assert stable.memory.guests["web"].attempts == 0
