#!/usr/bin/env python3
"""kill -9 the real daemon at random moments of a busy run; check nothing is lost.

    python tools/kill9.py --kills 500 [--seed N] [--dir DIR] [--json]

Set-up: `xenreconcile run` against the simulated xl with good guests, guests
whose create always fails (so backoff state is written all the time), a fast
interval and backoff, and one guest migrated away (a *migrated* mark). Each
round: start the daemon (sometimes killed during its start-up), wait until it
holds the lock and took pending requests, check, then stir it (destroy a guest,
run `xenreconcile hold|release NAME` through the CLI) and `kill -9` it at a
random moment. After each kill and each restart:

- `StateStore.load()` reads state.json without a warning (not corrupt);
- the migrated mark is still there and that guest was never created again;
- every hold or release the CLI reported is in state.json, or still waits as a
  request file (the CLI said "queued"), and is applied after the restart;
- the restarted daemon converges: every good, non-held guest runs again.

Prints a summary (JSON with --json) and exits 1 with the reason on the first
broken check. The pytest test tests/test_kill9.py runs a few rounds of this.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from xenreconcile import control  # noqa: E402
from xenreconcile.simxl import SimXl  # noqa: E402
from xenreconcile.simxl import wait_until as wait_for  # noqa: E402
from xenreconcile.state import StateStore  # noqa: E402

GOOD = [f"good{i}" for i in range(6)]
FAILING = [f"bad{i}" for i in range(6)]
HOLD_POOL = ["good0", "good1", "bad0", "bad1"]
MIGRATED = "mover"
# A kernel path that exists on every host: the daemon waits for a missing one.
CFG = 'name = "{name}"\ntype = "pv"\nkernel = "/dev/null"\nmemory = 128\n'


class Kill9Failure(AssertionError):
    """A check failed after a kill."""


@dataclass
class Figures:
    """What a run did."""

    kills: int = 0
    kills_in_startup: int = 0
    cli_requests: Counter[str] = field(default_factory=Counter)
    queued_over_kill: int = 0
    destroyed: int = 0
    leftover_temp_files: int = 0
    seconds: float = 0.0


class Kill9Run:
    """The daemon, its simulated xl and what it must not lose."""

    def __init__(self, root: Path, seed: int) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.guests_dir = root / "guests"
        self.state_dir = root / "state"
        self.config_path = root / "xenreconcile.yaml"
        self.sim = SimXl(root / "xl")
        self.expected_held: dict[str, bool] = {}
        self.figures = Figures()
        self.proc: subprocess.Popen[bytes] | None = None
        self._write_files()

    def _write_files(self) -> None:
        self.guests_dir.mkdir(mode=0o755, parents=True)
        for name in [*GOOD, *FAILING, MIGRATED]:
            path = self.guests_dir / f"{name}.cfg"
            path.write_text(CFG.format(name=name), encoding="utf-8")
            path.chmod(0o644)
        config = {
            "guests_dir": str(self.guests_dir),
            "xl": list(self.sim.command),
            "state_dir": str(self.state_dir),
            "log_file": str(self.root / "xenreconcile.log"),
            "log_format": "json",
            "watch": "poll",
            "interval": "1s",
            "missing_grace": "0.2s",
            "stable_after": "1s",
            "stop_timeout": "1s",
            "backoff": {"initial": "0.1s", "multiplier": 2, "max": "1s", "jitter": "0.1s"},
        }
        self.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.sim.set_faults(create_fail=dict.fromkeys(FAILING, "kernel"), create_delay=0.05)

    def env(self) -> dict[str, str]:
        """The environment of the daemon and the CLI."""
        return {
            **os.environ,
            **self.sim.env(),
            "PYTHONPATH": str(ROOT),
        }

    # --- the daemon ---------------------------------------------------------------------

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start `xenreconcile run` (without waiting for it)."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "xenreconcile", "-c", str(self.config_path), "run"],
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "daemon.stderr", "ab"),  # noqa: SIM115 - the child keeps it
        )
        return self.proc

    def wait_ready(self) -> None:
        """Wait until the daemon holds the lock and took every pending request."""
        proc = self.proc
        assert proc is not None
        store = StateStore(str(self.state_dir))

        def locked() -> bool:
            if proc.poll() is not None:
                raise Kill9Failure(
                    f"the daemon exited {proc.returncode} by itself: {self.stderr()}"
                )
            return store.lock_holder() == proc.pid

        wait_for(locked, 20, "the daemon to take the lock")
        wait_for(lambda: not self.pending_requests(), 10, "the daemon to take the requests")

    def stderr(self) -> str:
        """The last lines the daemons wrote to stderr."""
        try:
            text = (self.root / "daemon.stderr").read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-15:])

    def kill9(self) -> None:
        """SIGKILL the daemon and reap it."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise Kill9Failure(
                f"the daemon exited {self.proc.returncode} by itself: {self.stderr()}"
            )
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None
        self.figures.kills += 1

    def cli(self, *args: str) -> str:
        """Run a `xenreconcile` command; its output (Kill9Failure if it fails)."""
        done = subprocess.run(
            [sys.executable, "-m", "xenreconcile", "-c", str(self.config_path), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise Kill9Failure(f"`{' '.join(args)}` exited {done.returncode}: {done.stderr}")
        return done.stdout

    def pending_requests(self) -> list[Path]:
        """Request files the daemon has not taken yet."""
        directory = Path(control.requests_dir(str(self.state_dir)))
        return sorted(directory.glob("*.json")) if directory.is_dir() else []

    def running(self) -> set[str]:
        """Guests the simulated xl lists as running: not paused while being built,
        not dying (Domain-0 excluded)."""
        return {d.name for d in self.sim.domains()[1:] if not {"p", "d"} & set(d.state)}

    # --- the checks ---------------------------------------------------------------------------

    def check_state_file(self, when: str) -> dict[str, Any]:
        """state.json loads without a warning; returns its guests."""
        store = StateStore(str(self.state_dir))
        memory, warning = store.load()
        if warning:
            raise Kill9Failure(f"{when}: state.json does not load cleanly: {warning}")
        if not memory.guest(MIGRATED).migrated:
            raise Kill9Failure(f"{when}: the migrated mark of {MIGRATED} is lost")
        return dict(memory.guests)

    def check_holds(self, when: str, *, allow_pending: bool) -> None:
        """Every hold/release the CLI reported is in state.json, or (only right
        after a kill) still waits as a request file."""
        guests = self.check_state_file(when)
        pending = {self._request_name(p) for p in self.pending_requests()}
        for name, held in self.expected_held.items():
            gm = guests.get(name)
            actual = bool(gm and gm.held)
            if actual != held and not (allow_pending and name in pending):
                raise Kill9Failure(
                    f"{when}: {name} should be {'held' if held else 'released'}, "
                    f"state.json says held={actual}, pending requests for {sorted(pending)}"
                )

    @staticmethod
    def _request_name(path: Path) -> str:
        try:
            return str(json.loads(path.read_text(encoding="utf-8"))["name"])
        except (OSError, ValueError, KeyError):
            return ""

    def check_converges(self, when: str) -> None:
        """Every good, non-held guest runs again, and the migrated guest was never
        created again."""
        want = {n for n in GOOD if not self.expected_held.get(n)}
        wait_for(lambda: want <= self.running(), 20, f"{when}: {sorted(want)} to run")
        if self.sim.creates(MIGRATED)[1:]:
            raise Kill9Failure(f"{when}: {MIGRATED} was created after it migrated away")

    # --- the rounds -------------------------------------------------------------------------

    def prepare(self) -> None:
        """First start: every good guest runs, then `mover` migrates away."""
        self.spawn()
        self.wait_ready()
        wait_for(lambda: {*GOOD, MIGRATED} <= self.running(), 30, "the first convergence")
        self.sim.migrate_away(MIGRATED, seconds=3.0)  # over an interval: a pass sees it
        store = StateStore(str(self.state_dir))
        wait_for(lambda: store.load()[0].guest(MIGRATED).migrated, 15, "the migrated mark")

    def round(self, number: int) -> None:
        """One start, checks, stirring and kill -9."""
        when = f"kill {number}"
        self.spawn()
        if self.rng.random() < 0.1:
            time.sleep(self.rng.uniform(0.0, 0.6))  # inside the start-up
            self.figures.kills_in_startup += 1
            self.kill9()
            self.check_holds(f"{when} (start-up)", allow_pending=True)
            return
        self.wait_ready()
        self.check_holds(f"{when}, after restart", allow_pending=False)
        self.check_converges(f"{when}, after restart")
        cli = self._stir()
        time.sleep(self.rng.uniform(0.0, 0.8))
        self.kill9()
        if cli is not None:
            self._finish_cli(*cli)
        self.check_holds(f"{when}, after the kill", allow_pending=True)

    def _stir(self) -> tuple[subprocess.Popen[str], str, str] | None:
        """Destroy a running guest now and then; start a CLI hold/release at times."""
        running = sorted(self.running() & set(GOOD))
        if running and self.rng.random() < 0.5:
            self.sim.destroy(self.rng.choice(running))
            self.figures.destroyed += 1
        if self.rng.random() >= 0.4:
            return None
        name = self.rng.choice(HOLD_POOL)
        op = "release" if self.expected_held.get(name) else "hold"
        cli = subprocess.Popen(
            [sys.executable, "-m", "xenreconcile", "-c", str(self.config_path), op, name],
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        time.sleep(self.rng.uniform(0.0, 0.3))
        return cli, op, name

    def _finish_cli(self, cli: subprocess.Popen[str], op: str, name: str) -> None:
        out, _ = cli.communicate(timeout=30)
        if cli.returncode != 0:
            raise Kill9Failure(f"`{op} {name}` exited {cli.returncode}: {out.strip()}")
        self.expected_held[name] = op == "hold"
        self.figures.cli_requests[op] += 1
        if "queued" in out:
            self.figures.queued_over_kill += 1

    def finish(self) -> None:
        """A last start: requests applied, convergence, a clean stop."""
        self.spawn()
        self.wait_ready()
        self.check_holds("final start", allow_pending=False)
        self.check_converges("final start")
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        if self.proc.wait(30) != 0:
            raise Kill9Failure("the final daemon did not stop cleanly")
        self.proc = None
        self.check_holds("final stop", allow_pending=False)
        self.figures.leftover_temp_files = len(list(self.state_dir.glob(".state.json.*")))

    def cleanup(self) -> None:
        """Kill whatever is left: the daemon, the simulated xl's monitors."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.sim.kill_monitors()


def run_kills(root: Path, kills: int, seed: int) -> Figures:
    """Run `kills` rounds in `root`; returns the figures, raises Kill9Failure."""
    run = Kill9Run(root, seed)
    started = time.monotonic()
    try:
        run.prepare()
        run.kill9()
        run.figures.kills = 0  # the preparation's kill is not counted
        for number in range(1, kills + 1):
            run.round(number)
        run.finish()
    finally:
        run.cleanup()
    run.figures.seconds = round(time.monotonic() - started, 1)
    return run.figures


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=500)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--dir", type=Path, default=None, help="work dir (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    root = args.dir or Path(tempfile.mkdtemp(prefix="xr-kill9-"))
    print(f"kill9: seed {seed}, {args.kills} kills, work dir {root}", file=sys.stderr)
    try:
        figures = run_kills(root, args.kills, seed)
    except (Kill9Failure, TimeoutError) as exc:
        print(f"kill9 FAILED (seed {seed}): {exc}", file=sys.stderr)
        return 1
    summary = {"seed": seed, **figures.__dict__, "cli_requests": dict(figures.cli_requests)}
    print(json.dumps(summary) if args.json else "\n".join(f"{k}: {v}" for k, v in summary.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
