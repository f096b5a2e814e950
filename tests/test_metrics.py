"""Metrics: the samples of a pass (pure), the exporter's registry, HTTP endpoint
and textfile (atomic under concurrent readers), the config keys, and the daemon
loop feeding them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import FakeClock
from tests.test_daemon_loop import FakeXl, add_guest, new_daemon, step_until
from xenreconcile import __version__, metrics
from xenreconcile.config import ConfigError, parse_config, split_address
from xenreconcile.metricsexport import MetricsExporter, remove_stale_temps, write_textfile
from xenreconcile.models import (
    CreateAction,
    CreateResult,
    GuestPhase,
    GuestStatus,
    Memory,
    Plan,
    PoolGate,
)


class RecordingLog:
    """A structlog-like logger that keeps (level, event, fields)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **fields: self.records.append((level, event, fields))


def plan_of(*statuses: GuestStatus, trusted: bool = True) -> Plan:
    return Plan(creates=(), statuses=statuses, memory=Memory(), trusted=trusted)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition text: (name, sorted labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


LAST_PASS = "xenreconcile_last_pass_timestamp_seconds"
PLAN = plan_of(
    GuestStatus("web", GuestPhase.RUNNING, ("/g/web.cfg",)),
    GuestStatus("db", GuestPhase.BACKOFF, ("/g/db.cfg",), attempts=2, next_retry=130.0),
    GuestStatus("old", GuestPhase.UNMANAGED),
)


# --- the samples of a pass ---------------------------------------------------------------


def test_guest_up_and_state_follow_the_statuses() -> None:
    got = metrics.gauge_samples(metrics.pass_view(PLAN, now=100.0, wall_now=5000.0))
    assert dict(got["xenreconcile_guest_up"]) == {("web",): 1.0, ("db",): 0.0, ("old",): 1.0}
    states = dict(got["xenreconcile_guest_state"])
    assert states[("db", "backoff")] == 1.0
    assert states[("db", "running")] == 0.0
    # every state of every guest, so series do not come and go
    assert len(states) == 3 * len(GuestPhase)
    assert sum(states.values()) == 3
    assert got["xenreconcile_next_retry_timestamp_seconds"] == [(("db",), 5030.0)]
    assert dict(got["xenreconcile_guest_failed_attempts"])[("db",)] == 2.0
    assert got["xenreconcile_toolstack_up"] == [((), 1.0)]
    assert got["xenreconcile_last_pass_timestamp_seconds"] == [((), 5000.0)]
    assert got["xenreconcile_build_info"] == [((__version__,), 1.0)]


def test_an_untrusted_listing_says_toolstack_down_and_no_guest_up() -> None:
    plan = plan_of(GuestStatus("web", GuestPhase.UNKNOWN, ("/g/web.cfg",)), trusted=False)
    got = metrics.gauge_samples(metrics.pass_view(plan, now=1.0, wall_now=2.0))
    assert got["xenreconcile_toolstack_up"] == [((), 0.0)]
    assert got["xenreconcile_guest_up"] == []  # unknown is not down: no alert on a guess


@pytest.mark.parametrize(
    ("result", "outcome"),
    [
        (CreateResult(ok=True, exit_code=0), "ok"),
        (CreateResult(ok=False, exit_code=3), "failed"),
        (CreateResult(ok=False, exit_code=None, timed_out=True), "timeout"),
    ],
)
def test_create_outcomes(result: CreateResult, outcome: str) -> None:
    assert metrics.create_outcome(result) == outcome


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:9101", ("127.0.0.1", 9101)), ("[::1]:80", ("::1", 80)), ("host:1", ("host", 1))],
)
def test_split_address(text: str, expected: tuple[str, int]) -> None:
    assert split_address(text) == expected


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("9101", "HOST:PORT"),
        (":9101", "HOST:PORT"),
        ("::1:9101", "brackets"),
        ("localhost:http", "1 to 65535"),
        ("localhost:70000", "1 to 65535"),
    ],
)
def test_bad_metrics_listen_is_a_config_error_naming_the_key(text: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"metrics_listen: '{text}'\n", "x.yaml")
    assert "metrics_listen" in str(caught.value)
    assert words in str(caught.value)


