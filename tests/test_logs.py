"""The log: every line is one line of printable text whatever the values hold, and
no trouble with the log file ever stops the daemon (it recreates the directory,
or falls back to stderr and says so once, then goes back to the file).

The unit tests log through `logs.configure()` with the real structlog chain and
read the bytes written; the integration tests run the real daemon process.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
import signal
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time

from tests.daemon_harness import DaemonRun, wait_for
from tests.helpers import FakeClock
from xenreconcile import cli, logs
from xenreconcile.daemon import Daemon

HOSTILE = {
    "CR": "\r",
    "ESC": "\x1b[2J",
    "BEL": "\x07",
    "NUL": "\x00",
    "DEL": "\x7f",
    "NEL": "\x85",
    "CSI": "\x9b",
    "LS": "\u2028",
    "PS": "\u2029",
    "VT": "\x0b",
    "FS": "\x1c",
    "TAB": "\t",
    "LF": "\n",
    "NBSP": "\u00a0",
    "bidi-override": "\u202e",
}
NOT_UTF8 = os.fsdecode(b"caf\xe9.cfg")  # what os.listdir gives for a Latin-1 name


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Leave the process logging to stderr, not to a removed temp file."""
    yield
    logs.configure("-", "logfmt", "info")


def log_text(path: Path) -> str:
    """The log file's text (it must be valid UTF-8)."""
    return path.read_bytes().decode("utf-8")


def only_line(path: Path) -> str:
    """The single line of the log; fails if any kind of line break split it."""
    lines = log_text(path).splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def logfmt_field(line: str, key: str) -> str:
    """The value of `key` in a logfmt `line`, unescaped (quoted values are JSON strings)."""
    match = re.search(rf'(?:^| ){re.escape(key)}=("(?:[^"\\]|\\.)*"|\S*)', line)
    assert match, f"no {key}= in {line!r}"
    value = match.group(1)
    return str(json.loads(value)) if value.startswith('"') else value


def json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON log lines of `text`."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


# --- escaping --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_logfmt_escapes_control_characters_in_values(tmp_path: Path, name: str) -> None:
    log = tmp_path / "x.log"
    logs.configure(str(log), "logfmt", "info")
    value = f"before{HOSTILE[name]}after"

    logs.get_logger().info("create_failed", guest="web", stderr=value)

    line = only_line(log)
    assert line.isprintable(), line
    assert logfmt_field(line, "stderr") == value
    assert logfmt_field(line, "guest") == "web"


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_logfmt_escapes_control_characters_in_the_event_and_keys(tmp_path: Path, name: str) -> None:
    log = tmp_path / "x.log"
    logs.configure(str(log), "logfmt", "info")
    char = HOSTILE[name]

    logs.get_logger().info(f"event{char}name", **{f"key{char}": "v"})

    line = only_line(log)
    assert line.isprintable(), line
    assert logfmt_field(line, "event") == f"event{char}name"


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_json_escapes_every_control_character(tmp_path: Path, name: str) -> None:
    log = tmp_path / "x.log"
    logs.configure(str(log), "json", "info")
    value = f"before{HOSTILE[name]}after"

    logs.get_logger().info(f"e{value}", guest="web", stderr=value)

    line = only_line(log)
    assert line.isascii() and line.isprintable(), line
    doc = json.loads(line)
    assert (doc["event"], doc["stderr"]) == (f"e{value}", value)


