"""Shared fixtures: a simulated xl (`simxl`) whose monitor processes are cleaned up."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import conftest_profiles  # noqa: F401 - registers the hypothesis `deep` profile
from xenreconcile.simxl import SimXl


@pytest.fixture
def simxl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SimXl]:
    """A fresh simulated toolstack (only Domain-0 running) in a temp state dir.
    Its monitors are killed and its state dir removed afterwards."""
    # Monitors left behind by a crashed test still exit on their own soon.
    monkeypatch.setenv("SIMXL_MONITOR_LIFETIME", "600")
    sim = SimXl(tmp_path / "simxl-state")
    yield sim
    sim.kill_monitors()
    shutil.rmtree(sim.state_dir, ignore_errors=True)
