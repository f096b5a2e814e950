"""Whether a path is one that only root (or the daemon's own user) controls.

xenreconcile runs as root and reads files that name programs root runs, so a
path is trusted only when nobody else can change what it leads to, now or
between a check and a later use:

* every directory on the way must be owned by an allowed uid (root or the
  daemon's own) and not writable by group or others; a sticky directory owned
  by an allowed uid (such as /tmp) may stand on the way, since in it nobody can
  rename or remove an entry they do not own;
* every symlink on the way must be owned by an allowed uid (its mode means
  nothing: a symlink cannot be changed, only replaced through its directory).

Symlinks are resolved one component at a time with lstat and readlink, so the
components checked are exactly the ones the kernel follows; os.path.realpath
alone tells where a path leads, not through what.
"""

from __future__ import annotations

import errno
import os
import pwd
import stat
from collections.abc import Collection, Sequence
from dataclasses import dataclass

# FreeBSD's MAXSYMLINKS (Linux allows 40): a longer chain is a loop.
MAX_SYMLINKS = 32


@dataclass(frozen=True, slots=True)
class Step:
    """One component followed while resolving a path: its absolute path (with
    every symlink before it resolved) and its lstat."""

    path: str
    st: os.stat_result

    @property
    def is_link(self) -> bool:
        """True when this component is a symlink."""
        return stat.S_ISLNK(self.st.st_mode)


def allowed_uids() -> frozenset[int]:
    """The owners a trusted path may have: root and the daemon's own uid."""
    return frozenset((0, os.geteuid()))


def resolve(path: str) -> list[Step]:
    """Given an absolute path, return every component followed to resolve it,
    from "/" to the final one (never a symlink: a final symlink is followed).
    Raises OSError as the kernel would (ENOENT, ENOTDIR, ELOOP, EACCES)."""
    if not os.path.isabs(path):
        raise ValueError(f"not an absolute path: {path!r}")
    steps = [Step("/", os.lstat("/"))]
    resolved = "/"
    pending = _parts(path)
    links = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            resolved = os.path.dirname(resolved)  # `resolved` holds no symlink
            continue
        current = os.path.join(resolved, part)
        st = os.lstat(current)
        steps.append(Step(current, st))
        if not stat.S_ISLNK(st.st_mode):
            resolved = current
            continue
        links += 1
        if links > MAX_SYMLINKS:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
        target = os.readlink(current)
        if not target:
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), current)
        pending = _parts(target) + pending
        if os.path.isabs(target):
            resolved = "/"
    return steps


def _parts(path: str) -> list[str]:
    """The components of `path`, without empty ones and '.'."""
    return [part for part in path.split("/") if part not in ("", ".")]


def passage_problem(steps: Sequence[Step], allowed: Collection[int]) -> str | None:
    """Given the steps of a resolved path, say which component other than the
    final one would let someone else change where the path leads, and why; None
    when all are safe. The final component is the caller's to judge."""
    for step in steps[:-1]:
        why = _passage_why(step.st, allowed)
        if why is not None:
            return f"{describe(step)} {why}"
    return None


def _passage_why(st: os.stat_result, allowed: Collection[int]) -> str | None:
    """Why a directory or symlink on the way is unsafe, or None."""
    if st.st_uid not in allowed:
        return f"is not owned by {owners(allowed)}"
    if stat.S_ISLNK(st.st_mode):
        return None
    writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if writable and not st.st_mode & stat.S_ISVTX:
        return "is writable by group or others (and not sticky)"
    return None


def describe(step: Step) -> str:
    """`step` for an error message: kind, path, owner and mode."""
    kind = "symlink" if step.is_link else "directory" if stat.S_ISDIR(step.st.st_mode) else "file"
    mode = stat.S_IMODE(step.st.st_mode)
    return f"{kind} {step.path} (owner {owner_name(step.st.st_uid)}, mode {mode:04o})"


def owner_problem(st: os.stat_result, allowed: Collection[int]) -> str | None:
    """Why the owner of a file or directory with stat `st` is not trusted, or None."""
    if st.st_uid in allowed:
        return None
    return f"owned by {owner_name(st.st_uid)}, must be owned by {owners(allowed)}"


def mode_problem(st: os.stat_result) -> str | None:
    """Why the mode of a file or directory with stat `st` is not safe, or None."""
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"mode {stat.S_IMODE(st.st_mode):04o} is writable by group or others"
    return None


def owners(allowed: Collection[int]) -> str:
    """The allowed owners, for error messages."""
    return " or ".join(owner_name(uid) for uid in sorted(allowed))


def owner_name(uid: int) -> str:
    """A uid with its user name when it has one."""
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"
