"""xl's global create lock, taken the way xl 4.17 takes it.

Real xl's create_domain() opens xl.conf's `lockfile` (default /var/lock/xl)
write-only, creating it with mode 0200, and holds an fcntl write lock on the
whole file (F_SETLKW) from just before freemem() until libxl_domain_create_new()
returns: the whole domain build. Concurrent creates therefore build one at a
time. An fcntl lock belongs to the process, so the kernel releases it when the
process dies, whatever killed it.

The simulated toolstack has its own `xl.conf` in its state directory; its
`lockfile` setting names the lock file (a relative path is taken relative to
the state directory), and without one the lock file is `STATE/xl.lock`, never
the host's /var/lock/xl.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from pathlib import Path

from xenreconcile.errors import XenreconcileError

XL_CONF = "xl.conf"
DEFAULT_LOCKFILE = "xl.lock"
_LOCKFILE = re.compile(r"""^[ \t]*lockfile[ \t]*=[ \t]*(?:"([^"\n]*)"|'([^'\n]*)')""", re.MULTILINE)


def lockfile_path(state_dir: Path) -> Path:
    """The create lock file of the toolstack in `state_dir`: the last `lockfile`
    setting of `state_dir/xl.conf` (relative to `state_dir`), else `state_dir/xl.lock`."""
    try:
        text = (state_dir / XL_CONF).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        text = ""
    found = [a or b for a, b in _LOCKFILE.findall(text)]
    return state_dir / (found[-1] if found else DEFAULT_LOCKFILE)


class LockError(XenreconcileError):
    """The lock file could not be opened or locked; the text is xl's message."""


@contextlib.contextmanager
def held(path: Path) -> Iterator[None]:
    """Hold the create lock on `path` for the body, waiting for it as long as it
    takes (xl's acquire_lock()). LockError, with xl's text, if the file cannot be
    opened or locked."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o200)
    except OSError as exc:
        raise LockError(f"cannot open the lockfile {path} errno={exc.errno}") from exc
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)  # fcntl(F_SETLKW) with F_WRLCK on the whole file
        except OSError as exc:
            raise LockError(f"cannot acquire lock {path} errno={exc.errno}") from exc
        try:
            yield
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
