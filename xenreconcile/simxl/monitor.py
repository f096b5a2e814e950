"""The per-domain monitor process a successful `xl create` leaves behind.

Real xl forks a daemon per domain that lives while the domain exists. The
simulated one does the same: a child in its own session that polls the state
and exits when its domain is gone, the state directory is removed, or a
safety lifetime (default 1 h, env SIMXL_MONITOR_LIFETIME) has passed, so tests
never leak processes for long. By default it keeps the stdout/stderr it
inherited from `xl create` open, which is the hard case for a caller reading
xl's output; with the fault knob `monitor_fds: "log"` it redirects them to
`xl-NAME.log` in the state directory as real xl does.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

from xenreconcile.simxl import store

LIFETIME_ENV = "SIMXL_MONITOR_LIFETIME"
DEFAULT_LIFETIME = 3600.0
POLL_INTERVAL = 0.2


def spawn(state_dir: Path, dom_uuid: str, name: str, faults: dict[str, Any]) -> int:
    """Fork the monitor of domain `dom_uuid`; returns its pid (in the parent only)."""
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        os.setsid()
        if faults.get("monitor_fds") == "log":
            _redirect_output(state_dir / f"xl-{name}.log")
        watch(state_dir, dom_uuid)
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


def watch(state_dir: Path, dom_uuid: str) -> None:
    """Return once the domain is gone, the state dir is gone, or the lifetime ends."""
    deadline = time.monotonic() + float(os.environ.get(LIFETIME_ENV, DEFAULT_LIFETIME))
    while time.monotonic() < deadline and _domain_exists(state_dir, dom_uuid):
        time.sleep(POLL_INTERVAL)


def _domain_exists(state_dir: Path, dom_uuid: str) -> bool:
    """True while the state dir exists and still lists the domain."""
    if not state_dir.is_dir():
        return False
    with contextlib.suppress(OSError, ValueError):
        state = store.read_state(state_dir)
        return any(d.get("uuid") == dom_uuid for d in state["domains"])
    return True
