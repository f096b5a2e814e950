"""Is the daemon's loop alive, and the one-line summary `service xenreconcile
status` adds: read from a status document (docs/json.md), pure.

The daemon writes `daemon.last_pass` (epoch seconds) with every pass. A loop
that has not passed for STALL_FACTOR x `interval` is taken as wedged: `status`
says so and exits 1 (the FreeBSD counterpart of systemd's watchdog).
"""

from __future__ import annotations

from typing import Any

from xenreconcile.report import SETTLED_STATES

STALL_FACTOR = 3
UP_STATES = frozenset({"running", "drift"})
NOT_DESIRED_STATES = frozenset({"unmanaged", "invalid"})
_SETTLED = frozenset(state.value for state in SETTLED_STATES)


def pass_age(doc: dict[str, Any], wall_now: float) -> float | None:
    """Seconds since the daemon's last pass (0 if the wall clock went back), or
    None when the document names none (no daemon wrote it)."""
    last = doc.get("daemon", {}).get("last_pass")
    if not isinstance(last, int | float) or isinstance(last, bool):
        return None
    return max(0.0, wall_now - float(last))


def stalled(doc: dict[str, Any], wall_now: float, interval: float) -> bool:
    """True when the daemon's loop has not passed for more than STALL_FACTOR x `interval`."""
    age = pass_age(doc, wall_now)
    return age is not None and age > STALL_FACTOR * interval


def liveness_line(doc: dict[str, Any], wall_now: float, interval: float) -> str | None:
    """`daemon: last pass 4s ago`, or the warning of a stalled loop; None when
    no daemon wrote the document."""
    age = pass_age(doc, wall_now)
    if age is None:
        return None
    if stalled(doc, wall_now, interval):
        return (
            f"daemon: no pass for {age:.0f}s (more than {STALL_FACTOR} x interval "
            f"{interval:g}s): the loop may be wedged; see the log"
        )
    return f"daemon: last pass {age:.0f}s ago"


def summary_line(doc: dict[str, Any], wall_now: float, interval: float) -> str:
    """One line: guests running / desired, then each problem (`NAME state`), the
    toolstack's error and a stalled loop."""
    guests = doc.get("guests", [])
    desired = [g for g in guests if g["files"] and g["state"] not in NOT_DESIRED_STATES]
    running = sum(g["state"] in UP_STATES for g in desired)
    parts = [f"guests: {running}/{len(desired)} running"]
    problems = [f"{g['name']} {g['state']}" for g in guests if g["state"] not in _SETTLED]
    if not doc["toolstack"]["ok"]:
        problems.insert(0, f"toolstack: {doc['toolstack']['error'] or 'not trusted'}")
    if stalled(doc, wall_now, interval):
        problems.insert(0, f"no pass for {pass_age(doc, wall_now):.0f}s")
    parts.append("problems: " + (", ".join(problems) if problems else "none"))
    return "; ".join(parts)
