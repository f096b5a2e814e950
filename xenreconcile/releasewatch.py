"""xenstore's `@releaseDomain` watch as a second source of hints, beside the
directory watcher: a guest's death is noticed at once, not at the next `interval`.

xenstored fires the special watch `@releaseDomain` whenever a domain is
released (it died, was destroyed, shut down or crashed). `xenstore-watch
@releaseDomain` (xenstore-utils on Linux, xen-tools on FreeBSD) prints the path
once when the watch is set and once per fire. A thread of its own runs it and
posts `Hint.CHANGED` for each line but the very first (the initial fire): the
pass still decides. When the program is missing nothing is watched (logged
once); when it fails or ends it is logged once and restarted with backoff,
and meanwhile the `interval` still finds every death.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import Any

from xenreconcile.loopqueue import Hint, LoopQueue

PROGRAM = "xenstore-watch"
WATCH_PATH = "@releaseDomain"
RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)  # after the 1st, 2nd, ... failure in a row
HEALTHY_AFTER = 60.0  # a watch that ran this long before ending starts the delays afresh


def restart_delay(failures: int) -> float:
    """Seconds to wait before the next start after `failures` (>= 1) failures in a row."""
    return RESTART_DELAYS[min(failures, len(RESTART_DELAYS)) - 1]


def default_command() -> tuple[str, ...] | None:
    """`xenstore-watch @releaseDomain` with the program found on PATH, or None."""
    program = shutil.which(PROGRAM)
    return None if program is None else (program, WATCH_PATH)


class ReleaseWatchSource:
    """`xenstore-watch @releaseDomain`, kept running, its fires posted as hints."""

    def __init__(self, door: LoopQueue, log: Any, command: Sequence[str] | None = None) -> None:
        self.door = door
        self.log = log
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self.command = tuple(command) if command is not None else default_command()
        if self.command is None:
            self.log.info("release_watch_unavailable", program=PROGRAM, error="not found on PATH")
            return
        self.log.info("release_watch", command=" ".join(self.command))
        threading.Thread(target=self._keep_running, name="release-watch", daemon=True).start()

    @property
    def running(self) -> bool:
        """True while a watch process is running."""
        with self._lock:
            return self._proc is not None and self._proc.poll() is None

    def close(self) -> None:
        """Stop the watch process and hand on no more hints."""
        self._closed.set()
        with self._lock:
            proc = self._proc
        if proc is not None:
            with contextlib.suppress(OSError):
                proc.kill()

    def _keep_running(self) -> None:
        """Run the watch again and again until closed, waiting `restart_delay`
        after each failure; every fire but a start's first is a hint."""
        failures = 0
        first_start = True
        while not self._closed.is_set():
            started = time.monotonic()
            error = self._watch(hint_first_line=not first_start)
            first_start = False
            if self._closed.is_set():
                return
            failures = 1 if time.monotonic() - started >= HEALTHY_AFTER else failures + 1
            delay = restart_delay(failures)
            if failures == 1:
                self.log.warning("release_watch_stopped", error=error, restart_in=delay)
            self._closed.wait(delay)

    def _watch(self, *, hint_first_line: bool) -> str:
        """Run the watch once until it ends; returns why it ended. The first
        line is the watch being set: a hint only after a restart (a domain may
        have died while no watch ran)."""
        assert self.command is not None
        try:
            proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            return f"cannot run {self.command[0]}: {exc}"
        with self._lock:
            self._proc = proc
        if self._closed.is_set():  # closed while starting: close() may have missed it
            proc.kill()
        lines = self._hand_on(proc, hint_first_line=hint_first_line)
        code = proc.wait()
        ended = f"{self.command[0]} exited {code}"
        return ended if lines else f"{ended} without setting the watch"

    def _hand_on(self, proc: subprocess.Popen[bytes], *, hint_first_line: bool) -> int:
        """Post a hint per line `proc` prints (the first one only if asked) until
        it closes its output; returns how many lines it printed."""
        assert proc.stdout is not None
        lines = 0
        with proc.stdout:
            for _line in proc.stdout:
                if (lines > 0 or hint_first_line) and not self._closed.is_set():
                    self.door.post(Hint.CHANGED)
                lines += 1
        return lines
