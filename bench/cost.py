"""The daemon's own cost on the way to the first create, on the simulated xl:

- import ratio: median wall time of `python -c 'import xenreconcile.daemon'`
  over that of a bare `python -c pass` (issue 12's target: at most 2x), with
  the bytecode written first and PYTHONDONTWRITEBYTECODE unset for the timed
  runs, as an installed package runs; beside it the floor, the chosen
  dependencies the daemon loads (`import structlog, yaml`) alone;
- boot recovery of N guests (Dom0 just rebooted, each build `create_delay` s
  under the simulated xl's create lock): `xl list` calls (one per pass) until
  every create ended, medians of several runs; and the same for `run --once`.

python bench/cost.py [--guests 8] [--concurrency 4] [--runs 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

if __package__ in (None, ""):  # run as a script: make `bench` and `xenreconcile` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, BenchDaemon, guest_names, machine, median, temp_root, wait_until
from bench.common import write_guest as write_cfg


def installed_env() -> dict[str, str]:
    """This process's environment as an installed package runs in: without
    PYTHONDONTWRITEBYTECODE, which would have every module compiled from source
    at every start (pip and the packages ship the bytecode)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def compile_package() -> None:
    """Write the bytecode of the package, as `pip install` does."""
    command = [sys.executable, "-m", "compileall", "-q", str(REPO / "xenreconcile")]
    subprocess.run(command, check=True, env=installed_env())


def wall_time(code: str) -> float:
    """Seconds one `python -c CODE` takes, spawn to exit, with bytecode used."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=installed_env())
    return time.perf_counter() - started


# The chosen dependencies the daemon loads on its way to the first create: the floor
# of its import (structlog is loaded after the first pass, but loaded all the same).
DEPENDENCIES = "import structlog, yaml"


def import_ratio(runs: int) -> dict[str, float]:
    """Medians of a bare interpreter start, of importing the daemon and of importing
    its chosen dependencies alone (runs interleaved), and the ratios to the bare
    start, bytecode present (as an installed package runs)."""
    compile_package()
    wall_time("import xenreconcile.daemon")  # writes what compileall did not (dependencies)
    codes = {"bare_s": "pass", "daemon_import_s": "import xenreconcile.daemon"}
    codes["dependencies_import_s"] = DEPENDENCIES
    times: dict[str, list[float]] = {key: [] for key in codes}
    for _ in range(runs):
        for key, code in codes.items():
            times[key].append(wall_time(code))
    out = {key: median(values) for key, values in times.items()}
    out["ratio"] = out["daemon_import_s"] / out["bare_s"]
    out["dependencies_ratio"] = out["dependencies_import_s"] / out["bare_s"]
    return out


def listings(daemon: BenchDaemon) -> int:
    """How many `xl list` calls the simulated xl saw."""
    return sum(1 for c in daemon.sim.calls() if c["argv"][:1] == ["list"])


def recovery(guests: int, concurrency: int, create_delay: float, once: bool) -> dict[str, float]:
    """One boot recovery: seconds from spawn until the last create ended and the
    `xl list` calls made meanwhile (the daemon, or `run --once` to its exit)."""
    with temp_root("cost") as root:
        daemon = BenchDaemon(root, concurrency=concurrency)
        daemon.sim.set_faults(create_delay=create_delay, monitor_fds="log")
        for name in guest_names(guests):
            write_cfg(daemon.guests_dir, name)
        daemon.sim.reboot()
        try:
            started = time.time()
            if once:
                run_once(daemon)
            else:
                daemon.start()
                budget = 60 + guests * (create_delay + 2)
                wait_until(lambda: len(daemon.sim.names()) >= guests, budget, "all guests")
                wait_until(
                    lambda: all(c["rc"] is not None for c in daemon.sim.creates()), 30, "ends"
                )
            ended = max(c["end"] for c in daemon.sim.creates())
            return {"seconds": ended - started, "xl_list_calls": listings(daemon)}
        finally:
            daemon.stop()


def run_once(daemon: BenchDaemon) -> None:
    """`xenreconcile run --once` on the bench daemon's config; raises unless it exits 0."""
    daemon.config_path.write_text(yaml.safe_dump(daemon.config), encoding="utf-8")
    env = {**os.environ, **daemon.sim.env()}
    command = [sys.executable, "-m", "xenreconcile", "-c", str(daemon.config_path), "run", "--once"]
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=600)


def recovery_medians(
    guests: int, concurrency: int, create_delay: float, runs: int, once: bool
) -> dict[str, Any]:
    """Medians over `runs` boot recoveries."""
    samples = [recovery(guests, concurrency, create_delay, once) for _ in range(runs)]
    return {
        "guests": guests,
        "concurrency": concurrency,
        "once": once,
        "seconds": median([s["seconds"] for s in samples]),
        "xl_list_calls": median([s["xl_list_calls"] for s in samples]),
        "ideal_s": guests * create_delay,  # the builds, one at a time under xl's lock
    }


def main() -> int:
    """Run the measurements, print them (or their JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guests", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--create-delay", type=float, default=0.5)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = {
        "machine": machine(),
        "imports": import_ratio(max(args.runs, 5) * 2),
        "recovery": [
            recovery_medians(args.guests, args.concurrency, args.create_delay, args.runs, once)
            for once in (False, True)
        ],
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    bare, daemon = result["imports"]["bare_s"] * 1000, result["imports"]["daemon_import_s"] * 1000
    print(f"import: bare {bare:.0f} ms, daemon {daemon:.0f} ms, ratio {daemon / bare:.1f}x")
    deps = result["imports"]["dependencies_import_s"] * 1000
    print(f"import: {DEPENDENCIES} alone {deps:.0f} ms, ratio {deps / bare:.1f}x")
    for row in result["recovery"]:
        mode = "run --once" if row["once"] else "daemon"
        print(
            f"{mode}: {row['guests']} guests c={row['concurrency']}: {row['seconds']:.2f} s"
            f" (builds alone {row['ideal_s']:.1f} s), xl list calls {row['xl_list_calls']:.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
