"""hold / release / retry: from the command line to the state, with or without a daemon.

When no daemon holds the state lock, the command changes `state.json`
itself. When a daemon runs, the command drops a request file into
`state_dir/requests/`; the daemon looks there every half second, applies the
request, saves its state, then deletes the file, which tells the command it
arrived. A request is applied after the save, so a kill -9 in between only
applies it again (every request is idempotent).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from xenreconcile import planner
from xenreconcile.models import Memory
from xenreconcile.state import StateStore

REQUESTS_DIR = "requests"
OPS = ("hold", "release", "retry")
POLL = 0.05


@dataclass(frozen=True, slots=True)
class Request:
    """One admin request: `op` ("hold" | "release" | "retry") on guest `name`."""

    op: str
    name: str
    reason: str | None = None


class RequestError(Exception):
    """A request file that cannot be understood; the file is named."""


def apply(memory: Memory, request: Request, now: float) -> Memory:
    """`memory` with `request` applied."""
    if request.op == "hold":
        return planner.hold(memory, request.name, request.reason, now)
    if request.op == "release":
        return planner.release(memory, request.name)
    if request.op == "retry":
        return planner.retry(memory, request.name)
    raise RequestError(f"unknown request {request.op!r}")


def requests_dir(state_dir: str) -> Path:
    """The directory a running daemon takes requests from."""
    return Path(state_dir) / REQUESTS_DIR


def write_request(state_dir: str, request: Request) -> Path:
    """Atomically drop `request` into the requests directory; returns its path."""
    directory = requests_dir(state_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    stem = f"{time.time_ns():020d}-{os.getpid()}"
    temp = directory / f".{stem}.tmp"
    final = directory / f"{stem}.json"
    temp.write_text(json.dumps({"op": request.op, "name": request.name, "reason": request.reason}))
    os.replace(temp, final)
    return final


def read_requests(state_dir: str) -> list[tuple[Path, Request | RequestError]]:
    """Pending request files in arrival order, each with its request or the error
    that makes it unusable (the daemon logs and deletes those)."""
    directory = requests_dir(state_dir)
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".json"))
    except FileNotFoundError:
        return []
    found: list[tuple[Path, Request | RequestError]] = []
    for name in names:
        path = directory / name
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            request = Request(op=str(raw["op"]), name=str(raw["name"]), reason=raw.get("reason"))
            if request.op not in OPS:
                raise ValueError(f"unknown op {request.op!r}")
            found.append((path, request))
        except FileNotFoundError:
            continue
        except (OSError, ValueError, KeyError, TypeError) as exc:
            found.append((path, RequestError(f"{path}: unusable request: {exc}")))
    return found


def submit(
    state_dir: str,
    request: Request,
    *,
    wait: float = 3.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Apply `request` directly when no daemon runs, else hand it to the daemon
    and wait up to `wait` seconds for it to be taken. Returns a sentence for the
    admin. Raises OSError when the state cannot be written."""
    store = StateStore(state_dir)
    if store.try_lock():
        try:
            memory, _warning = store.load()
            store.save(apply(memory, request, time.time()))
        finally:
            store.unlock()
        return f"{request.op} {request.name}: saved (no daemon running)"
    path = write_request(state_dir, request)
    deadline = clock() + wait
    while clock() < deadline:
        if not path.exists():
            return f"{request.op} {request.name}: applied by the running daemon"
        sleep(POLL)
    return (
        f"{request.op} {request.name}: queued; the daemon has not taken it within {wait:.0f}s "
        "and will apply it on its next pass"
    )
