"""Why a guest went away and whether it runs again: the planner with xl's records
as input (a frozen clock, plain values)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import pytest

from xenreconcile import planner
from xenreconcile.exitpolicy import CRASH_WINDOW, STOPPED_BY_ADMIN, End, kept_down
from xenreconcile.exits import ExitReason, Life
from xenreconcile.models import (
    Backoff,
    DesiredGuest,
    DesiredState,
    Domain,
    EventKind,
    GuestOverride,
    GuestPhase,
    GuestStatus,
    LastExit,
    Memory,
    Plan,
    PlannerSettings,
)

NOW = 50_000.0
WEB = DesiredGuest("web", "/g/web.cfg", "h1")
R = ExitReason
POWEROFF, REBOOT = Life(7, 0), Life(7, 1)
CRASH, WATCHDOG = Life(7, 3), Life(7, 4)
DESTROYED, NO_FINAL_LINE = Life(7, destroyed=True), Life(7)


def settings(restart: str = "always", **kwargs: object) -> PlannerSettings:
    base = PlannerSettings(restart=restart, missing_grace=5.0, stable_after=60.0)
    return replace(base, **kwargs)  # type: ignore[arg-type]


def running(domid: int = 7) -> tuple[Domain, ...]:
    return (Domain("web", domid, 512, 1, "-b----", 10.0),)


def step(
    memory: Memory,
    listing: tuple[Domain, ...],
    now: float,
    s: PlannerSettings,
    lives: Mapping[str, Life | None] | None = None,
) -> Plan:
    return planner.plan(DesiredState(guests=(WEB,)), listing, memory, (), now, s, lives=lives)


def row(plan: Plan) -> GuestStatus:
    return next(s for s in plan.statuses if s.name == "web")


def state(plan: Plan) -> GuestPhase:
    return row(plan).state


def seen_running(s: PlannerSettings, domid: int = 7) -> Memory:
    """The memory of a guest created long ago and seen running with `domid`."""
    plan = step(Memory(), running(domid), NOW - 1000, s)
    assert plan.memory.guests["web"].life_domid == domid
    return plan.memory


def after_end(life: Life | None, s: PlannerSettings) -> Plan:
    """The pass after missing_grace once the guest's life ended as `life` says."""
    gone = step(seen_running(s), (), NOW, s, {"web": life})
    return step(gone.memory, (), NOW + 10, s, {"web": life})


MATRIX = [
    (POWEROFF, "always", True),
    (POWEROFF, "on-failure", False),
    (POWEROFF, "never", False),
    (DESTROYED, "always", True),
    (DESTROYED, "on-failure", False),
    (DESTROYED, "never", False),
    (REBOOT, "always", True),
    (REBOOT, "on-failure", True),
    (REBOOT, "never", False),
    (CRASH, "always", True),
    (CRASH, "on-failure", True),
    (CRASH, "never", False),
    (WATCHDOG, "on-failure", True),
    (NO_FINAL_LINE, "on-failure", True),
    (None, "on-failure", True),
    (None, "never", False),
]


@pytest.mark.parametrize(("life", "policy", "recreated"), MATRIX)
def test_policy_matrix(life: Life | None, policy: str, recreated: bool) -> None:
    # A short backoff, so that a crash's retry is due by the pass after the grace.
    plan = after_end(life, settings(policy, backoff=Backoff(initial=1, jitter=0)))
    names = [c.name for c in plan.creates]
    if recreated:
        assert names == ["web"]
    else:
        assert (names, state(plan)) == ([], GuestPhase.STOPPED)
        assert policy in (plan.statuses[0].detail or "")


@pytest.mark.parametrize(
    ("life", "reason", "code"),
    [
        (POWEROFF, R.POWEROFF, 0),
        (REBOOT, R.REBOOT, 1),
        (CRASH, R.CRASH, 3),
        (WATCHDOG, R.WATCHDOG, 4),
        (DESTROYED, R.DESTROYED, None),
        (NO_FINAL_LINE, R.UNKNOWN, None),
        (None, R.UNKNOWN, None),
    ],
)
def test_status_carries_the_last_exit(life: Life | None, reason: R, code: int | None) -> None:
    plan = after_end(life, settings())
    assert plan.statuses[0].last_exit is not None
    assert (plan.statuses[0].last_exit.reason, plan.statuses[0].last_exit.code) == (reason, code)


