"""The host's drain: every managed running guest shut down, saved or left, by one deadline.

`plan_drain` (pure) is given the guests to drain, each with its `on_host_shutdown`
action, and the room in save_dir; it returns the order groups, highest `order`
first (the reverse of boot order: what started last stops first), and the saves
that fall back to a shutdown (no room, or save_dir unusable), each with why.

`Drain.run` carries a plan out against one deadline. Within a group every guest
goes at once: `xl save` in a thread each (into a temp name, renamed and recorded
only when complete; a save that fails is followed by a shutdown), and a clean
`xl shutdown` (`-F` for an HVM guest, whose PV drivers may be missing) for the
others, confirmed by listing until the guest is gone. The next group starts when
the group is down, or not at all when the deadline passed. Progress (who is still
up, time left) is logged every few seconds. Guests still up at the deadline are
logged and left to the host: nothing is destroyed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from itertools import groupby
from typing import Any

from xenreconcile.models import CreateResult, Domain
from xenreconcile.passinputs import LifecycleRunner
from xenreconcile.saves import SaveStore, image_bytes_needed, savable_name
from xenreconcile.state import Boot
from xenreconcile.xl import ToolstackError

SHUTDOWN, SAVE, LEAVE = "shutdown", "save", "leave"
PROGRESS_EVERY = 5.0
POLL = 0.25


@dataclass(frozen=True, slots=True)
class Target:
    """A running managed guest and what the drain does with it."""

    name: str
    order: int
    action: str
    domid: int = 0
    mem_mib: int = 0
    hvm: bool = False


@dataclass(frozen=True, slots=True)
class DrainPlan:
    """Groups to take down in turn (highest order first), guests left by their
    policy, and the saves turned into shutdowns, with why."""

    groups: tuple[tuple[Target, ...], ...]
    left: tuple[Target, ...] = ()
    fallbacks: dict[str, str] = field(default_factory=dict)


def plan_drain(targets: Sequence[Target], free_bytes: int, save_problem: str | None) -> DrainPlan:
    """Given the guests, the bytes free in save_dir and why it cannot be saved
    into (None: it can), return the plan. Room is counted for all saves together,
    in the order they run: every image stays until the next boot."""
    fallbacks: dict[str, str] = {}
    acting: list[Target] = []
    room = free_bytes
    for target in sorted(targets, key=lambda t: (-t.order, t.name)):
        why = _why_not_saved(target, room, save_problem) if target.action == SAVE else None
        if target.action == SAVE and why is None:
            room -= image_bytes_needed(target.mem_mib)
        elif why is not None:
            fallbacks[target.name] = why
        acting.append(replace(target, action=SHUTDOWN) if why is not None else target)
    groups = tuple(
        tuple(group)
        for _order, group in groupby((t for t in acting if t.action != LEAVE), lambda t: t.order)
    )
    left = tuple(t for t in acting if t.action == LEAVE)
    return DrainPlan(groups, left, fallbacks)


def _why_not_saved(target: Target, room: int, save_problem: str | None) -> str | None:
    """Why `target` cannot be saved, given the room left; None when it can."""
    if save_problem is not None:
        return save_problem
    if not savable_name(target.name):
        return "its name cannot name an image file"
    needed = image_bytes_needed(target.mem_mib)
    if needed > room:
        return f"save_dir has {room // 2**20} MiB free, the image needs {needed // 2**20} MiB"
    return None


@dataclass
class DrainResult:
    """How each guest ended: saved, shut down, left (its policy), failed (why),
    still running at the deadline; and the seconds the drain took."""

    saved: list[str] = field(default_factory=list)
    shut_down: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    still_running: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every guest was shut down, saved or left by its policy, in time."""
        return not self.failed and not self.still_running


@dataclass
class Drain:
    """Runs a `DrainPlan` with xl (`runner`), a listing (`lister`) and the save store."""

    runner: LifecycleRunner
    lister: Callable[[], Sequence[Domain]]
    images: SaveStore
    boot: Boot
    log: Any
    timeout: float
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    poll: float = POLL
    progress_every: float = PROGRESS_EVERY

    def run(self, plan: DrainPlan) -> DrainResult:
        """Take the groups down in turn by the deadline; returns how each guest ended."""
        started = self.monotonic()
        deadline = started + self.timeout
        result = DrainResult(left=[t.name for t in plan.left])
        for name, why in plan.fallbacks.items():
            self.log.warning("save_skipped", guest=name, error=why, instead=SHUTDOWN)
        for number, group in enumerate(plan.groups):
            if self.monotonic() >= deadline:
                later = [t.name for g in plan.groups[number:] for t in g]
                result.still_running += later
                self.log.error("drain_deadline", still_running=later, reached="before the group")
                break
            _Group(self, group, deadline, result).run()
        result.seconds = self.monotonic() - started
        return result