def test_logfmt_quotes_and_backslashes_round_trip(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    logs.configure(str(log), "logfmt", "info")
    values = ['say "hi"', "C:\\dir", "a=b", "", "plain", "caf\u00e9 ok"]

    for value in values:
        logs.get_logger().info("e", v=value)

    lines = log_text(log).splitlines()
    assert [logfmt_field(line, "v") for line in lines] == values
    assert lines[4].endswith(" v=plain") and lines[5].endswith(' v="café ok"')


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_a_file_name_that_is_not_utf8_is_logged_escaped(
    tmp_path: Path, fmt: str, capfd: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "x.log"
    logs.configure(str(log), fmt, "info")

    logs.get_logger().error("invalid_file", file=f"/guests/{NOT_UTF8}", reason="not UTF-8")

    line = only_line(log)
    assert "\\udce9" in line
    assert capfd.readouterr().err == ""  # no "--- Logging error ---" traceback


class TtyStream(io.StringIO):
    """A stderr that says it is a terminal (the console renderer is used)."""

    def isatty(self) -> bool:
        return True


def test_console_renderer_escapes_control_characters(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = TtyStream()
    monkeypatch.setattr("sys.stderr", terminal)
    logs.configure("-", "logfmt", "info")

    logs.get_logger().info("bad\x1b]0;owned\x07", guest="w\reb", file=f"/g/{NOT_UTF8}")

    lines = terminal.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].isprintable(), lines
    assert "bad\\u001b]0;owned\\u0007" in lines[0] and "\\udce9" in lines[0]


# --- the daemon's start: structlog only once the first creates are started -------------------


def test_events_kept_before_the_log_is_configured_are_written_in_order_with_their_time(
    tmp_path: Path,
) -> None:
    log = tmp_path / "x.log"
    with freeze_time("2026-03-01 04:05:06") as clock:
        logs.configure(str(log), "json", "info", defer=True)
        early = logs.get_logger()
        early.info("started", pid=1)
        early.debug("below_the_level")
        clock.tick(3600)
        early.warning("create_started", guest="web")
        assert not log.exists()  # nothing is written before complete
        clock.tick(60)
        logs.complete()
        early.info("after", guest="web")
        logs.get_logger().error("later")
    lines = [json.loads(line) for line in log_text(log).splitlines()]
    assert [(e["event"], e["level"], e["timestamp"]) for e in lines] == [
        ("started", "info", "2026-03-01T04:05:06+0000"),
        ("create_started", "warning", "2026-03-01T05:05:06+0000"),
        ("after", "info", "2026-03-01T05:06:06+0000"),
        ("later", "error", "2026-03-01T05:06:06+0000"),
    ]
    assert lines[0]["pid"] == 1 and lines[1]["guest"] == "web"
    assert all(logs.LOGGED_AT not in e for e in lines)


def test_complete_without_anything_put_off_changes_nothing(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    logs.configure(str(log), "logfmt", "info")
    logs.complete()
    logs.get_logger().info("once")
    assert logfmt_field(only_line(log), "event") == "once"


# --- the log file going away -----------------------------------------------------------------


def test_a_deleted_log_directory_is_recreated(tmp_path: Path) -> None:
    log = tmp_path / "logdir" / "x.log"
    logs.configure(str(log), "logfmt", "info")
    logs.get_logger().info("before")
    shutil.rmtree(log.parent)

    logs.get_logger().info("after")

    assert logfmt_field(only_line(log), "event") == "after"
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o755


def test_a_rotated_log_file_is_followed(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    logs.configure(str(log), "logfmt", "info")
    logs.get_logger().info("before")
    log.rename(tmp_path / "x.log.0")

    logs.get_logger().info("after")

    assert logfmt_field(only_line(log), "event") == "after"
    assert logfmt_field(only_line(tmp_path / "x.log.0"), "event") == "before"


def unsafe_parent_setup(tmp_path: Path) -> tuple[Path, Path]:
    """The parent directory `tmp_path/open` (mode 0755) and a log path two levels
    below it, `open/logdir/x.log`."""
    parent = tmp_path / "open"
    parent.mkdir(mode=0o755)
    log = parent / "logdir" / "x.log"
    return parent, log


def test_falls_back_to_stderr_once_when_the_directory_may_not_be_recreated(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    parent, log = unsafe_parent_setup(tmp_path)
    clock = FakeClock()
    logs.configure(str(log), "json", "info", clock=clock)
    logs.get_logger().info("before")
    shutil.rmtree(log.parent)
    parent.chmod(0o777)

    for n in range(3):
        logs.get_logger().info("during", n=n)
        clock.now += 1

    assert not log.parent.exists(), "created a directory in a world-writable one"
    events = json_lines(capfd.readouterr().err)
    assert [e["event"] for e in events] == ["log_file_unavailable", "during", "during", "during"]
    assert events[0]["file"] == str(log)
    assert "writable by group or others (mode 0777)" in events[0]["error"]


def test_goes_back_to_the_file_after_the_retry_interval(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    parent, log = unsafe_parent_setup(tmp_path)
    clock = FakeClock()
    logs.configure(str(log), "json", "info", clock=clock)
    shutil.rmtree(log.parent)
    parent.chmod(0o777)
    logs.get_logger().info("during")
    parent.chmod(0o755)

    clock.now += logs.REOPEN_RETRY - 1
    logs.get_logger().info("still_during")
    clock.now += 1
    logs.get_logger().info("after")

    assert [e["event"] for e in json_lines(log_text(log))] == ["log_file_restored", "after"]
    err = [e["event"] for e in json_lines(capfd.readouterr().err)]
    assert err == ["log_file_unavailable", "during", "still_during"]


def test_reopen_goes_back_to_the_file_at_once(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    parent, log = unsafe_parent_setup(tmp_path)
    logs.configure(str(log), "json", "info", clock=FakeClock())
    shutil.rmtree(log.parent)
    parent.chmod(0o777)
    logs.get_logger().info("during")
    parent.chmod(0o755)

    logs.reopen()
    logs.get_logger().info("after")

    assert [e["event"] for e in json_lines(log_text(log))] == ["log_file_restored", "after"]
    assert [e["event"] for e in json_lines(capfd.readouterr().err)] == [
        "log_file_unavailable",
        "during",
    ]


def test_a_log_file_that_cannot_be_opened_at_start_falls_back(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "missing" / "deeper" / "x.log"

    logs.configure(str(log), "json", "info")
    logs.get_logger().info("started")

    events = json_lines(capfd.readouterr().err)
    assert [e["event"] for e in events] == ["log_file_unavailable", "started"]
    assert "No such file or directory" in events[0]["error"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_failing_write_falls_back_to_stderr_once(capfd: pytest.CaptureFixture[str]) -> None:
    logs.configure("/dev/full", "json", "info")

    logs.get_logger().info("one")
    logs.get_logger().info("two")

    events = json_lines(capfd.readouterr().err)
    assert [e["event"] for e in events] == ["log_file_unavailable", "one", "two"]
    assert "No space left on device" in events[0]["error"]


# --- exit codes ------------------------------------------------------------------------------


def test_a_runtime_failure_of_run_exits_one_not_two(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "x.log"
    config = tmp_path / "xenreconcile.yaml"
    config.write_text(
        f"log_file: {log}\nlog_format: json\nstate_dir: {tmp_path / 'state'}\n", encoding="utf-8"
    )

    def broken_disk(self: Daemon) -> int:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(Daemon, "run", broken_disk)

    code = cli.main(["-c", str(config), "run"])

    assert code == 1
    assert "xenreconcile: [Errno 5] Input/output error" in capsys.readouterr().err
    failed = [e for e in json_lines(log_text(log)) if e["event"] == "daemon_failed"]
    assert failed and failed[0]["error"] == "[Errno 5] Input/output error"


# --- the real daemon -------------------------------------------------------------------------


@pytest.fixture
def daemon_run(tmp_path: Path) -> Iterator[DaemonRun]:
    """The real daemon logging to `tmp_path/logs/xr/xenreconcile.log`."""
    log = tmp_path / "logs" / "xr" / "xenreconcile.log"
    log.parent.parent.mkdir(mode=0o755)
    run = DaemonRun(tmp_path, watch="poll", interval="0.5s", log_file=str(log))
    run.log_file = log
    try:
        yield run
    finally:
        run.kill()


def stderr_events(run: DaemonRun, event: str) -> list[dict[str, Any]]:
    """JSON log lines with `event` that the daemon wrote to its stderr."""
    return [e for e in run.lines(run.root / "daemon.stderr") if e.get("event") == event]


def start_with_running_guest(run: DaemonRun) -> None:
    """Start the daemon with guest `web` and wait until it runs and is settled."""
    run.add_guest("web")
    run.start()
    wait_for(lambda: "web" in run.running(), 15, "web to run")
    wait_for(lambda: run.events("create_ok", "web"), 10, "create_ok")


@pytest.mark.integration
def test_daemon_recreates_a_deleted_log_directory_and_goes_on(daemon_run: DaemonRun) -> None:
    run = daemon_run
    start_with_running_guest(run)
    shutil.rmtree(run.log_file.parent)

    run.sim.destroy("web")

    wait_for(lambda: len(run.sim.creates("web")) == 2, 15, "web to be created again")
    wait_for(lambda: run.events("create_ok", "web"), 10, "create_ok in the recreated log")
    assert run.proc is not None and run.proc.poll() is None
    assert stderr_events(run, "log_file_unavailable") == []
    assert run.stop() == 0


@pytest.mark.integration
def test_daemon_logs_to_stderr_while_the_log_cannot_be_recreated(daemon_run: DaemonRun) -> None:
    run = daemon_run
    start_with_running_guest(run)
    shutil.rmtree(run.log_file.parent)
    run.log_file.parent.parent.chmod(0o777)

    run.sim.destroy("web")

    wait_for(lambda: len(run.sim.creates("web")) == 2, 15, "web to be created again")
    wait_for(lambda: stderr_events(run, "create_ok"), 10, "create_ok on stderr")
    assert len(stderr_events(run, "log_file_unavailable")) == 1
    run.log_file.parent.parent.chmod(0o755)
    run.signal(signal.SIGHUP)
    wait_for(lambda: run.events("config_reloaded"), 10, "the log file again after SIGHUP")
    assert run.events("log_file_restored")
    assert run.stop() == 0
    assert len(stderr_events(run, "log_file_unavailable")) == 1
