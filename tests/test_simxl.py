"""The simulated xl itself: texts, exit codes, state, faults, monitors, the call log."""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from xenreconcile.simxl import SimXl, process_alive, wait_for, write_cfg, xllock


@dataclass(frozen=True)
class Ran:
    """How one simulated xl run ended."""

    rc: int
    out: str
    err: str


def run(sim: SimXl, *args: str, env: dict[str, str] | None = None) -> Ran:
    """Run the simulated xl with `args`; output through files, since a monitor
    left by `create` keeps the inherited descriptors open."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        rc = subprocess.call(
            [*sim.command, *args], stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env
        )
        out.seek(0)
        err.seek(0)
        return Ran(rc, out.read().decode(), err.read().decode())


def test_list_prints_the_real_header_and_rows(simxl: SimXl) -> None:
    simxl.add_domain("guest1")
    lines = run(simxl, "list").out.split("\n")
    assert lines[0] == "Name                                        ID   Mem VCPUs\tState\tTime(s)"
    assert lines[1].startswith(
        "Domain-0                                     0  1024     2     r-----"
    )
    assert lines[2].startswith(
        "guest1                                       1   128     1     -b----"
    )
    assert lines[3] == ""


def test_create_prints_parsing_on_stderr_and_q_silences_it(simxl: SimXl, tmp_path: Path) -> None:
    cfg = write_cfg(tmp_path / "a.cfg", "a")
    assert run(simxl, "create", str(cfg)) == Ran(0, "", f"Parsing config from {cfg}\n")
    assert run(simxl, "create", "-q", str(write_cfg(tmp_path / "b.cfg", "b"))) == Ran(0, "", "")
    assert simxl.names() == ["a", "b"]


def test_create_takes_name_overrides_and_list_continuations(simxl: SimXl, tmp_path: Path) -> None:
    cfg = tmp_path / "g.cfg"
    cfg.write_text(
        'name = "guest1"\nmemory = 512\n# a comment\n\nvif = [ "bridge=xenbr0",\n'
        '        "mac=00:16:3e:00:00:01" ]\ndisk = []\n'
    )
    assert run(simxl, "create", str(cfg), 'name="guest2"').rc == 0
    assert [(d.name, d.mem) for d in simxl.domains()[1:]] == [("guest2", 512)]


def test_create_without_a_name_is_refused(simxl: SimXl, tmp_path: Path) -> None:
    cfg = tmp_path / "g.cfg"
    cfg.write_text("memory = 128\n")
    ran = run(simxl, "create", str(cfg))
    assert (ran.rc, ran.err.splitlines()[-1]) == (1, "Domain name must be specified.")


def test_destroy_and_domid_use_xls_texts(simxl: SimXl) -> None:
    domid = simxl.add_domain("guest1")
    assert run(simxl, "domid", "guest1") == Ran(0, f"{domid}\n", "")
    assert run(simxl, "domid", "nosuch") == Ran(
        1, "", "Can't get domid of domain name 'nosuch', maybe this domain does not exist.\n"
    )
    assert run(simxl, "destroy", "nosuch") == Ran(
        1, "", "nosuch is an invalid domain identifier (rc=-6)\n"
    )
    by_id = run(simxl, "destroy", "4242")
    assert by_id.rc == 1
    assert by_id.err.splitlines()[-1] == "destroy failed (rc=-21)"
    assert run(simxl, "destroy", "guest1") == Ran(0, "", "")
    assert simxl.names() == []


def test_unknown_command_fails(simxl: SimXl) -> None:
    assert run(simxl, "frobnicate") == Ran(1, "", "command not implemented\n")


def test_missing_state_dir_is_a_clear_error() -> None:
    env = {k: v for k, v in os.environ.items() if k != "SIMXL_STATE"}
    ran = subprocess.run(
        [sys.executable, "-m", "xenreconcile.simxl", "list"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert ran.returncode == 2
    assert "SIMXL_STATE is not set" in ran.stderr


def test_the_wrapper_runs_with_a_clean_environment(simxl: SimXl, tmp_path: Path) -> None:
    simxl.add_domain("guest1")
    xl = simxl.write_wrapper(tmp_path / "xl")
    ran = subprocess.run(
        [str(xl), "domid", "guest1"],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        check=False,
    )
    assert (ran.returncode, ran.stdout) == (0, b"1\n")


def test_the_call_log_counts_creates_per_guest(simxl: SimXl, tmp_path: Path) -> None:
    cfg = write_cfg(tmp_path / "g.cfg", "guest1")
    run(simxl, "create", str(cfg))
    run(simxl, "create", str(cfg))
    run(simxl, "list")
    creates = simxl.creates("guest1")
    assert [c["rc"] for c in creates] == [0, 3]
    assert all(c["argv"] == ["create", str(cfg)] for c in creates)
    assert len(simxl.calls()) == 3
    assert simxl.creates("other") == []


def test_concurrent_creates_get_distinct_ids(simxl: SimXl, tmp_path: Path) -> None:
    cfgs = [write_cfg(tmp_path / f"g{i}.cfg", f"g{i}") for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda cfg: run(simxl, "create", str(cfg)).rc, cfgs))
    assert results == [0] * 8
    domains = simxl.domains()[1:]
    assert sorted(d.name for d in domains) == [f"g{i}" for i in range(8)]
    assert sorted(d.domid for d in domains) == list(range(1, 9))


# --- faults --------------------------------------------------------------------------------


def test_seeded_failure_probability_is_reproducible(tmp_path: Path) -> None:
    def outcomes(state: Path) -> list[int]:
        sim = SimXl(state)
        sim.set_faults(create_fail_probability=0.5, seed=7)
        rcs = []
        for i in range(12):
            rcs.append(run(sim, "create", str(write_cfg(tmp_path / f"p{i}.cfg", f"p{i}"))).rc)
        sim.kill_monitors()
        return rcs

    first = outcomes(tmp_path / "one")
    assert first == outcomes(tmp_path / "two")
    assert set(first) == {0, 3}


def test_faults_change_between_invocations(simxl: SimXl) -> None:
    simxl.set_faults(list_fail="boom")
    assert run(simxl, "list") == Ran(1, "", "boom")
    simxl.set_faults(list_fail=None)
    assert run(simxl, "list").rc == 0
    assert simxl.faults() == {}


def test_parse_failure_fault_exits_1(simxl: SimXl, tmp_path: Path) -> None:
    simxl.set_faults(create_fail={"*": "parse"})
    ran = run(simxl, "create", str(write_cfg(tmp_path / "g.cfg", "g")))
    assert ran.rc == 1
    assert ran.err.splitlines()[-1] == "Failed to parse config: Invalid argument"


def test_console_timeout_fault_prints_what_a_loaded_real_dom0_printed(
    simxl: SimXl, tmp_path: Path
) -> None:
    simxl.set_faults(create_fail={"g": "console"})
    ran = run(simxl, "create", str(write_cfg(tmp_path / "g.cfg", "g")))
    assert ran.rc == 3
    assert "console_xswait_callback: domain 1 console tty: timed out" in ran.err
    assert ran.err.splitlines()[-1].endswith("Domain 1:Destruction of domain failed")
    assert simxl.names() == []


def test_guest_vanishes_after_n_seconds_and_its_monitor_exits(simxl: SimXl, tmp_path: Path) -> None:
    simxl.set_faults(die_after={"g": 0.3})
    assert run(simxl, "create", str(write_cfg(tmp_path / "g.cfg", "g"))).rc == 0
    monitor = simxl.domains()[1].monitor_pid
    assert monitor is not None
    assert wait_for(lambda: simxl.names() == [])
    assert wait_for(lambda: not process_alive(monitor))


def test_guest_crashes_and_stays_preserved(simxl: SimXl, tmp_path: Path) -> None:
    simxl.set_faults(die_after=0.2, die_mode="crash")
    assert run(simxl, "create", str(write_cfg(tmp_path / "g.cfg", "g"))).rc == 0
    assert wait_for(lambda: simxl.domains()[1].state == "---sc-")
    assert "---sc-" in run(simxl, "list").out


def test_destroyed_guest_is_dying_for_a_while(simxl: SimXl) -> None:
    simxl.set_faults(dying_for=0.5)
    simxl.add_domain("g")
    assert run(simxl, "destroy", "g").rc == 0
    row = run(simxl, "list").out.splitlines()[2]
    assert row.split()[1:5] == ["1", "0", "1", "-----d"]
    assert wait_for(lambda: simxl.names() == [])


def test_monitor_can_write_to_a_log_like_real_xl(simxl: SimXl, tmp_path: Path) -> None:
    if not Path("/proc/self/fd").exists():
        pytest.skip("needs /proc to look at a process's descriptors")
    simxl.set_faults(monitor_fds="log")
    assert run(simxl, "create", str(write_cfg(tmp_path / "g.cfg", "g"))).rc == 0
    monitor = simxl.domains()[1].monitor_pid
    log = simxl.state_dir / "xl-g.log"
    assert wait_for(lambda: Path(f"/proc/{monitor}/fd/2").resolve() == log)


def test_monitor_exits_when_the_state_dir_is_removed(tmp_path: Path) -> None:
    sim = SimXl(tmp_path / "state")
    assert run(sim, "create", str(write_cfg(tmp_path / "g.cfg", "g"))).rc == 0
    monitor = sim.domains()[1].monitor_pid
    assert monitor is not None
    assert process_alive(monitor)
    shutil.rmtree(sim.state_dir)
    assert wait_for(lambda: not process_alive(monitor))


def test_migrate_in_renames_the_incoming_domain(simxl: SimXl) -> None:
    simxl.migrate_in("g", seconds=0.3)
    assert simxl.names() == ["g--incoming"]
    assert wait_for(lambda: simxl.names() == ["g"])


def test_reboot_restarts_domain_ids(simxl: SimXl) -> None:
    simxl.add_domain("a")
    simxl.add_domain("b")
    simxl.reboot()
    assert simxl.names() == []
    assert simxl.add_domain("c") == 1


def test_reboot_is_a_new_boot_tens_of_seconds_later_however_fast_it_runs(simxl: SimXl) -> None:
    boots = [(simxl.boot_id(), simxl.boot_time())]
    for _ in range(2):  # two reboots right after each other
        simxl.reboot()
        boots.append((simxl.boot_id(), simxl.boot_time()))
    assert len({boot_id for boot_id, _ in boots}) == 3
    gaps = [later[1] - earlier[1] for earlier, later in itertools.pairwise(boots)]
    assert all(gap >= 30 for gap in gaps), gaps  # a real reboot takes that long at least
    assert boots[0][1] < time.time() - 60  # the simulated Dom0 has been up a while


def test_a_clock_step_moves_the_boot_time_and_keeps_the_boot_id(simxl: SimXl) -> None:
    boot_id, boot = simxl.boot_id(), simxl.boot_time()
    simxl.step_clock(-3600)
    assert (simxl.boot_id(), simxl.boot_time()) == (boot_id, boot - 3600)


def test_a_slow_create_lists_the_domain_paused_until_it_is_built(
    simxl: SimXl, tmp_path: Path
) -> None:
    simxl.set_faults(create_delay={"g": 1.0})
    proc = subprocess.Popen(
        [*simxl.command, "create", str(write_cfg(tmp_path / "g.cfg", "g"))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_for(lambda: [d.state for d in simxl.domains()[1:]] == ["--p---"])
        assert proc.wait(10) == 0
        assert [d.state for d in simxl.domains()[1:]] == ["-b----"]
    finally:
        proc.kill()
        proc.wait()


def test_a_failing_slow_create_is_listed_paused_then_gone(simxl: SimXl, tmp_path: Path) -> None:
    simxl.set_faults(create_delay={"g": 1.0}, create_fail={"g": "kernel"})
    proc = subprocess.Popen(
        [*simxl.command, "create", str(write_cfg(tmp_path / "g.cfg", "g"))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_for(lambda: simxl.names() == ["g"])
        assert proc.wait(10) == 3
        assert simxl.names() == []
    finally:
        proc.kill()
        proc.wait()


# --- xl's create lock ----------------------------------------------------------------------


Starter = Callable[..., list[subprocess.Popen[bytes]]]


@pytest.fixture
def start_creates(simxl: SimXl) -> Iterator[Starter]:
    """A function starting `xl create CFG` for each cfg given, at once, each in its
    own process group (as the daemon runs it); returns the processes. Any still
    running when the test ends is SIGKILLed with its group."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*cfgs: Path) -> list[subprocess.Popen[bytes]]:
        procs = [
            subprocess.Popen(
                [*simxl.command, "create", str(cfg)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            for cfg in cfgs
        ]
        started.extend(procs)
        return procs

    yield start
    for proc in started:
        if proc.poll() is None:
            kill_group(proc)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group `proc` leads and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def call_of(sim: SimXl, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    """The simulator's record of the invocation run by `proc` ({} before it starts)."""
    return next((c for c in sim.calls() if c["pid"] == proc.pid), {})


def reached(sim: SimXl, proc: subprocess.Popen[bytes], step: str) -> bool:
    """True once the invocation run by `proc` has recorded `step` (e.g. lock_requested)."""
    return call_of(sim, proc).get(step) is not None


def states(sim: SimXl) -> dict[str, str]:
    """{guest name: xl state} of the listed guests."""
    return {d.name: d.state for d in sim.domains()[1:]}


def test_the_lock_file_lives_in_the_state_dir(simxl: SimXl, tmp_path: Path) -> None:
    assert simxl.lockfile() == simxl.state_dir / "xl.lock"
    assert run(simxl, "create", str(write_cfg(tmp_path / "g.cfg", "g"))).rc == 0
    assert simxl.lockfile().exists()


def test_concurrent_creates_build_one_at_a_time(
    simxl: SimXl, tmp_path: Path, start_creates: Starter
) -> None:
    simxl.set_faults(create_delay=0.2)
    cfgs = [write_cfg(tmp_path / f"g{i}.cfg", f"g{i}") for i in range(4)]
    with simxl.hold_create_lock():
        procs = start_creates(*cfgs)
        # Start-up and parsing run unlocked: every create gets as far as the lock.
        assert wait_for(lambda: all(reached(simxl, p, "lock_requested") for p in procs))
        assert simxl.names() == []
    assert [p.wait(30) for p in procs] == [0, 0, 0, 0]
    builds = sorted((c["lock_acquired"], c["lock_released"]) for c in simxl.creates())
    assert len(builds) == 4
    assert all(end <= next_start for (_, end), (next_start, _) in itertools.pairwise(builds))
    assert set(states(simxl).values()) == {"-b----"}


def test_a_create_waiting_for_the_lock_shows_no_domain(
    simxl: SimXl, tmp_path: Path, start_creates: Starter
) -> None:
    simxl.set_faults(create_hang={"builder": "build"})
    start_creates(write_cfg(tmp_path / "b.cfg", "builder"))
    assert wait_for(lambda: states(simxl) == {"builder": "--p---"})
    (waiter,) = start_creates(write_cfg(tmp_path / "w.cfg", "w"))
    assert wait_for(lambda: reached(simxl, waiter, "lock_requested"))
    assert states(simxl) == {"builder": "--p---"}
    assert not reached(simxl, waiter, "lock_acquired")


def test_a_create_killed_in_its_build_leaves_the_domain_paused_and_frees_the_lock(
    simxl: SimXl, tmp_path: Path, start_creates: Starter
) -> None:
    simxl.set_faults(create_hang={"builder": "build"})
    (builder,) = start_creates(write_cfg(tmp_path / "b.cfg", "builder"))
    assert wait_for(lambda: states(simxl) == {"builder": "--p---"})
    (waiter,) = start_creates(write_cfg(tmp_path / "w.cfg", "w"))
    assert wait_for(lambda: reached(simxl, waiter, "lock_requested"))
    kill_group(builder)
    assert waiter.wait(30) == 0
    assert states(simxl) == {"builder": "--p---", "w": "-b----"}
    assert run(simxl, "list").out.splitlines()[2].split()[4] == "--p---"
    assert call_of(simxl, builder)["rc"] is None


def test_a_create_killed_while_waiting_for_the_lock_leaves_nothing(
    simxl: SimXl, tmp_path: Path, start_creates: Starter
) -> None:
    cfg = write_cfg(tmp_path / "g.cfg", "g")
    with simxl.hold_create_lock():
        (waiter,) = start_creates(cfg)
        assert wait_for(lambda: reached(simxl, waiter, "lock_requested"))
        kill_group(waiter)
    assert simxl.names() == []
    assert not reached(simxl, waiter, "lock_acquired")
    assert run(simxl, "create", str(cfg)).rc == 0
    assert states(simxl) == {"g": "-b----"}


def test_unpause_and_daemonize_run_after_the_lock_is_released(
    simxl: SimXl, tmp_path: Path, start_creates: Starter
) -> None:
    simxl.set_faults(create_hang={"slow": "daemonize"})
    (daemonizing,) = start_creates(write_cfg(tmp_path / "s.cfg", "slow"))
    assert wait_for(lambda: reached(simxl, daemonizing, "lock_released"))
    assert states(simxl) == {"slow": "-b----"}
    (quick,) = start_creates(write_cfg(tmp_path / "q.cfg", "quick"))
    assert quick.wait(30) == 0
    assert daemonizing.poll() is None
    assert states(simxl) == {"slow": "-b----", "quick": "-b----"}


def test_a_parse_failure_does_not_wait_for_the_lock(
    simxl: SimXl, tmp_path: Path, start_creates: Starter
) -> None:
    simxl.set_faults(create_fail="parse")
    with simxl.hold_create_lock():
        (proc,) = start_creates(write_cfg(tmp_path / "g.cfg", "g"))
        assert proc.wait(30) == 1
    assert not reached(simxl, proc, "lock_requested")


def test_xl_conf_names_the_lock_file(simxl: SimXl, tmp_path: Path, start_creates: Starter) -> None:
    other = tmp_path / "other-lock"
    (simxl.state_dir / "xl.conf").write_text(f'autoballoon = "off"\nlockfile = "{other}"\n')
    assert simxl.lockfile() == other
    with xllock.held(simxl.state_dir / "xl.lock"):
        assert run(simxl, "create", str(write_cfg(tmp_path / "a.cfg", "a"))).rc == 0
    with simxl.hold_create_lock():
        (waiter,) = start_creates(write_cfg(tmp_path / "b.cfg", "b"))
        assert wait_for(lambda: reached(simxl, waiter, "lock_requested"))
        assert not reached(simxl, waiter, "lock_acquired")
    assert waiter.wait(30) == 0
    assert simxl.names() == ["a", "b"]


def test_a_lock_file_that_cannot_be_opened_exits_0_without_a_domain(
    simxl: SimXl, tmp_path: Path
) -> None:
    (simxl.state_dir / "xl.conf").write_text('lockfile = "no/such/dir/xl"\n')
    ran = run(simxl, "create", "-q", str(write_cfg(tmp_path / "g.cfg", "g")))
    lockfile = simxl.state_dir / "no/such/dir/xl"
    assert ran == Ran(0, "", f"cannot open the lockfile {lockfile} errno={errno.ENOENT}\n")
    assert simxl.names() == []
