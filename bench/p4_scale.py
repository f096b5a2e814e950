"""P4 scale, in-process with the real modules: cold parse of every cfg, a pass when
nothing changed (scan + plan, and the daemon's whole `run_pass` with `xl list`
replaced by its parsed result), and parsing an `xl list` of as many rows; for
several sizes so the growth shows. The `xl list` subprocess (the simulated xl,
a Python program) is timed separately."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import guest_names, median, temp_root, write_guest
from xenreconcile import logs, planner, xlcfg
from xenreconcile.config import Config
from xenreconcile.daemon import Daemon
from xenreconcile.guestdir import GuestDirScanner
from xenreconcile.models import CreateResult, Domain, Memory
from xenreconcile.simxl import SimXl
from xenreconcile.simxl.cli import HEADER, format_row
from xenreconcile.state import Boot
from xenreconcile.xl import parse_xl_list


def listing_text(names: list[str]) -> str:
    """An `xl list` table with Domain-0 and one running row per name, as xl prints it."""
    rows = [format_row("Domain-0", 0, 1024, 2, state="r-----", time=1234.5)]
    rows += [
        format_row(name, i + 1, 128, 1, state="-b----", time=12.3) for i, name in enumerate(names)
    ]
    return "\n".join([HEADER, *rows]) + "\n"


CPU_TIMES: dict[str, float] = {}  # the median CPU time of the last `timed` call per label


def timed(func: Callable[[], object], repeat: int, label: str = "") -> float:
    """The median wall time of `repeat` calls of `func`, in seconds; the median
    process CPU time goes to CPU_TIMES[label] (steadier on a loaded machine)."""
    times, cpu = [], []
    for _ in range(repeat):
        started, cpu_started = time.perf_counter(), time.process_time()
        func()
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    CPU_TIMES[label] = median(cpu)
    return median(times)


class _ListedRunner:
    """A runner whose `list` returns a fixed, already parsed listing."""

    def __init__(self, domains: tuple[Domain, ...]) -> None:
        self.domains = domains

    def list(self) -> tuple[Domain, ...]:
        return self.domains

    def create(self, path: str) -> CreateResult:
        raise AssertionError(f"nothing should be created in an unchanged pass: {path}")


def measure(size: int, repeat: int, root: Path) -> dict[str, Any]:
    """Every P4 figure for `size` guests, files under `root`."""
    guests_dir = root / "guests"
    guests_dir.mkdir(mode=0o755)
    names = guest_names(size)
    for name in names:
        write_guest(guests_dir, name)
    texts = [(str(p), p.read_text()) for p in sorted(guests_dir.iterdir())]
    text = listing_text(names)
    domains = parse_xl_list(text)

    cold_scan = timed(lambda: GuestDirScanner(str(guests_dir)).scan(), repeat, "cold_scan")
    parse_only = timed(lambda: [xlcfg.parse_cfg(t, p) for p, t in texts], repeat, "cfg_parse_only")
    list_parse = timed(lambda: parse_xl_list(text), repeat, "xl_list_parse")

    scanner = GuestDirScanner(str(guests_dir))
    settings = Config().planner_settings()
    first = planner.plan(scanner.scan(), domains, Memory(), (), time.monotonic(), settings)
    memory = first.memory
    scan_only = timed(scanner.scan, repeat, "unchanged_scan")
    plan_only = timed(
        lambda: planner.plan(scanner.scan(), domains, memory, (), time.monotonic(), settings),
        repeat,
        "unchanged_scan_plan",
    )
    daemon = Daemon(
        Config(
            guests_dir=str(guests_dir),
            state_dir=str(root / "state"),
            log_file=str(root / "log"),
        ),
        runner=_ListedRunner(domains),
        read_boot=lambda: Boot(boot_id="bench"),
        use_watcher=False,
    )
    daemon.start()
    daemon.run_pass(time.monotonic())
    full_pass = timed(lambda: daemon.run_pass(time.monotonic()), repeat, "unchanged_daemon_pass")
    daemon.store.unlock()
    return {
        "size": size,
        "cold_scan": cold_scan,
        "cfg_parse_only": parse_only,
        "unchanged_scan": scan_only,
        "unchanged_scan_plan": plan_only,
        "unchanged_daemon_pass": full_pass,
        "xl_list_parse": list_parse,
        "xl_list_subprocess": _simxl_list_time(root, names, max(3, repeat // 4)),
        "cpu": dict(CPU_TIMES),
    }


def _simxl_list_time(root: Path, names: list[str], repeat: int) -> float:
    """Median wall time of one simulated `xl list` subprocess with these domains."""
    sim = SimXl(root / "xl-state")
    for name in names:
        sim.add_domain(name)
    env_cmd = [*sim.command, "list"]
    return timed(lambda: subprocess.run(env_cmd, capture_output=True, check=True), repeat)


def run(sizes: list[int], repeat: int) -> dict[str, Any]:
    """P4 at each size."""
    with temp_root("p4log") as log_root:
        logs.configure(str(log_root / "bench.log"), "json", "warning")
        results = []
        for size in sizes:
            with temp_root(f"p4-{size}") as root:
                results.append(measure(size, repeat, root))
    return {"repeat": repeat, "sizes": results}
