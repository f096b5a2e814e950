"""`xenreconcile-watchdog-feed`: the Xen watchdog as pool mode's fence
(docs/pool.md, Fencing), run by the daemon as `pool.fence.feed` after every
confirmed lease renewal and at no other time.

Its first run arms a watchdog slot of Dom0 (`xc_watchdog(xch, 0, timeout)`, as
xenwatchdogd does) and writes the slot's number to a file; every later run
re-arms that slot (`xc_watchdog(xch, slot, timeout)`). The hypervisor resets the
machine when a slot is not re-armed within its timeout, and a slot outlives the
process that armed it, so each run is a short process and the slot survives a
daemon restart. The file lives under /var/run, which a reboot (the end of every
slot) empties.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import errno
import os
import stat
import sys
from collections.abc import Callable, Sequence

from xenreconcile.errors import XenreconcileError

SLOT_FILE = "/var/run/xenreconcile-watchdog.slot"
TIMEOUT_ENV = "XR_FENCE_TIMEOUT"  # set by the daemon from pool.fence.timeout

# (slot, timeout seconds) -> xc_watchdog's result; raises OSError when it fails.
# Slot 0 asks for a new slot (the result is its number); timeout 0 disarms.
Hypercall = Callable[[int, int], int]


class WatchdogError(XenreconcileError):
    """The watchdog could not be armed or fed; the message says what failed."""


def feed(hypercall: Hypercall, slot_file: str, timeout: int) -> int:
    """Re-arm the slot named in `slot_file` with `timeout` seconds, or arm a new
    slot and record it when there is none (no file, or the hypervisor no longer
    knows the slot). Returns the slot. Raises WatchdogError on any other failure:
    the slot then keeps its old deadline, so a failing feed still ends in a reset."""
    slot = read_slot(slot_file)
    if slot is not None:
        try:
            hypercall(slot, timeout)
            return slot
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: no such slot in use
                raise WatchdogError(f"re-arming watchdog slot {slot}: {exc.strerror}") from exc
    try:
        slot = hypercall(0, timeout)
    except OSError as exc:
        raise WatchdogError(f"arming a watchdog slot: {exc.strerror}") from exc
    if slot <= 0:
        raise WatchdogError(f"arming a watchdog slot: xc_watchdog returned {slot}")
    write_slot(slot_file, slot)
    return slot


def disarm(hypercall: Hypercall, slot_file: str) -> int | None:
    """Disarm the recorded slot and remove `slot_file`; returns the slot (None
    when none was recorded)."""
    slot = read_slot(slot_file)
    if slot is None:
        return None
    try:
        hypercall(slot, 0)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise WatchdogError(f"disarming watchdog slot {slot}: {exc.strerror}") from exc
    os.unlink(slot_file)
    return slot


def read_slot(slot_file: str) -> int | None:
    """The slot recorded in `slot_file` (None when there is no file). Raises
    WatchdogError for a file that is not a regular file of root's, or whose
    content is not a slot number."""
    try:
        fd = os.open(slot_file, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise WatchdogError(f"{slot_file}: {exc.strerror}") from exc
    with os.fdopen(fd, encoding="ascii", errors="replace") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o022:
            raise WatchdogError(f"{slot_file}: not a regular file only root can write")
        text = handle.read().strip()
    if not text.isdigit() or int(text) == 0:
        raise WatchdogError(f"{slot_file}: expected a watchdog slot number, got {text[:20]!r}")
    return int(text)


def write_slot(slot_file: str, slot: int) -> None:
    """Record `slot` in `slot_file` atomically (a temp file renamed over it)."""
    temp = f"{slot_file}.{os.getpid()}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, f"{slot}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, slot_file)


def xenctrl_hypercall() -> Hypercall:
    """`xc_watchdog` of this Dom0's libxenctrl, on a handle opened once. Raises
    WatchdogError when the library is missing or this is not a Xen Dom0."""
    name = ctypes.util.find_library("xenctrl") or "libxenctrl.so"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise WatchdogError(f"cannot load libxenctrl ({name}): {exc}") from exc
    lib.xc_interface_open.restype = ctypes.c_void_p
    lib.xc_interface_open.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint]
    lib.xc_watchdog.restype = ctypes.c_int
    lib.xc_watchdog.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32]
    handle = lib.xc_interface_open(None, None, 0)
    if not handle:
        code = ctypes.get_errno()
        raise WatchdogError(f"xc_interface_open: {os.strerror(code)} (is this a Xen Dom0?)")

    def call(slot: int, timeout: int) -> int:
        result: int = lib.xc_watchdog(handle, slot, timeout)
        if result < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        return result

    return call


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="xenreconcile-watchdog-feed",
        description="Arm or re-arm Dom0's Xen watchdog (pool mode's fence).",
    )
    parser.add_argument(
        "--timeout",
        type=int,
        default=None,
        help=f"seconds before the hypervisor resets the host (default: ${TIMEOUT_ENV})",
    )
    parser.add_argument("--slot-file", default=SLOT_FILE, help=f"default: {SLOT_FILE}")
    parser.add_argument(
        "--disarm",
        action="store_true",
        help="disarm the slot (maintenance: the host's guests must be stopped or moved first)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, hypercall: Hypercall | None = None) -> int:
    """Feed (or disarm) the watchdog; 0 when done, 1 on failure, 2 on bad usage."""
    args = parse_args(argv)
    timeout = args.timeout
    if timeout is None and not args.disarm:
        text = os.environ.get(TIMEOUT_ENV, "")
        if not text.isdigit():
            print(f"xenreconcile-watchdog-feed: give --timeout or ${TIMEOUT_ENV}", file=sys.stderr)
            return 2
        timeout = int(text)
    if not args.disarm and (timeout is None or timeout < 1):
        print("xenreconcile-watchdog-feed: the timeout must be at least 1 s", file=sys.stderr)
        return 2
    try:
        call = hypercall or xenctrl_hypercall()
        if args.disarm:
            slot = disarm(call, args.slot_file)
            print("no watchdog slot recorded" if slot is None else f"disarmed slot {slot}")
        else:
            assert timeout is not None
            feed(call, args.slot_file, timeout)
    except (WatchdogError, OSError) as exc:
        print(f"xenreconcile-watchdog-feed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
