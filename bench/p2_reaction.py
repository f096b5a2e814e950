"""P2 reaction: cfgs dropped one at a time (atomic rename) into a running daemon with
`interval` 60 s; latency from the rename to the simulated xl's `create` invocation.

The next cfg is dropped only after the previous create finished and `GAP` seconds
passed, so each latency is that of a quiet daemon. Both times are wall-clock
`time.time()`: the simulated xl stamps its call log with `time.time()` once its
interpreter has started, so the figure includes the start-up of one simulated
`xl list` (the pass) and one simulated `xl create` (a real xl starts in ms)."""

from __future__ import annotations

import os
import time
from typing import Any

from bench.common import GUEST_CFG, BenchDaemon, guest_names, percentile, temp_root, wait_until

GAP = 0.3  # seconds of quiet between a create finishing and the next drop


def measure(watch: str, drops: int) -> dict[str, Any]:
    """Latencies (seconds) of `drops` cfg drops with watcher `watch`."""
    with temp_root(f"p2-{watch}") as root:
        daemon = BenchDaemon(root, watch=watch, concurrency=4)
        daemon.sim.set_faults(monitor_fds="log")
        try:
            daemon.start()
            daemon.wait_first_pass()
            watching = wait_until(lambda: daemon.events("watching"), 30, "the watcher")
            latencies = [_drop_one(daemon, name) for name in guest_names(drops, "drop")]
        finally:
            daemon.stop()
    return {
        "watcher": watching[0].get("watcher", watch),
        "drops": drops,
        "latencies": latencies,
        **summary(latencies),
    }


def _drop_one(daemon: BenchDaemon, name: str) -> float:
    """Rename one cfg in; returns seconds until its `xl create` was invoked."""
    temp = daemon.guests_dir / f".{name}.cfg.tmp"
    temp.write_text(GUEST_CFG.format(name=name), encoding="utf-8")
    temp.chmod(0o644)
    renamed = time.time()
    os.replace(temp, daemon.guests_dir / f"{name}.cfg")
    call = wait_until(lambda: _finished_create(daemon, name), 30, f"the create of {name}")
    time.sleep(GAP)
    return float(call["time"]) - renamed


def _finished_create(daemon: BenchDaemon, name: str) -> dict[str, Any] | None:
    calls = daemon.sim.creates(name)
    return calls[0] if calls and calls[0]["rc"] is not None else None


def summary(latencies: list[float]) -> dict[str, float]:
    """p50, p90, p99 and max of `latencies`."""
    return {
        "p50": percentile(latencies, 50),
        "p90": percentile(latencies, 90),
        "p99": percentile(latencies, 99),
        "max": max(latencies),
    }


def run(drops: int, watchers: list[str]) -> dict[str, Any]:
    """P2 for each available watcher (kqueue only where the OS has it)."""
    out: dict[str, Any] = {"drops": drops, "gap": GAP, "watchers": {}}
    for watch in watchers:
        if watch == "kqueue" and not hasattr(__import__("select"), "kqueue"):
            continue
        out["watchers"][watch] = measure(watch, drops)
    return out
