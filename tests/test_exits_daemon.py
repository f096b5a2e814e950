"""Why a guest went away, end to end on the simulated xl: its monitor logs each
life as real xl does, the daemon reads that log, applies the restart policy and
shows the reason; `stop`, `start`, `restart` with and without a daemon."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_harness import DaemonRun, wait_for
from xenreconcile import guestops
from xenreconcile.config import load_config
from xenreconcile.exits import parse_lives
from xenreconcile.simxl import SimXl, write_cfg
from xenreconcile.state import StateStore


def xl(sim: SimXl, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the simulated xl; its output goes through a file, since the monitor a
    create leaves behind keeps xl's stdout and stderr open."""
    with tempfile.TemporaryFile("w+") as err:
        done = subprocess.run(
            [*sim.command, *args], stdout=subprocess.DEVNULL, stderr=err, timeout=30, check=False
        )
        err.seek(0)
        return subprocess.CompletedProcess(done.args, done.returncode, "", err.read())


def test_the_simulated_monitor_logs_each_life_as_real_xl(tmp_path: Path) -> None:
    sim = SimXl(tmp_path / "xl")
    cfg = write_cfg(tmp_path / "a.cfg", "a")
    assert xl(sim, "create", str(cfg)).returncode == 0
    first = sim.domains()[1].domid
    xl(sim, "sysrq", "a", "b")  # on_reboot defaults to restart: xl brings it back itself
    wait_for(lambda: len(parse_lives(sim.monitor_log("a"))) == 2, 10, "the reboot logged")
    second = sim.domains()[1].domid
    xl(sim, "sysrq", "a", "o")
    wait_for(lambda: "Exiting now" in sim.monitor_log("a"), 10, "the poweroff logged")
    assert sim.monitor_log("a") == (
        f"Waiting for domain a (domid {first}) to die [pid {sim_pid(sim, 'a')}]\n"
        f"Domain {first} has shut down, reason code 1 0x1\n"
        "Action for shutdown reason code 1 is restart\n"
        f"Domain {first} needs to be cleaned up: destroying the domain\n"
        "Done. Rebooting now\n"
        f"Waiting for domain a (domid {second}) to die [pid {sim_pid(sim, 'a')}]\n"
        f"Domain {second} has shut down, reason code 0 0x0\n"
        "Action for shutdown reason code 0 is destroy\n"
        f"Domain {second} needs to be cleaned up: destroying the domain\n"
        "Done. Exiting now\n"
    )
    assert xl(sim, "create", str(cfg)).returncode == 0  # rotates the log to .1
    rotated = sim.state_dir / "xl-a.log.1"
    wait_for(lambda: "Exiting" not in sim.monitor_log("a"), 10, "the log rotated")
    assert "Exiting now" in rotated.read_text(encoding="utf-8")
    wait_for(lambda: "Waiting" in sim.monitor_log("a"), 10, "the new life logged")


def sim_pid(sim: SimXl, name: str) -> int:
    """The monitor pid its log names (the one monitor of every life of `name`)."""
    first = sim.monitor_log(name).splitlines()[0]
    return int(first.rsplit("[pid ", 1)[1].rstrip("]"))


def test_xl_destroy_and_a_preserved_crash_are_logged(tmp_path: Path) -> None:
    sim = SimXl(tmp_path / "xl")
    write_cfg(tmp_path / "d.cfg", "d")
    write_cfg(tmp_path / "p.cfg", "p", on_crash="preserve")
    for name in ("d", "p"):
        assert xl(sim, "create", str(tmp_path / f"{name}.cfg")).returncode == 0
    assert xl(sim, "destroy", "d").returncode == 0
    xl(sim, "sysrq", "p", "c")
    wait_for(lambda: "has been destroyed." in sim.monitor_log("d"), 10, "the destroy logged")
    wait_for(lambda: "is preserve" in sim.monitor_log("p"), 10, "the crash logged")
    assert [d.state for d in sim.domains() if d.name == "p"] == ["---sc-"]


def test_xl_shutdown_waits_for_the_guest_with_w(tmp_path: Path) -> None:
    sim = SimXl(tmp_path / "xl")
    cfg = write_cfg(tmp_path / "a.cfg", "a")
    xl(sim, "create", str(cfg))
    out = xl(sim, "shutdown", "-w", "a")
    assert out.returncode == 0
    assert "Shutting down domain 1\nWaiting for 1 domains\n" in out.stderr
    assert sim.names() == []


# --- the daemon -----------------------------------------------------------------------------


@pytest.fixture
def run(tmp_path: Path) -> Iterator[DaemonRun]:
    daemon = DaemonRun(tmp_path, restart="on-failure", missing_grace="2s")
    yield daemon
    daemon.kill()


