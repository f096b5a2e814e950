"""The per-domain monitor process a successful `xl create` leaves behind.

Real xl forks a daemon per domain that lives while the domain exists. The
simulated one does the same: a child in its own session that polls the state
and exits when its domain is gone, the state directory is removed, or a
safety lifetime (default 1 h, env SIMXL_MONITOR_LIFETIME) has passed, so tests
never leak processes for long. By default it keeps the stdout/stderr it
inherited from `xl create` open, which is the hard case for a caller reading
xl's output; with the fault knob `monitor_fds: "log"` it redirects them to
`xl-NAME.log` in the state directory as real xl does. Whatever that knob
says, it writes real xl's lines for each life of its domain to `xl-NAME.log`
(see `ends`): "Waiting for domain ..." at start, how the life ended once it
has, and for a domain xl restarts (on_reboot "restart") the next life's
"Waiting" line, watching on. A create rotates the previous log to `.1` ...
`.10` first, as real xl does.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

from xenreconcile.simxl import ends, store

LIFETIME_ENV = "SIMXL_MONITOR_LIFETIME"
DEFAULT_LIFETIME = 3600.0
POLL_INTERVAL = 0.2
ROTATIONS = 10


def spawn(state_dir: Path, dom_uuid: str, name: str, faults: dict[str, Any]) -> int:
    """Fork the monitor of domain `dom_uuid`; returns its pid (in the parent only)."""
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        os.setsid()
        log = state_dir / f"xl-{name}.log"
        rotate(log)
        if faults.get("monitor_fds") == "log":
            _redirect_output(log)
        follow(state_dir, dom_uuid, log)
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def _redirect_output(log: Path) -> None:
    """Point stdin at /dev/null and stdout/stderr at `log`."""
    null = os.open(os.devnull, os.O_RDONLY)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(null)
    os.close(out)


def rotate(log: Path) -> None:
    """Move `log` to `.1`, `.1` to `.2` ... keeping ROTATIONS old copies."""
    for n in range(ROTATIONS - 1, 0, -1):
        older = log.with_name(f"{log.name}.{n}")
        if older.exists():
            os.replace(older, log.with_name(f"{log.name}.{n + 1}"))
    if log.exists():
        os.replace(log, log.with_name(f"{log.name}.1"))


def follow(state_dir: Path, dom_uuid: str, log: Path) -> None:
    """Log each life of the domain `dom_uuid` until one ends without a restart."""
    current: str | None = dom_uuid
    while current is not None:
        dom = _find(state_dir, current)
        if dom is None:
            return
        _append(log, ends.waiting_line(dom["name"], dom["domid"], os.getpid()))
        watch(state_dir, current)
        record = _end_of(state_dir, current)
        if record is None:
            return  # gone with no record (Dom0 "rebooted", or the test removed it)
        _append(log, ends.monitor_lines(record))
        current = record.get("next_uuid")


def _find(state_dir: Path, dom_uuid: str) -> dict[str, Any] | None:
    with contextlib.suppress(OSError, ValueError):
        state = store.read_state(state_dir)
        return next((d for d in state["domains"] if d.get("uuid") == dom_uuid), None)
    return None


def _end_of(state_dir: Path, dom_uuid: str) -> dict[str, Any] | None:
    with contextlib.suppress(OSError, ValueError):
        record: dict[str, Any] | None = store.read_state(state_dir).get("ends", {}).get(dom_uuid)
        return record
    return None


def _append(log: Path, text: str) -> None:
    """Append `text` to `log` in one write."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)


def watch(state_dir: Path, dom_uuid: str) -> None:
    """Return once the domain is gone, the state dir is gone, or the lifetime ends."""
    deadline = time.monotonic() + float(os.environ.get(LIFETIME_ENV, DEFAULT_LIFETIME))
    while time.monotonic() < deadline and _domain_exists(state_dir, dom_uuid):
        time.sleep(POLL_INTERVAL)


def _domain_exists(state_dir: Path, dom_uuid: str) -> bool:
    """True while the state dir exists and lists the domain, not yet ended."""
    if not state_dir.is_dir():
        return False
    with contextlib.suppress(OSError, ValueError):
        state = store.read_state(state_dir)
        if dom_uuid in state.get("ends", {}):
            return False  # ended (a preserved domain stays listed)
        return any(d.get("uuid") == dom_uuid for d in state["domains"])
    return True
