"""The guests directory -> DesiredState.

A guest file is a regular file, or a symlink to one, directly in the directory,
named `*.cfg` and not starting with `.`; every other entry is ignored silently.
A symlink named `*.cfg` whose target is not a regular file (a device, a FIFO, a
loop, nothing) is reported invalid, since the admin put it there on purpose.

Files are opened non-blocking (a FIFO that slipped in never hangs a pass), then
checked with fstat to be regular, and read up to 1 MiB.

Permissions (when strict): the directory and every file must be owned by an
allowed uid (root or the daemon's own) and not writable by group or others. For
a symlink the target file and the directory holding the target are checked: the
link's own mode means nothing, and only someone who can write the guests
directory (which is checked) can change the link.

An unchanged file (same device, inode, size, mtime, ctime, mode, owner) is not
read or parsed again: its previous result is reused. Permission checks run on
every pass.
"""

from __future__ import annotations

import errno
import hashlib
import os
import pwd
import stat
from collections.abc import Collection
from typing import TypeAlias

from xenreconcile import xlcfg
from xenreconcile.models import DesiredGuest, DesiredState, InvalidFile

MAX_CFG_BYTES = 1024 * 1024
CFG_SUFFIX = ".cfg"

Fingerprint: TypeAlias = tuple[int, int, int, int, int, int, int]
Outcome: TypeAlias = DesiredGuest | InvalidFile

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
# Linux says ELOOP, FreeBSD EMLINK when O_NOFOLLOW meets a symlink.
_NOFOLLOW_ERRNOS = (errno.ELOOP, errno.EMLINK)


def is_guest_file_name(name: str) -> bool:
    """True for a directory entry name that may be a guest file (`*.cfg`, not hidden)."""
    return name.endswith(CFG_SUFFIX) and not name.startswith(".")


def fingerprint(st: os.stat_result) -> Fingerprint:
    """What tells that a file is unchanged since it was last read."""
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size, st.st_ctime_ns, st.st_mode, st.st_uid)


class GuestDirScanner:
    """Scans one guests directory; keep one instance for the daemon's life so
    that unchanged files are not read again."""

    def __init__(
        self,
        guests_dir: str,
        *,
        strict_permissions: bool = True,
        allowed_uids: Collection[int] | None = None,
    ) -> None:
        self.guests_dir = os.path.abspath(guests_dir)
        self.strict_permissions = strict_permissions
        self.allowed_uids = frozenset((0, os.geteuid()) if allowed_uids is None else allowed_uids)
        self._cache: dict[str, tuple[Fingerprint, Outcome]] = {}

    def scan(self) -> DesiredState:
        """One pass over the directory: valid guests, invalid files, duplicate
        names, or `error` when the directory itself cannot be used."""
        problem = self._directory_problem()
        if problem is not None:
            self._cache.clear()
            return DesiredState(error=problem)
        try:
            names = sorted(os.listdir(self.guests_dir))
        except OSError as e:
            self._cache.clear()
            return DesiredState(error=f"cannot read guests directory {self.guests_dir}: {_why(e)}")
        cache: dict[str, tuple[Fingerprint, Outcome]] = {}
        outcomes: list[Outcome] = []
        for name in filter(is_guest_file_name, names):
            path = os.path.join(self.guests_dir, name)
            outcome = self._scan_file(path, cache)
            if outcome is not None:
                outcomes.append(outcome)
        self._cache = cache
        return _desired_state(outcomes)

    # --- the directory ------------------------------------------------------------------

    def _directory_problem(self) -> str | None:
        where = f"guests directory {self.guests_dir}"
        try:
            st = os.stat(self.guests_dir)
        except FileNotFoundError:
            return f"{where} does not exist"
        except OSError as e:
            return f"cannot stat {where}: {_why(e)}"
        if not stat.S_ISDIR(st.st_mode):
            return f"{where} is not a directory"
        if self.strict_permissions:
            problem = self._permission_problem(st)
            if problem is not None:
                return f"{where} is unsafe: {problem}"
        return None

    def _permission_problem(self, st: os.stat_result) -> str | None:
        """Why a file or directory with stat `st` may not be trusted, or None."""
        if st.st_uid not in self.allowed_uids:
            allowed = " or ".join(_owner_name(uid) for uid in sorted(self.allowed_uids))
            return (
                f"owned by {_owner_name(st.st_uid)}, must be owned by {allowed} "
                f"(or set strict_permissions: false)"
            )
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return (
                f"mode {stat.S_IMODE(st.st_mode):04o} is writable by group or others "
                f"(chmod go-w, or set strict_permissions: false)"
            )
        return None

    # --- one file -----------------------------------------------------------------------

    def _scan_file(
        self, path: str, cache: dict[str, tuple[Fingerprint, Outcome]]
    ) -> Outcome | None:
        """The outcome for the entry at `path` (None: not a guest file, or gone),
        recording it in `cache` when it came from reading the file."""
        try:
            lst = os.lstat(path)
        except FileNotFoundError:
            return None
        except OSError as e:
            return InvalidFile(path, f"cannot stat: {_why(e)}")
        is_link = stat.S_ISLNK(lst.st_mode)
        if is_link:
            target = self._link_target(path)
            if isinstance(target, InvalidFile):
                return target
            st = target
        elif stat.S_ISREG(lst.st_mode):
            st = lst
        else:
            return None  # a sub-directory, FIFO, socket or device: not a guest file
        problem = self._file_permission_problem(path, st, is_link)
        if problem is not None:
            return InvalidFile(path, problem)
        cached = self._cache.get(path)
        if cached is not None and cached[0] == fingerprint(st):
            cache[path] = cached
            return cached[1]
        read = self._read(path, follow=is_link)
        if read is None or isinstance(read, InvalidFile):
            return read
        opened_st, data = read
        problem = self._file_permission_problem(path, opened_st, is_link)
        if problem is not None:  # the file was swapped between stat and open
            return InvalidFile(path, problem)
        outcome = parse_guest_file(path, data)
        cache[path] = (fingerprint(opened_st), outcome)
        return outcome

    def _link_target(self, path: str) -> os.stat_result | InvalidFile:
        """The stat of the symlink `path`'s target if it is a regular file, else
        an InvalidFile saying why not."""
        try:
            st = os.stat(path)
        except OSError as e:
            if e.errno == errno.ELOOP:
                return InvalidFile(path, "symlink loop (too many levels of symbolic links)")
            if e.errno == errno.ENOENT:
                return InvalidFile(path, f"dangling symlink to {_readlink(path)}")
            return InvalidFile(path, f"cannot follow symlink to {_readlink(path)}: {_why(e)}")
        if not stat.S_ISREG(st.st_mode):
            return InvalidFile(
                path,
                f"symlink to {os.path.realpath(path)}, which is not a regular file "
                f"({_file_kind(st.st_mode)})",
            )
        return st

    def _file_permission_problem(self, path: str, st: os.stat_result, is_link: bool) -> str | None:
        if not self.strict_permissions:
            return None
        problem = self._permission_problem(st)
        if not is_link:
            return None if problem is None else f"unsafe: {problem}"
        target = os.path.realpath(path)
        if problem is not None:
            return f"unsafe symlink target {target}: {problem}"
        target_dir = os.path.dirname(target)
        try:
            dir_problem = self._permission_problem(os.stat(target_dir))
        except OSError as e:
            return f"cannot stat the symlink target's directory {target_dir}: {_why(e)}"
        if dir_problem is not None:
            return f"unsafe directory {target_dir} of symlink target {target}: {dir_problem}"
        return None

    def _read(
        self, path: str, *, follow: bool
    ) -> tuple[os.stat_result, bytes] | InvalidFile | None:
        """The fstat and at most MAX_CFG_BYTES + 1 bytes of the file at `path`,
        an InvalidFile when it cannot be read, or None when it vanished."""
        flags = _OPEN_FLAGS | (0 if follow else getattr(os, "O_NOFOLLOW", 0))
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            return None
        except OSError as e:
            if not follow and e.errno in _NOFOLLOW_ERRNOS:
                return InvalidFile(path, "replaced by a symlink during the scan; next pass decides")
            if e.errno == errno.ELOOP:
                return InvalidFile(path, "symlink loop (too many levels of symbolic links)")
            return InvalidFile(path, f"unreadable: {_why(e)}")
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return InvalidFile(path, f"not a regular file ({_file_kind(st.st_mode)})")
            return st, _read_at_most(fd, MAX_CFG_BYTES + 1)
        except OSError as e:
            return InvalidFile(path, f"unreadable: {_why(e)}")
        finally:
            os.close(fd)


