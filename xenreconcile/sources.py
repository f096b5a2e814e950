"""The directory watcher as a source of hints: a thread of its own waits on the
watcher backend and, when the guests directory changed, posts `Hint.CHANGED`
to the loop's queue. It writes no loop state. Started and closed from the
loop's thread; `close` stops its thread at the next wake (within a second).
"""

from __future__ import annotations

import threading
from typing import Any

from xenreconcile.config import Config
from xenreconcile.loopqueue import Hint, LoopQueue
from xenreconcile.watch import Watcher, WatchUnavailable, make_watcher

POLL_INTERVAL = 0.5  # the poll watcher's period: a change is seen within 1 s


class WatchSource:
    """One watcher of the guests directory and the thread that hands its hints on."""

    def __init__(self, config: Config, door: LoopQueue, log: Any) -> None:
        self.log = log
        self._closed = threading.Event()
        self.watcher = self._make(config)
        self.log.info("watching", watcher=self.watcher.name, guests_dir=config.guests_dir)
        watcher, closed = self.watcher, self._closed

        def watch() -> None:
            while not closed.is_set():
                if watcher.wait(1.0) and not closed.is_set():
                    door.post(Hint.CHANGED)

        threading.Thread(target=watch, name="watcher", daemon=True).start()

    @property
    def name(self) -> str:
        """The backend's name (`inotify`, `kqueue`, `poll`)."""
        return self.watcher.name

    def _make(self, config: Config) -> Watcher:
        """The watcher the config asks for, else (logged) the poll watcher."""
        try:
            return make_watcher(
                config.watch, config.guests_dir, poll_interval=POLL_INTERVAL, log=self._log
            )
        except WatchUnavailable as exc:
            self.log.warning("watch_unavailable", watch=config.watch, error=str(exc))
            return make_watcher(
                "poll", config.guests_dir, poll_interval=POLL_INTERVAL, log=self._log
            )

    def _log(self, event: str, fields: dict[str, Any]) -> None:
        self.log.info(event, **fields)

    def close(self) -> None:
        """Stop handing on hints and release the backend."""
        self._closed.set()
        self.watcher.close()
