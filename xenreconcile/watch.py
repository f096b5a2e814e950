"""Directory watchers: hints that something in the guests directory may have changed.

A watcher never says *what* changed; the daemon answers every hint with a full
pass, which re-reads the directory and decides. So a watcher may report a change
that is not one (an editor's swap file, a chmod, a queue overflow), but must not
sit on one for long: a change is reported within a second.

Three kinds share one interface (`Watcher`):

- ``inotify`` (Linux, through pyinotify): directory events on the guests
  directory; a burst of events (an editor's write + rename, a ``cp`` of many
  files) is coalesced into one hint.
- ``kqueue`` (FreeBSD): ``EVFILT_VNODE`` on the directory's own vnode. kqueue only
  reports changes to the directory itself (entries added, removed, renamed, its
  attributes); a file edited in place (same name, same inode) is *not* seen and is
  picked up by the periodic full pass (``interval``). Editors and ``cp`` onto a new
  name, ``mv`` and ``install`` all change the directory and are seen. The watcher
  holds the directory open, so a file system under it cannot be unmounted while
  the daemon runs.
- ``poll``: a stat snapshot of the directory every ``poll_interval`` seconds.
  Timestamps can be coarse (a few ms, or 1 s on some file systems), so the
  content of a ``.cfg`` modified within the last two seconds is hashed too,
  which catches an edit that keeps size, inode and timestamps.

Whenever the directory is missing, replaced (``rm -r`` + ``mkdir``, ``mv``) or
the watch is lost, inotify and kqueue report a change and fall back to checking
every ``poll_interval`` whether the directory exists again, then watch it anew.

Threading: run each watcher's ``wait`` in one thread (not two at once); ``close``
may be called from any thread and makes a blocked ``wait`` return False at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import stat
import struct
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

LogFn = Callable[[str, dict[str, Any]], None]

DEFAULT_SETTLE = 0.05
"""Seconds without a further event that end a burst (a save is write + rename, ms apart)."""
DEFAULT_MAX_DELAY = 0.75
"""A burst is reported at the latest this many seconds after its first event."""
RACY_WINDOW_NS = 2_000_000_000
"""poll: a file modified this recently has its content hashed as well."""
_MAX_HASHED_BYTES = 1024 * 1024 + 1


class WatchUnavailable(Exception):
    """The requested kind of watcher cannot work on this host; the message says why."""


class Watcher(Protocol):
    """Reports that the watched directory may have changed."""

    name: str

    def wait(self, timeout: float) -> bool:
        """Block up to `timeout` seconds; True when a change (or a reason to rescan)
        was seen, False when none was or the watcher was closed."""
        ...

    def close(self) -> None:
        """Release the watcher's resources; a blocked `wait` returns False."""
        ...


def _no_log(event: str, fields: dict[str, Any]) -> None:
    """Discard a log event (the default when no `log` is given)."""


def make_watcher(
    kind: str,
    directory: str,
    *,
    poll_interval: float = 1.0,
    log: LogFn | None = None,
) -> Watcher:
    """Given a kind (``auto``, ``inotify``, ``kqueue``, ``poll``) and the directory,
    return a working watcher. ``auto`` tries inotify, then kqueue, then poll, logging
    why each skipped kind is unavailable; an explicit kind raises `WatchUnavailable`
    when it cannot work here. Raises ValueError for an unknown kind."""
    emit = log or _no_log
    builders: dict[str, Callable[[], Watcher]] = {
        "inotify": lambda: InotifyWatcher(directory, poll_interval=poll_interval, log=emit),
        "kqueue": lambda: KqueueWatcher(directory, poll_interval=poll_interval, log=emit),
        "poll": lambda: PollWatcher(directory, poll_interval=poll_interval, log=emit),
    }
    if kind in builders:
        return builders[kind]()
    if kind != "auto":
        raise ValueError(f"unknown watch kind {kind!r} (auto, inotify, kqueue, poll)")
    for candidate in ("inotify", "kqueue"):
        try:
            return builders[candidate]()
        except WatchUnavailable as err:
            emit("watch_unavailable", {"kind": candidate, "reason": str(err)})
    return builders["poll"]()


