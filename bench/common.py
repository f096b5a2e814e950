"""Shared helpers: statistics, the machine, /proc readings, a daemon in a temp dir."""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from xenreconcile.simxl import SimXl, wait_until

REPO = Path(__file__).resolve().parent.parent
# Its kernel, disk and bridge exist on any Linux host: the daemon waits for missing ones.
GUEST_CFG = (
    'name = "{name}"\n'
    'type = "pv"\n'
    'kernel = "/dev/null"\n'
    "memory = 128\n"
    "vcpus = 1\n"
    "disk = [ 'phy:/dev/null,xvda,w' ]\n"
    "vif = [ 'bridge=lo' ]\n"
    'on_crash = "destroy"\n'
)


def median(values: Sequence[float]) -> float:
    """The median of `values` (which must not be empty)."""
    return percentile(values, 50)


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`th percentile (0..100) of `values`, interpolated between ranks."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def machine() -> dict[str, Any]:
    """What ran the benchmarks: cores, CPU model, Python, kernel, load."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def cpu_seconds(pid: int) -> float:
    """utime + stime of process `pid` itself (children not counted), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    """The resident set size (VmRSS) of process `pid` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no VmRSS for pid {pid}")


def write_guest(guests_dir: Path, name: str, *, atomic: bool = False) -> Path:
    """Write guest `name`'s cfg (mode 0644) into `guests_dir`; with `atomic`, by a
    dot-file and a rename. Returns the path."""
    path = guests_dir / f"{name}.cfg"
    temp = guests_dir / f".{name}.cfg.tmp" if atomic else path
    temp.write_text(GUEST_CFG.format(name=name), encoding="utf-8")
    temp.chmod(0o644)
    if atomic:
        os.replace(temp, path)
    return path


def guest_names(count: int, prefix: str = "guest") -> list[str]:
    """`count` guest names, zero-padded so they sort in order."""
    return [f"{prefix}{i:04d}" for i in range(count)]


@contextmanager
def temp_root(prefix: str) -> Iterator[Path]:
    """A temp directory, removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix=f"xrbench-{prefix}-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


class BenchDaemon:
    """The real `xenreconcile run` on a temp guests dir and a simulated xl."""

    def __init__(self, root: Path, **config: Any) -> None:
        self.root = root
        self.guests_dir = root / "guests"
        self.guests_dir.mkdir(mode=0o755, exist_ok=True)
        self.state_dir = root / "state"
        self.log_file = root / "xenreconcile.log"
        self.sim = SimXl(root / "xl-state")
        self.xl = self.sim.write_wrapper(root / "xl")
        self.config_path = root / "xenreconcile.yaml"
        self.config: dict[str, Any] = {
            "guests_dir": str(self.guests_dir),
            "xl": str(self.xl),
            "state_dir": str(self.state_dir),
            "log_file": str(self.log_file),
            "log_format": "json",
            "log_level": "info",
            "interval": "60s",
            **config,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> float:
        """Start the daemon; returns the wall time just before it was spawned."""
        self.config_path.write_text(yaml.safe_dump(self.config), encoding="utf-8")
        env = {
            **os.environ,
            **self.sim.env(),
            "SIMXL_MONITOR_LIFETIME": "900",
        }
        self.started_at = time.time()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "xenreconcile", "-c", str(self.config_path), "run"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "daemon.stderr", "ab"),  # noqa: SIM115 - lives with the process
            cwd=str(self.root),
        )
        return self.started_at

    @property
    def pid(self) -> int:
        """The daemon's process id."""
        assert self.proc is not None
        return self.proc.pid

    def status_file(self) -> Path:
        """The status document the daemon writes at the end of every pass that changed it."""
        return self.state_dir / "status.json"

    def wait_first_pass(self, timeout: float = 60) -> float:
        """Wait until the first pass wrote its status file; returns that file's mtime."""
        wait_until(self.status_file().exists, timeout, "the first pass", step=0.005)
        return self.status_file().stat().st_mtime

    def events(self, event: str) -> list[dict[str, Any]]:
        """The daemon's JSON log lines with `event=event`."""
        try:
            text = self.log_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == event:
                out.append(record)
        return out

    def stop(self) -> None:
        """SIGTERM the daemon (SIGKILL if it lingers) and kill the monitors left by creates."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        self.sim.kill_monitors()


def last_create_end(sim: SimXl) -> float:
    """The wall time the last `xl create` finished (from the simulated xl's call log)."""
    ends = [c.get("end") for c in sim.creates()]
    return max(float(e) for e in ends if e is not None)
