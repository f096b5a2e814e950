"""P5 start-up: `xenreconcile --version` wall time, and time from spawning the daemon
until its first pass finished (the status file it writes at the end of a pass)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import BenchDaemon, guest_names, median, temp_root, write_guest

VERSION_COMMAND = [sys.executable, "-m", "xenreconcile", "--version"]


def version_time(runs: int) -> dict[str, Any]:
    """Median wall time of `xenreconcile --version`: hyperfine if installed, else a loop."""
    hyperfine = shutil.which("hyperfine")
    if hyperfine is not None:
        with tempfile.TemporaryDirectory() as tmp:
            export = Path(tmp) / "hf.json"
            subprocess.run(
                [
                    hyperfine,
                    "--warmup",
                    "2",
                    "--runs",
                    str(max(runs, 2)),
                    "-N",
                    "--export-json",
                    str(export),
                    " ".join(VERSION_COMMAND),
                ],
                capture_output=True,
                check=True,
            )
            stats = json.loads(export.read_text())["results"][0]
        return {"tool": "hyperfine", "runs": runs, "median": stats["median"], "mean": stats["mean"]}
    times = []
    subprocess.run(VERSION_COMMAND, capture_output=True, check=True)  # warm the page cache
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(VERSION_COMMAND, capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return {"tool": "subprocess loop", "runs": runs, "median": median(times)}


def first_pass_time(guests: int, runs: int) -> dict[str, Any]:
    """Median seconds from spawning `run` until its first pass finished, with
    `guests` cfgs whose guests all run (so the pass creates nothing)."""
    times = []
    for _ in range(runs):
        with temp_root("p5") as root:
            daemon = BenchDaemon(root)
            for name in guest_names(guests):
                write_guest(daemon.guests_dir, name)
                daemon.sim.add_domain(name)
            try:
                started = daemon.start()
                times.append(daemon.wait_first_pass() - started)
            finally:
                daemon.stop()
    return {"guests": guests, "runs": runs, "median": median(times), "all": times}


def run(version_runs: int, first_pass_runs: int, guests: int) -> dict[str, Any]:
    """Both P5 figures."""
    return {
        "version": version_time(version_runs),
        "first_pass": first_pass_time(guests, first_pass_runs),
    }
