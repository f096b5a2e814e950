"""What every watcher shares: a wake-up pipe and the closing protocol."""

from __future__ import annotations

import contextlib
import os
import select
import threading

from xenreconcile.watch import LogFn, no_log


class Waker:
    """A self-pipe that interrupts a blocked wait: once `wake` is called, its read
    end stays readable for good."""

    def __init__(self) -> None:
        self.fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)

    def wake(self) -> None:
        """Make the read end readable (idempotent)."""
        with contextlib.suppress(OSError):  # pipe full: it is readable already
            os.write(self._write_fd, b"x")

    def sleep(self, seconds: float) -> bool:
        """Sleep up to `seconds`; return True when woken instead."""
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        return bool(poller.poll(to_ms(seconds)))

    def close(self) -> None:
        """Close both ends of the pipe."""
        os.close(self.fd)
        os.close(self._write_fd)


def to_ms(seconds: float) -> int:
    """Seconds -> whole milliseconds for poll(2), rounded up so a wait is never cut short."""
    return max(0, int(seconds * 1000 + 0.999))


class WatcherBase:
    """Closing protocol shared by every watcher: `close` from another thread wakes a
    blocked `wait`, and the resources are released by whichever side finishes last.
    Subclasses implement `_wait` and `_release_backend`."""

    name = "base"

    def __init__(self, directory: str, poll_interval: float, log: LogFn | None) -> None:
        self._directory = os.fspath(directory)
        self._poll_interval = max(0.01, poll_interval)
        self._log: LogFn = log or no_log
        self._waker = Waker()
        self._lock = threading.Lock()
        self._closed = False
        self._busy = False

    @property
    def directory(self) -> str:
        """The watched directory, as given."""
        return self._directory

    def wait(self, timeout: float) -> bool:
        """Block up to `timeout` seconds; True when a change may have happened."""
        if not self._enter():
            return False
        try:
            changed = self._wait(max(0.0, timeout))
        finally:
            closed = self._leave()
        return changed and not closed

    def _enter(self) -> bool:
        """Mark a wait as running; False when the watcher is closed already."""
        with self._lock:
            if self._closed:
                return False
            self._busy = True
            return True

    def _leave(self) -> bool:
        """Mark the wait as done, releasing the resources when `close` came meanwhile;
        True in that case."""
        with self._lock:
            self._busy = False
            closed = self._closed
        if closed:
            self._release()
        return closed

    def close(self) -> None:
        """Stop watching; a `wait` running in another thread returns False promptly."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            busy = self._busy
        self._waker.wake()
        if not busy:
            self._release()

    def _release(self) -> None:
        """Free the kind-specific resources, then the waker."""
        self._release_backend()
        self._waker.close()

    def _wait(self, timeout: float) -> bool:
        """Given a timeout >= 0, block up to that long; True when a change was seen."""
        raise NotImplementedError

    def _release_backend(self) -> None:
        """Free what the kind holds (called once, with no `wait` running)."""
        raise NotImplementedError
