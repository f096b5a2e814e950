"""`converge.wait_before_next_pass`: what `run --once` still waits for."""

from __future__ import annotations

from xenreconcile.converge import wait_before_next_pass
from xenreconcile.models import GuestPhase, GuestStatus, Memory, Plan
from xenreconcile.planner import START_DELAY_DETAIL


def _plan(*statuses: GuestStatus, wake_at: float | None = 110.0, trusted: bool = True) -> Plan:
    return Plan(creates=(), statuses=statuses, memory=Memory(), wake_at=wake_at, trusted=trusted)


def test_waits_for_a_grace_period_to_run_out() -> None:
    plan = _plan(GuestStatus("a", GuestPhase.GRACE), GuestStatus("b", GuestPhase.RUNNING))
    assert wait_before_next_pass(plan, 100.0) == 10.0


def test_waits_for_start_delay() -> None:
    plan = _plan(GuestStatus("a", GuestPhase.WAITING, detail=START_DELAY_DETAIL))
    assert wait_before_next_pass(plan, 104.0) == 6.0


def test_does_not_wait_for_a_backoff_or_a_group_behind_one() -> None:
    plan = _plan(
        GuestStatus("a", GuestPhase.BACKOFF, next_retry=110.0),
        GuestStatus("b", GuestPhase.WAITING, detail="waits for order 10: a"),
    )
    assert wait_before_next_pass(plan, 100.0) is None


def test_done_when_everything_runs_or_the_listing_is_not_trusted() -> None:
    assert (
        wait_before_next_pass(_plan(GuestStatus("a", GuestPhase.RUNNING), wake_at=None), 0) is None
    )
    untrusted = _plan(GuestStatus("a", GuestPhase.GRACE), trusted=False)
    assert wait_before_next_pass(untrusted, 100.0) is None
