"""The `@releaseDomain` watch as a source of hints: the simulated
`xenstore-watch`, the source that runs it, and the daemon noticing a death at
once rather than at the next `interval`."""

from __future__ import annotations

import select
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.daemon_harness import DaemonRun
from xenreconcile.loopqueue import Hint, LoopQueue
from xenreconcile.releasewatch import ReleaseWatchSource, restart_delay
from xenreconcile.simxl import SimXl, wait_for


class Log:
    """A logger recording (level, event, fields)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **fields: self.records.append((level, event, fields))

    def events(self, event: str) -> list[dict[str, Any]]:
        return [fields for _level, name, fields in self.records if name == event]


def hints(door: LoopQueue) -> int:
    """How many CHANGED hints the door holds (taking them)."""
    return sum(1 for m in door.take_all() if m is Hint.CHANGED)


# --- the simulated xenstore-watch ------------------------------------------------------------


def start_xswatch(simxl: SimXl) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "xenreconcile.simxl.xswatch",
            "--state",
            str(simxl.state_dir),
            "@releaseDomain",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


def read_line(proc: subprocess.Popen[str], timeout: float = 15) -> str:
    """The next line `proc` prints, or "" if none comes within `timeout` seconds."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else ""


def test_the_simulated_watch_fires_once_when_set_and_when_a_domain_is_destroyed(
    simxl: SimXl,
) -> None:
    simxl.add_domain("a")
    simxl.add_domain("b")
    proc = start_xswatch(simxl)
    try:
        assert read_line(proc) == "@releaseDomain\n", "the initial fire"
        simxl.destroy("a")
        assert read_line(proc) == "@releaseDomain\n", "a was released"
        simxl.crash("b")
        assert read_line(proc) == "@releaseDomain\n", "b crashed"
    finally:
        proc.kill()
        proc.wait(10)


def test_the_simulated_watch_refuses_other_paths(simxl: SimXl) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "xenreconcile.simxl.xswatch", "--state", str(simxl.state_dir), "/x"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1 and "@releaseDomain" in result.stderr


# --- the source ------------------------------------------------------------------------------


def script(tmp_path: Path, body: str) -> list[str]:
    """A watch command running Python `body`."""
    path = tmp_path / "watch.py"
    path.write_text(body)
    return [sys.executable, str(path)]


def test_every_fire_but_the_initial_one_is_a_hint(tmp_path: Path) -> None:
    door, log = LoopQueue(), Log()
    body = "for _ in range(3):\n    print('@releaseDomain', flush=True)\n"
    source = ReleaseWatchSource(door, log, script(tmp_path, body))
    try:
        # It ends after its three lines: all of them were handed on by then.
        assert wait_for(lambda: bool(log.events("release_watch_stopped")))
    finally:
        source.close()
    assert hints(door) == 2


def test_a_watch_that_ends_is_logged_once_and_restarted(tmp_path: Path) -> None:
    door, log = LoopQueue(), Log()
    starts = tmp_path / "starts"
    body = f"open({str(starts)!r}, 'a').write('x')\nprint('@releaseDomain', flush=True)\n"
    source = ReleaseWatchSource(door, log, script(tmp_path, body))
    taken: list[int] = []
    try:
        assert wait_for(lambda: starts.exists() and len(starts.read_text()) >= 3, 20)
        # The first line after a restart is a hint: a death may have gone unseen.
        assert wait_for(lambda: bool(taken.append(hints(door)) or sum(taken) >= 1))
    finally:
        source.close()
    (stopped,) = log.events("release_watch_stopped")
    assert "exited 0" in stopped["error"] and stopped["restart_in"] == restart_delay(1)


def test_a_missing_program_is_logged_and_nothing_runs(tmp_path: Path) -> None:
    door, log = LoopQueue(), Log()
    source = ReleaseWatchSource(door, log, [str(tmp_path / "no-such-program"), "@releaseDomain"])
    try:
        assert wait_for(lambda: bool(log.events("release_watch_stopped")))
        assert "cannot run" in log.events("release_watch_stopped")[0]["error"]
    finally:
        source.close()


def test_restart_delays_grow_and_stop_at_a_minute() -> None:
    assert [restart_delay(n) for n in (1, 2, 3, 6, 50)] == [1.0, 2.0, 5.0, 60.0, 60.0]


# --- the daemon ------------------------------------------------------------------------------


def test_a_destroyed_guest_is_recreated_long_before_the_interval(tmp_path: Path) -> None:
    run = DaemonRun(tmp_path, interval="3600s", missing_grace="1s", stable_after="1s")
    try:
        run.use_release_watch()
        run.add_guest("a")
        run.start()
        assert wait_for(lambda: run.running() == {"a"}, 20)
        first = run.sim.domains()[1].domid
        # The pass that saw it up for stable_after is the last timed one before the interval.
        assert wait_for(lambda: run.stable("a"), 20)
        run.sim.destroy("a")
        assert wait_for(lambda: run.running() == {"a"} and run.sim.domains()[1].domid != first, 20)
        assert len(run.sim.creates("a")) == 2
        assert run.events("release_watch"), "the daemon ran the watch"
    finally:
        run.stop()
        run.kill()
