"""Pool mode against a real etcd on loopback: several simulated hosts, each its
own simulated xl and daemon process, on one guests directory, with the invariant
checker sampling every host's listing throughout (tests/pool_world.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pool_world import Watchdog, fence_config, pool_of, wait_for

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
        for name, host in pool.hosts.items():
            doc = host.run.status()
            here = sorted(g for g, h in placed.items() if h == name)
            assert doc["pool"] == {
                "name": "testpool",
                "host": name,
                "confirmed": True,
                "error": None,
                "claimed_here": len(here),
            }
            states = {g["name"]: g["state"] for g in doc["guests"]}
            assert states == {g: "running" if g in here else "elsewhere" for g in GUESTS}
            assert doc["toolstack"]["ok"]
        table = pool.hosts["a"].run.cli("status")
        assert table.returncode == 0
        assert "pool testpool: this host a" in table.stdout
        pool.checker.assert_held()


def _by_host(placed: dict[str, str], host: str) -> list[str]:
    return sorted(g for g, h in placed.items() if h == host)


def test_kill9_of_a_daemon_leaves_its_guests_where_they_are(tmp_path: Path) -> None:
    with pool_of(tmp_path, "a", "b") as pool:
        pool.start()
        for guest in GUESTS:
            pool.add_guest(guest)
        placed = pool.wait_placed(GUESTS)
        pool.hosts["a"].kill9()
        wait_for(lambda: not pool.pool_status("b")["hosts"]["a"]["alive"], 30, "a's lease to end")
        pool.wait_passes(3, "b")
        assert pool.placed(GUESTS) == placed  # nothing moved, nothing doubled
        assert pool.claims() == placed  # the claims outlive the lease
        pool.start("a")
        pool.wait_passes(3)
        assert pool.placed(GUESTS) == placed
        pool.checker.assert_held()


def test_a_lost_host_s_guests_move_only_after_takeover(tmp_path: Path) -> None:
    with pool_of(tmp_path, "a", "b", "c") as pool:
        pool.start()
        for guest in GUESTS:
            pool.add_guest(guest)
        placed = pool.wait_placed(GUESTS)
        lost = _by_host(placed, "a") or _by_host(placed, "b")
        victim = placed[lost[0]]
        pool.hosts[victim].lose()
        survivor = next(h for h in "abc" if h != victim)
        wait_for(
            lambda: not pool.pool_status(survivor)["hosts"][victim]["alive"], 30, "lease to end"
        )
        pool.wait_passes(3)
        assert all(pool.where(g) == [] for g in lost)  # no takeover without the admin
        runs = pool.hosts[survivor].run
        refused = runs.cli("pool", "takeover", victim)
        assert refused.returncode == 2
        assert "--yes" in refused.stderr
        alive = next(h for h in "abc" if h not in (victim, survivor))
        assert runs.cli("pool", "takeover", alive, "--yes").returncode == 1  # alive: refused
        done = runs.cli("pool", "takeover", victim, "--yes")
        assert done.returncode == 0, done.stderr
        moved = pool.wait_placed(GUESTS)
        assert victim not in moved.values()
        assert {g: h for g, h in moved.items() if g not in lost} == {
            g: h for g, h in placed.items() if g not in lost
        }
        pool.checker.assert_held()


def _pool_metrics(path: Path) -> dict[str, float]:
    """The pool samples of a metrics textfile: metric name (with labels) -> value."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(("xenreconcile_pool_confirmed", "xenreconcile_guest_claimed"))
    }


def test_a_partitioned_host_keeps_its_guests_and_starts_nothing(tmp_path: Path) -> None:
    textfile = str(tmp_path / "{host}.prom")
    with pool_of(tmp_path, "a", "b", config={"metrics_textfile": textfile}) as pool:
        pool.start()
        for guest in GUESTS:
            pool.add_guest(guest)
        placed = pool.wait_placed(GUESTS)
        cut = "a" if _by_host(placed, "a") else "b"
        other = "b" if cut == "a" else "a"
        mine = _by_host(placed, cut)
        claimed = {
            f'xenreconcile_guest_claimed{{guest="{g}"}}': float(h == cut) for g, h in placed.items()
        }
        metrics_file = tmp_path / f"{cut}.prom"
        expected = {"xenreconcile_pool_confirmed": 1.0, **claimed}
        wait_for(lambda: _pool_metrics(metrics_file) == expected, 30, "the pool metrics")
        pool.hosts[cut].proxy.cut()
        wait_for(lambda: not pool.pool_status(other)["hosts"][cut]["alive"], 30, "lease to end")
        # not confirmed: it says so, and claims nothing it cannot see
        unconfirmed = {"xenreconcile_pool_confirmed": 0.0}
        wait_for(lambda: _pool_metrics(metrics_file) == unconfirmed, 30, "pool_confirmed 0")
        pool.hosts[cut].run.sim.destroy(mine[0])  # it crashes while its host is cut off
        pool.wait_passes(4)
        assert all(pool.where(g) == [cut] for g in mine[1:])
        assert pool.where(mine[0]) == []  # not recreated: its claim cannot be confirmed
        assert pool.hosts[cut].run.events("pool_unconfirmed")
        pool.hosts[cut].proxy.heal()
        assert pool.wait_placed(GUESTS) == placed  # recreated on its own host after the heal
        pool.checker.assert_held()


