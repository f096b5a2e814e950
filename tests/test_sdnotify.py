"""systemd notify protocol: READY=1 after the first pass, watchdog pings from the
loop, STOPPING=1; against a fake NOTIFY_SOCKET (a datagram socket of the test)."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator

import pytest

from tests.daemon_harness import DaemonRun, wait_for
from tests.helpers import FakeClock
from tests.test_daemon_loop import FakeXl, add_guest, new_daemon
from tests.test_service_files import config_default, seconds, unit_settings
from xenreconcile.sdnotify import Notifier, watchdog_interval


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """systemd's end of NOTIFY_SOCKET, in a short path (unix socket path limit)."""
    with tempfile.TemporaryDirectory(prefix="xr-notify-") as directory:
        path = os.path.join(directory, "notify")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        server.bind(path)
        server.settimeout(10)
        try:
            yield server, path
        finally:
            server.close()


def received(server: socket.socket) -> list[str]:
    """Every message waiting on `server`, without blocking."""
    server.setblocking(False)
    out = []
    try:
        while True:
            out.append(server.recv(4096).decode())
    except BlockingIOError:
        return out
    finally:
        server.settimeout(10)


def test_from_env_reads_and_removes_systemds_variables() -> None:
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "20000000", "PATH": "/bin"}
    notifier = Notifier.from_env(env)
    assert notifier.address == "/run/systemd/notify"
    assert notifier.ping_every == 10.0  # half of WatchdogSec
    assert env == {"PATH": "/bin"}  # xl and notify_command do not inherit them


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("4000000", None, 2.0),
        ("4000000", str(os.getpid()), 2.0),
        ("4000000", "1", None),  # meant for another process
        ("0", None, None),
        (None, None, None),
        ("soon", None, None),
    ],
)
def test_watchdog_interval(usec: str | None, pid: str | None, expected: float | None) -> None:
    assert watchdog_interval(usec, pid) == expected


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier.from_env({})
    assert notifier.send("READY=1") is False
    notifier.tick(100.0)  # no error, no socket


def test_an_abstract_socket_address_is_reached() -> None:
    name = f"xr-notify-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        server.settimeout(10)
        assert Notifier("@" + name, None).send("READY=1")
        assert server.recv(4096) == b"READY=1"


def test_the_loop_says_ready_after_its_first_pass_and_pings_at_half_the_watchdog(
    tmp_path: object, notify_socket: tuple[socket.socket, str]
) -> None:
    server, path = notify_socket
    xl, clock = FakeXl(), FakeClock()
    daemon = new_daemon(tmp_path, xl, clock)  # type: ignore[arg-type]
    daemon.notifier = Notifier(path, ping_every=2.0)
    add_guest(tmp_path, "web")  # type: ignore[arg-type]
    try:
        daemon.step()
        first = received(server)
        assert first[0] == "WATCHDOG=1"  # the loop's first turn pings at once
        assert first[1].startswith("READY=1\nSTATUS=first pass done")
        start = clock.now
        while clock.now < start + 10:
            daemon.step()  # the loop turns every 0.5 s (fake) while idle
        pings = received(server)
        assert set(pings) == {"WATCHDOG=1"}
        assert len(pings) in (4, 5)  # every 2 s of 10 s, not every turn
        assert all(not m.startswith("READY") for m in pings)  # once only
    finally:
        daemon.shutdown()
    assert received(server) == ["STOPPING=1"]


def test_the_real_daemon_notifies_a_fake_systemd(
    tmp_path: object, notify_socket: tuple[socket.socket, str]
) -> None:
    server, path = notify_socket
    run = DaemonRun(tmp_path, interval="60s")  # type: ignore[arg-type]
    run.add_guest("web")
    original = run.env

    def env() -> dict[str, str]:
        return {**original(), "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"}

    run.env = env  # type: ignore[method-assign]
    try:
        run.start()
        messages: list[str] = []

        def watchdog_pings() -> int:
            messages.extend(received(server))
            return messages.count("WATCHDOG=1")

        wait_for(lambda: watchdog_pings() >= 3, 20, "three watchdog pings")
        assert sum(m.startswith("READY=1") for m in messages) == 1
        assert run.stop() == 0
        assert "STOPPING=1" in messages + received(server)
    finally:
        run.kill()


def test_the_unit_waits_for_ready_and_has_a_watchdog_longer_than_a_hung_xl_list() -> None:
    settings = unit_settings()
    assert settings["Type"] == ["notify"]
    assert settings["NotifyAccess"] == ["main"]
    assert seconds(settings["WatchdogSec"][0]) > seconds(config_default("list_timeout"))