def parse_guest_file(path: str, data: bytes) -> Outcome:
    """The guest described by the bytes `data` of the file at `path`, or why it is invalid."""
    if len(data) > MAX_CFG_BYTES:
        return InvalidFile(path, "larger than 1 MiB")
    if not data:
        return InvalidFile(path, "empty file (no name)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line_start = data.rfind(b"\n", 0, e.start) + 1
        return InvalidFile(
            path,
            f"not UTF-8: invalid byte 0x{data[e.start]:02x} at byte offset {e.start}",
            line=data.count(b"\n", 0, e.start) + 1,
            column=e.start - line_start + 1,
        )
    try:
        name = xlcfg.guest_name(xlcfg.parse_cfg(text, path), path)
    except xlcfg.CfgError as e:
        return InvalidFile(path, e.message, line=e.line or None, column=e.column or None)
    return DesiredGuest(name=name, path=path, cfg_hash=hashlib.sha256(data).hexdigest())


def _desired_state(outcomes: list[Outcome]) -> DesiredState:
    """Valid guests with unique names, invalid files, and names carried by two or more files."""
    by_name: dict[str, list[DesiredGuest]] = {}
    invalid: list[InvalidFile] = []
    for outcome in outcomes:
        if isinstance(outcome, InvalidFile):
            invalid.append(outcome)
        else:
            by_name.setdefault(outcome.name, []).append(outcome)
    guests = tuple(group[0] for _name, group in sorted(by_name.items()) if len(group) == 1)
    duplicates = {
        name: tuple(sorted(guest.path for guest in group))
        for name, group in sorted(by_name.items())
        if len(group) > 1
    }
    return DesiredState(
        guests=guests,
        invalid=tuple(sorted(invalid, key=lambda item: item.path)),
        duplicates=duplicates,
    )


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks = []
    remaining = limit
    while remaining > 0:
        chunk = os.read(fd, min(remaining, 65536))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def _owner_name(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def _why(e: OSError) -> str:
    return e.strerror or str(e)