def entry(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(g for g in doc["guests"] if g["name"] == name)


def last_reason(run: DaemonRun, name: str) -> str | None:
    end = entry(run.status(), name)["last_exit"]
    return None if end is None else str(end["reason"])


def up(run: DaemonRun, *names: str) -> None:
    wait_for(lambda: set(names) <= run.running(), 20, f"{names} running")
    for name in names:
        wait_for(lambda n=name: run.remembered(n).get("life_domid") is not None, 20, "seen")


def test_poweroff_crash_and_destroy_under_on_failure(run: DaemonRun) -> None:
    for name in ("off", "crash", "gone"):
        run.add_guest(name)
    run.start()
    up(run, "off", "crash", "gone")
    run.sim.sysrq("off", "o")
    run.sim.sysrq("crash", "c")
    assert xl(run.sim, "destroy", "gone").returncode == 0
    wait_for(lambda: run.guest_state("off") == "stopped", 20, "off stopped")
    wait_for(lambda: run.guest_state("gone") == "stopped", 20, "gone stopped")
    wait_for(lambda: last_reason(run, "crash") == "crash", 20, "the crash told")
    wait_for(lambda: run.guest_state("crash") == "running", 20, "crash recreated")
    doc = run.status()
    assert (last_reason(run, "off"), last_reason(run, "gone")) == ("poweroff", "destroyed")
    assert entry(doc, "off")["last_exit"]["code"] == 0
    assert entry(doc, "crash")["last_exit"]["code"] == 3
    # A crash is a failure however long the guest ran; it is remembered for a day.
    assert [e["reason"] for e in run.events("guest_failing", "crash")] == ["crash"]
    assert run.remembered("crash")["crashes"] == 1
    stopped = run.events("guest_stopped", "off")
    assert [e["reason"] for e in stopped] == ["poweroff"]


def test_stop_start_restart_with_a_daemon(run: DaemonRun) -> None:
    run.write_config(restart="always", interval="1s")
    run.add_guest("web")
    run.start()
    up(run, "web")
    stop = run.cli("stop", "web", "--timeout", "20")
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert "web: shut down" in stop.stdout
    wait_for(lambda: run.guest_state("web") == "stopped", 20, "web stopped")
    run.wait_passes(3)
    assert "web" not in run.running()  # restart: always, yet kept down
    start = run.cli("start", "web")
    assert start.returncode == 0, start.stdout + start.stderr
    up(run, "web")
    old = run.sim.domains()[1].domid
    restart = run.cli("restart", "web", "--timeout", "20")
    assert restart.returncode == 0, restart.stdout + restart.stderr
    wait_for(lambda: any(d.domid != old for d in run.sim.domains()[1:]), 20, "web recreated")
    wait_for(lambda: run.guest_state("web") == "running", 20, "web running")


def test_stop_start_restart_without_a_daemon(run: DaemonRun) -> None:
    run.add_guest("web")
    start = run.cli("start", "web")
    assert start.returncode == 0, start.stdout + start.stderr
    assert run.running() == {"web"}
    old = run.sim.domains()[1].domid
    restart = run.cli("restart", "web", "--timeout", "20")
    assert restart.returncode == 0, restart.stdout + restart.stderr
    assert [d.domid != old for d in run.sim.domains()[1:]] == [True]
    stop = run.cli("stop", "web", "--timeout", "20")
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert run.running() == set()
    table = run.cli("status")
    assert table.returncode == 0
    [row] = [line for line in table.stdout.splitlines() if line.startswith("web ")]
    assert "stopped" in row
    assert "poweroff" in row  # the LAST EXIT column, read from the monitor's log
    assert run.guest_state("web") == "stopped"


def test_stop_of_a_guest_that_ignores_the_shutdown_leaves_it_running(run: DaemonRun) -> None:
    run.add_guest("web")
    run.cli("start", "web")
    run.sim.set_faults(ignore_shutdown=True)
    stop = run.cli("stop", "web", "--timeout", "1")
    assert stop.returncode == 1
    assert "left running, never destroyed" in stop.stdout
    assert run.running() == {"web"}
    assert run.guest_state("web") == "stopped"  # and kept so: nothing recreates it later


def test_the_commands_refuse_a_bad_name_or_timeout(run: DaemonRun) -> None:
    assert run.cli("stop", " web").returncode == 2
    assert run.cli("restart", "web", "--timeout", "0").returncode == 2


def test_start_of_an_unknown_guest_fails(run: DaemonRun) -> None:
    out = run.cli("start", "nosuch")
    assert out.returncode == 1
    assert "no guest file carries this name" in out.stdout


def test_cli_help_lists_the_guest_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "xenreconcile", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for command in ("stop", "start", "restart"):
        assert command in out.stdout


def test_stop_touches_no_guest_when_the_daemon_does_not_take_the_request(
    run: DaemonRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A daemon holds the state (here: this test) but takes no request: shutting the
    # guest down anyway would let that daemon recreate it.
    run.add_guest("web")
    assert run.cli("start", "web").returncode == 0
    monkeypatch.setattr(guestops, "DELIVERY_WAIT", 0.3)
    for key, value in run.sim.env().items():
        monkeypatch.setenv(key, value)
    store = StateStore(str(run.state_dir))
    assert store.try_lock()
    said: list[str] = []
    try:
        ops = guestops.GuestOps(load_config(str(run.config_path)), say=said.append, log=None)
        assert ops.stop("web", timeout=5) == 1
    finally:
        store.unlock()
    assert "not acting on the guest until the daemon takes it" in said[-1]
    assert run.running() == {"web"}
    assert not [c for c in run.sim.calls() if c["argv"][:1] == ["shutdown"]]
