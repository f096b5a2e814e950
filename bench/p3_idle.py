"""P3 idle cost: N guests all running, `interval` 30 s: the daemon's own CPU seconds
(utime+stime from /proc/PID/stat, children such as xl not counted) per minute, and RSS."""

from __future__ import annotations

import time
from typing import Any

from bench.common import BenchDaemon, cpu_seconds, guest_names, rss_mib, temp_root, write_guest


def run(guests: int, seconds: float, interval: float, sample_every: float = 60) -> dict[str, Any]:
    """Run the daemon idle for `seconds` after its first pass; CPU and RSS samples."""
    with temp_root("p3") as root:
        daemon = BenchDaemon(root, interval=f"{interval}s")
        for name in guest_names(guests):
            write_guest(daemon.guests_dir, name)
            daemon.sim.add_domain(name)
        try:
            daemon.start()
            daemon.wait_first_pass()
            time.sleep(0.5)  # let the first pass's save and status write settle
            samples = _sample(daemon.pid, seconds, sample_every)
            creates = len(daemon.sim.creates())
        finally:
            daemon.stop()
    start, end = samples[0], samples[-1]
    minutes = (end["t"] - start["t"]) / 60
    return {
        "guests": guests,
        "interval": interval,
        "seconds": end["t"] - start["t"],
        "cpu_seconds": end["cpu"] - start["cpu"],
        "cpu_per_minute": (end["cpu"] - start["cpu"]) / minutes if minutes else None,
        "rss_mib_max": max(s["rss"] for s in samples),
        "rss_mib_end": end["rss"],
        "creates": creates,
        "samples": samples,
    }


def _sample(pid: int, seconds: float, every: float) -> list[dict[str, float]]:
    """CPU and RSS of `pid` now, every `every` s, and at the end of `seconds`."""
    started = time.monotonic()
    samples = []
    while True:
        elapsed = time.monotonic() - started
        samples.append({"t": elapsed, "cpu": cpu_seconds(pid), "rss": rss_mib(pid)})
        if elapsed >= seconds:
            return samples
        time.sleep(min(every, seconds - elapsed))
