"""xl's global create lock, seen from outside, so that `xl_timeout` counts only
the time a create could build.

xl 4.17's create_domain() takes an fcntl write lock on xl.conf's `lockfile`
(default XEN_LOCK_DIR/xl: /var/lock/xl on Linux, /var/lib/xl on FreeBSD) and
waits for it (F_SETLKW) before freemem() and the whole domain build. A create
blocked there has made no domain yet; killing it gains nothing and costs a
failure and a backoff. So while another process holds the lock, a create's
time does not count against its timeout (`budget_spent`). Who holds it is
asked with F_GETLK, which takes no lock and needs no write access: nothing
here can delay xl.

The lock file comes from `XENRECONCILE_XL_LOCKFILE` when set (the simulated
xl's, in tests), else from xl.conf the way xl reads it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable, Mapping

LOCKFILE_ENV = "XENRECONCILE_XL_LOCKFILE"
_FREEBSD = sys.platform.startswith("freebsd")
XL_CONF = "/usr/local/etc/xen/xl.conf" if _FREEBSD else "/etc/xen/xl.conf"
DEFAULT_LOCKFILE = "/var/lib/xl" if _FREEBSD else "/var/lock/xl"
LOCK_POLL = 0.25  # how often a create's clock asks whether it only waits for the lock
_LOCKFILE = re.compile(r"""^[ \t]*lockfile[ \t]*=[ \t]*(?:"([^"\n]*)"|'([^'\n]*)')""", re.MULTILINE)
# struct flock: Linux {short type, whence; off_t start, len; pid_t pid} (padded
# to 32 bytes on 64-bit), FreeBSD {off_t start, len; pid_t pid; short type,
# whence; int sysid}. Native alignment ('@') puts the padding where C does.
_FLOCK = "@qqihhi" if _FREEBSD else "@hhqqi4x"


def xl_lockfile(environ: Mapping[str, str] = os.environ, xl_conf: str = XL_CONF) -> str:
    """Given the environment and xl.conf's path, return the lock file xl's creates
    take: `XENRECONCILE_XL_LOCKFILE`, else xl.conf's last `lockfile`, else xl's default."""
    explicit = environ.get(LOCKFILE_ENV)
    if explicit:
        return explicit
    try:
        with open(xl_conf, encoding="utf-8", errors="replace") as file:
            found = [a or b for a, b in _LOCKFILE.findall(file.read())]
    except OSError:
        found = []
    return found[-1] if found else DEFAULT_LOCKFILE


def lock_holder(path: str) -> int | None:
    """The pid of the process holding the write lock on `path`, or None when it
    is free, or `path` is missing or not a regular file (a symlink is not followed)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, _flock_query())
    except OSError:
        return None
    finally:
        os.close(fd)
    return _holder_of(answer)


def _flock_query() -> bytes:
    """A struct flock asking about a write lock on the whole file."""
    if _FREEBSD:
        return struct.pack(_FLOCK, 0, 0, 0, fcntl.F_WRLCK, os.SEEK_SET, 0)
    return struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)


def _holder_of(answer: bytes) -> int | None:
    """The pid F_GETLK answered, None when it said the lock is free (F_UNLCK)."""
    if _FREEBSD:
        _start, _len, pid, kind, _whence, _sysid = struct.unpack(_FLOCK, answer)
    else:
        kind, _whence, _start, _len, pid = struct.unpack(_FLOCK, answer)
    return None if kind == fcntl.F_UNLCK or pid <= 0 else int(pid)


def waits_for_lock(path: str, group: int) -> bool:
    """True when the lock on `path` is held by a process outside process group
    `group` (a create's own session): that create cannot be building."""
    holder = lock_holder(path)
    if holder is None:
        return False
    try:
        return os.getpgid(holder) != group
    except OSError:  # the holder just exited: the lock is free
        return False


def budget_spent(budget: float, stop: threading.Event, waiting: Callable[[], bool] | None) -> bool:
    """Wait until `budget` seconds have passed that were not spent waiting for
    xl's lock (`waiting()` says whether it is waiting, asked every LOCK_POLL
    seconds; None: every second counts), or `stop` is set. Returns True when the
    budget ran out, False when stopped first."""
    deadline = time.monotonic() + budget
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return True
        step = remaining if waiting is None else min(remaining, LOCK_POLL)
        if stop.wait(step):
            return False
        if waiting is not None:
            with contextlib.suppress(Exception):  # a failing check counts the time
                if waiting():
                    deadline += step
