"""Directory watchers: hints that something in the guests directory may have changed.

A watcher never says *what* changed; the daemon answers every hint with a full
pass, which re-reads the directory and decides. So a watcher may report a change
that is not one (an editor's swap file, a chmod, a queue overflow), but must not
sit on one for long: a change is reported within a second.

The kinds (`KINDS`, best first) share one interface (`Watcher`); each lives in
the module of this package named after it:

- ``inotify`` (Linux, through pyinotify): directory events, bursts coalesced.
- ``kqueue`` (FreeBSD): ``EVFILT_VNODE`` on the directory itself; an edit in
  place of a file is left to the periodic full pass.
- ``poll``: a stat snapshot of the directory every ``poll_interval`` seconds;
  works everywhere.

Whenever the directory is missing, replaced (``rm -r`` + ``mkdir``, ``mv``) or
the watch is lost, inotify and kqueue report a change and fall back to checking
every ``poll_interval`` whether the directory exists again, then watch it anew.

Threading: run each watcher's ``wait`` in one thread (not two at once); ``close``
may be called from any thread and makes a blocked ``wait`` return False at once.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol

from xenreconcile.errors import XenreconcileError

LogFn = Callable[[str, dict[str, Any]], None]

KINDS = ("inotify", "kqueue", "poll")
"""The watcher kinds, best first; the last one works everywhere."""
CHOICES = ("auto", *KINDS)
"""What the config's ``watch`` key accepts: a kind, or ``auto`` for the best available."""


class WatchUnavailable(XenreconcileError):
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


class WatcherFactory(Protocol):
    """What each backend module exports as ``WATCHER``: its watcher class."""

    def __call__(self, directory: str, *, poll_interval: float, log: LogFn) -> Watcher: ...


def no_log(event: str, fields: dict[str, Any]) -> None:
    """Discard a log event (the default when no `log` is given)."""


def make_watcher(
    kind: str,
    directory: str,
    *,
    poll_interval: float = 1.0,
    log: LogFn | None = None,
) -> Watcher:
    """Given a kind (one of `CHOICES`) and the directory, return a working watcher.
    ``auto`` tries each of `KINDS` in turn, logging why each skipped one is
    unavailable; an explicit kind raises `WatchUnavailable` when it cannot work
    here. Raises ValueError for an unknown kind."""
    emit = log or no_log
    if kind in KINDS:
        return _factory(kind)(directory, poll_interval=poll_interval, log=emit)
    if kind != "auto":
        raise ValueError(f"unknown watch kind {kind!r} ({', '.join(CHOICES)})")
    *preferred, fallback = KINDS
    for candidate in preferred:
        try:
            return _factory(candidate)(directory, poll_interval=poll_interval, log=emit)
        except WatchUnavailable as err:
            emit("watch_unavailable", {"kind": candidate, "reason": str(err)})
    return _factory(fallback)(directory, poll_interval=poll_interval, log=emit)


def _factory(kind: str) -> WatcherFactory:
    """The watcher class of `kind` (one of `KINDS`), from the module of that name.
    Imported on first use, so that loading the config costs no backend imports."""
    module = importlib.import_module(f"{__name__}.{kind}")
    factory: WatcherFactory = module.WATCHER
    return factory
