#!/usr/bin/env python3
"""The full chaos soak from the command line, with its figures.

    python bench/chaos.py [--passes 1000] [--seeds 20241125 1 2 ...] [--json]

Runs tests/test_chaos.py's soak once per seed (real daemon loop, simulated Dom0
and clock; see tests/chaos_world.py) and prints, per seed, the passes, the
faults injected by kind, the creates started, the simulated hours, and how long
the guests took to all run again once the faults stopped. Exits 1 with the seed
on the first violated invariant.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.chaos_world import EPOCH  # noqa: E402
from tests.test_chaos import DEFAULT_SEED, soak  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[DEFAULT_SEED])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    for seed in args.seeds:
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="xr-chaos-") as root:
            try:
                result = soak(Path(root), seed, args.passes)
            except AssertionError as exc:
                print(f"chaos FAILED: {exc}", file=sys.stderr)
                return 1
        world = result.world
        row = {
            "seed": seed,
            "passes": world.figures.passes,
            "creates": world.figures.creates,
            "faults": dict(sorted(world.figures.faults.items())),
            "simulated_hours": round((world.clock.now - EPOCH) / 3600, 2),
            "all_running_after_fault_stop_s": round(result.since_fault_stop, 1),
            "wall_seconds": round(time.monotonic() - started, 1),
        }
        print(json.dumps(row) if args.json else row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
