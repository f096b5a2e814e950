"""The loop's one door: every hint from a source and every create result comes
in through `LoopQueue`, from any thread (and from signal handlers: a
`SimpleQueue.put` is reentrant). Only the loop's thread takes messages out.
"""

from __future__ import annotations

import enum
import queue
import threading
from dataclasses import dataclass

from xenreconcile.clock import Clock
from xenreconcile.models import CreateAction, CreateResult


class Hint(enum.Enum):
    """Something a source saw; the loop decides what it means."""

    CHANGED = "changed"  # the guests directory (or a request) may have changed
    RELOAD = "reload"  # SIGHUP
    STOP = "stop"  # SIGTERM / SIGINT


@dataclass(frozen=True)
class Finished:
    """A create ended with `result`."""

    action: CreateAction
    result: CreateResult


Message = Hint | Finished


class LoopQueue:
    """A queue of messages plus the doorbell the loop waits on."""

    def __init__(self) -> None:
        self._messages: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self._bell = threading.Event()

    def post(self, message: Message) -> None:
        """Hand the loop a message (safe from any thread and signal handler)."""
        self._messages.put(message)
        self._bell.set()

    def take_all(self) -> list[Message]:
        """Every message posted so far, oldest first (loop thread only)."""
        taken: list[Message] = []
        while True:
            try:
                taken.append(self._messages.get_nowait())
            except queue.Empty:
                return taken

    def wait(self, clock: Clock, timeout: float) -> None:
        """Block on `clock` until a message is posted or `timeout` seconds pass;
        returns at once when one is waiting (loop thread only)."""
        if self._messages.empty():
            clock.wait(self._bell, timeout)
        self._bell.clear()
