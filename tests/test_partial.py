"""A partly readable `xl list`: the guests an unreadable row could be are left alone,
the others are reconciled."""

from __future__ import annotations

from collections.abc import Collection

from xenreconcile import partial, planner
from xenreconcile.models import (
    DesiredGuest,
    DesiredState,
    Domain,
    EventKind,
    GuestMemory,
    GuestPhase,
    Memory,
    Plan,
    PlannerSettings,
)
from xenreconcile.xl import UnreadRow

NOW = 1_800_000_000.0
DOM0 = Domain("Domain-0", 0, 1024, 2, "r-----", 1.0)
SETTINGS = PlannerSettings(missing_grace=0.0)


def desired(*names: str) -> DesiredState:
    return DesiredState(
        guests=tuple(DesiredGuest(n, f"/guests/{n}.cfg", f"hash-{n}") for n in names)
    )


def row(text: str, line: int = 3) -> UnreadRow:
    return UnreadRow(line, text, f"not an xl list row: {text!r}")


def restrict(
    state: DesiredState, before: Memory, suspected: dict[str, str], in_flight: Collection[str] = ()
) -> Plan:
    """The plan of the same pass with the suspects given to the planner."""
    return planner.plan(state, (DOM0,), before, in_flight, NOW, SETTINGS, suspects=suspected)


def test_a_guest_whose_name_is_in_an_unreadable_row_is_suspect() -> None:
    rows = [row("web"), row("mail--incoming   garbage", line=5)]
    found = partial.suspects(desired("web", "mail", "db"), rows)
    assert sorted(found) == ["mail", "web"]
    assert found["web"] == (
        "xl list output line 3: not an xl list row: 'web'; "
        "it may be this guest, so it is not acted on"
    )


def test_no_unreadable_row_no_suspect_and_the_plan_is_unchanged() -> None:
    plan = planner.plan(desired("db"), (DOM0,), Memory(), (), NOW, SETTINGS)
    assert partial.suspects(desired("db"), []) == {}
    assert restrict(desired("db"), Memory(), {}) == plan


def test_a_suspect_is_neither_created_nor_counted_missing_the_others_are_created() -> None:
    before = Memory(
        guests={"web": GuestMemory(seen_running=True, cfg_hash="hash-web", attempts=2)},
        last_create_at=NOW - 100,
    )
    state = desired("web", "db")
    plan = planner.plan(state, (DOM0,), before, (), NOW, SETTINGS)
    assert {c.name for c in plan.creates} == {"web", "db"}, "unrestricted, web looks missing"
    suspected = partial.suspects(state, [row("web")])
    restricted = restrict(state, before, suspected)
    assert [c.name for c in restricted.creates] == ["db"]
    assert restricted.memory.guests["web"] == before.guests["web"]
    assert "db" in restricted.memory.guests
    assert restricted.memory.last_create_at == NOW
    assert all(e.name != "web" for e in restricted.events)
    assert any(e.kind == EventKind.VANISHED and e.name == "web" for e in plan.events)
    web = next(s for s in restricted.statuses if s.name == "web")
    assert (web.state, web.attempts, web.detail) == (GuestPhase.UNKNOWN, 2, suspected["web"])


def test_when_only_suspects_would_be_created_no_create_time_is_recorded() -> None:
    state = desired("web")
    restricted = restrict(state, Memory(), partial.suspects(state, [row("web")]))
    assert restricted.creates == ()
    assert restricted.memory.last_create_at is None
    assert "web" not in restricted.memory.guests


def test_held_and_creating_suspects_keep_their_state() -> None:
    before = Memory(guests={"web": GuestMemory(held=True, hold_reason="disk restore")})
    state = desired("web", "db")
    restricted = restrict(state, before, partial.suspects(state, [row("web db")]), {"db"})
    states = {s.name: s.state for s in restricted.statuses}
    assert states == {"web": GuestPhase.HELD, "db": GuestPhase.CREATING}
