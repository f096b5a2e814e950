"""`xenreconcile run --once`: converges (every create it can do now, order groups
included, waiting for each), exit code says if all run."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_harness import DaemonRun


@pytest.fixture
def run(tmp_path: Path) -> Iterator[DaemonRun]:
    daemon_run = DaemonRun(tmp_path)
    try:
        yield daemon_run
    finally:
        daemon_run.kill()


def test_once_creates_everything_and_exits_zero(run: DaemonRun) -> None:
    run.add_guest("a")
    run.add_guest("b")
    result = run.cli("run", "--once")
    assert result.returncode == 0, result.stderr
    assert run.running() == {"a", "b"}
    assert run.cli("run", "--once").returncode == 0
    assert len(run.sim.creates()) == 2, "a second pass creates nothing"


def test_once_exits_one_when_a_guest_fails(run: DaemonRun) -> None:
    run.sim.set_faults(create_fail={"b": "kernel"})
    run.add_guest("a")
    run.add_guest("b")
    assert run.cli("run", "--once").returncode == 1
    assert run.running() == {"a"}


def test_once_exits_one_for_an_invalid_file(run: DaemonRun) -> None:
    run.add_guest("a")
    run.add_guest("bad", text="name = \n")
    assert run.cli("run", "--once").returncode == 1
    assert run.running() == {"a"}


def test_once_exits_one_when_the_guests_dir_is_gone(run: DaemonRun) -> None:
    shutil.rmtree(run.guests_dir)
    assert run.cli("run", "--once").returncode == 1


def test_once_exits_one_and_creates_nothing_when_xl_list_fails(run: DaemonRun) -> None:
    run.sim.set_faults(list_fail=True)
    run.add_guest("a")
    assert run.cli("run", "--once").returncode == 1
    assert run.sim.creates() == []


def test_a_missing_named_config_is_a_usage_error(run: DaemonRun) -> None:
    run.config_path.unlink()
    result = run.cli("status")
    assert result.returncode == 2
    assert str(run.config_path) in result.stderr


def test_once_converges_across_order_groups_and_free_slots(run: DaemonRun) -> None:
    """3x `concurrency` guests in two order groups: every one is created in one
    `run --once`, the higher group only after the lower one runs."""
    run.write_config(concurrency=2, guests={f"late{i}": {"order": 60} for i in range(3)})
    names = {f"early{i}" for i in range(3)} | {f"late{i}" for i in range(3)}
    for name in sorted(names):
        run.add_guest(name)
    result = run.cli("run", "--once", timeout=60)
    assert result.returncode == 0, result.stderr
    assert run.running() == names
    creates = {c["name"]: c for c in run.sim.creates()}
    assert len(creates) == 6
    early_done = max(creates[f"early{i}"]["end"] for i in range(3))
    assert min(creates[f"late{i}"]["time"] for i in range(3)) >= early_done
