"""Where the daemon's start-up goes, in the Dom0 (the bench scenario's profile step).

Usage: python startprofile.py REPORT XENRECONCILE-ARGS...

Runs `xenreconcile XENRECONCILE-ARGS...` in this process under cProfile until the daemon
spawns its first `xl create`, then writes REPORT: the seconds from this script's start to
each of the daemon's first `xl` commands, and the profile's heaviest functions (cumulative
and own time). Profiling then stops and the daemon runs on as usual. cProfile slows what it
measures (about 1.5x here), so REPORT says where the time goes, not how long it takes: the
bench's timings come from daemons run without it.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import subprocess
import sys
import time
from typing import Any

STARTED = time.monotonic()
TOP = 45


def main() -> int:
    """Profile the daemon's start; returns its exit code."""
    report, args = sys.argv[1], sys.argv[2:]
    profile = cProfile.Profile()
    firsts: dict[str, float] = {}
    profiled: list[bool] = []
    spawn = subprocess.Popen.__init__

    def noting_spawn(self: subprocess.Popen[Any], argv: Any, *rest: Any, **kwargs: Any) -> None:
        words = [str(a) for a in argv]
        verb = next((a for a in words[1:] if not a.startswith("-")), "")
        command = f"{os.path.basename(words[0])} {verb}"
        if command not in firsts:
            firsts[command] = time.monotonic() - STARTED
            if verb == "create" and not profiled:
                profiled.append(True)
                profile.disable()
                write_report(report, profile, firsts)
        spawn(self, argv, *rest, **kwargs)

    subprocess.Popen.__init__ = noting_spawn  # type: ignore[method-assign]
    sys.argv = ["xenreconcile", *args]
    profile.enable()
    from xenreconcile.cli import main as xenreconcile_main

    return xenreconcile_main()


def write_report(path: str, profile: cProfile.Profile, firsts: dict[str, float]) -> None:
    """Write REPORT: the first spawn of each command, then the top functions two ways."""
    out = io.StringIO()
    out.write("seconds from this script's start to the daemon's first spawn of each command:\n")
    for command, at in firsts.items():
        out.write(f"  {command}: {at:.3f} s\n")
    stats = pstats.Stats(profile, stream=out)
    for key in ("cumulative", "tottime"):
        out.write(f"\n--- top {TOP} by {key} ---\n")
        stats.sort_stats(key).print_stats(TOP)
    with open(path, "w", encoding="utf-8") as f:
        f.write(out.getvalue())


if __name__ == "__main__":
    sys.exit(main())
