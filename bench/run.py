"""Run every benchmark, print a table, write the JSON to bench/results/.

python bench/run.py            full sizes (about 20 minutes)
python bench/run.py --quick    smaller sizes, shorter idle run (a few minutes)
python bench/run.py --tiny     smoke-test sizes (seconds; CI), figures meaningless
python bench/run.py --only p1,p4 --repeat 5
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and `xenreconcile` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import p1_boot, p2_reaction, p3_idle, p4_scale, p5_startup
from bench.common import REPO, machine

ALL = ("p1", "p2", "p3", "p4", "p5")
SIZES: dict[str, dict[str, Any]] = {
    "full": {
        "p1": {"guests": 64, "concurrencies": [1, 4, 8], "create_delay": 1.0, "repeat": 3},
        "p2": {"drops": 100, "watchers": ["inotify", "poll", "kqueue"]},
        "p3": {"guests": 200, "seconds": 300, "interval": 30, "sample_every": 60},
        "p4": {"sizes": [100, 500, 1000, 2000], "repeat": 21},
        "p5": {"version_runs": 20, "first_pass_runs": 7, "guests": 64},
    },
    "quick": {
        "p1": {"guests": 16, "concurrencies": [1, 4, 8], "create_delay": 1.0, "repeat": 1},
        "p2": {"drops": 20, "watchers": ["inotify", "poll", "kqueue"]},
        "p3": {"guests": 200, "seconds": 65, "interval": 30, "sample_every": 30},
        "p4": {"sizes": [100, 500, 1000, 2000], "repeat": 7},
        "p5": {"version_runs": 10, "first_pass_runs": 3, "guests": 64},
    },
    "tiny": {
        "p1": {"guests": 3, "concurrencies": [1, 2], "create_delay": 0.1, "repeat": 1},
        "p2": {"drops": 3, "watchers": ["inotify", "poll"]},
        "p3": {"guests": 5, "seconds": 3, "interval": 1, "sample_every": 1},
        "p4": {"sizes": [10, 20], "repeat": 2},
        "p5": {"version_runs": 2, "first_pass_runs": 1, "guests": 3},
    },
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="smaller sizes, shorter idle run")
    mode.add_argument("--tiny", action="store_true", help="smoke-test sizes (CI)")
    parser.add_argument("--only", default=",".join(ALL), help="comma-separated: p1,p2,p3,p4,p5")
    parser.add_argument("--repeat", type=int, help="repetitions of P1 runs (default by mode)")
    parser.add_argument("--no-peer", action="store_true", help="skip Debian's xendomains in P1")
    parser.add_argument("--peer-dir", type=Path, help="where the peer's .deb is kept")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    return parser.parse_args(argv)


def run_benchmarks(args: argparse.Namespace) -> dict[str, Any]:
    """Run the selected benchmarks; returns the whole result document."""
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    sizes = SIZES[mode]
    only = [name.strip().lower() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(only) - set(ALL))
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(unknown)}")
    doc: dict[str, Any] = {"mode": mode, "started": time.time(), "machine": machine()}
    for name in only:
        started = time.monotonic()
        print(f"running {name} ({mode}) ...", file=sys.stderr, flush=True)
        doc[name] = _run_one(name, sizes[name], args)
        doc[name]["wall_seconds"] = time.monotonic() - started
    doc["machine_after"] = {"loadavg": machine()["loadavg"]}
    return doc


def _run_one(name: str, size: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    if name == "p1":
        peer_dir = args.peer_dir or Path("/tmp/xenreconcile-bench-peer")
        return p1_boot.run(
            size["guests"],
            size["concurrencies"],
            size["create_delay"],
            args.repeat or size["repeat"],
            None if args.no_peer else peer_dir,
        )
    if name == "p2":
        return p2_reaction.run(size["drops"], size["watchers"])
    if name == "p3":
        return p3_idle.run(size["guests"], size["seconds"], size["interval"], size["sample_every"])
    if name == "p4":
        return p4_scale.run(size["sizes"], size["repeat"])
    return p5_startup.run(size["version_runs"], size["first_pass_runs"], size["guests"])


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f} s"


def table_rows(doc: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(measure, value, target or comparison) rows for the printed table."""
    rows: list[tuple[str, str, str]] = []
    if "p1" in doc:
        p1 = doc["p1"]
        n, peer = p1["guests"], p1["peer"]
        if "seconds" in peer:
            rows.append((f"P1 {n} guests: xendomains (serial)", _s(peer["seconds"]), "peer"))
            rows.append(
                (f"P1 {n} guests: xendomains + 5 s x {n}", _s(peer["with_upstream_usleep"]), "peer")
            )
        elif "error" in peer:
            rows.append(("P1 xendomains", "not run", peer["error"]))
        for conc, entry in p1["xenreconcile"].items():
            ratio = entry.get("speedup_vs_peer")
            versus = f"{ratio:.1f}x faster than xendomains" if ratio else ""
            rows.append(
                (
                    f"P1 {n} guests: xenreconcile c={conc}",
                    _s(entry["seconds"]),
                    f"{entry['vs_ideal']:.2f}x ideal {_s(entry['ideal'])}; {versus}".rstrip("; "),
                )
            )
    for watch, entry in doc.get("p2", {}).get("watchers", {}).items():
        figures = " / ".join(_ms(entry[k]) for k in ("p50", "p90", "p99", "max"))
        target = "p99 <= 250 ms" if watch == "inotify" else ""
        rows.append((f"P2 {watch} ({entry['watcher']}) p50/p90/p99/max", figures, target))
    if "p3" in doc:
        p3 = doc["p3"]
        rows.append(
            (
                f"P3 {p3['guests']} idle, {p3['seconds']:.0f} s: CPU/min",
                f"{p3['cpu_per_minute']:.3f} s",
                "<= 0.1 s",
            )
        )
        rows.append(("P3 RSS max", f"{p3['rss_mib_max']:.1f} MiB", "<= 40 MB"))
    for entry in doc.get("p4", {}).get("sizes", []):
        size, cpu = entry["size"], entry["cpu"]
        for key, label in (
            ("unchanged_scan_plan", "unchanged scan+plan"),
            ("unchanged_daemon_pass", "unchanged daemon pass"),
            ("cold_scan", "cold scan (read+parse)"),
            ("xl_list_parse", "xl list parse"),
        ):
            target = "<= 20 ms at 2,000" if key in ("unchanged_scan_plan", "xl_list_parse") else ""
            value = f"{_ms(entry[key])} (CPU {_ms(cpu[key])})"
            rows.append((f"P4 {size}: {label}", value, target))
        rows.append((f"P4 {size}: simulated xl list process", _ms(entry["xl_list_subprocess"]), ""))
    if "p5" in doc:
        p5 = doc["p5"]
        rows.append((f"P5 --version ({p5['version']['tool']})", _ms(p5["version"]["median"]), ""))
        first = p5["first_pass"]
        rows.append(
            (f"P5 start to first pass ({first['guests']} guests)", _ms(first["median"]), "")
        )
    return rows


def format_table(rows: list[tuple[str, str, str]]) -> str:
    """The rows as an aligned Markdown table."""
    header = ("measure", "value", "target / comparison")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]

    def line(row: tuple[str, str, str]) -> str:
        return "| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |"

    return "\n".join(
        [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        + [line(r) for r in rows]
    )


def main(argv: list[str] | None = None) -> int:
    """Run, print the table, write the JSON; returns the exit code."""
    args = parse_args(argv)
    doc = run_benchmarks(args)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = args.out / f"bench-{doc['mode']}-{stamp}.json"
    path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    machine_info = doc["machine"]
    print(
        f"{machine_info['nproc']} x {machine_info['cpu_model']}, Python {machine_info['python']}, "
        f"load {machine_info['loadavg']} -> {doc['machine_after']['loadavg']}"
    )
    print(format_table(table_rows(doc)))
    print(f"JSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
