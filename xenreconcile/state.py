"""The daemon's memory on disk (`state_dir/state.json`) and the daemon lock.

state.json holds only what differs from the defaults, with sorted keys, so a
diff of two versions reads well:

    {"version": 1, "boot_time": 1700000000.0, "last_create_at": null,
     "guests": {"web": {"attempts": 2, "next_retry": 1700000100.5}}}

Writes are atomic (temp file with a unique name in the same directory, fsync,
rename, fsync of the directory), and every successful save also writes the
same text to `state.json.prev`, the last good copy.

Holds and migrated marks fail closed. A damaged file is decoded field by
field: what can be read is kept, a bad field or guest entry loses only itself,
and a name whose hold or migrated mark was lost is marked *uncertain* (the
planner creates no uncertain guest until an admin decides). A file that cannot
be read at all is replaced by the last good copy and every name is uncertain.
The damaged file is moved aside. A file of a newer format version is never
rewritten: the store turns read-only and every name is uncertain.

state_dir and every directory on the way to it must be owned by root (or the
daemon's uid) and not writable by group or others; files in it are opened
without following symlinks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import math
import os
import re
import stat
import subprocess
import sys
import tempfile
import time
import types
import typing
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from xenreconcile import trust
from xenreconcile.errors import SetupError, XenreconcileError
from xenreconcile.models import GuestMemory, Memory

STATE_FILE = "state.json"
PREV_FILE = "state.json.prev"  # the last good copy: the text of the last successful save
LOCK_FILE = "lock"
TEMP_PREFIX, TEMP_SUFFIX = ".state.json.", ".tmp"  # save()'s temp files
TEMP_PREFIXES = (TEMP_PREFIX, ".status.json.")  # every temp file the lock holder writes
FORMAT_VERSION = 1
MAX_STATE_BYTES = 64 * 1024 * 1024
MAX_COUNT = 10**9  # the largest failure count a state file may hold
MAX_INT_DIGITS = 20  # longer integer literals are damage (and Python refuses > 4300)

_GUEST_FIELDS = {f.name: f for f in dataclasses.fields(GuestMemory)}
_GUEST_TYPES = typing.get_type_hints(GuestMemory)
_DEFAULT_GUEST = GuestMemory()
# Fields whose loss could let a guest start that must not: a bad value of one of
# them makes the name uncertain instead of just losing the field.
FAIL_CLOSED_FIELDS = frozenset({"held", "migrated", "migrating_away", "uncertain", "stopped"})


class CorruptStateError(XenreconcileError, ValueError):
    """The state file is not JSON of the expected shape."""


class StateLockedError(XenreconcileError, OSError):
    """Another process (a running daemon) holds the state lock."""


class StateDirError(SetupError, OSError):
    """state_dir, or a directory on the way to it, is not one only root controls
    (a set-up error: restarting cannot mend it)."""


class UnsafeFileError(XenreconcileError, OSError):
    """A file in state_dir is a symlink, not a regular file, or not ours."""

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


class StateReadOnlyError(XenreconcileError, OSError):
    """The state file is of a newer format version; it is never rewritten."""


def trusted_uids() -> frozenset[int]:
    """The owners a file or directory the daemon trusts may have: root and us."""
    return frozenset({0, os.geteuid()})


# --- trusted paths ------------------------------------------------------------------------------


def unsafe_path_problem(path: str, uids: Collection[int]) -> str | None:
    """Given a directory path and the trusted owners, walk it from `/`, resolving
    symlinks one at a time (`trust.resolve`), and return a sentence naming the
    first symlink or directory that someone else could change (see `trust`; a
    root-owned sticky directory such as /tmp is accepted on the way, not as the
    directory itself); None when all is well. A missing tail is fine: it is
    created 0700."""
    target = os.path.abspath(path)
    existing = target
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    try:
        steps = trust.resolve(existing)
    except FileNotFoundError:  # a dangling symlink on the way: nothing to create through
        return f"{path}: leads through a symlink to nothing"
    except OSError as e:
        return f"{path}: {e.strerror}"
    last = len(steps) - 1
    for index, step in enumerate(steps):
        if step.is_link:
            if step.st.st_uid not in uids:
                return f"symlink {step.path} {trust.owner_problem(step.st, uids)} (chown -h it)"
            continue
        final = index == last and existing == target
        problem = _dir_problem(step.path, step.st, uids, last=final)
        if problem is not None:
            return problem
    return None


def _dir_problem(path: str, st: os.stat_result, uids: Collection[int], *, last: bool) -> str | None:
    """Why the directory `path` with status `st` cannot be trusted, or None."""
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a directory"
    if st.st_uid not in uids:
        allowed = " or ".join(f"uid {uid}" for uid in sorted(uids))
        return f"{path} is owned by uid {st.st_uid}, must be owned by {allowed} (chown it)"
    mode = stat.S_IMODE(st.st_mode)
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        if not last and st.st_uid == 0 and mode & stat.S_ISVTX:
            return None
        return f"{path} has mode {mode:04o}: writable by group or others (chmod go-w it)"
    return None


def open_private(path: str, flags: int, uids: Collection[int], mode: int = 0o600) -> int:
    """Open `path` with `flags` without following a symlink and return the fd;
    raises UnsafeFileError when it is a symlink, not a regular file or owned by
    an untrusted uid, IsADirectoryError for a directory, OSError otherwise."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode)
    except OSError as e:
        # Linux says ELOOP for O_NOFOLLOW on a symlink, FreeBSD EMLINK.
        if e.errno in (errno.ELOOP, errno.EMLINK):
            raise UnsafeFileError(e.errno, "is a symlink: not followed", path) from None
        raise
    try:
        _check_private(fd, path, uids)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_private(fd: int, path: str, uids: Collection[int]) -> None:
    st = os.fstat(fd)
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory", path)
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeFileError(errno.EINVAL, "is not a regular file", path)
    if st.st_uid not in uids:
        raise UnsafeFileError(errno.EPERM, f"is owned by uid {st.st_uid}: not trusted", path)


