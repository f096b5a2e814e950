"""What the kernel-event watchers (inotify, kqueue) share: keeping the watch on the
directory at its path alive across the directory being removed or replaced, and
coalescing a burst of events into one hint."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass

from xenreconcile.watch import LogFn
from xenreconcile.watch.base import WatcherBase

DEFAULT_SETTLE = 0.05
"""Seconds without a further event that end a burst (a save is write + rename, ms apart)."""
DEFAULT_MAX_DELAY = 0.75
"""A burst is reported at the latest this many seconds after its first event."""


@dataclass(frozen=True, slots=True)
class Readout:
    """What one read of an event source saw: a change, the watch lost, or a wake-up."""

    changed: bool = False
    lost: bool = False
    woken: bool = False


class Burst:
    """Coalesces events: done `settle` s after the last event, or `max_delay` s after the first."""

    def __init__(self, settle: float, max_delay: float) -> None:
        self._settle = settle
        self._max_delay = max_delay
        self._first: float | None = None
        self._last = 0.0

    @property
    def seen(self) -> bool:
        """True once any event was noted."""
        return self._first is not None

    def note(self, now: float) -> None:
        """Record an event at monotonic time `now`."""
        if self._first is None:
            self._first = now
        self._last = now

    def until(self, deadline: float) -> float:
        """The monotonic time at which to stop waiting, given the caller's deadline."""
        if self._first is None:
            return deadline
        return min(deadline, self._last + self._settle, self._first + self._max_delay)


class EventWatcher(WatcherBase):
    """A watcher fed by kernel events on the directory. Subclasses open and close the
    watch and read its events (`_open_watch`, `_close_watch`, `_read`) and call
    `_start` once they are ready; this class does the rest."""

    def __init__(
        self,
        directory: str,
        poll_interval: float,
        log: LogFn | None,
        settle: float,
        max_delay: float,
    ) -> None:
        super().__init__(directory, poll_interval, log)
        self._settle = settle
        self._max_delay = max_delay
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) watched; None: no watch
        self._open_error = ""

    def _start(self) -> None:
        """Establish the first watch; a missing directory is logged and polled for."""
        if not self._establish():
            self._log(
                "watch_dir_missing",
                {"watcher": self.name, "dir": self._directory, "reason": self._open_error},
            )

    def _wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        burst = Burst(self._settle, self._max_delay)
        if self._revalidate():
            burst.note(time.monotonic())
        while True:
            remaining = burst.until(deadline) - time.monotonic()
            if remaining <= 0:
                return burst.seen
            if self._identity is None:
                if self._waker.sleep(min(remaining, self._poll_interval)):
                    return False
                if self._establish():
                    burst.note(time.monotonic())
                continue
            readout = self._safe_read(remaining)
            if readout.woken:
                return False
            if readout.changed:
                burst.note(time.monotonic())
            if readout.lost:
                self._drop("watch lost")
                self._establish()

    def _revalidate(self) -> bool:
        """Check the watch still covers the directory at its path; re-establish it when
        it does not. True when that is news (the directory appeared, went or changed)."""
        if self._identity is None:
            return self._establish()
        if self._watching_the_path():
            return False
        self._drop("directory replaced or removed")
        self._establish()
        return True

    def _watching_the_path(self) -> bool:
        """True when the directory now at the path is the one watched."""
        try:
            st = os.stat(self._directory)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._identity

    def _establish(self) -> bool:
        """Try to watch the directory; True when a watch is now in place."""
        try:
            self._identity = self._open_watch()
        except OSError as err:
            self._identity = None
            self._open_error = str(err)
            return False
        self._log("watch_started", {"watcher": self.name, "dir": self._directory})
        return True

    def _drop(self, reason: str) -> None:
        """Forget the current watch (it is lost or points at the wrong directory)."""
        self._log("watch_lost", {"watcher": self.name, "dir": self._directory, "reason": reason})
        self._identity = None
        with contextlib.suppress(OSError):
            self._close_watch()

    def _safe_read(self, timeout: float) -> Readout:
        """Read events; an unexpected error counts as a change with the watch lost."""
        try:
            return self._read(timeout)
        except OSError as err:
            self._log("watch_error", {"watcher": self.name, "error": str(err)})
            self._reset_backend()
            return Readout(changed=True, lost=True)

    def _open_watch(self) -> tuple[int, int]:
        """Start watching the directory; return its (st_dev, st_ino). Raise OSError."""
        raise NotImplementedError

    def _close_watch(self) -> None:
        """Stop watching the directory (the event source itself stays open)."""
        raise NotImplementedError

    def _read(self, timeout: float) -> Readout:
        """Wait up to `timeout` s for events or the waker; say what was seen. Raise OSError."""
        raise NotImplementedError

    def _reset_backend(self) -> None:
        """After a read error: make the next `_open_watch` start from scratch."""
