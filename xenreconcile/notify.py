"""Run the admin's `notify_command` for guest events (gave up, failing, recovered).

The command is a list (program and arguments, no shell). It learns what
happened from its environment: `XR_GUEST`, `XR_EVENT`, `XR_ERROR` and
`XR_REASON` (how the guest's last life ended, `exits.ExitReason`). It runs
in a thread of its own so a slow mail relay never delays a pass; its failure
is logged, never fatal.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Sequence
from typing import Any

NOTIFY_TIMEOUT = 60.0


def notify_env(
    guest: str, event: str, error: str | None, reason: str | None = None
) -> dict[str, str]:
    """The environment for one notification: ours plus XR_GUEST/XR_EVENT/XR_ERROR
    and XR_REASON ('' when the reason is not known)."""
    env = dict(os.environ)
    env.update(XR_GUEST=guest, XR_EVENT=event, XR_ERROR=error or "", XR_REASON=reason or "")
    return env


def run_notify(
    command: Sequence[str],
    guest: str,
    event: str,
    error: str | None,
    log: Any,
    *,
    reason: str | None = None,
) -> int | None:
    """Run `command` for one event and wait for it; returns its exit code, or
    None when it could not start or timed out. Logs any failure on `log`."""
    try:
        proc = subprocess.run(
            list(command),
            env=notify_env(guest, event, error, reason),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=NOTIFY_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("notify_failed", guest=guest, notify_event=event, error=str(exc))
        return None
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        log.warning(
            "notify_failed",
            guest=guest,
            notify_event=event,
            exit_code=proc.returncode,
            stderr="\n".join(tail),
        )
    return proc.returncode


def notify_async(
    command: Sequence[str],
    guest: str,
    event: str,
    error: str | None,
    log: Any,
    *,
    reason: str | None = None,
) -> threading.Thread | None:
    """Start `run_notify` in a daemon thread; None when no command is configured."""
    if not command:
        return None
    thread = threading.Thread(
        target=run_notify,
        args=(list(command), guest, event, error, log),
        kwargs={"reason": reason},
        daemon=True,
        name=f"notify-{guest}",
    )
    thread.start()
    return thread