class _Group:
    """One order group being taken down: saves in threads, shutdowns confirmed by listing."""

    def __init__(self, drain: Drain, group: Sequence[Target], deadline: float, result: DrainResult):
        self.drain, self.group, self.deadline, self.result = drain, group, deadline, result
        self.lock = threading.Lock()
        self.waiting: dict[str, Target] = {}  # shutdown asked, not yet seen gone
        self.saving: set[str] = set()

    def left(self) -> float:
        return max(0.0, self.deadline - self.drain.monotonic())

    def run(self) -> None:
        order = self.group[0].order
        self.drain.log.info("drain_group", order=order, guests=[t.name for t in self.group])
        threads = []
        for target in self.group:
            if target.action == SAVE:
                self.saving.add(target.name)
                thread = threading.Thread(
                    target=self._save, args=(target,), name=f"drain-save-{target.name}", daemon=True
                )
                thread.start()
                threads.append(thread)
            else:
                self._ask_shutdown(target)
        self._wait()
        for thread in threads:
            thread.join(timeout=0.1)

    def _save(self, target: Target) -> None:
        """`xl save` into the temp name; commit it, or fall back to a shutdown."""
        images, log = self.drain.images, self.drain.log
        outcome = self.drain.runner.lifecycle(
            ["save", target.name, images.temp_path(target.name)], self.left()
        )
        try:
            if outcome.ok:
                images.commit(target.name, self.drain.boot, target.mem_mib)
                log.info(
                    "guest_saved",
                    guest=target.name,
                    image=images.image_path(target.name),
                    seconds=round(outcome.duration, 2),
                )
                with self.lock:  # a save that ended just after the deadline still counts
                    if target.name in self.result.still_running:
                        self.result.still_running.remove(target.name)
                    self.result.saved.append(target.name)
                return
            images.discard_temp(target.name)
            log.error("save_failed", guest=target.name, error=_why(outcome), instead=SHUTDOWN)
            self._ask_shutdown(target)
        except OSError as exc:
            log.error("save_failed", guest=target.name, error=str(exc), instead=SHUTDOWN)
            self._ask_shutdown(target)
        finally:
            with self.lock:
                self.saving.discard(target.name)

    def _ask_shutdown(self, target: Target) -> None:
        """Ask the guest to shut down (`-F` for HVM); wait for it unless xl refused.
        The request may take until the deadline: a loaded Dom0 can take xl tens of
        seconds (seen on real Xen), and a request cut short may still have reached
        the guest, so it is watched like one that returned."""
        args = ["shutdown", *(["-F"] if target.hvm else []), target.name]
        outcome = self.drain.runner.lifecycle(args, self.left())
        with self.lock:
            if outcome.ok or outcome.timed_out:
                self.waiting[target.name] = target
            else:
                self.result.failed[target.name] = _why(outcome)
                self.drain.log.error("shutdown_failed", guest=target.name, error=_why(outcome))

    def _wait(self) -> None:
        """List until every asked guest is gone and every save ended, or the deadline."""
        next_progress = self.drain.monotonic() + self.drain.progress_every
        while True:
            self._confirm_gone()
            with self.lock:
                up = sorted(set(self.waiting) | self.saving)
            if not up:
                return
            now = self.drain.monotonic()
            if now >= self.deadline:
                self._give_up(up)
                return
            if now >= next_progress:
                left = round(self.left())
                self.drain.log.info("drain_progress", still_running=up, seconds_left=left)
                next_progress = now + self.drain.progress_every
            self.drain.sleep(min(self.drain.poll, self.left()))

    def _confirm_gone(self) -> None:
        """Move the asked guests no longer listed to `shut_down`."""
        with self.lock:
            if not self.waiting:
                return
        try:
            listed = {d.name for d in self.drain.lister()}
        except ToolstackError as exc:
            self.drain.log.warning("drain_list_failed", error=str(exc))
            return
        with self.lock:
            for name in [n for n in self.waiting if n not in listed]:
                del self.waiting[name]
                self.result.shut_down.append(name)
                self.drain.log.info("guest_shut_down", guest=name)

    def _give_up(self, up: list[str]) -> None:
        """The deadline passed: log who is still up and leave them to the host."""
        with self.lock:
            self.result.still_running += up
            self.waiting.clear()
        self.drain.log.error("drain_deadline", still_running=up, left_to="the host's shutdown")


def _why(outcome: CreateResult) -> str:
    """A one-line reason for a failed xl run."""
    if outcome.timed_out:
        return f"timed out after {outcome.duration:.0f}s"
    return f"exited {outcome.exit_code}: {outcome.cause}"
