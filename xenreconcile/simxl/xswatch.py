"""`python -m xenreconcile.simxl.xswatch [--state DIR] @releaseDomain`: the
simulated `xenstore-watch`, for the one watch xenreconcile sets.

Like xenstore-utils' `xenstore-watch PATH`, it prints the watched path once when
the watch is set (the initial fire), then once each time the watch fires, and
runs until killed. xenstored fires the special watch `@releaseDomain` when a
domain is released: gone from the hypervisor, or newly shut down, crashed or
dying. Here: when a simulated domain leaves the state (destroyed, vanished,
migrated away) or is newly listed shut down, crashed or dying. It ends by itself
when the state directory is removed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

from xenreconcile.simxl import store

WATCH_PATH = "@releaseDomain"
POLL_INTERVAL = 0.1
_RELEASED_FLAGS = "scd"  # xl's state letters of a shut down, crashed or dying domain


def main(argv: Sequence[str] | None = None) -> int:
    """Run the watch; returns the exit code (1 for anything but `@releaseDomain`)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) >= 2 and args[0] == "--state":
        state_dir = Path(args[1])
        del args[:2]
    else:
        state_dir = store.state_dir_from_env()
    if args != [WATCH_PATH]:
        print(f"usage: xenstore-watch {WATCH_PATH} (the only watch simulated)", file=sys.stderr)
        return 1
    seen = released_marks(state_dir) or {}  # the watch is set before it says so
    fire()
    while state_dir.is_dir():
        time.sleep(POLL_INTERVAL)
        now = released_marks(state_dir)
        if now is None:
            continue
        if any(key not in now or (now[key] and not was) for key, was in seen.items()):
            fire()
        seen = now
    return 0


def fire() -> None:
    """Print the watched path, as xenstore-watch does when the watch fires."""
    sys.stdout.write(WATCH_PATH + "\n")
    sys.stdout.flush()


def released_marks(state_dir: Path) -> dict[str, bool] | None:
    """{domain uuid: already shut down, crashed or dying} for every simulated
    domain; None when the state cannot be read just now."""
    try:
        domains = store.read_state(state_dir)["domains"]
    except (OSError, ValueError):
        return None
    return {
        str(d["uuid"]): any(flag in d["state"].replace("-", "") for flag in _RELEASED_FLAGS)
        for d in domains
    }


if __name__ == "__main__":
    sys.exit(main())
