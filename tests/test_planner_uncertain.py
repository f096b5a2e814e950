"""The planner and uncertain guests: a hold or migrated mark that may have been
lost with a damaged state file keeps the guest from being created until an
admin decides (plain values, a frozen clock)."""

from __future__ import annotations

from xenreconcile import planner
from xenreconcile.models import (
    DesiredGuest,
    DesiredState,
    Domain,
    GuestMemory,
    GuestPhase,
    Memory,
    PlannerSettings,
)

NOW = 1_800_000_000.0
DOM0 = Domain("Domain-0", 0, 1024, 2, "r-----", 1.0)
SETTINGS = PlannerSettings()
DOUBT = "guests.web.held is not true or false"


def desired(*names: str) -> DesiredState:
    return DesiredState(
        guests=tuple(DesiredGuest(n, f"/guests/{n}.cfg", f"hash-{n}") for n in names)
    )


def states(plan: planner.Plan) -> dict[str, GuestPhase]:
    return {s.name: s.state for s in plan.statuses}


def test_an_uncertain_guest_is_not_created_and_says_what_to_do() -> None:
    memory = Memory(guests={"web": GuestMemory(uncertain=DOUBT)})
    plan = planner.plan(desired("web", "db"), (DOM0,), memory, (), NOW, SETTINGS)
    assert [c.name for c in plan.creates] == ["db"]
    [web] = [s for s in plan.statuses if s.name == "web"]
    assert web.state is GuestPhase.UNCERTAIN
    assert web.detail is not None and DOUBT in web.detail
    assert "`xenreconcile hold web`" in web.detail and "`release web`" in web.detail
    assert plan.memory.guest("web").uncertain == DOUBT


def test_a_whole_memory_in_doubt_covers_names_it_has_never_seen() -> None:
    memory = Memory(uncertain="state.json was unreadable")
    plan = planner.plan(desired("web", "db"), (DOM0,), memory, (), NOW, SETTINGS)
    assert plan.creates == ()
    assert states(plan) == {"db": GuestPhase.UNCERTAIN, "web": GuestPhase.UNCERTAIN}
    assert plan.memory.uncertain == "state.json was unreadable"
    later = planner.plan(desired("web", "db", "new"), (DOM0,), plan.memory, (), NOW, SETTINGS)
    assert later.creates == ()


def test_a_held_guest_in_doubt_shows_held_and_a_running_one_shows_uncertain() -> None:
    memory = Memory(
        guests={"db": GuestMemory(held=True, hold_reason="restore", uncertain=DOUBT)},
        uncertain=DOUBT,
    )
    listing = (DOM0, Domain("web", 3, 128, 1, "-b----", 1.0))
    plan = planner.plan(desired("web", "db"), listing, memory, (), NOW, SETTINGS)
    assert states(plan) == {"db": GuestPhase.HELD, "web": GuestPhase.UNCERTAIN}
    [web] = [s for s in plan.statuses if s.name == "web"]
    assert web.detail is not None and "domid 3" in web.detail


def test_without_a_trusted_listing_an_uncertain_guest_shows_uncertain() -> None:
    memory = Memory(guests={"web": GuestMemory(uncertain=DOUBT)})
    plan = planner.plan(desired("web", "db"), None, memory, (), NOW, SETTINGS)
    assert states(plan) == {"db": GuestPhase.UNKNOWN, "web": GuestPhase.UNCERTAIN}


def test_hold_release_and_accept_state_settle_the_doubt() -> None:
    memory = Memory(guests={"web": GuestMemory(uncertain=DOUBT)}, uncertain="all")
    released = planner.release(memory, "web")
    assert released.guest("web").uncertain is None
    assert released.guest("other").uncertain == "all"
    held = planner.hold(memory, "other", "keep down", NOW)
    assert held.guest("other") == GuestMemory(held=True, hold_reason="keep down")
    assert planner.retry(memory, "other").guest("other").uncertain == "all"  # retry decides nothing
    accepted = planner.accept_state(memory)
    assert accepted == Memory(guests={"web": GuestMemory()})
    plan = planner.plan(desired("web", "new"), (DOM0,), accepted, (), NOW, SETTINGS)
    assert sorted(c.name for c in plan.creates) == ["new", "web"]


def test_doubts_outlive_a_missing_file_and_a_dom0_reboot() -> None:
    memory = Memory(guests={"web": GuestMemory(uncertain=DOUBT, attempts=3)}, uncertain="all")
    plan = planner.plan(desired(), (DOM0,), memory, (), NOW, SETTINGS)
    # A name with no file is kept whole for a while (a file moved away and back)...
    assert plan.memory.guest("web") == GuestMemory(uncertain=DOUBT, attempts=3, absent_at=NOW)
    assert states(plan) == {"web": GuestPhase.UNCERTAIN}
    # ...then only its marks and the doubt about them are kept.
    later = NOW + planner.FORGET_AFTER
    plan = planner.plan(desired(), (DOM0,), plan.memory, (), later, SETTINGS)
    assert plan.memory.guest("web") == GuestMemory(uncertain=DOUBT)
    assert states(plan) == {"web": GuestPhase.UNCERTAIN}
    rebooted = planner.new_boot(memory, 2000.0)
    assert rebooted.guest("web") == GuestMemory(uncertain=DOUBT)
    assert rebooted.uncertain == "all" and rebooted.boot_time == 2000.0
    assert planner.forget_runtime(memory).uncertain == "all"