def test_per_guest_policy_overrides_the_global_one() -> None:
    s = settings("always", guests={"web": GuestOverride(restart="on-failure")})
    assert state(after_end(POWEROFF, s)) == GuestPhase.STOPPED
    s = settings("never", guests={"web": GuestOverride(restart="always")})
    assert [c.name for c in after_end(POWEROFF, s).creates] == ["web"]


def test_a_life_without_its_final_line_waits_for_it_within_the_grace() -> None:
    # `xl destroy`: the domain is gone from the list a moment before the monitor
    # writes "has been destroyed"; the pass in between must not call it unknown.
    s = settings("on-failure")
    gone = step(seen_running(s), (), NOW, s, {"web": NO_FINAL_LINE})
    assert gone.memory.guests["web"].exit_reason is None
    assert gone.wake_at == NOW + 5.0
    later = step(gone.memory, (), NOW + 1, s, {"web": DESTROYED})
    assert later.memory.guests["web"].exit_reason == "destroyed"
    assert state(later) == GuestPhase.STOPPED


def test_the_reason_rides_on_the_vanished_event() -> None:
    s = settings()
    gone = step(seen_running(s), (), NOW, s, {"web": CRASH})
    vanished = [e for e in gone.events if e.kind == EventKind.VANISHED]
    assert [e.reason for e in vanished] == ["crash"]


def test_a_crash_after_a_long_uptime_counts_as_a_failure() -> None:
    s = settings(backoff=Backoff(initial=10, jitter=0, give_up_after=3))
    plan = after_end(CRASH, s)
    assert plan.memory.guests["web"].attempts == 1
    gone = step(seen_running(s), (), NOW, s, {"web": CRASH})
    assert EventKind.FAILING in [e.kind for e in gone.events]


def test_a_clean_poweroff_right_after_create_is_no_failure() -> None:
    s = settings()
    memory = seen_running(s)
    memory = replace(memory, guests={"web": replace(memory.guests["web"], created_at=NOW - 5)})
    gone = step(memory, (), NOW, s, {"web": POWEROFF})
    assert gone.memory.guests["web"].attempts == 0
    assert EventKind.DIED_EARLY not in [e.kind for e in gone.events]


def test_an_unknown_end_right_after_create_still_is_a_failure() -> None:
    s = settings()
    memory = seen_running(s)
    memory = replace(memory, guests={"web": replace(memory.guests["web"], created_at=NOW - 5)})
    gone = step(memory, (), NOW, s, {"web": None})
    assert gone.memory.guests["web"].attempts == 1
    assert EventKind.DIED_EARLY in [e.kind for e in gone.events]


def crash_cycle(memory: Memory, at: float, s: PlannerSettings, domid: int) -> Memory:
    """The guest (running as `domid - 1`) crashes at `at`, is recreated and runs
    stably as `domid` for a long while."""
    gone = step(memory, (), at, s, {"web": Life(domid - 1, 3)})
    memory = gone.memory
    gm = replace(memory.guests["web"], next_retry=None, created_at=at + 1)
    memory = replace(memory, guests={"web": gm})
    stable = step(memory, running(domid), at + 1000, s)
    return stable.memory


def test_crashes_every_two_hours_reach_give_up_after() -> None:
    s = settings(backoff=Backoff(initial=10, jitter=0, give_up_after=3))
    memory = seen_running(s, domid=1)
    for n in range(2):
        memory = crash_cycle(memory, NOW + n * 7200, s, domid=n + 2)
        assert memory.guests["web"].attempts == 0  # stable in between
    last = step(memory, (), NOW + 2 * 7200, s, {"web": Life(3, 3)})
    assert last.memory.guests["web"].attempts == 3
    assert EventKind.GAVE_UP in [e.kind for e in last.events]


