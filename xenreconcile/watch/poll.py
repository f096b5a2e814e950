"""The ``poll`` watcher: a stat snapshot of the directory every ``poll_interval`` s.

Works everywhere; costs one listdir and a stat per guest file each interval. It
looks at the entries the scan (`guestdir`) considers, keyed by the scan's own
fingerprint. Timestamps can be coarse (a few ms, or 1 s on some file systems),
so the content of a guest file modified within the last two seconds is hashed
too, which catches an edit that keeps size, inode and timestamps.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from dataclasses import dataclass

from xenreconcile.guestdir import MAX_CFG_BYTES, fingerprint, is_guest_file_name
from xenreconcile.watch import LogFn
from xenreconcile.watch.base import WatcherBase

RACY_WINDOW_NS = 2_000_000_000
"""A file modified this recently has its content hashed as well."""

_Key = tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The directory as poll sees it: its own fingerprint (``(-1, errno)`` when it
    cannot be listed), a fingerprint per guest file (None: vanished while listed),
    and content digests of recently modified guest files."""

    directory: _Key
    entries: dict[str, _Key | None]
    digests: dict[str, str]

    def differs_from(self, other: Snapshot) -> bool:
        """True when anything a pass cares about changed between the two snapshots.
        Digests count only for files hashed in both (a file leaves the racy window
        without having changed)."""
        if self.directory != other.directory or self.entries != other.entries:
            return True
        shared = self.digests.keys() & other.digests.keys()
        return any(self.digests[name] != other.digests[name] for name in shared)


def _digest(path: str) -> str:
    """sha256 of as much of a file as the scan reads, or the error's name."""
    try:
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read(MAX_CFG_BYTES + 1)).hexdigest()
    except OSError as err:
        return f"error:{err.errno}"


def take_snapshot(directory: str, now_ns: int | None = None) -> Snapshot:
    """Stat the directory and every guest file in it (following symlinks; a dangling
    symlink is keyed by the link itself); `now_ns` is the wall clock that decides
    which files are recent enough to hash. Never raises."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    try:
        dir_key: _Key = fingerprint(os.stat(directory))
        names = sorted(filter(is_guest_file_name, os.listdir(directory)))
    except OSError as err:
        return Snapshot(directory=(-1, err.errno or 0), entries={}, digests={})
    entries: dict[str, _Key | None] = {}
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
        entries[name] = fingerprint(st)
        if stat.S_ISREG(st.st_mode) and st.st_mtime_ns > now_ns - RACY_WINDOW_NS:
            digests[name] = _digest(path)
    return Snapshot(directory=dir_key, entries=entries, digests=digests)


class PollWatcher(WatcherBase):
    """Compares a stat snapshot of the directory every `poll_interval` seconds."""

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


WATCHER = PollWatcher