def test_metrics_keys_are_off_by_default_and_read_when_set() -> None:
    assert parse_config("", "x.yaml").metrics_listen is None
    config = parse_config(
        "metrics_listen: '[::1]:9101'\nmetrics_textfile: /var/tmp/node_exporter/x.prom\n", "x.yaml"
    )
    assert (config.metrics_listen, config.metrics_textfile) == (
        "[::1]:9101",
        "/var/tmp/node_exporter/x.prom",
    )
    with pytest.raises(ConfigError, match="metrics_textfile"):
        parse_config("metrics_textfile: x.prom\n", "x.yaml")


# --- the exporter --------------------------------------------------------------------------


def test_the_exporter_counts_creates_and_times_them(tmp_path: Path) -> None:
    prom = tmp_path / "xenreconcile.prom"
    exporter = MetricsExporter(None, str(prom), RecordingLog())
    web = CreateAction("web", "/g/web.cfg", "h")
    exporter.create_done(web, CreateResult(ok=True, exit_code=0, duration=3.0))
    exporter.create_done(web, CreateResult(ok=False, exit_code=None, timed_out=True, duration=120))
    exporter.pass_done(metrics.pass_view(PLAN, 100.0, 5000.0))

    got = samples(prom.read_text())
    assert got[("xenreconcile_creates_total", (("guest", "web"), ("result", "ok")))] == 1
    assert got[("xenreconcile_creates_total", (("guest", "web"), ("result", "timeout")))] == 1
    assert got[("xenreconcile_create_duration_seconds_count", ())] == 2
    assert got[("xenreconcile_create_duration_seconds_bucket", (("le", "5.0"),))] == 1
    assert got[("xenreconcile_guest_up", (("guest", "web"),))] == 1
    assert prom.stat().st_mode & 0o777 == 0o644  # node_exporter reads it, not as root


def test_the_exporter_serves_http_and_stops(tmp_path: Path) -> None:
    port = free_port()
    exporter = MetricsExporter(f"127.0.0.1:{port}", None, RecordingLog())
    try:
        exporter.pass_done(metrics.pass_view(PLAN, 100.0, 5000.0))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            got = samples(answer.read().decode())
        assert got[("xenreconcile_guest_up", (("guest", "db"),))] == 0
    finally:
        exporter.close()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


def test_a_port_in_use_is_logged_and_the_daemon_goes_on() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        log = RecordingLog()
        exporter = MetricsExporter(f"127.0.0.1:{port}", None, log)
        exporter.pass_done(metrics.pass_view(PLAN, 100.0, 5000.0))  # no error
        exporter.close()
    assert [(lvl, ev) for lvl, ev, _ in log.records] == [("error", "metrics_listen_failed")]
    assert log.records[0][2]["address"] == f"127.0.0.1:{port}"


def test_the_textfile_is_replaced_whole_under_concurrent_readers(tmp_path: Path) -> None:
    """Readers polling the file while it is rewritten (node_exporter scraping)
    only ever see a complete version: its marker sample says how many guest
    lines it has, and they are all there."""
    prom = tmp_path / "xenreconcile.prom"
    exporter = MetricsExporter(None, str(prom), RecordingLog())
    exporter.pass_done(metrics.pass_view(plan_of(), 0.0, 0.0))
    versions, readers = 200, 2
    done = threading.Event()
    seen: list[int] = []
    problems: list[str] = []

    def read() -> None:
        while not done.is_set():
            lines = prom.read_text().splitlines()
            markers = [ln for ln in lines if ln.startswith(LAST_PASS + " ")]
            ups = sum(ln.startswith("xenreconcile_guest_up{") for ln in lines)
            if len(markers) != 1 or ups != int(float(markers[0].split()[1])):
                problems.append(f"a torn file: {markers} with {ups} guests")
                continue
            seen.append(ups)

    threads = [threading.Thread(target=read) for _ in range(readers)]
    for thread in threads:
        thread.start()
    try:
        for version in range(1, versions + 1):
            guests = [GuestStatus(f"g{i}", GuestPhase.RUNNING) for i in range(version % 7)]
            exporter.pass_done(metrics.pass_view(plan_of(*guests), 0.0, float(version % 7)))
    finally:
        done.set()
        for thread in threads:
            thread.join()
    assert problems == []
    assert len(seen) > readers  # the readers did read while it was rewritten
    assert os.listdir(tmp_path) == ["xenreconcile.prom"]  # no temp file left beside it


