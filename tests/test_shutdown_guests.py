"""`shutdown-guests` and the next boot, against the simulated xl and the real daemon."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_harness import DaemonRun, wait_for
from xenreconcile.simxl.lifecycle import IMAGE_MAGIC

POLICIES = {
    "saved": {"on_host_shutdown": "save", "order": 10},
    "kept": {"on_host_shutdown": "leave"},
}


@pytest.fixture
def run(tmp_path: Path) -> Iterator[DaemonRun]:
    daemon_run = DaemonRun(tmp_path, guests=POLICIES, host_shutdown_timeout="20s")
    try:
        yield daemon_run
    finally:
        daemon_run.kill()


def converge(run: DaemonRun, *names: str) -> None:
    """Create every guest (one `run --once` per order group), adding the files not there."""
    for name in names:
        if not (run.guests_dir / f"{name}.cfg").exists():
            run.add_guest(name)
    for _group in range(3):
        run.cli("run", "--once")
    assert run.running() == set(names)


def drain(run: DaemonRun, *args: str) -> Any:
    result = run.cli("shutdown-guests", *args, timeout=60)
    assert result.returncode in (0, 1), result.stderr
    return result


def actions(run: DaemonRun, since: float = 0.0) -> list[list[str]]:
    verbs = ("create", "shutdown", "save", "restore", "destroy")
    return [c["argv"] for c in run.sim.calls() if c["argv"][0] in verbs and c["time"] >= since]


def test_each_policy_then_the_next_boot_restores_first_and_boots_the_rest(run: DaemonRun) -> None:
    converge(run, "saved", "plain", "kept")
    result = drain(run)
    assert result.returncode == 0, result.stdout
    assert run.running() == {"kept"}, "shutdown and save took their guests down, leave did not"
    image = run.state_dir / "save" / "saved.save"
    assert json.loads(image.read_text())["magic"] == IMAGE_MAGIC
    assert not list((run.state_dir / "save").glob(".*")), "no temp file left"
    assert "saved: saved" in result.stdout and "shut down: plain" in result.stdout

    run.sim.reboot()
    booted = time.time()
    run.cli("run", "--once")
    run.cli("run", "--once")
    assert run.running() == {"saved", "plain", "kept"}
    calls = actions(run, booted)
    assert calls[0] == ["restore", str(image)], "the restore comes before any cold boot"
    assert {c[0] for c in calls[1:]} == {"create"}
    assert not image.exists(), "the image is consumed once the guest runs"
    restored = next(d for d in run.sim.domains() if d.name == "saved")
    assert restored.boots == 1, "restored, not booted a second time"


def test_a_running_daemon_stands_down_and_resumes_after_the_next_boot(run: DaemonRun) -> None:
    converge(run, "plain")
    run.write_config(interval="0.5s")
    run.start()
    result = drain(run)
    assert result.returncode == 0
    assert (run.state_dir / "stood-down.ack").exists(), "the daemon answered before the drain"
    run.wait_passes(2)
    assert run.running() == set(), "a stood-down daemon creates nothing"
    assert run.guest_state("plain") == "waiting"
    run.stop()
    run.start()  # a restart (or daemon(8)'s respawn) mid-drain does not undo it
    run.wait_passes(2)
    assert run.running() == set()
    run.stop()

    run.sim.reboot()
    run.start()
    wait_for(lambda: run.running() == {"plain"}, 15, "the guest to be booted again")
    assert run.events("stand_down_lifted")
    assert not (run.state_dir / "stood-down").exists()


def test_a_guest_that_ignores_shutdown_is_left_at_the_deadline(run: DaemonRun) -> None:
    converge(run, "stuck", "plain")
    run.sim.set_faults(ignore_shutdown={"stuck": True})
    run.write_config(host_shutdown_timeout="2s")
    started = time.monotonic()
    result = drain(run)
    assert time.monotonic() - started < 15
    assert result.returncode == 1
    assert "still running at the deadline: stuck" in result.stdout
    assert run.running() == {"stuck"}, "left to the host, never destroyed"
    assert not any(c[0] == "destroy" for c in actions(run))
    assert run.events("drain_deadline")[0]["still_running"] == ["stuck"]


def test_hvm_guests_without_pv_drivers_get_the_acpi_fallback(run: DaemonRun) -> None:
    run.add_guest("win", text='name = "win"\ntype = "hvm"\nmemory = 128\n')
    converge(run, "win")
    run.sim.set_faults(no_pv_drivers={"win": True})
    assert drain(run).returncode == 0
    assert ["shutdown", "-F", "win"] in actions(run)


def test_no_room_for_an_image_falls_back_to_shutdown(run: DaemonRun) -> None:
    converge(run, "saved")
    run.sim.set_faults()
    huge = 'name = "saved"\ntype = "pv"\nkernel = "/dev/null"\nmemory = 99999999\n'
    run.add_guest("saved", text=huge)
    run.sim.destroy("saved")
    run.cli("run", "--once")
    result = drain(run)
    assert result.returncode == 0
    assert not (run.state_dir / "save" / "saved.save").exists()
    skipped = run.events("save_skipped", "saved")
    assert skipped and "MiB free" in skipped[0]["error"]
    assert ["shutdown", "saved"] in actions(run)


def test_an_image_whose_guest_ran_after_the_save_is_never_restored(run: DaemonRun) -> None:
    converge(run, "saved")
    drain(run)
    (run.state_dir / "stood-down").unlink()  # the admin cancels the host's shutdown
    run.add_guest("saved")  # and someone boots the guest by hand meanwhile
    run.sim.add_domain("saved")
    run.cli("run", "--once")  # a pass sees it running after the save
    run.sim.reboot()
    run.cli("run", "--once")
    assert not any(c[0] == "restore" for c in actions(run))
    assert run.running() == {"saved"}, "booted fresh from its file"
    assert list((run.state_dir / "save").glob("saved.save.stale-*"))


def test_a_failed_restore_moves_the_image_aside_and_holds_the_guest(run: DaemonRun) -> None:
    converge(run, "saved")
    drain(run)
    (run.state_dir / "save" / "saved.save").write_text("damaged")
    run.sim.reboot()
    run.cli("run", "--once")
    run.cli("run", "--once")
    assert run.running() == set()
    assert list((run.state_dir / "save").glob("saved.save.failed-*"))
    assert run.guest_state("saved") == "held"
    held = next(g for g in run.status()["guests"] if g["name"] == "saved")
    assert held["detail"].startswith("restore failed: ")
    assert run.events("restore_failed", "saved")


def test_on_restore_failure_boot_boots_the_guest_fresh(run: DaemonRun) -> None:
    run.write_config(on_restore_failure="boot")
    converge(run, "saved")
    drain(run)
    (run.state_dir / "save" / "saved.save").write_text("damaged")
    run.sim.reboot()
    run.cli("run", "--once")
    run.cli("run", "--once")
    assert run.running() == {"saved"}
    assert list((run.state_dir / "save").glob("saved.save.failed-*"))


def test_status_and_plan_show_the_images_and_what_the_next_boot_restores(run: DaemonRun) -> None:
    converge(run, "saved")
    assert drain(run, "--dry-run").stdout.splitlines()[1] == "  order 10: saved (save)"
    assert run.running() == {"saved"}, "a dry run changes nothing"
    drain(run)
    doc = json.loads(run.cli("plan", "--json").stdout)
    assert [(i["name"], i["restore"]) for i in doc["save_images"]] == [("saved", "later")]
    assert "restored at the next boot" in run.cli("status").stdout
    run.sim.reboot()
    doc = run.status()
    assert [(i["name"], i["restore"]) for i in doc["save_images"]] == [("saved", "due")]
    waiting = next(g for g in doc["guests"] if g["name"] == "saved")
    assert waiting["state"] == "waiting" and "restored before any cold boot" in waiting["detail"]