# --- shared machinery -----------------------------------------------------------------------


class _Waker:
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
        return bool(poller.poll(_to_ms(seconds)))

    def close(self) -> None:
        """Close both ends of the pipe."""
        os.close(self.fd)
        os.close(self._write_fd)


def _to_ms(seconds: float) -> int:
    """Seconds -> whole milliseconds for poll(2), rounded up so a wait is never cut short."""
    return max(0, int(seconds * 1000 + 0.999))


class _WatcherBase:
    """Closing protocol shared by every watcher: `close` from another thread wakes a
    blocked `wait`, and the resources are released by whichever side finishes last."""

    name = "base"

    def __init__(self, directory: str, poll_interval: float, log: LogFn | None) -> None:
        self._directory = os.fspath(directory)
        self._poll_interval = max(0.01, poll_interval)
        self._log: LogFn = log or _no_log
        self._waker = _Waker()
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
        raise NotImplementedError

    def _release_backend(self) -> None:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class _Readout:
    """What one read of an event source saw: a change, the watch lost, or a wake-up."""

    changed: bool = False
    lost: bool = False
    woken: bool = False


class _Burst:
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


class _EventWatcher(_WatcherBase):
    """A watcher fed by kernel events on the directory (inotify, kqueue). Subclasses
    open and close the watch and read its events; this class keeps it alive across
    the directory being removed or replaced, and debounces."""

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
        burst = _Burst(self._settle, self._max_delay)
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
        try:
            st = os.stat(self._directory)
            current: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except OSError:
            current = None
        if current == self._identity:
            return False
        self._drop("directory replaced or removed")
        self._establish()
        return True

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

    def _safe_read(self, timeout: float) -> _Readout:
        """Read events; an unexpected error counts as a change with the watch lost."""
        try:
            return self._read(timeout)
        except OSError as err:
            self._log("watch_error", {"watcher": self.name, "error": str(err)})
            self._reset_backend()
            return _Readout(changed=True, lost=True)

    def _open_watch(self) -> tuple[int, int]:
        """Start watching the directory; return its (st_dev, st_ino). Raise OSError."""
        raise NotImplementedError

    def _close_watch(self) -> None:
        raise NotImplementedError

    def _read(self, timeout: float) -> _Readout:
        raise NotImplementedError

    def _reset_backend(self) -> None:
        """After a read error: make the next `_open_watch` start from scratch."""


# --- inotify --------------------------------------------------------------------------------


