"""Smoke test of the benchmarks: `bench/run.py --tiny` runs every benchmark against the
real daemon and the simulated xl and writes a well-formed result. No timing assertions."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
RUN = REPO / "bench" / "run.py"

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value >= 0


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    """One `run.py --tiny --no-peer` run: its JSON document and its printed output."""
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        [sys.executable, str(RUN), "--tiny", "--no-peer", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    files = list(out.glob("bench-tiny-*.json"))
    assert len(files) == 1
    return json.loads(files[0].read_text()), done.stdout


def test_document_describes_the_machine(tiny_run: tuple[dict[str, Any], str]) -> None:
    doc, _ = tiny_run
    assert doc["mode"] == "tiny"
    assert doc["machine"]["nproc"] >= 1
    assert doc["machine"]["python"].count(".") == 2
    assert len(doc["machine"]["loadavg"]) == 3


def test_p1_times_every_concurrency_and_reports_the_skipped_peer(
    tiny_run: tuple[dict[str, Any], str],
) -> None:
    p1 = tiny_run[0]["p1"]
    assert set(p1["xenreconcile"]) == {"1", "2"}
    for entry in p1["xenreconcile"].values():
        assert _finite(entry["seconds"]) and entry["seconds"] > 0
        # xl's create lock builds one domain at a time: the ideal is every build in a row.
        assert entry["ideal"] == pytest.approx(3 * 0.1)
        assert entry["vs_ideal"] == pytest.approx(entry["seconds"] / entry["ideal"])
    assert "skipped" in p1["peer"]["error"]


def test_p2_has_one_latency_per_drop_and_ordered_percentiles(
    tiny_run: tuple[dict[str, Any], str],
) -> None:
    watchers = tiny_run[0]["p2"]["watchers"]
    assert set(watchers) == {"inotify", "poll"}
    for entry in watchers.values():
        assert len(entry["latencies"]) == 3
        assert all(_finite(x) for x in entry["latencies"])
        assert entry["p50"] <= entry["p90"] <= entry["p99"] <= entry["max"]
        assert entry["max"] == max(entry["latencies"])


def test_p3_samples_the_daemon_and_creates_nothing(tiny_run: tuple[dict[str, Any], str]) -> None:
    p3 = tiny_run[0]["p3"]
    assert p3["creates"] == 0
    assert len(p3["samples"]) >= 2
    assert _finite(p3["cpu_per_minute"])
    assert 1 < p3["rss_mib_max"] < 4096


def test_p4_has_every_figure_for_every_size(tiny_run: tuple[dict[str, Any], str]) -> None:
    sizes = tiny_run[0]["p4"]["sizes"]
    assert [s["size"] for s in sizes] == [10, 20]
    keys = {
        "cold_scan",
        "cfg_parse_only",
        "unchanged_scan",
        "unchanged_scan_plan",
        "unchanged_daemon_pass",
        "xl_list_parse",
        "xl_list_subprocess",
    }
    for entry in sizes:
        assert keys <= set(entry)
        assert all(_finite(entry[k]) for k in keys)
        assert all(_finite(entry["cpu"][k]) for k in keys - {"xl_list_subprocess"})


def test_p5_and_the_printed_table(tiny_run: tuple[dict[str, Any], str]) -> None:
    doc, stdout = tiny_run
    assert _finite(doc["p5"]["version"]["median"])
    assert _finite(doc["p5"]["first_pass"]["median"])
    for label in ("P1 3 guests: xenreconcile c=2", "P2 inotify", "P3 RSS max", "P4 20:", "P5"):
        assert label in stdout


def test_the_cost_script_measures_imports_and_a_boot_recovery() -> None:
    """`bench/cost.py` at its smallest: the import ratios, and both recoveries
    (daemon and `run --once`) bring every guest up with at least one pass each."""
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "cost.py"),
            *("--guests", "2", "--concurrency", "1", "--runs", "1", "--create-delay", "0"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    imports = ("bare_s", "daemon_import_s", "dependencies_import_s", "ratio", "dependencies_ratio")
    assert all(_finite(result["imports"][key]) for key in imports)
    assert [row["once"] for row in result["recovery"]] == [False, True]
    for row in result["recovery"]:
        assert row["guests"] == 2 and _finite(row["seconds"])
        assert row["xl_list_calls"] >= 2, "a pass per create at concurrency 1"
