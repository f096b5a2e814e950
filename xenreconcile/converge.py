"""When `run --once` is done: it converges, doing every create it can do now,
order groups included, and stops only when nothing more can happen without
waiting for a backoff (or an outside change). Pure: given a plan and the time.
"""

from __future__ import annotations

from xenreconcile.models import GuestPhase, GuestStatus, Plan
from xenreconcile.planner import START_DELAY_DETAIL


def wait_before_next_pass(plan: Plan, now: float) -> float | None:
    """Given the plan of a pass that started no create while none is in flight,
    return how many seconds `run --once` waits before its next pass (a guest's
    `missing_grace` or `start_delay` runs out by itself), or None when it is done."""
    if not plan.trusted or plan.wake_at is None:
        return None
    if not any(_ready_by_itself(status) for status in plan.statuses):
        return None
    return max(0.0, plan.wake_at - now)


def _ready_by_itself(status: GuestStatus) -> bool:
    """True for a missing guest that only waits for time to pass, not for a backoff."""
    if status.state is GuestPhase.GRACE:
        return True
    return status.state is GuestPhase.WAITING and status.detail == START_DELAY_DETAIL
