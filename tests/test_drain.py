"""The drain's plan (pure) and its run against a scripted xl on a fake clock."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from xenreconcile.config import Config
from xenreconcile.drain import LEAVE, SAVE, SHUTDOWN, Drain, Target, plan_drain
from xenreconcile.models import CreateResult, Domain
from xenreconcile.saves import SaveStore, image_bytes_needed
from xenreconcile.state import Boot

GIB = 2**30
BOOT = Boot("boot-1", 1000.0, 50.0)


def names(groups: Sequence[Sequence[Target]]) -> list[list[str]]:
    return [[t.name for t in g] for g in groups]


def test_groups_go_in_reverse_order_and_leave_is_left() -> None:
    targets = [
        Target("db", 10, SHUTDOWN),
        Target("web2", 50, SHUTDOWN),
        Target("web1", 50, SAVE, mem_mib=128),
        Target("lb", 90, SHUTDOWN),
        Target("pet", 50, LEAVE),
    ]
    plan = plan_drain(targets, free_bytes=10 * GIB, save_problem=None)
    assert names(plan.groups) == [["lb"], ["web1", "web2"], ["db"]]
    assert [t.name for t in plan.left] == ["pet"]
    assert plan.fallbacks == {}


def test_saves_without_room_fall_back_to_shutdown_counting_room_for_all() -> None:
    room = image_bytes_needed(1024) + image_bytes_needed(512)
    targets = [
        Target("a", 50, SAVE, mem_mib=1024),
        Target("b", 50, SAVE, mem_mib=512),
        Target("c", 50, SAVE, mem_mib=512),
    ]
    plan = plan_drain(targets, free_bytes=room, save_problem=None)
    actions = {t.name: t.action for g in plan.groups for t in g}
    assert actions == {"a": SAVE, "b": SAVE, "c": SHUTDOWN}
    assert "MiB free" in plan.fallbacks["c"]


def test_an_unusable_save_dir_turns_every_save_into_a_shutdown() -> None:
    plan = plan_drain([Target("a", 50, SAVE, mem_mib=64)], GIB, "save_dir /x does not exist")
    assert plan.groups[0][0].action == SHUTDOWN
    assert plan.fallbacks == {"a": "save_dir /x does not exist"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        """Time passes only once the drain's save threads are done with their
        (instant, scripted) xl call, so the clock cannot outrun them."""
        for thread in threading.enumerate():
            if thread.name.startswith("drain-save-"):
                thread.join(timeout=30)
        self.now += max(seconds, 0.01)


class ScriptedXl:
    """Guests that power off `delay` seconds (fake clock) after `xl shutdown`;
    those in `ignore` never do. Saves write the temp file and end the guest."""

    def __init__(self, clock: FakeClock, running: list[str], *, delay: float = 1.0) -> None:
        self.clock = clock
        self.up = dict.fromkeys(running, True)
        self.gone_at: dict[str, float] = {}
        self.delay = delay
        self.ignore: set[str] = set()
        self.slow_request: dict[str, float] = {}  # seconds `xl shutdown NAME` itself takes
        self.fail_save: set[str] = set()
        self.calls: list[tuple[float, list[str]]] = []
        self.lock = threading.Lock()

    def lifecycle(self, args: Sequence[str], timeout: float) -> CreateResult:
        with self.lock:
            return self._lifecycle(args, timeout)

    def _lifecycle(self, args: Sequence[str], timeout: float) -> CreateResult:
        self.calls.append((self.clock.now, list(args)))
        name = args[-1] if args[0] == "shutdown" else args[1]
        if args[0] == "save":
            if name in self.fail_save:
                return CreateResult(ok=False, exit_code=1, stderr_tail="Failed to save domain")
            Path(args[2]).write_text("image")
            self.up.pop(name)
            return CreateResult(ok=True, exit_code=0, duration=1.0)
        if name in self.slow_request and self.slow_request[name] > timeout:
            self.clock.now += timeout
            return CreateResult(ok=False, exit_code=None, timed_out=True, duration=timeout)
        self.clock.now += self.slow_request.get(name, 0.0)
        if name not in self.ignore:
            self.gone_at[name] = self.clock.now + self.delay
        return CreateResult(ok=True, exit_code=0)

    def list(self) -> tuple[Domain, ...]:
        with self.lock:
            return self._list()

    def _list(self) -> tuple[Domain, ...]:
        for name, at in self.gone_at.items():
            if at <= self.clock.now:
                self.up.pop(name, None)
        return tuple(Domain(n, i + 1, 128, 1, "-b----", 1.0) for i, n in enumerate(self.up))


class Log:
    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **kw: self.records.append((event, kw))

    def events(self, name: str) -> list[dict[str, Any]]:
        return [kw for event, kw in self.records if event == name]


def make_drain(tmp_path: Path, xl: ScriptedXl, clock: FakeClock, timeout: float) -> Drain:
    (tmp_path / "state" / "save").mkdir(parents=True, mode=0o700)
    store = SaveStore(Config(state_dir=str(tmp_path / "state")), wall=lambda: 5000.0)
    return Drain(xl, xl.list, store, BOOT, Log(), timeout, clock.monotonic, clock.sleep)


def test_a_group_goes_down_in_parallel_and_the_next_only_after_it(tmp_path: Path) -> None:
    clock = FakeClock()
    xl = ScriptedXl(clock, ["a1", "a2", "b"], delay=10.0)
    drain = make_drain(tmp_path, xl, clock, timeout=80)
    plan = plan_drain(
        [Target("a1", 90, SHUTDOWN), Target("a2", 90, SHUTDOWN), Target("b", 10, SHUTDOWN)],
        GIB,
        None,
    )
    result = drain.run(plan)
    asked = {args[-1]: at for at, args in xl.calls}
    assert asked["a1"] == asked["a2"] == 0.0, "one group is asked at once"
    assert asked["b"] >= 10.0, "the next group waits until the first is down"
    assert result.ok and sorted(result.shut_down) == ["a1", "a2", "b"]
    assert 20.0 <= result.seconds < 21.0, "two groups of 10 s, in turn, not four"


def test_guests_still_up_at_the_deadline_are_logged_and_left(tmp_path: Path) -> None:
    clock = FakeClock()
    xl = ScriptedXl(clock, ["stuck", "fine", "later"])
    xl.ignore.add("stuck")
    drain = make_drain(tmp_path, xl, clock, timeout=8)
    plan = plan_drain(
        [Target("stuck", 60, SHUTDOWN), Target("fine", 60, SHUTDOWN), Target("later", 5, SHUTDOWN)],
        GIB,
        None,
    )
    result = drain.run(plan)
    assert not result.ok
    assert result.shut_down == ["fine"]
    assert sorted(result.still_running) == ["later", "stuck"]
    assert 8.0 <= result.seconds < 8.5, "one deadline for the whole drain"
    assert all(args[0] in ("shutdown",) for _at, args in xl.calls), "nothing destroyed"
    assert "stuck" in xl.up
    progress = drain.log.events("drain_progress")  # type: ignore[attr-defined]
    assert progress and progress[0]["still_running"] == ["stuck"]
    assert progress[0]["seconds_left"] <= 3


def test_hvm_guests_are_shut_down_with_the_acpi_fallback(tmp_path: Path) -> None:
    clock = FakeClock()
    xl = ScriptedXl(clock, ["win", "linux"])
    drain = make_drain(tmp_path, xl, clock, timeout=80)
    drain.run(
        plan_drain([Target("win", 50, SHUTDOWN, hvm=True), Target("linux", 50, SHUTDOWN)], 0, None)
    )
    assert sorted(args for _at, args in xl.calls) == [
        ["shutdown", "-F", "win"],
        ["shutdown", "linux"],
    ]


def test_a_save_is_atomic_recorded_and_a_failed_one_shuts_down(tmp_path: Path) -> None:
    clock = FakeClock()
    xl = ScriptedXl(clock, ["keep", "bad"])
    xl.fail_save.add("bad")
    drain = make_drain(tmp_path, xl, clock, timeout=80)
    plan = plan_drain(
        [Target("keep", 50, SAVE, mem_mib=96), Target("bad", 50, SAVE, mem_mib=96)], GIB, None
    )
    result = drain.run(plan)
    save_dir = tmp_path / "state" / "save"
    saves = {args[1]: args[2] for _at, args in xl.calls if args[0] == "save"}
    assert saves["keep"] == str(save_dir / ".keep.save.tmp"), "written under a temp name"
    assert sorted(p.name for p in save_dir.iterdir()) == ["keep.save"]
    record = drain.images.records()["keep"]
    assert (record.boot_id, record.saved_at, record.mem_mib) == ("boot-1", 5000.0, 96)
    assert result.saved == ["keep"] and result.shut_down == ["bad"] and result.ok


@pytest.mark.parametrize("timeout", [0.5])
def test_a_deadline_before_a_group_leaves_it_untouched(tmp_path: Path, timeout: float) -> None:
    clock = FakeClock()
    xl = ScriptedXl(clock, ["first", "second"], delay=5.0)
    drain = make_drain(tmp_path, xl, clock, timeout=timeout)
    result = drain.run(
        plan_drain([Target("first", 9, SHUTDOWN), Target("second", 1, SHUTDOWN)], 0, None)
    )
    assert sorted(result.still_running) == ["first", "second"]
    assert [args[-1] for _at, args in xl.calls] == ["first"]


def test_a_slow_shutdown_request_gets_the_time_left_not_a_fixed_limit(tmp_path: Path) -> None:
    """On real Xen, under load, `xl shutdown NAME` (only the request) took over 30 s."""
    clock = FakeClock()
    xl = ScriptedXl(clock, ["slow"], delay=1.0)
    xl.slow_request["slow"] = 40.0
    drain = make_drain(tmp_path, xl, clock, timeout=80)
    result = drain.run(plan_drain([Target("slow", 50, SHUTDOWN)], 0, None))
    assert result.ok and result.shut_down == ["slow"]
