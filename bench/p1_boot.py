"""P1 boot recovery: N guest cfgs, Dom0 just rebooted (no domains), every create takes
`create_delay` s. Time until all N run: xenreconcile at several concurrencies, and the
peer (Debian's xendomains, serial)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench import peer
from bench.common import BenchDaemon, guest_names, last_create_end, median, temp_root, wait_until
from bench.common import write_guest as write_cfg
from xenreconcile.simxl import SimXl

UPSTREAM_CREATE_USLEEP = 5.0  # upstream Xen's xendomains sleeps this long after each create


def xenreconcile_once(guests: int, concurrency: int, create_delay: float) -> float:
    """Seconds from spawning the daemon until the last of `guests` creates finished."""
    with temp_root("p1") as root:
        daemon = BenchDaemon(root, concurrency=concurrency)
        daemon.sim.set_faults(create_delay=create_delay, monitor_fds="log")
        for name in guest_names(guests):
            write_cfg(daemon.guests_dir, name)
        daemon.sim.reboot()
        try:
            started = daemon.start()
            budget = 60 + guests * (create_delay + 2)
            wait_until(lambda: len(daemon.sim.names()) >= guests, budget, "all guests", step=0.05)
            wait_until(lambda: all(c["rc"] is not None for c in daemon.sim.creates()), 30, "ends")
            return last_create_end(daemon.sim) - started
        finally:
            daemon.stop()


def peer_once(unpacked: Path, guests: int, create_delay: float) -> float:
    """Seconds `xendomains start` takes to create `guests` guests, one after another."""
    with temp_root("p1peer") as root:
        sim = SimXl(root / "xl-state")
        sim.set_faults(create_delay=create_delay, monitor_fds="log")
        guests_dir = root / "auto"
        guests_dir.mkdir()
        for name in guest_names(guests):
            write_cfg(guests_dir, name)
        wrapper = sim.write_wrapper(root / "simxl")
        script = peer.prepare(unpacked, root / "run", guests_dir, wrapper)
        try:
            seconds, output = peer.run_start(script, root / "run" / "bin", 120 + guests * 10)
            running = len(sim.names())
            if running != guests:
                raise RuntimeError(f"xendomains started {running} of {guests}: {output[-500:]}")
            return seconds
        finally:
            sim.kill_monitors()


def run(
    guests: int,
    concurrencies: list[int],
    create_delay: float,
    repeat: int,
    peer_dir: Path | None,
) -> dict[str, Any]:
    """All P1 measurements: medians, ratios and the ideal N * delay (the simulated
    xl, like xl 4.17, builds one domain at a time under its create lock)."""
    result: dict[str, Any] = {
        "guests": guests,
        "create_delay": create_delay,
        "repeat": repeat,
        "xenreconcile": {},
    }
    try:
        if peer_dir is None:
            raise peer.PeerUnavailable("skipped (--no-peer)")
        unpacked = peer.fetch(peer_dir)
        runs = [peer_once(unpacked, guests, create_delay) for _ in range(repeat)]
        serial = median(runs)
        result["peer"] = {
            "name": f"xendomains ({peer.PACKAGE} {peer.version(peer_dir)})",
            "runs": runs,
            "seconds": serial,
            "with_upstream_usleep": serial + UPSTREAM_CREATE_USLEEP * guests,
        }
    except peer.PeerUnavailable as exc:
        result["peer"] = {"error": str(exc)}
    for concurrency in concurrencies:
        runs = [xenreconcile_once(guests, concurrency, create_delay) for _ in range(repeat)]
        seconds = median(runs)
        ideal = guests * create_delay
        entry: dict[str, Any] = {
            "runs": runs,
            "seconds": seconds,
            "ideal": ideal,
            "vs_ideal": seconds / ideal if ideal else None,
        }
        if "seconds" in result["peer"]:
            entry["speedup_vs_peer"] = result["peer"]["seconds"] / seconds
            entry["speedup_vs_upstream"] = result["peer"]["with_upstream_usleep"] / seconds
        result["xenreconcile"][str(concurrency)] = entry
        time.sleep(0.2)
    return result
