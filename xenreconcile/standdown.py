"""The daemon's "stood down" mark: no create until the next Dom0 boot.

`shutdown-guests` writes `state_dir/stood-down` (the boot it was made in) before
it touches a guest. Every pass of the daemon (and `run --once`, `plan`,
`status`) reads it: while it belongs to the running boot, nothing is created, so
a daemon restarted mid-drain, or respawned by daemon(8), cannot bring back the
guests the drain is taking down. A running daemon answers the mark with
`state_dir/stood-down.ack` (its pid) once no create of its own is in flight, so
the drain knows no create can race it. The first pass of the next boot removes
both. A mark whose boot cannot be compared with the running one keeps the daemon
stood down (it fails closed); removing the file by hand lifts it.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass

from xenreconcile.state import Boot, read_private, same_boot, trusted_uids, write_atomically

MARK = "stood-down"
ACK = "stood-down.ack"
REASON = "stood down for the host's shutdown: no create until the next boot"
_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class Mark:
    """A mark as read: the boot it was made in and when (epoch seconds)."""

    boot: Boot
    at: float


def stand_down(state_dir: str, boot: Boot, at: float) -> None:
    """Write the mark for `boot`, made at epoch `at`, durably."""
    text = json.dumps(
        {"boot_id": boot.boot_id, "boot_time": boot.boot_time, "uptime": boot.uptime, "at": at}
    )
    write_atomically(state_dir, MARK, text + "\n", durable=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(state_dir, ACK))


def read_mark(state_dir: str) -> Mark | None:
    """The mark in `state_dir`, None when there is none. A mark that cannot be
    read as one (damaged, or not a file only root controls) counts as a mark of
    an unknown boot, so it keeps the daemon stood down."""
    try:
        data = read_private(os.path.join(state_dir, MARK), trusted_uids(), _LIMIT)
    except FileNotFoundError:
        return None
    except OSError:
        return Mark(Boot(), 0.0)
    try:
        fields = json.loads(data)
        boot = Boot(
            _str(fields.get("boot_id")), _num(fields.get("boot_time")), _num(fields.get("uptime"))
        )
        return Mark(boot, _num(fields.get("at")) or 0.0)
    except (ValueError, AttributeError):
        return Mark(Boot(), 0.0)


def stood_down(state_dir: str, current: Boot) -> bool:
    """True while a mark exists that is not known to be from an earlier boot."""
    mark = read_mark(state_dir)
    return mark is not None and same_boot(mark.boot, current) is not False


def clear_after_reboot(state_dir: str, current: Boot) -> bool:
    """Remove a mark (and its answer) made in an earlier boot; True if one was removed."""
    mark = read_mark(state_dir)
    if mark is None or same_boot(mark.boot, current) is not False:
        return False
    for name in (MARK, ACK):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(state_dir, name))
    return True


def acknowledge(state_dir: str, pid: int) -> None:
    """The daemon's answer: it creates nothing more (written once per mark)."""
    if not os.path.exists(os.path.join(state_dir, ACK)):
        write_atomically(state_dir, ACK, f"{pid}\n", durable=False)


def acknowledged(state_dir: str) -> bool:
    """True once a daemon answered the current mark."""
    return os.path.exists(os.path.join(state_dir, ACK))


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
