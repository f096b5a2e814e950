"""Run the real `xenreconcile` daemon process against the simulated xl in a temp dir.

Tests wait for what they expect with `wait_for` (a deadline, never a bare sleep;
it raises TimeoutError naming what it waited for)
and read the daemon's JSON log lines back as dicts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from xenreconcile.simxl import SimXl
from xenreconcile.simxl import wait_until as wait_for

# A kernel path that exists on every host: the daemon waits for a missing one.
GUEST_CFG = 'name = "{name}"\ntype = "pv"\nkernel = "/dev/null"\nmemory = 128\nvcpus = 1\n'


class DaemonRun:
    """A temp guests dir, state dir, log and config, a simulated xl, and the daemon."""

    def __init__(self, root: Path, **config: Any) -> None:
        self.root = root
        self.guests_dir = root / "guests"
        self.state_dir = root / "state"
        self.log_file = root / "log" / "xenreconcile.log"
        self.config_path = root / "xenreconcile.yaml"
        self.guests_dir.mkdir(mode=0o755)
        self.sim = SimXl(root / "xl")
        self.config: dict[str, Any] = {
            "guests_dir": str(self.guests_dir),
            "xl": list(self.sim.command),
            "state_dir": str(self.state_dir),
            "log_file": str(self.log_file),
            "log_format": "json",
            "log_level": "debug",
            "interval": "60s",
            "missing_grace": "1s",
            "stable_after": "2s",
            "stop_timeout": "3s",
            "backoff": {"initial": "0.5s", "multiplier": 2, "max": "10s", "jitter": 0},
            **config,
        }
        self.write_config()
        self.proc: subprocess.Popen[bytes] | None = None

    def write_config(self, **changes: Any) -> None:
        """Write the config file with `changes` applied."""
        self.config.update(changes)
        self.config_path.write_text(yaml.safe_dump(self.config), encoding="utf-8")

    def env(self) -> dict[str, str]:
        """The daemon's environment: the simulated xl and its Dom0's boot, and
        the simulated `xenstore-watch` first on PATH after `use_release_watch`."""
        env = {**os.environ, **self.sim.env()}
        bin_dir = self.root / "bin"
        if (bin_dir / "xenstore-watch").exists():
            env["PATH"] = os.pathsep.join([str(bin_dir), env.get("PATH", "")])
        return env

    def use_release_watch(self) -> None:
        """Give the daemon a simulated `xenstore-watch` (`simxl.xswatch`) on PATH."""
        bin_dir = self.root / "bin"
        bin_dir.mkdir(exist_ok=True)
        self.sim.write_wrapper(bin_dir / "xenstore-watch", module="xenreconcile.simxl.xswatch")

    def add_guest(self, name: str, filename: str | None = None, text: str | None = None) -> Path:
        """Drop a guest cfg atomically (write a dot-file, rename it in)."""
        path = self.guests_dir / (filename or f"{name}.cfg")
        temp = self.guests_dir / f".{path.name}.tmp"
        temp.write_text(GUEST_CFG.format(name=name) if text is None else text, encoding="utf-8")
        temp.chmod(0o644)
        os.replace(temp, path)
        return path

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a `xenreconcile` command against this config."""
        return subprocess.run(
            [sys.executable, "-m", "xenreconcile", "-c", str(self.config_path), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        """Start `xenreconcile run` and wait until it logged `started`."""
        before = len(self.events("started"))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "xenreconcile", "-c", str(self.config_path), "run", *args],
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "daemon.stderr", "ab"),  # noqa: SIM115 - lives with the process
        )
        # a deadline, not a speed claim: a loaded CI host can take many seconds to start Python
        wait_for(lambda: len(self.events("started")) > before, 60, "the daemon to start")
        return self.proc

    def signal(self, sig: int) -> None:
        """Send `sig` to the daemon."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM the daemon and wait for it; returns its exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self.proc = None
        return code

    def kill(self) -> None:
        """Kill the daemon, its simulated xl monitors, whatever is left."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None
        self.sim.kill_monitors()

    def lines(self, path: Path | None = None) -> list[dict[str, Any]]:
        """Every JSON log line the daemon wrote so far (to `path`, default the log)."""
        try:
            text = (path or self.log_file).read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def events(self, event: str, guest: str | None = None) -> list[dict[str, Any]]:
        """Log lines with `event=event` (and `guest=guest` when given)."""
        return [
            e
            for e in self.lines()
            if e.get("event") == event and (guest is None or e.get("guest") == guest)
        ]

    def listings(self, since: float = 0.0) -> int:
        """How many `xl list` calls began at or after wall time `since` (one per pass
        of the daemon; `plan` and a `status` without a daemon list too)."""
        return sum(1 for c in self.sim.calls() if c["argv"][:1] == ["list"] and c["time"] >= since)

    def wait_passes(self, count: int, after: float | None = None, timeout: float = 60) -> None:
        """Wait until `count` passes began after wall time `after` (default: now), so
        that at least `count - 1` whole passes ran after it: the handshake for "the
        daemon had every chance to act" that no fixed sleep gives on a slow machine."""
        since = time.time() if after is None else after
        wait_for(lambda: self.listings(since) >= count, timeout, f"{count} passes")

    def remembered(self, name: str) -> dict[str, Any]:
        """What state.json remembers about guest `name` ({} if nothing)."""
        try:
            doc = json.loads((self.state_dir / "state.json").read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return {}
        guest: dict[str, Any] = doc.get("guests", {}).get(name, {})
        return guest

    def stable(self, name: str) -> bool:
        """True once state.json says the daemon created `name` and saw it up for
        `stable_after` (it has forgotten when it created it)."""
        guest = self.remembered(name)
        return "created_hash" in guest and "created_at" not in guest

    def running(self) -> set[str]:
        """Names the simulated xl lists as built (not paused mid-create), Domain-0 excluded."""
        return {d.name for d in self.sim.domains() if d.name != "Domain-0" and d.state != "--p---"}

    def status(self) -> dict[str, Any]:
        """`status --json` parsed."""
        out = self.cli("status", "--json")
        doc: dict[str, Any] = json.loads(out.stdout)
        return doc

    def guest_state(self, name: str) -> str | None:
        """The state `status --json` shows for `name`."""
        for guest in self.status()["guests"]:
            if guest["name"] == name:
                return str(guest["state"])
        return None
