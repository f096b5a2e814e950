"""`xenreconcile demo`: the real daemon on a temp guests dir and a simulated xl.

No Xen needed. The demo writes three guest cfgs, starts `xenreconcile run` as a
child process (its log shown live), then plays what the daemon exists for:
a Dom0 that has just booted, a guest destroyed by hand, a cfg dropped in, a Dom0
"reboot" (daemon stopped, every domain gone, daemon started again), and the
recovery. It exits 0 when every step ended as expected.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from xenreconcile.simxl import SimXl, wait_for

GUESTS = ("web", "db", "mail")
CFG = 'name = "{name}"\ntype = "pv"\nkernel = "{kernel}"\nmemory = {memory}\nvcpus = 1\n'
CONFIG = """\
guests_dir: {root}/guests
xl: {root}/bin/xl
state_dir: {root}/state
log_file: "-"
interval: 5s
missing_grace: 2s
stable_after: 2s
concurrency: 2
"""


def say(text: str) -> None:
    """A line of the demo's own narration."""
    print(f"\n==> {text}", flush=True)


def show_listing(xl: Path) -> None:
    """Print what `xl list` prints now."""
    out = subprocess.run([str(xl), "list"], capture_output=True, text=True, check=False)
    print(out.stdout.rstrip(), flush=True)


def _relay(stream: IO[str]) -> None:
    for line in stream:
        print(f"   | {line.rstrip()}", flush=True)


class Demo:
    """The temp world of one demo run."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "guests").mkdir(mode=0o755)
        (root / "bin").mkdir()
        # The daemon waits for a guest's kernel to exist: the demo's guests have one.
        self.kernel = root / "vmlinuz"
        self.kernel.write_bytes(b"")
        self.sim = SimXl(root / "xl-state")
        self.xl = self.sim.write_wrapper(root / "bin" / "xl")
        self.config = root / "xenreconcile.yaml"
        self.config.write_text(CONFIG.format(root=root), encoding="utf-8")
        self.daemon: subprocess.Popen[str] | None = None
        self.env = {
            **os.environ,
            **self.sim.env(),
        }

    def add_guest(self, name: str, memory: int = 256) -> None:
        """Drop a cfg in atomically, as an admin's `cp` + `mv` would."""
        temp = self.root / "guests" / f".{name}.tmp"
        temp.write_text(CFG.format(name=name, memory=memory, kernel=self.kernel), encoding="utf-8")
        temp.chmod(0o644)
        os.replace(temp, self.root / "guests" / f"{name}.cfg")

    def running(self) -> set[str]:
        """Guests the simulated xl lists as built (not paused mid-create)."""
        return {d.name for d in self.sim.domains()[1:] if d.state != "--p---"}

    def _all_stable(self) -> bool:
        """True once state.json says of every guest that the daemon created it
        (`created_hash`) and saw it up for stable_after (`created_at` forgotten)."""
        try:
            doc = json.loads((self.root / "state" / "state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        guests = doc.get("guests", {})
        return all(
            "created_hash" in g and "created_at" not in g
            for g in (guests.get(name, {}) for name in GUESTS)
        )

    def start(self) -> None:
        """Start the daemon with its log relayed to our stdout."""
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "xenreconcile", "-c", str(self.config), "run"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.daemon.stderr is not None
        threading.Thread(target=_relay, args=(self.daemon.stderr,), daemon=True).start()

    def stop(self) -> int:
        """SIGTERM the daemon and wait for it; returns its exit code."""
        if self.daemon is None:
            return 0
        self.daemon.send_signal(signal.SIGTERM)
        code = self.daemon.wait(30)
        self.daemon = None
        return code

    def status(self) -> None:
        """Print `xenreconcile status`."""
        out = subprocess.run(
            [sys.executable, "-m", "xenreconcile", "-c", str(self.config), "status"],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        print(out.stdout.rstrip(), flush=True)

    def play(self) -> bool:
        """The scripted story; True when every step ended as expected."""
        ok = True
        want = set(GUESTS)
        say(
            f"Dom0 has just booted. {len(GUESTS)} guest files in {self.root}/guests,"
            " no guests running:"
        )
        for name in GUESTS:
            self.add_guest(name)
        show_listing(self.xl)
        say("service xenreconcile start")
        self.start()
        ok &= self._expect(lambda: self.running() == want, 30, "all guests created")
        show_listing(self.xl)
        # past stable_after: the guests count as up for good
        ok &= self._expect(self._all_stable, 30, "all guests up for stable_after")
        say("A guest is destroyed by hand (xl destroy web); after missing_grace it comes back:")
        self.sim.destroy("web")
        ok &= self._expect(lambda: "web" in self.running(), 30, "web recreated")
        say("A new cfg is dropped into the guests directory:")
        self.add_guest("build", memory=512)
        want.add("build")
        ok &= self._expect(lambda: "build" in self.running(), 15, "build created")
        say("Dom0 reboots: the daemon stops (guests left as they are), every domain is gone")
        ok &= self.stop() == 0
        self.sim.reboot()
        show_listing(self.xl)
        say("Dom0 is up again; rc.d starts xenreconcile")
        self.start()
        ok &= self._expect(lambda: self.running() == want, 30, "every guest recovered")
        show_listing(self.xl)
        say("xenreconcile status")
        self.status()
        say("service xenreconcile stop")
        ok &= self.stop() == 0
        return ok

    def _expect(self, predicate: Callable[[], bool], timeout: float, what: str) -> bool:
        started = time.monotonic()
        if wait_for(predicate, timeout):
            say(f"ok: {what} ({time.monotonic() - started:.1f}s)")
            return True
        say(f"FAILED: {what} within {timeout:.0f}s")
        return False

    def cleanup(self) -> None:
        """Stop the daemon and the simulated xl's monitor processes."""
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.kill()
            self.daemon.wait(10)
        self.sim.kill_monitors()


def run_demo(keep: bool = False) -> int:
    """Play the demo in a temp dir; 0 when the recovery was shown, else 1."""
    root = Path(tempfile.mkdtemp(prefix="xenreconcile-demo-"))
    root.chmod(0o755)
    demo = Demo(root)
    try:
        ok = demo.play()
    except KeyboardInterrupt:
        ok = False
    finally:
        demo.cleanup()
        if keep:
            print(f"\n(demo files kept in {root})")
        else:
            shutil.rmtree(root, ignore_errors=True)
    say("demo finished: " + ("every guest recovered" if ok else "something went wrong (see above)"))
    return 0 if ok else 1
