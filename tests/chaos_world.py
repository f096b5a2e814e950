"""A simulated Dom0 for the chaos soak: a fake clock and an in-process toolstack.

The real `Daemon` runs its real loop (`Daemon.step`) against this world. Time is
simulated: `FakeClock.wait` jumps to the next thing that happens (a create
finishing, a guest dying, an admin request, a Dom0 reboot) or to the end of the
wait, and lets the world act in between. Every fault is drawn from one
`random.Random(seed)`, so a seed replays the same run exactly.

The world checks the soak's invariants at the moment they could be broken:
in `ChaosRunner.list` it remembers the last listing, and in `start_create` (the
daemon's `create_starter` hook) it refuses, by recording a violation, a second
create in flight for one guest, a create while the listing is failing, a create
of a guest the last trusted listing showed, and a create of a held guest.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers import FakeClock
from xenreconcile import control
from xenreconcile.config import Config, parse_config
from xenreconcile.daemon import Daemon, Joinable
from xenreconcile.models import DOM0_NAME, CreateAction, CreateResult, Domain
from xenreconcile.state import Boot
from xenreconcile.xl import ToolstackError

EPOCH = 1_700_000_000.0
# A kernel path that exists on every host: the daemon waits for a missing one.
CFG = 'name = "{name}"\ntype = "pv"\nkernel = "/dev/null"\nmemory = 128\n# edit {edit}\n'


@dataclass(frozen=True)
class ChaosKnobs:
    """Fault rates and sizes of a soak."""

    guests: int = 12
    list_fail: float = 0.02  # per `xl list`
    create_fail: float = 0.20  # per create
    create_hang: float = 0.05  # per create: times out after xl_timeout
    create_seconds: tuple[float, float] = (0.5, 4.0)  # how long a create takes
    death_rate: float = 1 / 1500  # per running guest per simulated second
    reboot_rate: float = 1 / 2400  # Dom0 reboots per simulated second
    request_rate: float = 1 / 400  # hold/release requests per simulated second
    edit_rate: float = 1 / 900  # cfg file rewrites per simulated second
    crash_restart: float = 0.5  # share of reboots where the daemon is killed, not stopped


CONFIG = """
guests_dir: {guests}
state_dir: {state}
log_file: {log}
log_format: json
log_level: info
interval: 30s
concurrency: 4
xl_timeout: 10s
missing_grace: 5s
stable_after: 20s
backoff: {{initial: 2s, multiplier: 2, max: 60s, jitter: 5s}}
"""


@dataclass
class Flight:
    """A create under way in the world."""

    action: CreateAction
    done: Callable[[CreateResult], None]
    outcome: str  # "ok" | "fail" | "hang"
    started: float
    generation: int

    def join(self, timeout: float | None = None) -> None:
        """Nothing to wait for: the world completes it in simulated time."""
        del timeout


@dataclass
class Figures:
    """What the soak did, for the report."""

    passes: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    creates: int = 0
    violations: list[str] = field(default_factory=list)


class ChaosRunner:
    """The daemon's `runner`: `xl list` from the world's domains, failing at times."""

    def __init__(self, world: ChaosWorld) -> None:
        self.world = world

    def list(self) -> tuple[Domain, ...]:
        """The world's domains with Domain-0; ToolstackError with the set chance."""
        world = self.world
        world.figures.passes += 1
        if world.faulty and world.rng.random() < world.knobs.list_fail:
            world.figures.faults["list_fail"] += 1
            world.last_listing = None
            raise ToolstackError("xl list: cannot init xl context (simulated)")
        rows = [Domain(DOM0_NAME, 0, 4096, 2, "r-----", 100.0)]
        rows += [Domain(n, i, 128, 1, "-b----", 1.0) for n, i in sorted(world.domains.items())]
        world.last_listing = frozenset(world.domains)
        return tuple(rows)

    def create(self, path: str) -> CreateResult:
        """Never used: creates go through the world's `start_create`."""
        raise AssertionError(f"unexpected direct create of {path}")


