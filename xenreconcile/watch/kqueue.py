"""The ``kqueue`` watcher (FreeBSD): ``EVFILT_VNODE`` on the directory's own vnode.

kqueue only reports changes to the directory itself (entries added, removed,
renamed, its attributes); a file edited in place (same name, same inode) is *not*
seen and is picked up by the periodic full pass (``interval``). Editors and ``cp``
onto a new name, ``mv`` and ``install`` all change the directory and are seen.
The watcher holds the directory open, so a file system under it cannot be
unmounted while the daemon runs.

Importable everywhere; on a host without ``select.kqueue`` constructing the
watcher raises `WatchUnavailable`.
"""

from __future__ import annotations

import os
import select
from typing import Any

from xenreconcile.watch import LogFn, WatchUnavailable
from xenreconcile.watch.events import DEFAULT_MAX_DELAY, DEFAULT_SETTLE, EventWatcher, Readout


class KqueueWatcher(EventWatcher):
    """BSD kqueue on the directory's vnode; edits in place of a file are left to the
    periodic pass. `kqueue_api` stands in for the `select` module in tests (kqueue,
    kevent, KQ_*)."""

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

    def _read(self, timeout: float) -> Readout:
        changed = lost = False
        for event in self._kq.control(None, 16, timeout):
            if event.ident == self._waker.fd:
                return Readout(woken=True)
            if event.ident != self._dir_fd:
                continue
            changed = True
            if event.flags & self._api.KQ_EV_ERROR or event.fflags & self._lost_fflags:
                lost = True
        return Readout(changed=changed, lost=lost)

    def _release_backend(self) -> None:
        self._close_watch()
        self._identity = None
        self._kq.close()


WATCHER = KqueueWatcher
