"""The simulated xl's `shutdown`, `save` and `restore`: xl 4.17's texts and behaviour."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.test_simxl import run
from xenreconcile.simxl import SimXl, write_cfg


def created(sim: SimXl, tmp_path: Path, name: str, **keys: str | int) -> None:
    assert run(sim, "create", str(write_cfg(tmp_path / f"{name}.cfg", name, **keys))).rc == 0


def test_shutdown_w_returns_once_the_guest_powered_off(simxl: SimXl, tmp_path: Path) -> None:
    created(simxl, tmp_path, "a")
    started = time.monotonic()
    ran = run(simxl, "shutdown", "-w", "a")
    assert ran.rc == 0
    assert ran.err.splitlines() == [
        "Shutting down domain 1",
        "Waiting for 1 domains",
        "Domain 1 has been shut down, reason code 0",
    ]
    assert time.monotonic() - started >= 0.3, "the guest takes its time to power off"
    assert simxl.names() == []


def test_shutdown_without_w_only_asks(simxl: SimXl, tmp_path: Path) -> None:
    created(simxl, tmp_path, "a")
    simxl.set_faults(shutdown_delay=30)
    assert run(simxl, "shutdown", "a").rc == 0
    assert simxl.names() == ["a"], "still powering off"


def test_a_guest_that_ignores_shutdown_keeps_running_and_w_waits(
    simxl: SimXl, tmp_path: Path
) -> None:
    created(simxl, tmp_path, "deaf")
    simxl.set_faults(ignore_shutdown={"deaf": True})
    with pytest.raises(subprocess.TimeoutExpired):
        argv = [*simxl.command, "shutdown", "-w", "deaf"]
        subprocess.run(argv, check=False, capture_output=True, timeout=2)
    assert simxl.names() == ["deaf"]


def test_hvm_without_pv_drivers_needs_the_acpi_fallback(simxl: SimXl, tmp_path: Path) -> None:
    created(simxl, tmp_path, "win", type="hvm")
    simxl.set_faults(no_pv_drivers=True)
    refused = run(simxl, "shutdown", "win")
    assert refused.rc == 1
    assert 'Use "-F" to fallback to ACPI power event.' in refused.err
    assert run(simxl, "shutdown", "-F", "-w", "win").rc == 0
    assert simxl.names() == []


def test_save_ends_the_domain_and_restore_continues_it_without_a_boot(
    simxl: SimXl, tmp_path: Path
) -> None:
    created(simxl, tmp_path, "a", memory=96)
    image = tmp_path / "a.save"
    assert run(simxl, "save", "a", str(image)).rc == 0
    assert simxl.names() == [] and image.stat().st_size > 0
    restored = run(simxl, "restore", str(image))
    assert restored.rc == 0 and "Restore successful" in restored.err
    (dom,) = simxl.domains()[1:]
    assert (dom.name, dom.mem, dom.boots) == ("a", 96, 1)
    assert dom.monitor_pid is not None


def test_restore_of_a_damaged_image_fails_and_makes_no_domain(simxl: SimXl, tmp_path: Path) -> None:
    image = tmp_path / "a.save"
    image.write_text("not an image")
    ran = run(simxl, "restore", str(image))
    assert ran.rc == 3 and "Failed to restore" in ran.err
    assert simxl.names() == []


def test_a_failing_save_leaves_the_guest_running(simxl: SimXl, tmp_path: Path) -> None:
    created(simxl, tmp_path, "a")
    simxl.set_faults(save_fail=True)
    ran = run(simxl, "save", "a", str(tmp_path / "a.save"))
    assert ran.rc == 1 and "resuming domain" in ran.err
    assert simxl.names() == ["a"]
