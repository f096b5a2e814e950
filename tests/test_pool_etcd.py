"""Pool mode against a real etcd on loopback: several simulated hosts, each its
own simulated xl and daemon process, on one guests directory, with the invariant
checker sampling every host's listing throughout (tests/pool_world.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pool_world import pool_of

pytestmark = pytest.mark.integration

GUESTS = ["g1", "g2", "g3", "g4", "g5", "g6"]


def test_placement_on_three_hosts_runs_each_guest_once(tmp_path: Path) -> None:
    with pool_of(tmp_path, "a", "b", "c") as pool:
        pool.start()
        for guest in GUESTS:
            pool.add_guest(guest)
        placed = pool.wait_placed(GUESTS)
        assert len(set(placed.values())) >= 2  # spread, not all on one host
        status = pool.pool_status("a")
        assert status["claims"] == placed
        assert status["hosts"] == {h: {"alive": True} for h in "abc"}
        pool.checker.assert_held()