def test_etcd_restart_changes_nothing_and_blocks_creates_while_down(tmp_path: Path) -> None:
    with pool_of(tmp_path, "a", "b") as pool:
        pool.start()
        for guest in GUESTS:
            pool.add_guest(guest)
        placed = pool.wait_placed(GUESTS)
        pool.etcd.stop()
        victim = GUESTS[0]
        pool.hosts[placed[victim]].run.sim.destroy(victim)
        pool.wait_passes(4)
        assert pool.where(victim) == []
        pool.etcd.start()
        assert pool.wait_placed(GUESTS) == placed
        pool.checker.assert_held()


def test_live_migration_hands_the_claim_over(tmp_path: Path) -> None:
    prefer = {"guests": {"g1": {"pool_host": "a"}}}
    with pool_of(tmp_path, "a", "b", config=prefer) as pool:
        pool.start()
        # each host's view of who is alive comes from its own passes: one taken before
        # a was alive would let b claim g1 (a is down, as far as b knows)
        pool.wait_passes(2)
        pool.add_guest("g1")
        assert pool.wait_placed(["g1"]) == {"g1": "a"}
        pool.hosts["a"].run.sim.migrate_away("g1", seconds=1.5)
        receiver = pool.hosts["b"].run.sim
        receiver.migrate_in("g1", seconds=1.0)
        wait_for(lambda: "g1" in receiver.names(), 10, "the migration to end on b")
        receiver.set_state("g1", "-b----")  # xl unpauses it once it is in
        wait_for(lambda: pool.claims().get("g1") == "b", 30, "the claim to move to b")
        pool.wait_passes(3)
        assert pool.where("g1") == ["b"]  # the sender did not start it again
        pool.hosts["b"].run.sim.destroy("g1")  # a crash on the new host: recreated there
        wait_for(lambda: pool.where("g1") == ["b"], 30, "g1 recreated on b")
        pool.wait_passes(2)
        assert pool.where("g1") == ["b"]
        pool.checker.assert_held()


FENCE_TIMEOUT = 8.0  # well above LEASE_TTL, so a takeover that did not wait would show


def test_with_fencing_a_cut_off_host_resets_itself_before_its_guests_start_elsewhere(
    tmp_path: Path,
) -> None:
    fence = fence_config(tmp_path, FENCE_TIMEOUT)
    with pool_of(tmp_path, "a", "b", fence=fence) as pool:
        watchdog = Watchdog(tmp_path, list(pool.hosts.values()), FENCE_TIMEOUT)
        try:
            pool.start()
            for guest in GUESTS:
                pool.add_guest(guest)
            placed = pool.wait_placed(GUESTS)
            cut = "a" if _by_host(placed, "a") else "b"
            other = "b" if cut == "a" else "a"
            moved = _by_host(placed, cut)
            pool.hosts[cut].proxy.cut()
            wait_for(lambda: cut in watchdog.resets, 30, f"{cut} to fence itself")
            assert pool.wait_placed(GUESTS, timeout=60) == dict.fromkeys(GUESTS, other)
            reset_at = watchdog.resets[cut]
            # wait_placed reads the listings itself; the checker's thread may not have
            # sampled the last moved guest yet
            wait_for(
                lambda: all((g, other) in pool.checker.first_seen for g in moved),
                10,
                "the checker to see the moved guests",
            )
            for guest in moved:  # none of them started on the other host before the reset
                assert pool.checker.first_seen[(guest, other)] > reset_at
            assert pool.hosts[other].run.events("pool_fenced_takeover")
        finally:
            watchdog.stop()
        pool.checker.assert_held()
