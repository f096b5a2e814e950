"""The request inbox: the hold / release / retry / accept-state files the CLI
leaves in `state_dir/requests` while a daemon runs.

Each request is applied to memory once (the inbox remembers the file names it
applied) and its file is deleted only after the save that holds it succeeded:
a kill -9 in between applies it again at the next start, and every request is
idempotent. Used by the loop's thread only.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from xenreconcile import control
from xenreconcile.models import Memory


class RequestInbox:
    """The requests of one `state_dir`."""

    def __init__(self, state_dir: str, log: Any) -> None:
        self.state_dir = state_dir
        self.log = log
        # Request files applied to memory but not yet deleted (their save is pending).
        self.applied: set[str] = set()
        self._reported_error: str | None = None

    def take(self, memory: Memory, now: float, read_only: str | None) -> tuple[Memory, bool]:
        """Given the memory, the time and why the state is read-only (or None),
        return the memory with each new request applied and whether any was."""
        try:
            found = control.read_requests(self.state_dir)
        except control.RequestDirError as exc:
            if str(exc) != self._reported_error:
                self.log.error("requests_dir_unsafe", error=str(exc))
            self._reported_error = str(exc)
            return memory, False
        self._reported_error = None
        self.applied &= {os.path.basename(path) for path, _request in found}
        changed = False
        for path, request in found:
            if isinstance(request, control.RequestError):
                self.log.error("bad_request", error=str(request))
                self._remove(path)
            elif read_only is not None:
                self.log.error("request_refused", guest=request.name, error=read_only)
                self._remove(path)
            elif os.path.basename(path) not in self.applied:
                memory = control.apply(memory, request, now)
                self.log.info(request.op, guest=request.name, reason=request.reason)
                self.applied.add(os.path.basename(path))
                changed = True
        return memory, changed

    def settle(self) -> None:
        """Delete the files of the applied requests: call it once the memory that
        holds them is saved."""
        directory = control.requests_dir(self.state_dir)
        for name in sorted(self.applied):
            if self._remove(os.path.join(directory, name)):
                self.applied.discard(name)

    def _remove(self, path: str) -> bool:
        """Delete a request file; True when it is gone."""
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        except OSError as exc:
            self.log.debug("request_remove_failed", file=path, error=str(exc))
            return False
        return True