def test_a_killed_daemons_temp_files_are_removed_at_start(tmp_path: Path) -> None:
    prom = tmp_path / "xenreconcile.prom"
    (tmp_path / ".xenreconcile.prom.abc123.tmp").write_text("half")
    (tmp_path / "other.prom").write_text("x 1\n")
    (tmp_path / ".other.prom.abc.tmp").write_text("not ours")
    remove_stale_temps(str(prom))
    assert sorted(os.listdir(tmp_path)) == [".other.prom.abc.tmp", "other.prom"]


def test_a_temp_file_is_removed_when_the_write_fails(tmp_path: Path) -> None:
    prom = tmp_path / "xenreconcile.prom"
    prom.mkdir()  # rename of a file over a directory fails
    with pytest.raises(OSError):
        write_textfile(str(prom), b"x 1\n")
    assert os.listdir(tmp_path) == ["xenreconcile.prom"]


def test_a_textfile_that_cannot_be_written_is_logged(tmp_path: Path) -> None:
    log = RecordingLog()
    exporter = MetricsExporter(None, str(tmp_path / "missing" / "x.prom"), log)
    exporter.pass_done(metrics.pass_view(PLAN, 100.0, 5000.0))
    assert [(lvl, ev) for lvl, ev, _ in log.records] == [("warning", "metrics_textfile_failed")]


# --- the daemon loop ------------------------------------------------------------------------


def test_the_daemon_writes_the_textfile_every_pass_and_counts_its_creates(
    tmp_path: Path,
) -> None:
    xl, clock = FakeXl(), FakeClock()
    daemon = new_daemon(tmp_path, xl, clock)
    prom = tmp_path / "xenreconcile.prom"
    try:
        # metrics_textfile set by a reload, as an admin would add it
        config = tmp_path / "xenreconcile.yaml"
        config.write_text(config.read_text() + f"metrics_textfile: {prom}\n")
        daemon.reload()
        xl.fail.add("bad")
        add_guest(tmp_path, "web")
        add_guest(tmp_path, "bad")
        web_up = ("xenreconcile_guest_up", (("guest", "web"),))

        def exported() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            return samples(prom.read_text()) if prom.exists() else {}

        assert step_until(daemon, clock, lambda: exported().get(web_up) == 1, 5)
        got = exported()
        assert got[("xenreconcile_guest_up", (("guest", "web"),))] == 1
        assert got[("xenreconcile_guest_up", (("guest", "bad"),))] == 0
        assert got[("xenreconcile_guest_state", (("guest", "bad"), ("state", "backoff")))] == 1
        assert got[("xenreconcile_creates_total", (("guest", "web"), ("result", "ok")))] == 1
        assert got[("xenreconcile_creates_total", (("guest", "bad"), ("result", "failed")))] == 1
        assert got[("xenreconcile_toolstack_up", ())] == 1
        assert got[("xenreconcile_last_pass_timestamp_seconds", ())] == pytest.approx(
            clock.wall(), abs=31
        )
    finally:
        daemon.shutdown()


def test_prometheus_client_is_imported_only_when_metrics_are_configured() -> None:
    code = (
        "import sys; from xenreconcile import daemon, commands, metrics; "
        "metrics.open_sink(None, None, None); "
        "assert 'prometheus_client' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- pool mode ---------------------------------------------------------------------------


def test_without_pool_mode_there_are_no_pool_samples() -> None:
    got = metrics.gauge_samples(metrics.pass_view(PLAN, now=100.0, wall_now=5000.0))
    assert got["xenreconcile_pool_confirmed"] == []
    assert got["xenreconcile_guest_claimed"] == []


def test_a_confirmed_pool_view_says_which_guests_are_claimed_here() -> None:
    gate = PoolGate(True, mine=frozenset({"web"}), elsewhere={"db": "b"})
    got = metrics.gauge_samples(metrics.pass_view(PLAN, 100.0, 5000.0, gate))
    assert got["xenreconcile_pool_confirmed"] == [((), 1.0)]
    assert dict(got["xenreconcile_guest_claimed"]) == {("web",): 1.0, ("db",): 0.0, ("old",): 0.0}


def test_an_unconfirmed_pool_view_says_so_and_names_no_claim() -> None:
    gate = PoolGate(False, reason="etcd: connection refused")
    got = metrics.gauge_samples(metrics.pass_view(PLAN, 100.0, 5000.0, gate))
    assert got["xenreconcile_pool_confirmed"] == [((), 0.0)]
    assert got["xenreconcile_guest_claimed"] == []
