"""`xenreconcile run --once`: one pass, waits for its creates, exit code says if all run."""

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