def read_private(path: str, uids: Collection[int], limit: int) -> bytes:
    """The bytes of the file `path` (see `open_private`); raises UnsafeFileError
    also when it is larger than `limit`."""
    fd = open_private(path, os.O_RDONLY, uids)
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise UnsafeFileError(errno.EFBIG, f"is larger than {limit} bytes", path)
    return data


def write_atomically(directory: str, name: str, text: str, *, durable: bool) -> None:
    """Replace `directory/name` by `text`: a temp file with a unique name (never
    following a planted symlink), fsync'd when `durable`, renamed over the old one."""
    fd, temp = tempfile.mkstemp(prefix=f".{name}.", suffix=TEMP_SUFFIX, dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(temp, os.path.join(directory, name))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


# --- the store ----------------------------------------------------------------------------------


class StateStore:
    """Loads and saves `Memory` in `state_dir/state.json` and holds the daemon
    lock `state_dir/lock`."""

    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, STATE_FILE)
        self.prev_path = os.path.join(state_dir, PREV_FILE)
        self.lock_path = os.path.join(state_dir, LOCK_FILE)
        self.uids = trusted_uids()
        # Set by load() when the file is of a newer format: why nothing is saved.
        self.read_only: str | None = None
        self._last_text: str | None = None
        self._lock_fd: int | None = None

    # --- memory ---------------------------------------------------------------------------

    def load(self, *, repair: bool = True) -> tuple[Memory, str | None]:
        """The remembered Memory and a warning for the log (None if all is well).
        A missing file gives an empty Memory. A damaged one gives what could be
        read (see the module docstring) and, with `repair`, is moved aside to
        `state.json.corrupt-<UTC time>`; without `repair` nothing on disk changes.
        Raises StateDirError for an unsafe state_dir, OSError when the file
        exists but cannot be read (it is left alone then)."""
        self._check_dir()
        self.read_only = None
        self._last_text = None
        found = self._decode_main()
        if found is None:
            return Memory(), None
        if found.newer_version is not None:
            self.read_only = self._newer_message(found.newer_version)
            return Memory(uncertain=self.read_only), self.read_only
        if not found.problems:
            self._last_text = encode_memory(found.memory)
            return found.memory, None
        memory, recovered = found.memory, "kept everything else"
        if found.unreadable:
            memory, recovered = self._recover()
            memory = doubt_everything(memory, f"{STATE_FILE} was unreadable ({found.problems[0]})")
        moved = self._move_aside() if repair and os.path.lexists(self.path) else None
        return memory, _damage_warning(self.path, found, moved, recovered, memory)

    def save(self, memory: Memory) -> bool:
        """Write `memory` atomically (and as the last good copy) unless it equals
        what was last loaded or saved; True if the file was written. Raises
        StateReadOnlyError after loading a newer format, StateDirError for an
        unsafe state_dir, OSError (read-only or full disk): the caller logs it
        and goes on, and the next save tries again."""
        if self.read_only is not None:
            raise StateReadOnlyError(self.read_only)
        text = encode_memory(memory)
        if text == self._last_text:
            return False
        self._prepare_dir()
        write_atomically(self.state_dir, STATE_FILE, text, durable=True)
        write_atomically(self.state_dir, PREV_FILE, text, durable=True)
        self._fsync_dir()
        self._last_text = text
        return True

    def _decode_main(self) -> Decoded | None:
        """What state.json holds; None when neither it nor its last good copy
        exists. A missing state.json whose copy is there counts as unreadable
        (our saves never remove it), unless the copy is of a newer format."""
        found = self._decode_file(self.path)
        if found is not None:
            return found
        prev = self._decode_file(self.prev_path)
        if prev is None or prev.newer_version is not None:
            return prev
        return _unreadable(f"{STATE_FILE} is missing but {PREV_FILE} is there")

    def _decode_file(self, path: str) -> Decoded | None:
        """What the state file `path` holds, or None when it does not exist."""
        try:
            data = read_private(path, self.uids, MAX_STATE_BYTES)
        except FileNotFoundError:
            return None
        except UnsafeFileError as e:
            return _unreadable(f"{os.path.basename(path)} {e.strerror}")
        return decode_state(data)

    def _recover(self) -> tuple[Memory, str]:
        """The memory of the last good copy, and a note saying where it came from."""
        try:
            prev = self._decode_file(self.prev_path)
        except OSError as e:
            return Memory(), f"the last good copy {self.prev_path} is unreadable ({e.strerror})"
        if prev is None or prev.unreadable or prev.newer_version is not None:
            return Memory(), f"no usable last good copy ({self.prev_path})"
        return prev.memory, f"recovered the last good copy {self.prev_path}"

    def _newer_message(self, version: int) -> str:
        return (
            f"state file {self.path} is format version {version}, newer than this "
            f"xenreconcile understands ({FORMAT_VERSION}): it is left untouched, nothing is "
            "saved and no guest is created; run the newer xenreconcile, or move "
            f"{STATE_FILE} and {PREV_FILE} away to start over"
        )

    def _move_aside(self) -> str | None:
        """Rename the damaged state file to `state.json.corrupt-<UTC time>`; the
        new name, or None (with the reason) when that failed."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = f"{self.path}.corrupt-{stamp}"
        suffix = 1
        while os.path.lexists(target):
            suffix += 1
            target = f"{self.path}.corrupt-{stamp}.{suffix}"
        try:
            os.rename(self.path, target)
        except OSError as e:
            return f"could not be moved aside ({e.strerror})"
        return f"moved aside to {target}"

    def _check_dir(self) -> None:
        """Raise StateDirError unless state_dir (where it exists) is safe."""
        problem = unsafe_path_problem(self.state_dir, self.uids)
        if problem is not None:
            raise StateDirError(f"state_dir {self.state_dir} is unsafe: {problem}")

    def _prepare_dir(self) -> None:
        """Check state_dir and create it (mode 0700) when missing."""
        self._check_dir()
        if not os.path.isdir(self.state_dir):
            os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
            self._check_dir()

    def _fsync_dir(self) -> None:
        dir_fd = os.open(self.state_dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(dir_fd)
        except OSError as e:
            # Some file systems refuse fsync on a directory; the rename is done anyway.
            if e.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
                raise
        finally:
            os.close(dir_fd)

    # --- the daemon lock --------------------------------------------------------------------

    def try_lock(self) -> bool:
        """Take the exclusive daemon lock without waiting and write our pid in the
        lock file; False if another process holds it. Creates state_dir if needed;
        raises StateDirError or UnsafeFileError when it or the lock file is unsafe."""
        if self._lock_fd is not None:
            return True
        self._prepare_dir()
        fd = open_private(self.lock_path, os.O_RDWR | os.O_CREAT, self.uids)
        try:
            if os.fstat(fd).st_nlink != 1:  # never truncate a file linked from elsewhere
                raise UnsafeFileError(errno.EMLINK, "has other hard links", self.lock_path)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        self._remove_stale_temp_files()
        return True

    def _remove_stale_temp_files(self) -> None:
        """Delete temp files a killed writer left behind (only the lock holder
        writes, so under the lock none of them is being written)."""
        with contextlib.suppress(OSError):
            for name in os.listdir(self.state_dir):
                if name.startswith(TEMP_PREFIXES) and name.endswith(TEMP_SUFFIX):
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(self.state_dir, name))

    def unlock(self) -> None:
        """Release the daemon lock if this store holds it."""
        if self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            os.close(fd)

    @contextlib.contextmanager
    def lock(self) -> Iterator[StateStore]:
        """Hold the daemon lock for the `with` block; raises StateLockedError
        (naming the holder's pid when known) if another process holds it."""
        if not self.try_lock():
            holder = self.lock_holder()
            who = f" (pid {holder})" if holder else ""
            raise StateLockedError(
                errno.EWOULDBLOCK, f"another xenreconcile daemon{who} holds", self.lock_path
            )
        try:
            yield self
        finally:
            self.unlock()

    @property
    def locked_by_us(self) -> bool:
        """True while this store holds the daemon lock."""
        return self._lock_fd is not None

    def lock_holder(self) -> int | None:
        """The pid of the process holding the daemon lock, or None when no process
        holds it (no daemon runs) or it cannot be told."""
        try:
            fd = open_private(self.lock_path, os.O_RDONLY, self.uids)
        except OSError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _read_pid(fd)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def daemon_running(self) -> bool:
        """True if some process (a daemon, or this store itself) holds the lock."""
        if self._lock_fd is not None:
            return True
        try:
            fd = open_private(self.lock_path, os.O_RDONLY, self.uids)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


def doubt_everything(memory: Memory, reason: str) -> Memory:
    """`memory` with every name uncertain for `reason`: each remembered guest, and
    (through `Memory.uncertain`) every name not remembered."""
    guests = {
        name: gm if gm.uncertain is not None else replace(gm, uncertain=reason)
        for name, gm in memory.guests.items()
    }
    return replace(
        memory, guests=guests, uncertain=reason if memory.uncertain is None else memory.uncertain
    )


def uncertain_names(memory: Memory) -> list[str]:
    """The remembered names whose hold or migrated mark may have been lost."""
    return sorted(name for name, gm in memory.guests.items() if gm.uncertain is not None)


def _damage_warning(
    path: str, found: Decoded, moved: str | None, recovered: str, memory: Memory
) -> str:
    """The log line for a damaged state file."""
    shown = list(found.problems[:5])
    if len(found.problems) > len(shown):
        shown.append(f"and {len(found.problems) - len(shown)} more")
    names = uncertain_names(memory)
    if memory.uncertain is not None:
        doubt = "every guest is uncertain"
    elif names:
        doubt = "uncertain: " + ", ".join(names)
    else:
        doubt = "no hold or migrated mark was lost"
    aside = f"; {moved}" if moved else ""
    return f"state file {path} is corrupt ({'; '.join(shown)}){aside}; {recovered}; {doubt}"


# --- the JSON format --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decoded:
    """What a state file holds: the memory that could be read (damaged parts left
    out, names whose hold or migrated mark was lost marked uncertain), the
    problems found (each names its key), whether the file was unreadable as a
    whole, and the version of a file of a newer format (then nothing was read)."""

    memory: Memory
    problems: tuple[str, ...] = ()
    unreadable: bool = False
    newer_version: int | None = None


class _HugeInt:
    """An integer literal too long to be anything but damage."""

    def __init__(self, digits: int) -> None:
        self.digits = digits


class _BadValue(XenreconcileError):
    """A field's value does not fit; the message says what was expected."""


def _unreadable(problem: str) -> Decoded:
    return Decoded(Memory(), (problem,), unreadable=True)


def encode_memory(memory: Memory) -> str:
    """`memory` as the text of state.json: non-default guest fields, sorted keys."""
    guests = {name: _encode_guest(guest) for name, guest in memory.guests.items()}
    document: dict[str, Any] = {
        "version": FORMAT_VERSION,
        "boot_time": memory.boot_time,
        "last_create_at": memory.last_create_at,
        "guests": guests,
    }
    # Written only when known, so a state without them reads as it always did.
    for key in ("boot_id", "saved_uptime"):
        if getattr(memory, key) is not None:
            document[key] = getattr(memory, key)
    if memory.uncertain is not None:
        document["uncertain"] = memory.uncertain
    return json.dumps(document, sort_keys=True, indent=2, allow_nan=False) + "\n"


def _encode_guest(guest: GuestMemory) -> dict[str, Any]:
    return {
        name: getattr(guest, name)
        for name in _GUEST_FIELDS
        if getattr(guest, name) != getattr(_DEFAULT_GUEST, name)
    }


def decode_memory(data: bytes) -> Memory:
    """The Memory in the bytes of a sound state.json; unknown fields are ignored.
    Raises CorruptStateError naming what is wrong (see `decode_state` for the
    decoder that keeps what can be read)."""
    found = decode_state(data)
    if found.newer_version is not None:
        raise CorruptStateError(f"format version {found.newer_version} is newer than mine")
    if found.problems:
        raise CorruptStateError("; ".join(found.problems))
    return found.memory


def decode_state(data: bytes) -> Decoded:
    """Decode the bytes of a state.json field by field; never raises. Unknown
    fields are ignored."""
    try:
        document = json.loads(data.decode("utf-8"), parse_int=_parse_int)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        return _unreadable(f"not JSON: {e}")
    if not isinstance(document, dict):
        return _unreadable("the top level is not an object")
    version = document.get("version")
    if type(version) is not int or version < 1:
        return _unreadable(f"bad version {_show(version)}")
    if version > FORMAT_VERSION:
        return Decoded(Memory(), newer_version=version)
    problems: list[str] = []
    guests, lost = _decode_guests(document.get("guests", {}), problems)
    top = {
        key: _field(key, document.get(key), hint, problems)
        for key, hint in (
            ("last_create_at", float | None),
            ("boot_time", float | None),
            ("boot_id", str | None),
            ("saved_uptime", float | None),
        )
    }
    before = len(problems)
    uncertain = _field("uncertain", document.get("uncertain"), str | None, problems)
    if len(problems) > before:  # an unreadable doubt is a doubt
        uncertain = problems[-1]
    memory = Memory(guests=guests, uncertain=lost if uncertain is None else uncertain, **top)
    return Decoded(memory, tuple(problems))


def _parse_int(text: str) -> int | _HugeInt:
    digits = len(text.lstrip("-"))
    return _HugeInt(digits) if digits > MAX_INT_DIGITS else int(text)


def _decode_guests(value: object, problems: list[str]) -> tuple[dict[str, GuestMemory], str | None]:
    """The guest entries that can be read, and the reason every name is uncertain
    (None unless the entries, or the name of one, cannot be read)."""
    if not isinstance(value, dict):
        problem = f"guests is not an object: {_show(value)}"
        problems.append(problem)
        return {}, problem
    guests: dict[str, GuestMemory] = {}
    lost: str | None = None
    for name, fields in value.items():
        if not _is_text(name) or not name:
            problem = f"guests has an entry whose name cannot be used: {_show(name)}"
            problems.append(problem)
            lost = lost or problem
            continue
        guests[name] = _decode_guest(name, fields, problems)
    return guests, lost


def _decode_guest(name: str, fields: object, problems: list[str]) -> GuestMemory:
    """The readable fields of one guest entry; uncertain when a field that can
    keep it from starting (FAIL_CLOSED_FIELDS), or the entry itself, is damaged."""
    where = f"guests.{name}"
    if not isinstance(fields, dict):
        problem = f"{where} is not an object: {_show(fields)}"
        problems.append(problem)
        return GuestMemory(uncertain=problem)
    known: dict[str, Any] = {}
    doubt: str | None = None
    for key, value in fields.items():
        if key not in _GUEST_FIELDS:
            continue
        before = len(problems)
        checked = _field(f"{where}.{key}", value, _GUEST_TYPES[key], problems)
        if len(problems) == before:
            known[key] = checked
        elif key in FAIL_CLOSED_FIELDS:
            doubt = doubt or problems[-1]
    if doubt is not None:
        known["uncertain"] = doubt
    return GuestMemory(**known)


def _field(where: str, value: object, hint: Any, problems: list[str]) -> Any:
    """`value` checked against `hint`, or None with the problem appended."""
    try:
        return _checked(value, hint)
    except _BadValue as e:
        problems.append(f"{where} {e}: {_show(value)}")
        return None


def _checked(value: object, hint: Any) -> Any:
    """`value` if it fits the type `hint` (bool, int, float, str, or X | None):
    an int is a count from 0 to MAX_COUNT, a float a finite number (an int is
    accepted and converted), a str valid Unicode. Raises _BadValue."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    for kind in allowed:
        if kind is bool and type(value) is bool:
            return value
        if kind is int and type(value) is int and 0 <= value <= MAX_COUNT:
            return value
        if kind is float and type(value) in (int, float) and math.isfinite(value):  # type: ignore[arg-type]
            return float(value)  # type: ignore[arg-type]
        if kind is str and isinstance(value, str) and _is_text(value):
            return value
    raise _BadValue(f"is not {_expected(allowed)}")


_EXPECTED = {
    bool: "true or false",
    int: f"a count from 0 to {MAX_COUNT}",
    float: "a finite number",
    str: "a string",
    type(None): "null",
}


def _expected(allowed: tuple[Any, ...]) -> str:
    return " or ".join(_EXPECTED.get(kind, str(kind)) for kind in allowed)


def _is_text(value: str) -> bool:
    """True for a string that can be written as UTF-8 (no lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _show(value: object) -> str:
    """A short rendering of a JSON value for an error message."""
    if isinstance(value, _HugeInt):
        return f"an integer of {value.digits} digits"
    try:
        text = json.dumps(value, default=lambda v: "...")
    except (ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- which Dom0 boot this is ---------------------------------------------------------------

BOOT_FILE_ENV = "XENRECONCILE_BOOT_FILE"
LINUX_BOOT_ID = "/proc/sys/kernel/random/boot_id"
BOOT_TIME_TOLERANCE = 1.0  # kern.boottime and btime wobble by up to a second
_KERN_BOOTTIME = re.compile(r"sec\s*=\s*(\d+)\s*,\s*usec\s*=\s*(\d+)")
_LINUX_BOOT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclasses.dataclass(frozen=True, slots=True)
class Boot:
    """What tells one Dom0 boot from another, each part None when unknown:
    `boot_id`, chosen at random by the kernel once per boot; `boot_time` in epoch
    seconds, which the kernel moves when the wall clock steps; `uptime`, seconds
    since boot, which a clock step does not move."""

    boot_id: str | None = None
    boot_time: float | None = None
    uptime: float | None = None

    @property
    def known(self) -> bool:
        """True when there is something to compare another boot with."""
        return self.boot_id is not None or self.boot_time is not None


def saved_boot(memory: Memory) -> Boot:
    """The boot a saved memory belongs to (uptime: when it was saved)."""
    return Boot(memory.boot_id, memory.boot_time, memory.saved_uptime)


def same_boot(saved: Boot, current: Boot) -> bool | None:
    """Given the boot of the saved state and the running one, True if they are
    the same boot, False if Dom0 rebooted in between, None if it cannot be told.

    Both boot ids known: they decide. Otherwise boot time and uptime: an uptime
    below the saved one is a new boot; a boot time later than the moment of the
    save (saved boot time + saved uptime) is a new boot; anything else, a boot
    time earlier than the saved one included, is a clock step within the same
    boot."""
    if not saved.known or not current.known:
        return None
    if saved.boot_id is not None and current.boot_id is not None:
        return saved.boot_id == current.boot_id
    if saved.uptime is not None and current.uptime is not None and current.uptime < saved.uptime:
        return False
    if saved.boot_time is None or current.boot_time is None:
        return None
    saved_at = saved.boot_time + (saved.uptime or 0.0)
    return current.boot_time <= saved_at + BOOT_TIME_TOLERANCE


def read_boot(env: Mapping[str, str] = os.environ) -> Boot:
    """The running Dom0 boot: the file named by $XENRECONCILE_BOOT_FILE if set
    (tests, the simulated xl), else Linux /proc/sys/kernel/random/boot_id and
    /proc/stat `btime`, or FreeBSD `kern.boot_id` (13 and later) and
    `kern.boottime`; the parts that cannot be read are None."""
    override = env.get(BOOT_FILE_ENV)
    if override:
        return read_boot_file(override)
    platform: str = sys.platform  # a plain str, so mypy checks both branches
    if platform.startswith("linux"):
        return Boot(_linux_boot_id(), _linux_boot_time(), _uptime("CLOCK_BOOTTIME"))
    if "bsd" in platform:
        return Boot(_bsd_boot_id(), _bsd_boot_time(), _uptime("CLOCK_UPTIME"))
    return Boot()


def read_boot_file(path: str, now: float | None = None) -> Boot:
    """The boot described by the file at `path` (`parse_boot_file`), with the
    uptime since its boot time at `now` (default: the wall clock); an unreadable
    file describes an unknown boot."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError):
        return Boot()
    return parse_boot_file(text, time.time() if now is None else now)


def parse_boot_file(text: str, now: float) -> Boot:
    """The boot in the text of a boot file: `boot_id ID` and `btime EPOCH` lines
    (what the simulated xl writes); the uptime is the time from btime to `now`."""
    fields = dict(line.split(None, 1) for line in text.splitlines() if len(line.split()) == 2)
    boot_id = fields.get("boot_id")
    try:
        boot_time: float | None = float(fields["btime"])
    except (KeyError, ValueError):
        boot_time = None
    uptime = None if boot_time is None else max(0.0, now - boot_time)
    return Boot(boot_id, boot_time, uptime)


def _uptime(clock_name: str) -> float | None:
    """Seconds since boot from the named clock of the `time` module, if it has it."""
    clock_id = getattr(time, clock_name, None)
    if clock_id is None:
        return None
    try:
        return time.clock_gettime(clock_id)
    except OSError:
        return None


def _linux_boot_id() -> str | None:
    try:
        with open(LINUX_BOOT_ID, encoding="ascii") as f:
            return parse_linux_boot_id(f.read())
    except (OSError, UnicodeDecodeError):
        return None


def parse_linux_boot_id(text: str) -> str | None:
    """The UUID in /proc/sys/kernel/random/boot_id, or None."""
    value = text.strip().lower()
    return value if _LINUX_BOOT_ID.fullmatch(value) else None


def _linux_boot_time() -> float | None:
    try:
        with open("/proc/stat", encoding="ascii", errors="replace") as f:
            return parse_proc_stat_btime(f.read())
    except OSError:
        return None


def parse_proc_stat_btime(text: str) -> float | None:
    """The `btime` of a /proc/stat text, or None."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "btime" and parts[1].isdigit():
            return float(parts[1])
    return None


def _sysctl(*args: str) -> bytes | None:
    """The output of `sysctl ARGS`, or None when it fails."""
    try:
        done = subprocess.run(["sysctl", *args], capture_output=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _bsd_boot_id() -> str | None:
    # `-b`: the raw value; kern.boot_id is opaque bytes that plain -n does not print.
    out = _sysctl("-b", "kern.boot_id")
    return None if out is None else parse_kern_boot_id(out)


def parse_kern_boot_id(data: bytes) -> str | None:
    """The `sysctl -b kern.boot_id` bytes as hex, or None for no (or an all-zero) id."""
    return data.hex() if data.strip(b"\0") else None


def _bsd_boot_time() -> float | None:
    out = _sysctl("-n", "kern.boottime")
    return None if out is None else parse_kern_boottime(out.decode("ascii", "replace"))


def parse_kern_boottime(text: str) -> float | None:
    """The time in `sysctl -n kern.boottime` output
    (`{ sec = 1700000000, usec = 250000 } Tue Nov 14 ...`), or None."""
    match = _KERN_BOOTTIME.search(text)
    if match is None:
        return None
    return int(match.group(1)) + int(match.group(2)) / 1_000_000
