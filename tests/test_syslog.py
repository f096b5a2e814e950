"""`log_file: syslog`: the log goes to the local syslog socket (a stand-in
datagram socket here, as syslogd's /var/run/log or Linux's /dev/log)."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from xenreconcile import logs
from xenreconcile.config import load_config

# syslog(3) priority of facility daemon (3) at each level: facility * 8 + severity.
DAEMON_INFO, DAEMON_WARNING = 3 * 8 + 6, 3 * 8 + 4


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Leave the process logging to stderr."""
    yield
    logs.configure("-", "logfmt", "info")


@pytest.fixture
def syslogd(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket standing in for syslogd, named as the first syslog socket
    (in a short temp directory: a unix socket path has at most 104 bytes on FreeBSD)."""
    with tempfile.TemporaryDirectory(prefix="xr-syslog-") as directory:
        path = os.path.join(directory, "log")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        server.bind(path)
        server.settimeout(5)
        monkeypatch.setattr(logs, "SYSLOG_SOCKETS", (path, "/nonexistent/log"))
        try:
            yield server, path
        finally:
            server.close()


def test_log_file_syslog_sends_each_event_tagged_as_daemon(
    syslogd: tuple[socket.socket, str],
) -> None:
    server, _path = syslogd
    logs.configure(logs.SYSLOG, "logfmt", "info")

    logs.get_logger().info("created", guest="web")
    logs.get_logger().warning("create_failed", guest="db", exit_code=1)

    first, second = server.recv(4096).decode(), server.recv(4096).decode()
    tag = f"xenreconcile[{os.getpid()}]: "
    assert first.startswith(f"<{DAEMON_INFO}>{tag}")
    assert "event=created guest=web" in first
    assert second.startswith(f"<{DAEMON_WARNING}>{tag}")
    assert "event=create_failed guest=db exit_code=1" in second


def test_lines_go_to_stderr_while_syslog_is_away_and_back_after(
    syslogd: tuple[socket.socket, str], capsys: pytest.CaptureFixture[str]
) -> None:
    server, path = syslogd
    logs.configure(logs.SYSLOG, "logfmt", "info")
    server.close()
    os.unlink(path)  # syslogd restarting: its socket is gone

    logs.get_logger().info("while_away", guest="web")
    assert "event=while_away guest=web" in capsys.readouterr().err

    back = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    back.bind(path)
    back.settimeout(5)
    try:
        logs.get_logger().info("after", guest="web")
        assert "event=after guest=web" in back.recv(4096).decode()
    finally:
        back.close()


def test_the_config_takes_syslog_as_log_file(tmp_path: Path) -> None:
    config_file = tmp_path / "xenreconcile.yaml"
    config_file.write_text("log_file: syslog\n", encoding="utf-8")
    config_file.chmod(0o600)
    assert load_config(str(config_file)).log_file == "syslog"
