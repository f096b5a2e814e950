"""A partly readable `xl list`: which desired guests it cannot speak for (the
planner is given them as `suspects` and decides nothing about them).

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

from collections.abc import Sequence

from xenreconcile.models import DesiredState
from xenreconcile.xl import UnreadRow


def suspects(desired: DesiredState, rows: Sequence[UnreadRow]) -> dict[str, str]:
    """Given the desired state and the unreadable rows of the listing, return the
    desired guests one of those rows could be, each with the reason to show."""
    found: dict[str, str] = {}
    for guest in desired.guests:
        row = next((row for row in rows if guest.name in row.text), None)
        if row is not None:
            found[guest.name] = f"{row}; it may be this guest, so it is not acted on"
    return found