def _import_pyinotify() -> Any:
    """Import pyinotify, or raise WatchUnavailable. pyinotify imports asyncore at import
    time, which Python 3.12 removed (the pyasyncore package provides it)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import pyinotify  # noqa: PLC0415 (deliberately lazy: the import may fail)
    except Exception as err:  # ImportError, or anything a broken install raises
        raise WatchUnavailable(f"pyinotify cannot be imported: {err}") from err
    return pyinotify


_INOTIFY_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len(name)


def _inotify_events(data: bytes) -> list[tuple[int, int]]:
    """Raw bytes read from an inotify fd -> [(wd, mask), ...] (names are not needed)."""
    events = []
    offset = 0
    while offset + _INOTIFY_HEADER.size <= len(data):
        wd, mask, _cookie, name_len = _INOTIFY_HEADER.unpack_from(data, offset)
        events.append((wd, mask))
        offset += _INOTIFY_HEADER.size + name_len
    return events


class InotifyWatcher(_EventWatcher):
    """Linux inotify through pyinotify's WatchManager; the inotify fd is read directly
    (no asyncore loop, no extra thread). Raises WatchUnavailable when pyinotify does
    not import or inotify cannot be initialised."""

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
        self._pyinotify = _import_pyinotify()
        self._wm: Any = self._new_watch_manager()
        pi = self._pyinotify
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
        self._overflow_mask: int = pi.IN_Q_OVERFLOW
        self._wd: int | None = None
        super().__init__(directory, poll_interval, log, settle, max_delay)
        self._start()

    def _new_watch_manager(self) -> Any:
        """A fresh pyinotify WatchManager (one inotify instance), or WatchUnavailable."""
        try:
            return self._pyinotify.WatchManager()
        except Exception as err:  # OSError (instance limit), InotifyBindingNotFoundError
            raise WatchUnavailable(f"inotify cannot be initialised: {err}") from err

    def _open_watch(self) -> tuple[int, int]:
        if self._wm is None:
            try:
                self._wm = self._new_watch_manager()
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

    def _read(self, timeout: float) -> _Readout:
        fd = self._wm.get_fd()
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.register(self._waker.fd, select.POLLIN)
        ready = {ready_fd for ready_fd, _ in poller.poll(_to_ms(timeout))}
        if self._waker.fd in ready:
            return _Readout(woken=True)
        if fd not in ready:
            return _Readout()
        changed = lost = False
        for wd, mask in _inotify_events(os.read(fd, 65536)):
            if mask & self._overflow_mask:
                self._log("watch_overflow", {"watcher": self.name, "dir": self._directory})
                changed = True
            elif wd == self._wd:  # events of an earlier, dropped watch are stale
                changed = True
                lost = lost or bool(mask & self._lost_mask)
        return _Readout(changed=changed, lost=lost)

    def _reset_backend(self) -> None:
        self._release_backend()

    def _release_backend(self) -> None:
        self._wd = None
        self._identity = None
        if self._wm is not None:
            with contextlib.suppress(OSError):
                self._wm.close()
            self._wm = None


# --- kqueue ---------------------------------------------------------------------------------


class KqueueWatcher(_EventWatcher):
    """BSD kqueue: EVFILT_VNODE on the directory's own vnode (entries added, removed or
    renamed, its attributes); edits in place of a file are left to the periodic pass.
    `kqueue_api` stands in for the `select` module in tests (kqueue, kevent, KQ_*)."""

    name = "kqueue"

    def __init__(
        self,
        directory: str,
        *,
        poll_interval: float = 1.0,
        log: LogFn | None = None,
        settle: float = DEFAULT_SETTLE,
        max_delay: float = DEFAULT_MAX_DELAY,
        kqueue_api: Any = None,
    ) -> None:
        api = select if kqueue_api is None else kqueue_api
        if not hasattr(api, "kqueue"):
            raise WatchUnavailable("kqueue does not exist on this platform")
        self._api: Any = api
        try:
            self._kq: Any = api.kqueue()
        except OSError as err:
            raise WatchUnavailable(f"kqueue cannot be created: {err}") from err
        self._fflags: int = (
            api.KQ_NOTE_WRITE
            | api.KQ_NOTE_DELETE
            | api.KQ_NOTE_RENAME
            | api.KQ_NOTE_EXTEND
            | api.KQ_NOTE_ATTRIB
            | api.KQ_NOTE_LINK
            | api.KQ_NOTE_REVOKE
        )
        self._lost_fflags: int = api.KQ_NOTE_DELETE | api.KQ_NOTE_RENAME | api.KQ_NOTE_REVOKE
        self._dir_fd: int | None = None
        super().__init__(directory, poll_interval, log, settle, max_delay)
        try:  # the waker's pipe, so that `close` interrupts a blocked kevent()
            self._kq.control(
                [api.kevent(self._waker.fd, filter=api.KQ_FILTER_READ, flags=api.KQ_EV_ADD)], 0, 0
            )
        except OSError as err:
            self._release()
            raise WatchUnavailable(f"kqueue cannot register a wake-up pipe: {err}") from err
        self._start()

    def _open_watch(self) -> tuple[int, int]:
        flags = os.O_RDONLY | getattr(os, "O_EVTONLY", 0) | getattr(os, "O_DIRECTORY", 0)
        fd = os.open(self._directory, flags)
        try:
            api = self._api
            change = api.kevent(
                fd,
                filter=api.KQ_FILTER_VNODE,
                flags=api.KQ_EV_ADD | api.KQ_EV_CLEAR,
                fflags=self._fflags,
            )
            self._kq.control([change], 0, 0)
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        self._dir_fd = fd
        return (st.st_dev, st.st_ino)

    def _close_watch(self) -> None:
        fd, self._dir_fd = self._dir_fd, None
        if fd is not None:
            os.close(fd)  # closing the fd also removes its kevent

    def _read(self, timeout: float) -> _Readout:
        changed = lost = False
        for event in self._kq.control(None, 16, timeout):
            if event.ident == self._waker.fd:
                return _Readout(woken=True)
            if event.ident != self._dir_fd:
                continue
            changed = True
            if event.flags & self._api.KQ_EV_ERROR or event.fflags & self._lost_fflags:
                lost = True
        return _Readout(changed=changed, lost=lost)

    def _release_backend(self) -> None:
        self._close_watch()
        self._identity = None
        self._kq.close()


# --- poll -----------------------------------------------------------------------------------


_StatKey = tuple[int, ...]


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """The directory as poll sees it: its own stat key (``(-1, errno)`` when it cannot
    be listed), a stat key per guest cfg (None: vanished while listed), and content
    digests of recently modified cfgs."""

    directory: _StatKey
    entries: dict[str, _StatKey | None]
    digests: dict[str, str]

    def differs_from(self, other: _Snapshot) -> bool:
        """True when anything a pass cares about changed between the two snapshots.
        Digests count only for files hashed in both (a file leaves the racy window
        without having changed)."""
        if self.directory != other.directory or self.entries != other.entries:
            return True
        shared = self.digests.keys() & other.digests.keys()
        return any(self.digests[name] != other.digests[name] for name in shared)


def _is_guest_name(name: str) -> bool:
    """True for names the guests directory scan considers (``*.cfg``, not hidden)."""
    return name.endswith(".cfg") and not name.startswith(".")


def _stat_key(st: os.stat_result) -> _StatKey:
    """The parts of a stat that change when a file is replaced, edited or chmodded."""
    return (
        st.st_dev,
        st.st_ino,
        st.st_mode,
        st.st_uid,
        st.st_gid,
        st.st_size,
        st.st_mtime_ns,
        st.st_ctime_ns,
    )


def _digest(path: str) -> str:
    """sha256 of a file's first bytes (enough for any valid cfg), or the error's name."""
    try:
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read(_MAX_HASHED_BYTES)).hexdigest()
    except OSError as err:
        return f"error:{err.errno}"


def take_snapshot(directory: str, now_ns: int | None = None) -> _Snapshot:
    """Stat the directory and every guest cfg in it (following symlinks; a dangling
    symlink is keyed by the link itself). Never raises."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    try:
        dir_key = _stat_key(os.stat(directory))
        names = sorted(name for name in os.listdir(directory) if _is_guest_name(name))
    except OSError as err:
        return _Snapshot(directory=(-1, err.errno or 0), entries={}, digests={})
    entries: dict[str, _StatKey | None] = {}
    digests: dict[str, str] = {}
    for name in names:
        path = os.path.join(directory, name)
        try:
            st = os.stat(path)
        except OSError:
            try:
                st = os.lstat(path)
            except OSError:  # vanished between listdir and stat
                entries[name] = None
                continue
        entries[name] = _stat_key(st)
        if stat.S_ISREG(st.st_mode) and st.st_mtime_ns > now_ns - RACY_WINDOW_NS:
            digests[name] = _digest(path)
    return _Snapshot(directory=dir_key, entries=entries, digests=digests)


class PollWatcher(_WatcherBase):
    """Compares a stat snapshot of the directory every `poll_interval` seconds; works
    everywhere, costs one listdir and a stat per cfg each interval."""

    name = "poll"

    def __init__(
        self, directory: str, *, poll_interval: float = 1.0, log: LogFn | None = None
    ) -> None:
        super().__init__(directory, poll_interval, log)
        self._snapshot = take_snapshot(self._directory)

    def _wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if self._check():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self._waker.sleep(min(remaining, self._poll_interval)):
                return False

    def _check(self) -> bool:
        """Take a new snapshot; True when it differs from the previous one."""
        current = take_snapshot(self._directory)
        changed = current.differs_from(self._snapshot)
        self._snapshot = current
        return changed

    def _release_backend(self) -> None:
        pass