def test_crashes_further_apart_than_the_window_start_again() -> None:
    s = settings(backoff=Backoff(initial=10, jitter=0, give_up_after=3))
    memory = seen_running(s, domid=1)
    for n in range(3):
        memory = crash_cycle(memory, NOW + n * (CRASH_WINDOW + 1), s, domid=n + 2)
    assert memory.guests["web"].crashes == 1


def test_a_crash_xl_restarted_itself_is_still_seen() -> None:
    # on_crash="restart": the guest is listed again under a new domid before any
    # pass sees it missing; the old life's end is read all the same.
    s = settings()
    plan = step(seen_running(s), running(domid=8), NOW, s, {"web": CRASH})
    gm = plan.memory.guests["web"]
    assert (gm.exit_reason, gm.attempts, gm.life_domid) == ("crash", 1, 8)
    assert state(plan) == GuestPhase.RUNNING


def test_stop_keeps_the_guest_down_whatever_the_policy() -> None:
    s = settings("always")
    memory = planner.stop(seen_running(s), "web")
    listed = step(memory, running(), NOW, s)
    assert state(listed) == GuestPhase.STOPPED  # still shutting down
    gone = step(listed.memory, (), NOW + 1, s, {"web": POWEROFF})
    later = step(gone.memory, (), NOW + 10, s, {"web": POWEROFF})
    assert (later.creates, state(later)) == ((), GuestPhase.STOPPED)
    assert later.statuses[0].detail == STOPPED_BY_ADMIN
    assert later.statuses[0].last_exit == LastExit("poweroff", 0, NOW + 1)


def test_start_creates_a_stopped_guest_at_once() -> None:
    s = settings("never")
    stopped = after_end(POWEROFF, s)
    started = step(planner.start(stopped.memory, "web"), (), NOW + 11, s)
    assert [c.name for c in started.creates] == ["web"]


def test_restart_intent_brings_a_guest_back_under_never() -> None:
    s = settings("never")
    memory = planner.intend(seen_running(s), "web", "restart")
    gone = step(memory, (), NOW, s, {"web": POWEROFF})
    later = step(gone.memory, (), NOW + 10, s, {"web": POWEROFF})
    assert [c.name for c in later.creates] == ["web"]


def test_the_drain_intent_names_the_reason() -> None:
    s = settings("on-failure")
    memory = planner.intend(seen_running(s), "web", "host-shutdown")
    gone = step(memory, (), NOW, s, {"web": POWEROFF})
    assert gone.memory.guests["web"].exit_reason == "host-shutdown"


def test_a_life_of_the_last_boot_without_final_line_ended_with_the_host() -> None:
    s = settings("never")
    memory = planner.new_boot(seen_running(s), boot_time=1.0)
    plan = step(memory, (), NOW, s, {"web": NO_FINAL_LINE})
    assert plan.statuses[0].last_exit == LastExit("host-shutdown", None, NOW)
    assert [c.name for c in plan.creates] == ["web"]  # boot starts it, whatever the policy


def test_a_life_of_the_last_boot_with_its_final_line_keeps_its_reason() -> None:
    s = settings("always")
    memory = planner.new_boot(seen_running(s), boot_time=1.0)
    plan = step(memory, (), NOW, s, {"web": CRASH})
    assert plan.memory.guests["web"].exit_reason == "crash"


def test_stopped_outlives_a_dom0_reboot() -> None:
    s = settings("on-failure")
    stopped = after_end(POWEROFF, s)
    plan = step(planner.new_boot(stopped.memory, boot_time=1.0), (), NOW + 100, s)
    assert (plan.creates, state(plan)) == ((), GuestPhase.STOPPED)


def test_stopped_is_kept_without_a_listing() -> None:
    s = settings("on-failure")
    stopped = after_end(POWEROFF, s)
    plan = planner.plan(DesiredState(guests=(WEB,)), None, stopped.memory, (), NOW + 20, s)
    assert state(plan) == GuestPhase.STOPPED


