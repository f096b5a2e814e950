"""A partly readable `xl list`: which desired guests it cannot speak for, and the
plan of a pass restricted to the others.

One row xl prints that we cannot read (a hand-made domain with a strange name,
say) must not stop the reconciliation of every other guest forever, and must not
lead to an action on a guest that row could be. A desired guest is a *suspect*
when its name occurs anywhere in the text of an unreadable row: the row could be
that guest, or `NAME--incoming` / `NAME--migratedaway` during a live migration.
For a suspect the pass decides nothing, as for a listing that failed: no create,
no event, its memory as it was, its status `unknown` with the row named. Every
other guest is judged on the rows that could be read, which are all the domains
there are except the unreadable rows themselves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from xenreconcile.models import DesiredState, GuestState, GuestStatus, Memory, Plan
from xenreconcile.xl import UnreadRow

# States of a desired guest that do not depend on the listing.
_KEPT_STATES = frozenset({GuestState.HELD, GuestState.CREATING})


def suspects(desired: DesiredState, rows: Sequence[UnreadRow]) -> dict[str, str]:
    """Given the desired state and the unreadable rows of the listing, return the
    desired guests one of those rows could be, each with the reason to show."""
    found: dict[str, str] = {}
    for guest in desired.guests:
        row = next((row for row in rows if guest.name in row.text), None)
        if row is not None:
            found[guest.name] = f"{row}; it may be this guest, so it is not acted on"
    return found


def restrict(plan: Plan, before: Memory, suspected: Mapping[str, str]) -> Plan:
    """Given a pass's plan, the memory it started from and the suspects (name ->
    reason), return the plan with no create, event or memory change for a suspect
    and its status `unknown` (held and creating guests keep theirs)."""
    if not suspected:
        return plan
    creates = tuple(c for c in plan.creates if c.name not in suspected)
    guests = dict(plan.memory.guests)
    for name in suspected:
        if name in before.guests:
            guests[name] = before.guests[name]
        else:
            guests.pop(name, None)
    memory = replace(
        plan.memory,
        guests=guests,
        last_create_at=plan.memory.last_create_at if creates else before.last_create_at,
    )
    return replace(
        plan,
        creates=creates,
        statuses=tuple(_status(s, before, suspected) for s in plan.statuses),
        memory=memory,
        events=tuple(e for e in plan.events if e.name not in suspected),
    )


def _status(status: GuestStatus, before: Memory, suspected: Mapping[str, str]) -> GuestStatus:
    """`status` as a restricted pass shows it."""
    if status.name not in suspected or status.state in _KEPT_STATES:
        return status
    gm = before.guest(status.name)
    return replace(
        status,
        state=GuestState.UNKNOWN,
        attempts=gm.attempts,
        next_retry=gm.next_retry,
        last_error=gm.last_error,
        detail=suspected[status.name],
    )
