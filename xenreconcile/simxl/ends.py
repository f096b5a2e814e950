"""How a simulated domain ends, as xl 4.17 handles it, and the monitor log lines.

A domain asked to end (`xl shutdown`, `xl sysrq NAME o|c|b`, `xl destroy`) gets
an `end` record: its shutdown reason code (0 poweroff, 1 reboot, 3 crash;
None for a destroy) and the time it takes effect. `settle` (run whenever the
state is read) applies it then with the action the guest's cfg gave xl for
that reason (`on_poweroff`, `on_reboot`, `on_crash`: destroy, restart or
preserve; xl's defaults destroy, restart, destroy): the domain is gone,
recreated under a new domid (restart, as xl's monitor does), or stays listed
shut down (`---s--`) or crashed (`---sc-`). What happened is kept in the
state's `ends` (by domain uuid) for the domain's monitor, which writes the
same lines to `xl-NAME.log` as the real monitor (`monitor_lines`).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

REASON_KEYS = {0: "on_poweroff", 1: "on_reboot", 3: "on_crash"}
DEFAULT_ACTIONS = {"on_poweroff": "destroy", "on_reboot": "restart", "on_crash": "destroy"}
SYSRQ_CODES = {"o": 0, "b": 1, "c": 3}
SHUT_DOWN_STATE = "---s--"
CRASHED_STATE = "---sc-"
MAX_ENDS = 200  # the ends kept for monitors; a monitor reads its own within a second
_ACTION = r"""^[ \t]*{key}[ \t]*=[ \t]*(?:"([^"\n]*)"|'([^'\n]*)')"""


def actions_of(text: str) -> dict[str, str]:
    """The on_poweroff / on_reboot / on_crash actions of a cfg text (xl's defaults)."""
    found = dict(DEFAULT_ACTIONS)
    for key in DEFAULT_ACTIONS:
        for m in re.finditer(_ACTION.format(key=key), text, re.MULTILINE):
            found[key] = m[1] if m[1] is not None else m[2]
    return found


def schedule(dom: dict[str, Any], code: int | None, at: float) -> None:
    """Make `dom` end at `at`: shut down with reason `code`, or destroyed (None)."""
    dom["end"] = {"code": code, "at": at}


def settle_end(state: dict[str, Any], dom: dict[str, Any], now: float) -> dict[str, Any] | None:
    """Apply the end of `dom` when due; returns the domain that replaces it (the
    same record, preserved or restarted), or None when it is gone."""
    end = dom.get("end")
    if end is None or end["at"] > now:
        return dom
    del dom["end"]
    code = end["code"]
    record: dict[str, Any] = {"name": dom["name"], "domid": dom["domid"], "code": code}
    if code is None:
        record["action"] = "destroyed"
        _remember(state, dom["uuid"], record)
        return None
    action = dom.get("actions", DEFAULT_ACTIONS).get(
        REASON_KEYS.get(code, "on_poweroff"), "destroy"
    )
    record["action"] = action
    if action == "preserve":
        dom["state"] = CRASHED_STATE if code == 3 else SHUT_DOWN_STATE
        _remember(state, dom["uuid"], record)
        return dom
    if action in ("restart", "rename-restart"):
        reborn = dict(dom, uuid=str(uuid.uuid5(uuid.NAMESPACE_URL, dom["uuid"])))
        reborn.update(domid=state["next_domid"], created=now)
        state["next_domid"] += 1
        record["next_uuid"], record["next_domid"] = reborn["uuid"], reborn["domid"]
        _remember(state, dom["uuid"], record)
        return reborn
    _remember(state, dom["uuid"], record)
    return None


def remember_destroy(state: dict[str, Any], dom: dict[str, Any]) -> None:
    """Record that `dom` was destroyed (it stays listed dying for a while)."""
    _remember(
        state,
        dom["uuid"],
        {"name": dom["name"], "domid": dom["domid"], "code": None, "action": "destroyed"},
    )


def _remember(state: dict[str, Any], dom_uuid: str, record: dict[str, Any]) -> None:
    """Keep `record` for the monitor of `dom_uuid` (the oldest dropped past MAX_ENDS)."""
    ends = state.setdefault("ends", {})
    ends[dom_uuid] = record
    while len(ends) > MAX_ENDS:
        del ends[next(iter(ends))]


def waiting_line(name: str, domid: int, pid: int) -> str:
    """The monitor's first line for a life."""
    return f"Waiting for domain {name} (domid {domid}) to die [pid {pid}]\n"


def monitor_lines(record: dict[str, Any]) -> str:
    """The lines real xl's monitor writes when a life ends as `record` says."""
    domid, code, action = record["domid"], record["code"], record["action"]
    if code is None:
        return f"Domain {domid} has been destroyed.\n"
    lines = [
        f"Domain {domid} has shut down, reason code {code} 0x{code:x}",
        f"Action for shutdown reason code {code} is {action}",
    ]
    if action == "preserve":
        lines.append("Done. Exiting now")
    else:
        lines.append(f"Domain {domid} needs to be cleaned up: destroying the domain")
        restart = action in ("restart", "rename-restart")
        lines.append("Done. Rebooting now" if restart else "Done. Exiting now")
    return "\n".join(lines) + "\n"
