"""Why a domain went away, from xl's own record: the monitor's log.

The monitor process `xl create` leaves behind writes each life of its domain
to `/var/log/xen/xl-NAME.log` (real xl 4.17 texts, stable since Xen 4.2):

    Waiting for domain NAME (domid N) to die [pid P]
    Domain N has shut down, reason code R 0xR
    Action for shutdown reason code R is ACTION
    Domain N needs to be cleaned up: destroying the domain
    Done. Exiting now                      (or "Done. Rebooting now": xl restarts it)
    Domain N has been destroyed.           (instead of the above, after `xl destroy`)

The file has no timestamps, so a life is found by its domid. The next create
of NAME rotates the file to `.1` (up to `.10`), so the pass that notices a
guest gone reads it before it creates the guest again; the `.1` file is read
too, for a create somebody else ran in between. Parsing is pure; `read_life`
is the one function here that touches the disk.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from xenreconcile.models import Domain, Memory

LOG_DIR_ENV = "XENRECONCILE_XL_LOG_DIR"
DEFAULT_LOG_DIR = "/var/log/xen"
MAX_LOG_BYTES = 1024 * 1024  # the tail read of a log; a life's lines are a few hundred bytes

_WAITING = re.compile(r"^Waiting for domain .* \(domid (\d+)\) to die \[pid \d+\]$")
_SHUT_DOWN = re.compile(r"^Domain (\d+) has shut down, reason code (-?\d+) ")
_DESTROYED = re.compile(r"^Domain (\d+) has been destroyed\.$")


class ExitReason(enum.StrEnum):
    """The words `status`, the log and `XR_REASON` use for how a guest ended."""

    POWEROFF = "poweroff"
    REBOOT = "reboot"
    CRASH = "crash"
    WATCHDOG = "watchdog"
    DESTROYED = "destroyed"
    HOST_SHUTDOWN = "host-shutdown"
    UNKNOWN = "unknown"


# libxl_types.idl shutdown_reason; suspend (2) and soft_reset (5) have no word of
# their own in the contract and are shown as unknown with their code.
_REASON_OF_CODE: Mapping[int, ExitReason] = {
    0: ExitReason.POWEROFF,
    1: ExitReason.REBOOT,
    3: ExitReason.CRASH,
    4: ExitReason.WATCHDOG,
}
# Ends that count as a failure of the guest for backoff and give_up_after.
FAILURE_REASONS = frozenset({ExitReason.CRASH, ExitReason.WATCHDOG})


@dataclass(frozen=True, slots=True)
class Life:
    """One life of a domain in the monitor's log: its `domid`, the shutdown reason
    `code` when the domain shut down, and `destroyed` when `xl destroy` ended it.
    A life with neither has no final line (still running, or the monitor died)."""

    domid: int
    code: int | None = None
    destroyed: bool = False

    @property
    def ended(self) -> bool:
        """True when the log says how this life ended."""
        return self.code is not None or self.destroyed

    @property
    def reason(self) -> ExitReason:
        """The word for how it ended (UNKNOWN when the log does not say)."""
        if self.destroyed:
            return ExitReason.DESTROYED
        if self.code is None:
            return ExitReason.UNKNOWN
        return _REASON_OF_CODE.get(self.code, ExitReason.UNKNOWN)


def parse_lives(text: str) -> list[Life]:
    """Given the text of a monitor log, return its lives in the order written."""
    lives: list[Life] = []
    for raw in text.splitlines():
        line = raw.strip()
        if m := _WAITING.match(line):
            lives.append(Life(int(m[1])))
        elif m := _SHUT_DOWN.match(line):
            _end(lives, int(m[1]), code=int(m[2]))
        elif m := _DESTROYED.match(line):
            _end(lives, int(m[1]), destroyed=True)
    return lives


def _end(
    lives: list[Life], domid: int, *, code: int | None = None, destroyed: bool = False
) -> None:
    """Record the end of the life of `domid` (the last one of that domid); a life
    whose "Waiting" line is missing (the crash sample shows one) is added."""
    for index in range(len(lives) - 1, -1, -1):
        if lives[index].domid == domid:
            old = lives[index]
            lives[index] = Life(domid, code if code is not None else old.code, destroyed)
            return
    lives.append(Life(domid, code, destroyed))


def life_of(lives: Iterable[Life], domid: int) -> Life | None:
    """The last life of `domid` among `lives`, or None."""
    found = None
    for life in lives:
        if life.domid == domid:
            found = life
    return found


def log_dir(env: Mapping[str, str] = os.environ) -> str:
    """The directory of xl's monitor logs: $XENRECONCILE_XL_LOG_DIR (tests, the
    simulated xl) or /var/log/xen."""
    return env.get(LOG_DIR_ENV) or DEFAULT_LOG_DIR


def read_life(directory: str, name: str, domid: int) -> Life | None:
    """The life of `domid` in `directory/xl-NAME.log`, else in its first rotated
    copy `.1`; None when neither holds it (no log, another domid)."""
    base = os.path.join(directory, f"xl-{name}.log")
    for path in (base, base + ".1"):
        life = life_of(parse_lives(_tail(path)), domid)
        if life is not None:
            return life
    return None


def _tail(path: str) -> str:
    """The last MAX_LOG_BYTES of the file at `path`, '' when it cannot be read.
    The log is root's (/var/log/xen); a symlink is not followed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return ""
    try:
        with os.fdopen(fd, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - MAX_LOG_BYTES))
            return f.read(MAX_LOG_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return ""


def lives_to_read(memory: Memory, listing: Sequence[Domain] | None) -> dict[str, int]:
    """Given the memory and a trusted listing, the guests whose remembered life
    (`life_domid`) is no longer listed running under that domid, with that domid:
    the lives whose end the planner is about to settle."""
    if listing is None:
        return {}
    listed = {d.name: d for d in listing}
    wanted: dict[str, int] = {}
    for name, gm in memory.guests.items():
        domain = listed.get(name)
        if gm.life_domid is None:
            continue
        if domain is None or domain.domid != gm.life_domid or domain.dying:
            wanted[name] = gm.life_domid
    return wanted


def read_lives(directory: str, wanted: Mapping[str, int]) -> dict[str, Life | None]:
    """The life of each wanted (name, domid) in the monitor logs of `directory`."""
    return {name: read_life(directory, name, domid) for name, domid in wanted.items()}
