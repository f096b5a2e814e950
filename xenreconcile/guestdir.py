"""The guests directory -> DesiredState.

A guest file is a regular file, or a symlink to one, directly in the directory,
named `*.cfg` and not starting with `.`; every other entry is ignored silently.
A symlink named `*.cfg` whose target is not a regular file (a device, a FIFO, a
loop, nothing) is reported invalid, since the admin put it there on purpose.

Files are opened non-blocking (a FIFO that slipped in never hangs a pass), then
checked with fstat to be regular, and read up to 1 MiB.

Permissions (when strict): the directory and every file must be owned by an
allowed uid (root or the daemon's own) and not writable by group or others, and
so must everything on the way to them (see `trust`): each ancestor of the
directory and, for a symlink, every directory and symlink it resolves through
(a sticky directory owned by root, like /tmp, may stand on the way). The file
is then opened without following a symlink at the path so resolved, and must be
the very inode that was checked.

The bytes read are what counts: `checked_bytes` hands them out, so that `xl
create` reads exactly them and never opens the path again.

An unchanged file (same device, inode, size, mtime, ctime, mode, owner) is not
read or parsed again: its previous result is reused. Permission checks run on
every pass.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Collection
from typing import TypeAlias

from xenreconcile import trust, xlcfg
from xenreconcile.models import DesiredGuest, DesiredState, InvalidFile

MAX_CFG_BYTES = 1024 * 1024
CFG_SUFFIX = ".cfg"

Fingerprint: TypeAlias = tuple[int, int, int, int, int, int, int]
ScannedFile: TypeAlias = DesiredGuest | InvalidFile
# A file's fingerprint, what its content gave, and the content of a valid guest.
CacheEntry: TypeAlias = tuple[Fingerprint, ScannedFile, bytes | None]
STRICT_HINT = "(or set strict_permissions: false)"

_OPEN_FLAGS = (
    os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
)
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
        self.allowed_uids = frozenset(
            trust.allowed_uids() if allowed_uids is None else allowed_uids
        )
        self._cache: dict[str, CacheEntry] = {}

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
        cache: dict[str, CacheEntry] = {}
        scanned: list[ScannedFile] = []
        for name in filter(is_guest_file_name, names):
            path = os.path.join(self.guests_dir, name)
            outcome = self._scan_file(path, cache)
            if outcome is not None:
                scanned.append(outcome)
        self._cache = cache
        return _desired_state(scanned)

    def checked_bytes(self, path: str, cfg_hash: str) -> bytes | None:
        """The bytes the last scan read and checked for the guest file `path`, if
        they hash to `cfg_hash`; None when that scan has no such content."""
        entry = self._cache.get(path)
        if entry is None:
            return None
        _fingerprint, outcome, data = entry
        if not isinstance(outcome, DesiredGuest) or outcome.cfg_hash != cfg_hash:
            return None
        return data

    # --- the directory ------------------------------------------------------------------

    def _directory_problem(self) -> str | None:
        where = f"guests directory {self.guests_dir}"
        try:
            steps = trust.resolve(self.guests_dir)
        except FileNotFoundError:
            return f"{where} does not exist"
        except OSError as e:
            return f"cannot stat {where}: {_why(e)}"
        if not stat.S_ISDIR(steps[-1].st.st_mode):
            return f"{where} is not a directory"
        if self.strict_permissions:
            passage = trust.passage_problem(steps, self.allowed_uids)
            if passage is not None:
                return f"{where} is unsafe: on the way to it, {passage} {STRICT_HINT}"
            problem = self._permission_problem(steps[-1].st)
            if problem is not None:
                return f"{where} is unsafe: {problem}"
        return None

    def _permission_problem(self, st: os.stat_result) -> str | None:
        """Why a file or directory with stat `st` may not be trusted, or None."""
        owner = trust.owner_problem(st, self.allowed_uids)
        if owner is not None:
            return f"{owner} {STRICT_HINT}"
        mode = trust.mode_problem(st)
        if mode is not None:
            return f"{mode} (chmod go-w, or set strict_permissions: false)"
        return None

    # --- one file -----------------------------------------------------------------------

    def _scan_file(self, path: str, cache: dict[str, CacheEntry]) -> ScannedFile | None:
        """The outcome for the entry at `path` (None: not a guest file, or gone),
        recording it in `cache` when it came from reading the file."""
        try:
            lst = os.lstat(path)
        except FileNotFoundError:
            return None
        except OSError as e:
            return InvalidFile(path, f"cannot stat: {_why(e)}")
        if stat.S_ISLNK(lst.st_mode):
            followed = self._follow_link(path)
            if isinstance(followed, InvalidFile):
                return followed
            real, st = followed
        elif stat.S_ISREG(lst.st_mode):
            real, st = path, lst
        else:
            return None  # a sub-directory, FIFO, socket or device: not a guest file
        problem = self._file_permission_problem(path, real, st)
        if problem is not None:
            return InvalidFile(path, problem)
        cached = self._cache.get(path)
        if cached is not None and cached[0] == fingerprint(st):
            cache[path] = cached
            return cached[1]
        read = self._read(real)
        if read is None or isinstance(read, InvalidFile):
            return None if read is None else InvalidFile(path, read.reason)
        opened_st, data = read
        if (opened_st.st_dev, opened_st.st_ino) != (st.st_dev, st.st_ino):
            return InvalidFile(path, "replaced during the scan; next pass decides")
        problem = self._file_permission_problem(path, real, opened_st)
        if problem is not None:  # its mode or owner changed between stat and open
            return InvalidFile(path, problem)
        outcome = parse_guest_file(path, data)
        cache[path] = (
            fingerprint(opened_st),
            outcome,
            data if isinstance(outcome, DesiredGuest) else None,
        )
        return outcome

    def _follow_link(self, path: str) -> tuple[str, os.stat_result] | InvalidFile:
        """The path (free of symlinks) and stat of the regular file the symlink
        `path` leads to, or an InvalidFile saying why it leads nowhere usable or
        through a component someone else controls."""
        try:
            steps = trust.resolve(path)
        except OSError as e:
            if e.errno == errno.ELOOP:
                return InvalidFile(path, "symlink loop (too many levels of symbolic links)")
            if e.errno == errno.ENOENT:
                return InvalidFile(path, f"dangling symlink to {_readlink(path)}")
            return InvalidFile(path, f"cannot follow symlink to {_readlink(path)}: {_why(e)}")
        target = steps[-1]
        if not stat.S_ISREG(target.st.st_mode):
            return InvalidFile(
                path,
                f"symlink to {target.path}, which is not a regular file "
                f"({_file_kind(target.st.st_mode)})",
            )
        if self.strict_permissions:
            passage = trust.passage_problem(steps, self.allowed_uids)
            if passage is not None:
                return InvalidFile(
                    path,
                    f"unsafe {passage}, on the way to symlink target {target.path} {STRICT_HINT}",
                )
        return target.path, target.st

    def _file_permission_problem(self, path: str, real: str, st: os.stat_result) -> str | None:
        """Why the guest file `path` (the regular file `real`, with stat `st`) may
        not be trusted, or None."""
        if not self.strict_permissions:
            return None
        problem = self._permission_problem(st)
        if problem is None:
            return None
        if real == path:
            return f"unsafe: {problem}"
        return f"unsafe symlink target {real}: {problem}"

    def _read(self, path: str) -> tuple[os.stat_result, bytes] | InvalidFile | None:
        """The fstat and at most MAX_CFG_BYTES + 1 bytes of the regular file at
        `path` (not following a final symlink), an InvalidFile when it cannot be
        read, or None when it vanished."""
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno in _NOFOLLOW_ERRNOS:
                return InvalidFile(path, "replaced by a symlink during the scan; next pass decides")
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


def parse_guest_file(path: str, data: bytes) -> ScannedFile:
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


def _desired_state(scanned: list[ScannedFile]) -> DesiredState:
    """Valid guests with unique names, invalid files, and names carried by two or more files."""
    by_name: dict[str, list[DesiredGuest]] = {}
    invalid: list[InvalidFile] = []
    for outcome in scanned:
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


def _why(e: OSError) -> str:
    return e.strerror or str(e)
