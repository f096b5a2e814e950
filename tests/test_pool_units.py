"""Pool mode's pure parts: the planner's gate, placement, the lease clock, the
key layout and the `pool` config keys (no etcd needed)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from tests.test_planner import desired, dom, gm, listing, mem, settings
from xenreconcile.config import ConfigError, parse_config
from xenreconcile.models import GuestPhase, PoolGate
from xenreconcile.planner import plan
from xenreconcile.pool import placement
from xenreconcile.pool.keys import PoolKeys
from xenreconcile.pool.lease import LeaseClock
from xenreconcile.pool.placement import PoolView

# --- the planner's gate -------------------------------------------------------------------


def _states(gate: PoolGate | None, *names: str) -> dict[str, GuestPhase]:
    result = plan(desired(*names), listing(), mem(), (), 100.0, settings(), pool=gate)
    return {s.name: s.state for s in result.statuses}


def test_only_guests_claimed_here_are_created() -> None:
    gate = PoolGate(True, frozenset({"a"}), {"b": "dom0-b"})
    result = plan(desired("a", "b", "c"), listing(), mem(), (), 100.0, settings(), pool=gate)
    assert [c.name for c in result.creates] == ["a"]
    states = {s.name: s.state for s in result.statuses}
    assert states["b"] is GuestPhase.ELSEWHERE
    assert states["c"] is GuestPhase.WAITING


def test_an_unconfirmed_gate_creates_nothing() -> None:
    gate = PoolGate(False, reason="etcd: connection refused")
    result = plan(desired("a"), listing(), mem(), (), 100.0, settings(), pool=gate)
    assert result.creates == ()
    assert result.statuses[0].state is GuestPhase.UNKNOWN
    assert "etcd: connection refused" in (result.statuses[0].detail or "")


def test_without_pool_mode_nothing_changes() -> None:
    assert _states(None, "a") == {"a": GuestPhase.PENDING}


def test_a_guest_running_here_is_running_whatever_the_gate() -> None:
    gate = PoolGate(False, reason="etcd down")
    result = plan(desired("a"), listing(dom("a")), mem(), (), 100.0, settings(), pool=gate)
    assert result.statuses[0].state is GuestPhase.RUNNING


# --- placement ----------------------------------------------------------------------------


def test_a_free_guest_goes_to_exactly_one_live_host() -> None:
    view = PoolView(hosts={"a": frozenset(), "b": frozenset(), "c": frozenset()})
    for guest in ("g1", "g2", "g3", "web", "db"):
        takers = [h for h in "abc" if guest in placement.decide(h, {guest}, (), view, {}).take]
        assert len(takers) == 1, guest


def test_free_guests_spread_over_the_live_hosts() -> None:
    view = PoolView(hosts={"a": frozenset(), "b": frozenset(), "c": frozenset()})
    guests = {f"g{i}" for i in range(30)}
    counts = {h: len(placement.decide(h, guests, (), view, {}).take) for h in "abc"}
    assert sum(counts.values()) == 30
    assert min(counts.values()) >= 4


def test_the_preferred_host_takes_its_guest_while_alive() -> None:
    alive = PoolView(hosts={"a": frozenset(), "b": frozenset()})
    assert placement.decide("b", {"g"}, (), alive, {"g": "b"}).take == ("g",)
    assert placement.decide("a", {"g"}, (), alive, {"g": "b"}).take == ()
    gone = PoolView(hosts={"a": frozenset()})
    assert placement.decide("a", {"g"}, (), gone, {"g": "b"}).take == ("g",)


def test_a_guest_another_host_lists_is_not_claimed_nor_created() -> None:
    view = PoolView(hosts={"a": frozenset(), "b": frozenset({"g"})}, claims={"g": "a"})
    assert placement.decide("a", {"g"}, (), view, {}) == placement.Decisions()
    gate = placement.gate("a", {"g"}, view, set(), 3.0)
    assert gate.mine == frozenset()
    assert gate.elsewhere == {"g": "b"}


def test_a_guest_running_here_takes_its_claim_from_a_holder_that_no_longer_lists_it() -> None:
    view = PoolView(hosts={"a": frozenset(), "b": frozenset({"g"})}, claims={"g": "a"})
    assert placement.decide("b", {"g"}, {"g"}, view, {}).move == (("g", "a"),)


def test_a_guest_running_on_two_hosts_is_a_conflict_not_a_move() -> None:
    view = PoolView(hosts={"a": frozenset({"g"}), "b": frozenset({"g"})}, claims={"g": "a"})
    decisions = placement.decide("b", {"g"}, {"g"}, view, {})
    assert decisions.move == ()
    assert decisions.conflicts == (("g", "a"),)


def test_claims_of_a_dead_host_are_not_taken_by_placement() -> None:
    view = PoolView(hosts={"b": frozenset()}, claims={"g": "a"})
    assert placement.decide("b", {"g"}, (), view, {}).take == ()
    assert placement.gate("b", {"g"}, view, set(), 3.0).elsewhere == {"g": "a"}


def test_free_guests_are_not_claimed_while_a_member_is_unaccounted_for() -> None:
    """A daemon just started has not yet seen the other hosts' keys change: it
    must not take every free guest for itself (claims stay where they are taken)."""
    members = frozenset({"a", "b", "c"})
    early = PoolView(hosts={"c": frozenset()}, members=members)
    guests = {f"g{i}" for i in range(6)}
    assert placement.decide("c", guests, (), early, {}).take == ()
    # a guest already running here is still claimed: it runs nowhere else
    assert placement.decide("c", guests, {"g1"}, early, {}).take == ("g1",)
    settled = replace(early, hosts={h: frozenset() for h in members})
    takers = {h: placement.decide(h, guests, (), settled, {}).take for h in sorted(members)}
    assert sorted(g for taken in takers.values() for g in taken) == sorted(guests)
    assert sum(1 for taken in takers.values() if taken) >= 2


def test_a_member_neither_alive_nor_taken_over_stops_every_create() -> None:
    view = PoolView(hosts={"b": frozenset()}, claims={"g": "b"}, members=frozenset({"a", "b"}))
    gate = placement.gate("b", {"g"}, view, set(), 3.0)
    assert not gate.confirmed
    assert "pool host a is not alive" in gate.reason
    assert placement.gate("b", {"g"}, replace(view, members=frozenset({"b"})), set(), 3.0).mine == {
        "g"
    }


def test_a_vanished_guest_waits_twice_the_lease_ttl_in_pool_mode() -> None:
    view = PoolView(hosts={"a": frozenset()}, claims={"g": "a"}, members=frozenset({"a"}))
    gate = placement.gate("a", {"g"}, view, set(), 3.0)
    assert gate.vanish_grace == 6.0  # twice the lease TTL
    seen = mem(g=gm("g", missing_since=100.0))
    early = plan(desired("g"), listing(), seen, (), 105.9, settings(missing_grace=1.0), pool=gate)
    assert early.creates == ()
    assert early.statuses[0].state is GuestPhase.GRACE
    late = plan(desired("g"), listing(), seen, (), 106.1, settings(missing_grace=1.0), pool=gate)
    assert [c.name for c in late.creates] == ["g"]


def test_published_names_count_incoming_but_not_migrating_away() -> None:
    rows = listing(dom("web"), dom("db--incoming", domid=8), dom("old--migratedaway", domid=9))
    assert placement.published(rows) == {"web", "db"}
    assert placement.running_here(rows) == {"web"}


# --- the lease clock and keys ---------------------------------------------------------------


def test_lease_is_known_alive_for_two_thirds_of_the_ttl_after_the_send() -> None:
    lease = LeaseClock(9.0)
    assert not lease.known_alive(0.0)
    lease.confirmed(100.0)
    assert lease.known_alive(105.9)
    assert not lease.known_alive(106.0)
    assert not lease.renewal_due(102.9)
    assert lease.renewal_due(103.0)
    lease.confirmed(99.0)  # an older send confirmed late does not extend the window
    assert not lease.known_alive(106.0)
    lease.lost()
    assert not lease.known_alive(100.5)


def test_keys_round_trip_and_reject_other_keys() -> None:
    keys = PoolKeys("rack1")
    assert keys.parse(keys.host("dom0-a")) == ("hosts", "dom0-a")
    assert keys.parse(keys.claim("web")) == ("claims", "web")
    assert keys.parse("/xenreconcile/rack2/claims/web") is None
    assert keys.parse(keys.prefix + "claims/a/b") is None


# --- config -----------------------------------------------------------------------------------


def test_pool_keys_are_read() -> None:
    config = parse_config(
        "pool: {name: rack1, host: a, etcd: ['http://127.0.0.1:2379'], lease_ttl: 9s}\n"
        "guests: {web: {pool_host: b}}\n",
        "t.yaml",
    )
    assert config.pool.enabled
    assert (config.pool.name, config.pool.host, config.pool.lease_ttl) == ("rack1", "a", 9.0)
    assert config.guests["web"].pool_host == "b"
    assert not parse_config("", "t.yaml").pool.enabled


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("pool: {name: rack1, etcd: ['http://x:1']}\n", "pool.host"),
        ("pool: {host: a, etcd: ['http://x:1']}\n", "pool.name"),
        ("pool: {name: rack1, host: a}\n", "pool.etcd"),
        ("pool: {name: r, host: a, etcd: ['http://x:1'], lease_ttl: 1s}\n", "pool.lease_ttl"),
        ("pool: {name: ' r', host: a, etcd: ['http://x:1']}\n", "pool.name"),
    ],
)
def test_bad_pool_keys_name_the_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_config(text, "t.yaml")


def test_without_pool_nothing_of_pool_mode_is_imported() -> None:
    code = (
        "import sys\n"
        "from xenreconcile import cli, commands, daemon\n"
        "from xenreconcile.config import parse_config\n"
        "daemon.Daemon(parse_config('state_dir: /nonexistent', 't'), use_watcher=False)\n"
        "bad = [m for m in sys.modules if m.split('.')[:2] == ['xenreconcile', 'pool']\n"
        "       or m.startswith('etcd3gw')]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_fresh_claim_clears_an_outdated_migrated_mark() -> None:
    marked = mem(g=gm("g", migrated=True))
    kept = PoolGate(True, frozenset({"g"}))
    held = plan(desired("g"), listing(), marked, (), 100.0, settings(), pool=kept)
    assert held.statuses[0].state is GuestPhase.MIGRATED
    fresh = PoolGate(True, frozenset({"g"}), fresh=frozenset({"g"}))
    taken = plan(desired("g"), listing(), marked, (), 100.0, settings(), pool=fresh)
    assert [c.name for c in taken.creates] == ["g"]
    assert not taken.memory.guest("g").migrated


def test_a_reload_never_changes_the_pool(tmp_path: Path) -> None:
    from xenreconcile.daemon import reloaded_config

    path = tmp_path / "x.yaml"
    path.write_text("log_file: '-'\n", encoding="utf-8")
    path.chmod(0o600)
    old = parse_config(
        "pool: {name: r, host: a, etcd: ['http://127.0.0.1:1']}\nlog_file: '-'\n", "t.yaml"
    )
    events: list[str] = []

    class Log:
        def warning(self, event: str, **_: object) -> None:
            events.append(event)

        def error(self, event: str, **_: object) -> None:
            events.append(event)

    new = reloaded_config(old, str(path), Log())
    assert new is not None
    assert new.pool == old.pool
    assert "pool_unchanged" in events
