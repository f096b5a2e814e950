"""The daemon's memory on disk (`state_dir/state.json`) and the daemon lock.

state.json holds only what differs from the defaults, with sorted keys, so a
diff of two versions reads well:

    {"version": 1, "boot_time": 1700000000.0, "last_create_at": null,
     "guests": {"web": {"attempts": 2, "next_retry": 1700000100.5}}}

Writes are atomic (temp file in the same directory, fsync, rename, fsync of the
directory). A file that cannot be understood is moved aside, never fatal.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any

from xenreconcile.models import GuestMemory, Memory

STATE_FILE = "state.json"
LOCK_FILE = "lock"
TEMP_PREFIX, TEMP_SUFFIX = ".state.json.", ".tmp"  # save()'s temp files
FORMAT_VERSION = 1

_GUEST_FIELDS = {f.name: f for f in dataclasses.fields(GuestMemory)}
_GUEST_TYPES = typing.get_type_hints(GuestMemory)
_DEFAULT_GUEST = GuestMemory()


class CorruptStateError(ValueError):
    """The state file is not JSON of the expected shape."""


class StateLockedError(OSError):
    """Another process (a running daemon) holds the state lock."""


class StateStore:
    """Loads and saves `Memory` in `state_dir/state.json` and holds the daemon
    lock `state_dir/lock`."""

    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, STATE_FILE)
        self.lock_path = os.path.join(state_dir, LOCK_FILE)
        self._last_text: str | None = None
        self._lock_fd: int | None = None

    # --- memory ---------------------------------------------------------------------------

    def load(self) -> tuple[Memory, str | None]:
        """The remembered Memory and a warning for the log (None if all is well).
        A missing file gives an empty Memory; a corrupt one is moved aside to
        `state.json.corrupt-<UTC time>` and gives an empty Memory. Raises OSError
        when the file exists but cannot be read (it is left alone then)."""
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            self._last_text = None
            return Memory(), None
        try:
            memory = decode_memory(data)
        except CorruptStateError as e:
            self._last_text = None
            return Memory(), self._move_aside(str(e))
        self._last_text = encode_memory(memory)
        return memory, None

    def save(self, memory: Memory) -> bool:
        """Write `memory` atomically unless it equals what was last loaded or saved;
        True if the file was written. Raises OSError (read-only or full disk): the
        caller logs it and goes on, and the next save tries again."""
        text = encode_memory(memory)
        if text == self._last_text:
            return False
        self._ensure_dir()
        fd, tmp_path = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=self.state_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp_path, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp_path)
            raise
        self._fsync_dir()
        self._last_text = text
        return True

    def _move_aside(self, reason: str) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = f"{self.path}.corrupt-{stamp}"
        suffix = 1
        while os.path.lexists(target):
            suffix += 1
            target = f"{self.path}.corrupt-{stamp}.{suffix}"
        try:
            os.rename(self.path, target)
        except OSError as e:
            return (
                f"state file {self.path} is corrupt ({reason}) and could not be moved "
                f"aside ({e.strerror}); starting with empty memory"
            )
        return (
            f"state file {self.path} is corrupt ({reason}); moved aside to {target}; "
            f"starting with empty memory"
        )

    def _ensure_dir(self) -> None:
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)

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
        lock file; False if another process holds it. Creates state_dir if needed."""
        if self._lock_fd is not None:
            return True
        self._ensure_dir()
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
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
        """Delete temp files a killed writer left behind (only the lock holder saves,
        so under the lock none of them is being written)."""
        with contextlib.suppress(OSError):
            for name in os.listdir(self.state_dir):
                if name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX):
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
            fd = os.open(self.lock_path, os.O_RDONLY | os.O_CLOEXEC)
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
            fd = os.open(self.lock_path, os.O_RDONLY | os.O_CLOEXEC)
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


# --- the JSON format --------------------------------------------------------------------------


def encode_memory(memory: Memory) -> str:
    """`memory` as the text of state.json: non-default guest fields, sorted keys."""
    guests = {name: _encode_guest(guest) for name, guest in memory.guests.items()}
    document = {
        "version": FORMAT_VERSION,
        "boot_time": memory.boot_time,
        "last_create_at": memory.last_create_at,
        "guests": guests,
    }
    # Written only when known, so a state without them reads as it always did.
    for key in ("boot_id", "saved_uptime"):
        if getattr(memory, key) is not None:
            document[key] = getattr(memory, key)
    return json.dumps(document, sort_keys=True, indent=2, allow_nan=False) + "\n"


def _encode_guest(guest: GuestMemory) -> dict[str, Any]:
    return {
        name: getattr(guest, name)
        for name in _GUEST_FIELDS
        if getattr(guest, name) != getattr(_DEFAULT_GUEST, name)
    }


def decode_memory(data: bytes) -> Memory:
    """The Memory in the bytes of a state.json; unknown fields are ignored.
    Raises CorruptStateError naming what is wrong."""
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise CorruptStateError(f"not JSON: {e}") from None
    if not isinstance(document, dict):
        raise CorruptStateError("the top level is not an object")
    version = document.get("version")
    if type(version) is not int or version < 1:
        raise CorruptStateError(f"bad version {version!r}")
    guests = document.get("guests", {})
    if not isinstance(guests, dict):
        raise CorruptStateError("guests is not an object")
    return Memory(
        guests={str(name): _decode_guest(name, fields) for name, fields in guests.items()},
        last_create_at=_checked("last_create_at", document.get("last_create_at"), float | None),
        boot_time=_checked("boot_time", document.get("boot_time"), float | None),
        boot_id=_checked("boot_id", document.get("boot_id"), str | None),
        saved_uptime=_checked("saved_uptime", document.get("saved_uptime"), float | None),
    )


def _decode_guest(name: str, fields: object) -> GuestMemory:
    if not isinstance(fields, dict):
        raise CorruptStateError(f"guest {name!r} is not an object")
    known = {
        key: _checked(f"{name}.{key}", value, _GUEST_TYPES[key])
        for key, value in fields.items()
        if key in _GUEST_FIELDS
    }
    return GuestMemory(**known)


def _checked(where: str, value: object, hint: Any) -> Any:
    """`value` if it fits the type `hint` (bool, int, float, str, or X | None);
    an int is accepted (and converted) for float. Raises CorruptStateError."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    for kind in allowed:
        if kind is float and type(value) in (int, float):
            return float(value)  # type: ignore[arg-type]
        if kind is not type(None) and type(value) is kind:
            return value
    raise CorruptStateError(f"{where} has the wrong type: {value!r}")


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
