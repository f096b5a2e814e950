"""`xl_timeout` and xl's create lock: a create only waiting for the lock is not
killed; a create whose own build hangs still is. Against the simulated xl,
which takes xl 4.17's lock around its build."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_harness import DaemonRun
from xenreconcile.createlock import DEFAULT_LOCKFILE, lock_holder, waits_for_lock, xl_lockfile
from xenreconcile.models import CreateResult
from xenreconcile.simxl import SimXl, wait_for, write_cfg
from xenreconcile.xl import XlRunner

HOLDER = (
    "import sys; from pathlib import Path; from xenreconcile.simxl import xllock\n"
    "with xllock.held(Path(sys.argv[1])):\n"
    "    print('held', flush=True); sys.stdin.read()\n"
)


@pytest.fixture
def other_holder(simxl: SimXl) -> Iterator[subprocess.Popen[str]]:
    """Another process (an admin's `xl create`, say) holding the simulated xl's
    create lock until its stdin is closed. (A process never conflicts with its
    own fcntl lock, so the test process cannot play that part.)"""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(simxl.lockfile())],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=simxl_env(simxl),
        start_new_session=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    yield proc
    release(proc)


def simxl_env(simxl: SimXl) -> dict[str, str]:
    """This process's environment plus the simulated xl's."""
    return {**os.environ, **simxl.env()}


def release(holder: subprocess.Popen[str]) -> None:
    """Let the holder drop the lock and exit."""
    if holder.stdin is not None and not holder.stdin.closed:
        holder.stdin.close()
    holder.wait(10)


def states(sim: SimXl) -> dict[str, str]:
    """{guest name: xl state} of the listed guests."""
    return {d.name: d.state for d in sim.domains()[1:]}


def create_in_thread(runner: XlRunner, cfg: Path) -> tuple[threading.Thread, list[CreateResult]]:
    """Run `runner.create(cfg)` in a thread; the list gets its result."""
    results: list[CreateResult] = []
    thread = threading.Thread(target=lambda: results.append(runner.create(str(cfg))))
    thread.start()
    return thread, results


def lock_requested_at(sim: SimXl, name: str) -> float | None:
    """When the simulated create of `name` asked for the lock (None: not yet)."""
    creates = sim.creates(name)
    return creates[-1].get("lock_requested") if creates else None


# --- finding the lock and its holder ---------------------------------------------------------


def test_the_lockfile_is_xl_confs_last_setting_else_xls_default(tmp_path: Path) -> None:
    conf = tmp_path / "xl.conf"
    conf.write_text('#lockfile="/nope"\nlockfile="/var/lock/a"\n lockfile = \'/run/b\'\n')
    assert xl_lockfile({}, str(conf)) == "/run/b"
    assert xl_lockfile({}, str(tmp_path / "missing.conf")) == DEFAULT_LOCKFILE
    explicit = {"XENRECONCILE_XL_LOCKFILE": "/x/lock"}
    assert xl_lockfile(explicit, str(conf)) == "/x/lock"


def test_the_holder_of_the_lock_is_seen_and_a_free_lock_has_none(
    simxl: SimXl, other_holder: subprocess.Popen[str]
) -> None:
    path = str(simxl.lockfile())
    assert lock_holder(path) == other_holder.pid
    assert waits_for_lock(path, group=12345)
    assert not waits_for_lock(path, group=other_holder.pid), "its own group holds it"
    release(other_holder)
    assert lock_holder(path) is None
    assert lock_holder(str(simxl.state_dir / "missing")) is None


def test_a_symlinked_lockfile_is_not_followed(
    simxl: SimXl, other_holder: subprocess.Popen[str]
) -> None:
    link = simxl.state_dir / "link"
    link.symlink_to(simxl.lockfile())
    assert lock_holder(str(link)) is None


# --- the runner's timeout ----------------------------------------------------------------------


def test_a_create_waiting_for_the_lock_longer_than_the_timeout_is_not_killed(
    simxl: SimXl, tmp_path: Path, other_holder: subprocess.Popen[str]
) -> None:
    # a timeout well above what the create's own work takes on a loaded machine
    timeout = 3.0
    runner = XlRunner(simxl.command, create_timeout=timeout, lockfile=str(simxl.lockfile()))
    thread, results = create_in_thread(runner, write_cfg(tmp_path / "g.cfg", "g"))
    assert wait_for(lambda: lock_requested_at(simxl, "g") is not None)
    asked = lock_requested_at(simxl, "g")
    assert asked is not None
    # Hold the lock for twice the timeout after the create asked for it.
    assert wait_for(lambda: time.time() >= asked + 2 * timeout or not thread.is_alive())
    assert thread.is_alive(), f"the waiting create ended: {results}"
    release(other_holder)
    thread.join(30)
    (result,) = results
    assert result.ok and not result.timed_out, result
    assert states(simxl) == {"g": "-b----"}, "built and running, no paused leftover"


def test_a_hung_build_is_still_killed_and_the_create_queued_behind_it_is_not(
    simxl: SimXl, tmp_path: Path
) -> None:
    simxl.set_faults(create_hang={"hung": "build"}, create_delay={"next": 0.1})
    runner = XlRunner(
        simxl.command, create_timeout=3.0, kill_grace=0.5, lockfile=str(simxl.lockfile())
    )
    hung, hung_result = create_in_thread(runner, write_cfg(tmp_path / "h.cfg", "hung"))
    assert wait_for(lambda: states(simxl) == {"hung": "--p---"})
    queued, queued_result = create_in_thread(runner, write_cfg(tmp_path / "n.cfg", "next"))
    hung.join(30)
    queued.join(30)
    assert hung_result[0].timed_out, "its own build hung past xl_timeout"
    assert queued_result[0].ok and not queued_result[0].timed_out, queued_result
    assert states(simxl)["next"] == "-b----"


# --- the daemon ----------------------------------------------------------------------------


def test_run_once_with_builds_queued_past_xl_timeout_kills_none(tmp_path: Path) -> None:
    """Four creates at once whose builds, one at a time under xl's lock, take
    longer together than `xl_timeout`: none is killed, no paused leftover, every
    guest runs, and the builds did not overlap."""
    # Each build takes 3 s, half of xl_timeout (room for a slow machine's process
    # start-up); the four queued builds take 12 s, twice xl_timeout.
    run = DaemonRun(tmp_path, concurrency=4, xl_timeout="6s")
    try:
        run.sim.set_faults(create_delay=3.0)
        names = {f"g{i}" for i in range(4)}
        for name in sorted(names):
            run.add_guest(name)
        result = run.cli("run", "--once", timeout=60)
        assert result.returncode == 0, result.stderr
        assert states(run.sim) == dict.fromkeys(names, "-b----")
        creates = run.sim.creates()
        assert [c["rc"] for c in creates] == [0, 0, 0, 0], "one create each, none killed"
        builds = sorted((c["lock_acquired"], c["lock_released"]) for c in creates)
        assert all(end <= start for (_, end), (start, _) in itertools.pairwise(builds))
        assert builds[-1][1] - builds[0][0] > 6.0, "together longer than xl_timeout"
    finally:
        run.kill()
