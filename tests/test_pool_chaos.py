"""A seeded chaos run of every pool fault at once, against a real etcd: guest
crashes, daemon kill -9, host loss then takeover, partitions then heal, etcd
restarts and live migrations, while the invariant checker samples every host.
XR_POOL_CHAOS_FAULTS (default 200) and XR_POOL_CHAOS_SEED set the run; the
default fits CI."""

from __future__ import annotations

import heapq
import itertools
import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.pool_world import LEASE_TTL, Pool, pool_of, wait_for
from xenreconcile.config import parse_config
from xenreconcile.pool import cli as pool_cli

pytestmark = pytest.mark.integration

FAULTS = int(os.environ.get("XR_POOL_CHAOS_FAULTS", "200"))
SEED = int(os.environ.get("XR_POOL_CHAOS_SEED", "17"))
TEMPO = 0.1  # seconds between two faults: the chaos's pace, not a wait for an outcome
GUESTS = [f"c{i}" for i in range(8)]
WEIGHTS = {"crash": 3, "kill9": 1, "cut": 3, "migrate": 5, "lose": 1, "etcd": 1}
CALM_EVERY = 100  # faults between two calm spells, in which the pool may settle


class Chaos:
    """Injects one fault at a time and schedules the recoveries (restart, heal,
    takeover, a lost host's return) a few seconds later."""

    def __init__(self, pool: Pool, rng: random.Random) -> None:
        self.pool = pool
        self.rng = rng
        self.counts: Counter[str] = Counter()
        self.later: list[tuple[float, int, Callable[[], None]]] = []
        self.order = itertools.count()
        self.busy: set[str] = set()  # hosts lost, or with a daemon down or a cut pending
        self.lost: set[str] = set()
        self.etcd_down = False
        self.admin = parse_config(
            f"pool: {{name: testpool, host: admin, etcd: ['{pool.etcd.url}']}}\n", "admin.yaml"
        )

    def after(self, delay: float, action: Callable[[], None]) -> None:
        heapq.heappush(self.later, (time.monotonic() + delay, next(self.order), action))

    def run_due(self, everything: bool = False) -> None:
        while self.later and (everything or self.later[0][0] <= time.monotonic()):
            _, _, action = heapq.heappop(self.later)
            action()

    def injected(self) -> int:
        """The faults injected so far (a takeover is a recovery, not a fault)."""
        return sum(v for k, v in self.counts.items() if k != "takeover")

    def free_hosts(self) -> list[str]:
        return [n for n in self.pool.hosts if n not in self.busy]

    def inject(self) -> None:
        """One fault, of a kind drawn by weight among those possible right now."""
        kinds = list(WEIGHTS)
        while kinds:
            kind = self.rng.choices(kinds, [WEIGHTS[k] for k in kinds])[0]
            if getattr(self, kind)():
                self.counts[kind] += 1
                return
            kinds.remove(kind)

    # --- the faults (each returns True if it could be injected now) -------------------------

    def crash(self) -> bool:
        running = [(h, g) for h, host in self.pool.hosts.items() for g in host.running()]
        if not running:
            return False
        host, guest = self.rng.choice(running)
        self.pool.hosts[host].run.sim.destroy(guest)
        return True

    def kill9(self) -> bool:
        hosts = self.free_hosts()
        if not hosts:
            return False
        name = self.rng.choice(hosts)
        self.busy.add(name)
        self.pool.hosts[name].kill9()

        def restart() -> None:
            self.pool.hosts[name].spawn()
            self.busy.discard(name)

        self.after(self.rng.uniform(0.2, 3.0), restart)
        return True

    def cut(self) -> bool:
        hosts = self.free_hosts()
        if not hosts:
            return False
        name = self.rng.choice(hosts)
        self.busy.add(name)
        self.pool.hosts[name].proxy.cut()

        def heal() -> None:
            self.pool.hosts[name].proxy.heal()
            self.busy.discard(name)

        self.after(self.rng.uniform(0.5, 2 * LEASE_TTL), heal)
        return True

    def migrate(self) -> bool:
        hosts = self.pool.hosts
        up = [n for n in hosts if n not in self.lost]  # whatever their daemons and network
        names = {n: hosts[n].run.sim.names() for n in up}
        running = {n: hosts[n].running() for n in up}
        moves = [
            (src, g, dst)
            for src in up
            for g in running[src]
            for dst in up
            if dst != src and not any(n.startswith(g) for n in names[dst])
        ]
        if not moves:
            return False
        src, guest, dst = self.rng.choice(moves)
        hosts[src].run.sim.migrate_away(guest, seconds=1.5)
        receiver = hosts[dst].run.sim
        receiver.migrate_in(guest, seconds=1.0)

        def unpause() -> None:
            if guest in receiver.names():
                receiver.set_state(guest, "-b----")

        self.after(1.2, unpause)
        return True

    def lose(self) -> bool:
        hosts = self.free_hosts()
        if len(hosts) < 2:
            return False
        name = self.rng.choice(hosts)
        self.busy.add(name)
        self.lost.add(name)
        self.pool.hosts[name].lose()
        self.after(LEASE_TTL + 0.5, lambda: self.take_over(name))
        return True

    def take_over(self, name: str) -> None:
        """The admin, who knows `name` is down, frees its claims, then boots it again."""
        if self.etcd_down or pool_cli.cmd_takeover(self.admin, name, confirmed=True) != 0:
            self.after(1.0, lambda: self.take_over(name))
            return
        self.counts["takeover"] += 1

        def back() -> None:
            self.pool.hosts[name].spawn()
            self.busy.discard(name)
            self.lost.discard(name)

        self.after(self.rng.uniform(0.5, 2.0), back)

    def etcd(self) -> bool:
        if self.etcd_down or self.counts["etcd"] >= max(1, FAULTS // 25):
            return False  # the slowest fault (a second or two): a few per run
        self.etcd_down = True
        self.pool.etcd.stop()

        def start() -> None:
            self.pool.etcd.start()
            self.etcd_down = False

        self.after(self.rng.uniform(0.5, 2.0), start)
        return True


def calm(chaos: Chaos, guests: list[str], spell: float = 20.0) -> None:
    """Let every recovery due run, and the pool settle for up to `spell` seconds."""
    end = time.monotonic() + spell
    while time.monotonic() < end and not (not chaos.later and chaos.pool.placed(guests)):
        chaos.run_due()
        release_stranded(chaos.pool)
        time.sleep(TEMPO)


def release_stranded(pool: Pool) -> None:
    """What the admin does after a receiver was lost before it took the claim: a
    guest running nowhere, shown *migrated* by its claim holder, is released there."""
    for host in pool.hosts.values():
        try:
            doc = json.loads((host.run.state_dir / "status.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for guest in doc.get("guests", []):
            if guest["state"] == "migrated" and not pool.where(guest["name"]):
                host.run.cli("release", guest["name"])


def test_seeded_chaos_of_every_pool_fault_never_runs_a_guest_twice(tmp_path: Path) -> None:
    with pool_of(tmp_path, "a", "b", "c") as pool:
        pool.start()
        for guest in GUESTS:
            pool.add_guest(guest)
        pool.wait_placed(GUESTS)
        chaos = Chaos(pool, random.Random(SEED))
        started = time.monotonic()
        next_calm = CALM_EVERY
        while (injected := chaos.injected()) < FAULTS:
            if injected >= next_calm:
                calm(chaos, GUESTS)
                next_calm += CALM_EVERY
            chaos.run_due()
            chaos.inject()
            time.sleep(TEMPO)
        chaos_took = time.monotonic() - started
        calm(chaos, GUESTS, spell=180)  # every recovery, takeovers retried until done
        settled = time.monotonic() - started
        print(f"chaos: {dict(chaos.counts)} in {chaos_took:.0f}s, settled after {settled:.0f}s")
        wait_for(lambda: pool.placed(GUESTS), 60, "every guest to run again after the chaos")
        pool.checker.stop()
        pool.checker.assert_held()
        faults = {k: v for k, v in chaos.counts.items() if k != "takeover"}
        assert chaos.injected() >= FAULTS
        assert set(faults) == set(WEIGHTS), faults