def test_kept_down_matrix_intents() -> None:
    assert kept_down(R.CRASH, "always", "stop")
    assert not kept_down(R.POWEROFF, "never", "restart")
    assert not kept_down(R.HOST_SHUTDOWN, "never", None)
    assert End(R.POWEROFF, 0).code == 0


# --- zombies ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "flags"), [("(null)", "--p--d"), ("(null)", "-b----"), ("web", "-----d")]
)
def test_a_zombie_of_the_last_life_blocks_the_create(name: str, flags: str) -> None:
    s = settings("always")
    zombie = (Domain(name, 7, 0, 1, flags, 3.0),)
    gone = step(seen_running(s), zombie, NOW, s, {"web": POWEROFF})
    later = step(gone.memory, zombie, NOW + 60, s, {"web": POWEROFF})
    assert (later.creates, state(later)) == ((), GuestPhase.DYING)
    assert "blocked by zombie domid 7" in (row(later).detail or "")
    assert later.memory.guests["web"].attempts == 0  # not retried into the ground


def test_a_nameless_domain_of_another_life_blocks_nothing() -> None:
    s = settings("always")
    other = (Domain("(null)", 9, 0, 1, "--p--d", 3.0),)
    gone = step(seen_running(s), other, NOW, s, {"web": POWEROFF})
    later = step(gone.memory, other, NOW + 10, s, {"web": POWEROFF})
    assert [c.name for c in later.creates] == ["web"]


def test_a_life_that_ended_while_the_daemon_was_down_is_not_waited_for() -> None:
    # The monitor was killed (no final line) while no daemon ran: a new daemon has
    # never seen the guest missing, so there is no grace to wait in.
    s = settings("on-failure")
    memory = planner.forget_runtime(seen_running(s))
    plan = step(memory, (), NOW, s, {"web": NO_FINAL_LINE})
    assert [c.name for c in plan.creates] == ["web"]
    assert row(plan).last_exit == LastExit("unknown", None, NOW)


def test_a_drained_guest_powered_off_before_the_reboot_is_started_at_boot() -> None:
    # The host-shutdown drain ran `xl shutdown`: the log says poweroff, yet at boot
    # an on-failure guest is created (the policy is for ends while Dom0 runs).
    s = settings("on-failure")
    memory = planner.new_boot(seen_running(s), boot_time=1.0)
    plan = step(memory, (), NOW, s, {"web": POWEROFF})
    assert row(plan).last_exit == LastExit("poweroff", 0, NOW)
    assert [c.name for c in plan.creates] == ["web"]


def test_a_zombie_among_several_nameless_domains_is_found() -> None:
    s = settings("always")
    listing = (Domain("(null)", 7, 0, 1, "--p--d", 3.0), Domain("(null)", 5, 0, 1, "--p--d", 3.0))
    gone = step(seen_running(s), listing, NOW, s, {"web": POWEROFF})
    later = step(gone.memory, listing, NOW + 60, s, {"web": POWEROFF})
    assert "blocked by zombie domid 7" in (row(later).detail or "")


def test_a_restart_soon_after_a_create_is_no_failure_before_xl_logs_the_end() -> None:
    # `restart` right after `start`: the domain can leave the listing before xl's
    # monitor writes its final line; the end is ours, so it is not "died after create"
    s = settings("on-failure")
    fresh = seen_running(s)
    just_created = replace(fresh.guests["web"], created_at=NOW - 1)
    memory = replace(fresh, guests={"web": just_created})
    memory = planner.intend(memory, "web", "restart")
    plan = step(memory, (), NOW, s, {"web": NO_FINAL_LINE})
    web = plan.memory.guests["web"]
    assert (web.attempts, web.next_retry, web.last_error) == (0, None, None)
    later = step(plan.memory, (), NOW + 10, s, {"web": NO_FINAL_LINE})
    assert [c.name for c in later.creates] == ["web"]  # after missing_grace, no backoff