class ChaosWorld:
    """Domains, creates in flight, faults and the daemon that reconciles them."""

    def __init__(self, root: Path, seed: int, knobs: ChaosKnobs | None = None) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.knobs = knobs or ChaosKnobs()
        self.root = root
        self.guests_dir = root / "guests"
        self.state_dir = root / "state"
        self.guests_dir.mkdir(mode=0o755)
        self.names = [f"g{i:02d}" for i in range(self.knobs.guests)]
        for name in self.names:
            self._write_cfg(name, 0)
        self._write_extra_files()
        self.config = self._load_config()
        self.clock = FakeClock(start=EPOCH, wall_offset=0.0, world=self)
        self.domains: dict[str, int] = {}
        self.domids = itertools.count(1)
        self.flights: list[tuple[float, int, Flight]] = []
        self.sequence = itertools.count()
        self.generation = 0  # Dom0 boots; creates of an older boot are lost
        self.boot = EPOCH - 100
        self.held: set[str] = set()
        self.last_listing: frozenset[str] | None = None
        self.faulty = True
        self.last_failure_at = EPOCH
        self.fault_stop_at: float | None = None
        self.figures = Figures()
        self.next_random = self.clock.now + self._gap()
        self.daemon = self._new_daemon()

    # --- set-up -----------------------------------------------------------------------

    def _write_cfg(self, name: str, edit: int) -> None:
        path = self.guests_dir / f"{name}.cfg"
        temp = self.guests_dir / f".{name}.tmp"
        temp.write_text(CFG.format(name=name, edit=edit), encoding="utf-8")
        temp.chmod(0o644)
        temp.replace(path)

    def _write_extra_files(self) -> None:
        """An invalid file and a duplicate pair: never created, never in the way."""
        (self.guests_dir / "broken.cfg").write_text('name = "broken\n', encoding="utf-8")
        for file in ("dup-a.cfg", "dup-b.cfg"):
            (self.guests_dir / file).write_text(CFG.format(name="dup", edit=0), encoding="utf-8")
        for path in self.guests_dir.iterdir():
            path.chmod(0o644)

    def _load_config(self) -> Config:
        text = CONFIG.format(
            guests=self.guests_dir, state=self.state_dir, log=self.root / "xenreconcile.log"
        )
        return parse_config(text, "chaos.yaml")

    def _new_daemon(self) -> Daemon:
        daemon = Daemon(
            self.config,
            clock=self.clock,
            runner=ChaosRunner(self),
            read_boot=lambda: Boot(str(self.generation), self.boot, self.clock.now - self.boot),
            use_watcher=False,
            create_starter=self.start_create,
        )
        daemon.start()
        return daemon

    # --- the daemon's create hook and the invariants ------------------------------------

    def start_create(self, action: CreateAction, done: Callable[[CreateResult], None]) -> Joinable:
        """Begin `action` in the world, after checking the invariants."""
        name = action.name
        self.figures.creates += 1
        if any(f.action.name == name and f.generation == self.generation for *_, f in self.flights):
            self._violation(f"second create in flight for {name}")
        if self.last_listing is None:
            self._violation(f"create of {name} while the listing is failing")
        elif name in self.last_listing:
            self._violation(f"create of {name}, which the last trusted listing showed")
        if name in self.held:
            self._violation(f"create of held guest {name}")
        outcome = self._draw_outcome()
        low, high = self.knobs.create_seconds
        ends = self.clock.now + (
            self.config.xl_timeout if outcome == "hang" else self.rng.uniform(low, high)
        )
        flight = Flight(action, done, outcome, self.clock.now, self.generation)
        heapq.heappush(self.flights, (ends, next(self.sequence), flight))
        return flight

    def _draw_outcome(self) -> str:
        if not self.faulty:
            return "ok"
        draw = self.rng.random()
        if draw < self.knobs.create_hang:
            return "hang"
        if draw < self.knobs.create_hang + self.knobs.create_fail:
            return "fail"
        return "ok"

    def _violation(self, what: str) -> None:
        self.figures.violations.append(f"t={self.clock.now - EPOCH:.1f}s: {what}")

    # --- simulated time -----------------------------------------------------------------

    def next_happening(self) -> float | None:
        """When the world next changes by itself."""
        times = [self.flights[0][0]] if self.flights else []
        if self.faulty:
            times.append(self.next_random)
        return min(times, default=None)

    def happen(self, now: float) -> None:
        """Everything due at `now`: finished creates, then random faults."""
        while self.flights and self.flights[0][0] <= now:
            _, _, flight = heapq.heappop(self.flights)
            self._finish(flight, now)
        if self.faulty and self.next_random <= now:
            self._random_happening()
            self.next_random = now + self._gap()

    def _gap(self) -> float:
        """Seconds to the next random happening (exponential, rate of all kinds)."""
        return self.rng.expovariate(self._total_rate())

    def _total_rate(self) -> float:
        k = self.knobs
        return k.death_rate * k.guests + k.reboot_rate + k.request_rate + k.edit_rate

    def _random_happening(self) -> None:
        k = self.knobs
        kinds = ["death", "reboot", "request", "edit"]
        weights = [k.death_rate * k.guests, k.reboot_rate, k.request_rate, k.edit_rate]
        kind = self.rng.choices(kinds, weights)[0]
        if kind == "death":
            self._kill_random_guest()
        elif kind == "reboot":
            self.reboot_dom0()
        elif kind == "request":
            self._admin_request()
        else:
            self._edit_random_file()

    def _finish(self, flight: Flight, now: float) -> None:
        if flight.generation != self.generation:
            return  # Dom0 rebooted while it ran: the process is gone
        name = flight.action.name
        if flight.outcome == "ok" and name not in self.domains:
            self.domains[name] = next(self.domids)
            flight.done(CreateResult(ok=True, exit_code=0, duration=now - flight.started))
            return
        self.last_failure_at = now
        if flight.outcome == "hang":
            self.figures.faults["create_hang"] += 1
            result = CreateResult(
                ok=False, exit_code=None, timed_out=True, duration=now - flight.started
            )
        else:
            self.figures.faults["create_fail"] += 1
            stderr = "libxl: error: libxl_dom.c:1250: kernel image not found (simulated)\n"
            result = CreateResult(ok=False, exit_code=3, stderr_tail=stderr, duration=1.0)
        flight.done(result)

    def _kill_random_guest(self) -> None:
        if self.domains:
            name = self.rng.choice(sorted(self.domains))
            del self.domains[name]
            self.figures.faults["guest_death"] += 1

    def _admin_request(self) -> None:
        name = self.rng.choice(self.names)
        op = "release" if name in self.held else "hold"
        control.write_request(str(self.state_dir), control.Request(op, name, "chaos"))
        # The daemon takes it at the start of its next step, before any pass.
        (self.held.discard if op == "release" else self.held.add)(name)
        self.figures.faults[f"admin_{op}"] += 1

    def _edit_random_file(self) -> None:
        name = self.rng.choice(self.names)
        self._write_cfg(name, self.rng.randrange(1_000_000))
        self.figures.faults["cfg_edit"] += 1

    def reboot_dom0(self) -> None:
        """Every domain gone, creates of this boot lost, a new boot, and the
        daemon restarted on the same state dir (killed or stopped before)."""
        self.figures.faults["dom0_reboot"] += 1
        self.domains.clear()
        self.generation += 1
        self.flights = [entry for entry in self.flights if entry[2].generation == self.generation]
        old = self.daemon
        if self.rng.random() < self.knobs.crash_restart:
            old.store.unlock()  # like kill -9: nothing saved, the lock dies with the process
            self.figures.faults["daemon_killed"] += 1
        else:
            old.stop()
            old.shutdown()
        self.boot = self.clock.now
        self.daemon = self._new_daemon()

    # --- driving ----------------------------------------------------------------------------

    def run_until_passes(self, passes: int) -> None:
        """Step the daemon until it made `passes` passes (listings) in all."""
        while self.figures.passes < passes:
            self.daemon.step()

    def stop_faults(self) -> None:
        """No new fault from now on; creates already under way end as drawn."""
        self.faulty = False
        self.fault_stop_at = self.clock.now

    def settled_at(self) -> float:
        """When the last fault has played out: the last failed create returned, and
        one interval passed after the faults stopped (for the daemon to see the
        last death)."""
        assert self.fault_stop_at is not None
        return max(self.fault_stop_at + self.config.interval, self.last_failure_at)

    def run_until(self, deadline: float, done: Callable[[], bool]) -> float | None:
        """Step until `done()` or simulated `deadline`; the time `done()` held, or None."""
        while self.clock.now <= deadline:
            if done():
                return self.clock.now
            self.daemon.step()
        return None

    def should_run(self) -> set[str]:
        """The valid, non-held guests."""
        return set(self.names) - self.held

    def converged(self) -> bool:
        """Every valid, non-held guest is running."""
        return self.should_run() <= set(self.domains)

    def describe(self) -> dict[str, Any]:
        """A summary for failure messages."""
        memory = self.daemon.memory
        return {
            "seed": self.seed,
            "t": round(self.clock.now - EPOCH, 1),
            "running": sorted(self.domains),
            "held": sorted(self.held),
            "in_flight": sorted(self.daemon.in_flight),
            "memory": {n: memory.guest(n) for n in sorted(self.should_run() - set(self.domains))},
        }


def convergence_bound(config: Config) -> float:
    """backoff.max + one interval: the longest a guest may stay missing once the
    faults have played out."""
    return config.backoff.max + config.interval
