"""How a guest's life ended, and whether it runs again: pure rules the planner applies.

Given what is remembered of a guest's last life (`GuestMemory.life_domid`, our
own `intent`), what xl's monitor log says of it (an `exits.Life`, read by the
adapter) and the time, `classify` names the end, in this order: our own intent
(the host-shutdown drain names its reason; `stop` and `restart` take xl's
word for what happened but decide the policy), the log's final line, and for a
life with no final line the boot: a life of an earlier Dom0 boot ended with the
host (`host-shutdown`), any other is `unknown`. Nothing is guessed from timing.

`kept_down` is the restart policy matrix (see SPEC "Why a guest went away"):

    reason \\ policy     always   on-failure   never
    poweroff            run      stopped      stopped
    destroyed           run      stopped      stopped
    reboot              run      run          stopped
    crash, watchdog     run      run          stopped
    unknown             run      run          stopped
    host-shutdown       run      run          run      (Dom0 boot starts every guest)

`stop` keeps a guest down and `restart` brings it back whatever the policy.

Crashes and watchdog resets count as failures (backoff, `give_up_after`) even
after the guest ran longer than `stable_after`: each one within CRASH_WINDOW of
the previous one adds to `crashes`, and the failure count after a crash is at
least that number, so a guest that crashes every two hours reaches
`give_up_after` (and notifies) although it is stable in between.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from xenreconcile.exits import FAILURE_REASONS, ExitReason, Life
from xenreconcile.models import GuestMemory, PlannerSettings

CRASH_WINDOW = 24 * 3600.0
STOP, RESTART, HOST_SHUTDOWN = "stop", "restart", "host-shutdown"
INTENTS = (STOP, RESTART, HOST_SHUTDOWN)
STOPPED_BY_ADMIN = "stopped by `xenreconcile stop`"


@dataclass(frozen=True, slots=True)
class End:
    """A classified end of a life: the reason word and xl's reason code (if any)."""

    reason: ExitReason
    code: int | None = None


def waits_for_log(gm: GuestMemory, life: Life | None, grace_over: bool) -> bool:
    """True while the end of a life can still be told better by waiting: the log
    holds the life but not yet its final line (the monitor writes it just after
    the domain goes), no intent or earlier boot decides, and the grace is not over."""
    if gm.intent is not None or gm.life_before_boot or grace_over:
        return False
    return life is not None and not life.ended


def classify(gm: GuestMemory, life: Life | None) -> End:
    """Given a guest's memory (its intent, whether its life was of an earlier
    boot) and the life the log holds for it (or None), return how it ended."""
    if gm.intent == HOST_SHUTDOWN:
        return End(ExitReason.HOST_SHUTDOWN)
    if life is not None and life.ended:
        return End(life.reason, life.code)
    if gm.life_before_boot:
        return End(ExitReason.HOST_SHUTDOWN)
    return End(ExitReason.UNKNOWN)


def kept_down(reason: ExitReason, policy: str, intent: str | None) -> bool:
    """True when a guest that ended so, under `policy`, with our `intent`, is
    kept down (stopped) rather than created again."""
    if intent is not None:
        return intent == STOP
    if reason is ExitReason.HOST_SHUTDOWN or policy == "always":
        return False
    if policy == "never":
        return True
    return reason in (ExitReason.POWEROFF, ExitReason.DESTROYED)


def stopped_text(end: End, policy: str, intent: str | None) -> str:
    """Why a guest is kept down, for `status`."""
    if intent == STOP:
        return STOPPED_BY_ADMIN
    return f"ended by {end.reason} (restart: {policy}); `xenreconcile start` runs it again"


def settle(
    gm: GuestMemory, end: End, now: float, settings: PlannerSettings, name: str
) -> GuestMemory:
    """Given a guest's memory, how its life ended and the time, return the memory
    with the end recorded, the life forgotten, its crash count updated and, when
    its policy says so, the guest stopped."""
    policy = settings.restart_of(name)
    stopped = gm.stopped
    # The policy is for ends while Dom0 runs: at boot every guest not stopped before
    # is created, also one the host-shutdown drain powered off (the log says poweroff).
    if gm.life_before_boot and gm.intent != STOP:
        pass
    elif kept_down(end.reason, policy, gm.intent):
        stopped = stopped_text(end, policy, gm.intent)
    elif gm.intent == RESTART:
        stopped = None
    gm = replace(
        gm,
        exit_reason=str(end.reason),
        exit_code=end.code,
        exit_at=now,
        ended_domid=gm.life_domid,
        life_domid=None,
        life_before_boot=False,
        intent=None,
        stopped=stopped,
    )
    if end.reason in FAILURE_REASONS:
        recent = gm.last_crash_at is not None and now - gm.last_crash_at < CRASH_WINDOW
        gm = replace(gm, crashes=gm.crashes + 1 if recent else 1, last_crash_at=now)
    return gm


def is_failure(end: End) -> bool:
    """True when this end counts as a failure whatever the guest's uptime."""
    return end.reason in FAILURE_REASONS


def is_clean(end: End) -> bool:
    """True when this end never counts as a failure (not even an early one)."""
    return end.reason not in FAILURE_REASONS and end.reason is not ExitReason.UNKNOWN


def attempts_before_crash(gm: GuestMemory) -> int:
    """The failure count a crash adds one to: at least the crashes before it in
    the window (settle has already counted this one)."""
    return max(gm.attempts, gm.crashes - 1)
