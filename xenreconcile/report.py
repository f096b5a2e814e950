"""What `status` and `plan` show: one JSON document, and tables for humans.

The JSON shapes are documented in docs/json.md; change both together. A plan's
times are monotonic seconds (`now` is the plan's own); what is shown is epoch
seconds, `wall_now` being the wall clock at `now`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from xenreconcile import hints
from xenreconcile.clock import EPOCH_DIGITS
from xenreconcile.models import GuestPhase, GuestStatus, Plan

SCHEMA_VERSION = 1
# States in which nothing needs the admin: `status` and `run --once` exit 0 only
# when every guest is in one of them and the toolstack answered.
SETTLED_STATES = frozenset(
    {
        GuestPhase.RUNNING,
        GuestPhase.DRIFT,
        GuestPhase.HELD,
        GuestPhase.MIGRATED,
        GuestPhase.ELSEWHERE,
        GuestPhase.UNMANAGED,
        GuestPhase.STOPPED,
    }
)
# States whose detail says what to do and already names the last error: the
# `status` table shows it instead of the bare error.
DETAIL_FIRST_STATES = frozenset({GuestPhase.LEFTOVER.value})


def to_wall(at: float | None, now: float, wall_now: float) -> float | None:
    """The epoch time of the monotonic time `at`, given the clocks' readings at one
    moment (`now`, `wall_now`); None stays None."""
    return None if at is None else round(wall_now + (at - now), EPOCH_DIGITS)


def guest_entry(status: GuestStatus, now: float, wall_now: float) -> dict[str, Any]:
    """One guest of the status document, as seen at `now` (`wall_now`)."""
    next_in = None if status.next_retry is None else max(0.0, round(status.next_retry - now, 1))
    return {
        "name": status.name,
        "state": status.state.value,
        "files": list(status.paths),
        "attempts": status.attempts,
        "next_retry": to_wall(status.next_retry, now, wall_now),
        "next_retry_in": next_in,
        "last_error": status.last_error,
        "hint": hints.remedy(status.last_error),
        "detail": status.detail,
        "last_exit": _last_exit(status, now, wall_now),
    }


def _last_exit(status: GuestStatus, now: float, wall_now: float) -> dict[str, Any] | None:
    """The `last_exit` object of a guest entry (docs/json.md), or None."""
    end = status.last_exit
    if end is None:
        return None
    return {"reason": end.reason, "code": end.code, "at": to_wall(end.at, now, wall_now)}


def status_document(
    plan: Plan,
    *,
    now: float,
    wall_now: float,
    daemon_pid: int | None,
    toolstack_error: str | None,
    watcher: str | None = None,
    in_flight: Collection[str] = (),
) -> dict[str, Any]:
    """The `status --json` document for `plan` as seen at `now` (`wall_now`);
    `in_flight` names the creates the daemon is running."""
    return {
        "version": SCHEMA_VERSION,
        "generated_at": round(wall_now, EPOCH_DIGITS),
        "daemon": {"running": daemon_pid is not None, "pid": daemon_pid, "watcher": watcher},
        "toolstack": {"ok": plan.trusted, "error": toolstack_error},
        "in_flight": sorted(in_flight),
        "guests": [guest_entry(s, now, wall_now) for s in plan.statuses],
    }


def plan_document(
    plan: Plan, *, now: float, wall_now: float, toolstack_error: str | None
) -> dict[str, Any]:
    """The `plan --json` document: the creates the next pass would start, and
    every guest's status, as seen at `now` (`wall_now`)."""
    return {
        "version": SCHEMA_VERSION,
        "generated_at": round(wall_now, EPOCH_DIGITS),
        "toolstack": {"ok": plan.trusted, "error": toolstack_error},
        "creates": [{"name": c.name, "file": c.path} for c in plan.creates],
        "wake_at": to_wall(plan.wake_at, now, wall_now),
        "guests": [guest_entry(s, now, wall_now) for s in plan.statuses],
    }


def humanize_in(seconds: float | None) -> str:
    """ "in 40s", "in 5m", "in 2h", "now", or "-" for None."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return "now"
    if seconds < 120:
        return f"in {seconds:.0f}s"
    if seconds < 7200:
        return f"in {seconds / 60:.0f}m"
    return f"in {seconds / 3600:.0f}h"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns; the last column is not padded."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    lines = []
    for row in [headers, *rows]:
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths[:-1], strict=True)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def status_table(doc: dict[str, Any]) -> str:
    """The human `status` output for a status document."""
    rows = []
    for g in doc["guests"]:
        shown_detail = g["detail"] if g["state"] not in ("running", "drift") else None
        if g["state"] in DETAIL_FIRST_STATES:
            error = shown_detail or g["last_error"] or ""
        else:
            error = g["last_error"] or shown_detail or ""
        rows.append(
            [
                g["name"],
                g["state"],
                ", ".join(g["files"]) or "-",
                str(g["attempts"]),
                humanize_in(g["next_retry_in"]),
                _exit_cell(g.get("last_exit"), doc["generated_at"]),
                error.splitlines()[0] if error else "",
            ]
        )
    headers = ["GUEST", "STATE", "FILE", "ATTEMPTS", "NEXT RETRY", "LAST EXIT", "LAST ERROR"]
    out = [_table(headers, rows) if rows else "no guests"]
    out += [f"hint for {g['name']}: {g['hint']}" for g in doc["guests"] if g.get("hint")]
    daemon = doc["daemon"]
    if not daemon["running"]:
        out.append("daemon: not running (states computed now from the files and xl list)")
    if not doc["toolstack"]["ok"]:
        out.append(f"toolstack: {doc['toolstack']['error'] or 'not trusted'}: no action taken")
    return "\n".join(out)


def _exit_cell(end: dict[str, Any] | None, generated_at: float) -> str:
    """ "crash 5m ago" for a guest's `last_exit`, "-" when none is known."""
    if not end:
        return "-"
    ago = max(0.0, generated_at - float(end["at"]))
    return f"{end['reason']} {humanize_in(ago).removeprefix('in ')} ago".replace("now ago", "now")


def plan_text(doc: dict[str, Any]) -> str:
    """The human `plan` output for a plan document."""
    lines = []
    if not doc["toolstack"]["ok"]:
        lines.append(
            f"toolstack error: {doc['toolstack']['error']}: the next pass would do nothing"
        )
    elif doc["creates"]:
        lines.extend(f"create {c['name']}  (xl create {c['file']})" for c in doc["creates"])
    else:
        lines.append("nothing to create")
    waiting = [g for g in doc["guests"] if g["state"] not in ("running", "pending", "creating")]
    lines.extend(
        f"{g['state']:<10} {g['name']}"
        + (f"  ({g['detail'] or g['last_error']})" if g["detail"] or g["last_error"] else "")
        for g in waiting
    )
    return "\n".join(lines)


def is_problem(status: GuestStatus) -> bool:
    """True when `status` is not settled: a guest not running that should, or a
    file that cannot be used (exit code 1)."""
    return status.state not in SETTLED_STATES
