"""The ``inotify`` watcher (Linux), through pyinotify.

Directory events on the guests directory (entries created, written, moved,
deleted, chmodded; the directory itself deleted or moved away) are read with
pyinotify's `Notifier` (``read_events`` + ``process_events``), driven from this
watcher's own wait so that `close` can interrupt it: no asyncore loop and no
extra thread. A burst of events (an editor's write + rename, a ``cp`` of many
files) is coalesced into one hint; a queue overflow is one hint too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import warnings
from typing import Any

from xenreconcile.watch import LogFn, WatchUnavailable
from xenreconcile.watch.base import to_ms
from xenreconcile.watch.events import DEFAULT_MAX_DELAY, DEFAULT_SETTLE, EventWatcher, Readout


def _import_pyinotify() -> Any:
    """Import pyinotify, or raise WatchUnavailable. pyinotify imports asyncore at import
    time, which Python 3.12 removed (the pyasyncore package provides it)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import pyinotify  # noqa: PLC0415 (deliberately lazy: the import may fail)
    except Exception as err:  # ImportError, or anything a broken install raises
        raise WatchUnavailable(f"pyinotify cannot be imported: {err}") from err
    # pyinotify prints its own path bookkeeping to stderr (a watched directory moved
    # away, events of a watch already removed). This watcher does not use those paths
    # and logs what matters itself (watch_lost, watch_error).
    logging.getLogger("pyinotify").setLevel(logging.CRITICAL)
    return pyinotify


class InotifyWatcher(EventWatcher):
    """Linux inotify through pyinotify's WatchManager and Notifier. Raises
    WatchUnavailable when pyinotify does not import or inotify cannot be initialised."""

    name = "inotify"

    def __init__(
        self,
        directory: str,
        *,
        poll_interval: float = 1.0,
        log: LogFn | None = None,
        settle: float = DEFAULT_SETTLE,
        max_delay: float = DEFAULT_MAX_DELAY,
    ) -> None:
        self._pyinotify = pi = _import_pyinotify()
        self._mask: int = (
            pi.IN_CLOSE_WRITE
            | pi.IN_MOVED_TO
            | pi.IN_MOVED_FROM
            | pi.IN_DELETE
            | pi.IN_CREATE
            | pi.IN_ATTRIB
            | pi.IN_DELETE_SELF
            | pi.IN_MOVE_SELF
            | pi.IN_ONLYDIR
        )
        self._lost_mask: int = pi.IN_DELETE_SELF | pi.IN_MOVE_SELF | pi.IN_IGNORED | pi.IN_UNMOUNT
        self._wd: int | None = None
        self._seen_change = self._seen_loss = False
        self._wm: Any = None
        self._notifier: Any = None
        self._new_instance()
        super().__init__(directory, poll_interval, log, settle, max_delay)
        self._start()

    def _new_instance(self) -> None:
        """Open a fresh inotify instance (a WatchManager and its Notifier), or raise
        WatchUnavailable."""
        try:
            self._wm = self._pyinotify.WatchManager()
        except Exception as err:  # OSError (instance limit), InotifyBindingNotFoundError
            raise WatchUnavailable(f"inotify cannot be initialised: {err}") from err
        self._notifier = self._pyinotify.Notifier(self._wm, default_proc_fun=self._note)

    def _open_watch(self) -> tuple[int, int]:
        if self._wm is None:
            try:
                self._new_instance()
            except WatchUnavailable as err:
                raise OSError(str(err)) from err
        try:
            added = self._wm.add_watch(self._directory, self._mask, quiet=False)
        except self._pyinotify.WatchManagerError as err:
            raise OSError(str(err)) from err
        wd = added.get(os.path.normpath(self._directory), -1)
        if wd < 0:
            raise OSError(f"cannot watch {self._directory}")
        self._wd = wd
        st = os.stat(self._directory)
        return (st.st_dev, st.st_ino)

    def _close_watch(self) -> None:
        wd, self._wd = self._wd, None
        if wd is None or self._wm is None:
            return
        try:  # fails when the kernel has dropped the watch already (IN_IGNORED)
            self._wm.rm_watch(wd, quiet=False)
        except self._pyinotify.WatchManagerError:
            self._wm.watches.pop(wd, None)

    def _read(self, timeout: float) -> Readout:
        fd = self._wm.get_fd()
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.register(self._waker.fd, select.POLLIN)
        ready = {ready_fd for ready_fd, _ in poller.poll(to_ms(timeout))}
        if self._waker.fd in ready:
            return Readout(woken=True)
        if fd not in ready:
            return Readout()
        self._seen_change = self._seen_loss = False
        try:
            self._read_batch()
            self._notifier.process_events()
        except self._pyinotify.PyinotifyError as err:
            raise OSError(f"cannot read inotify events: {err}") from err
        return Readout(changed=self._seen_change, lost=self._seen_loss)

    def _read_batch(self) -> None:
        """Queue the events waiting on the inotify fd in the Notifier. pyinotify decodes
        each file name as UTF-8 and drops the rest of the batch at one that is not:
        such a batch counts as a change, and the stat of the directory stands in for
        the events that may have said the watch is lost."""
        try:
            self._notifier.read_events()
        except UnicodeDecodeError:
            self._seen_change = True
            self._seen_loss = not self._watching_the_path()

    def _note(self, event: Any) -> None:
        """Given one pyinotify Event, record what it means for the current read. Events
        of an earlier, dropped watch are stale; pyinotify mostly drops those itself."""
        if event.mask & self._pyinotify.IN_Q_OVERFLOW:
            self._log("watch_overflow", {"watcher": self.name, "dir": self._directory})
            self._seen_change = True
        elif event.wd == self._wd:
            self._seen_change = True
            self._seen_loss = self._seen_loss or bool(event.mask & self._lost_mask)

    def _reset_backend(self) -> None:
        self._release_backend()

    def _release_backend(self) -> None:
        self._wd = None
        self._identity = None
        if self._notifier is not None:
            with contextlib.suppress(OSError):
                self._notifier.stop()  # closes the inotify fd, dropping every watch
        self._wm = self._notifier = None


WATCHER = InotifyWatcher
