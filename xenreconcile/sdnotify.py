"""systemd's readiness and watchdog protocol (sd_notify(3)), without libsystemd:
one datagram per message to the unix socket named by `$NOTIFY_SOCKET`.

Under `Type=notify` the daemon says `READY=1` after its first pass, and, when
the unit sets `WatchdogSec=`, `WATCHDOG=1` from the loop at half that interval:
a loop that stops turning stops pinging, and systemd restarts the daemon (never
the guests). Outside systemd (no `$NOTIFY_SOCKET`) every call does nothing.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import MutableMapping

ENV_KEYS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Notifier:
    """Sends notify messages to `address` (None: nowhere); pings the watchdog
    every `ping_every` seconds of the caller's clock (None: no watchdog)."""

    def __init__(self, address: str | None, ping_every: float | None) -> None:
        self.address = address
        self.ping_every = ping_every
        self.next_ping: float | None = None

    @classmethod
    def from_env(cls, environ: MutableMapping[str, str] | None = None) -> Notifier:
        """The notifier systemd's variables in `environ` (default os.environ) ask
        for. The variables are removed from it, so that the programs the daemon
        runs (xl, notify_command) do not speak for it."""
        env = os.environ if environ is None else environ
        values = {key: env.pop(key, None) for key in ENV_KEYS}
        address = values["NOTIFY_SOCKET"] or None
        return cls(address, watchdog_interval(values["WATCHDOG_USEC"], values["WATCHDOG_PID"]))

    def send(self, message: str) -> bool:
        """Send `message` (e.g. "READY=1"); True if it was sent. Never raises."""
        if self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(message.encode("utf-8"), target)
            return True
        return False

    def ready(self, status: str) -> None:
        """The daemon is up (its first pass is done); `status` is shown by systemctl."""
        self.send(f"READY=1\nSTATUS={status}")

    def stopping(self) -> None:
        """The daemon is stopping."""
        self.send("STOPPING=1")

    def tick(self, now: float) -> None:
        """The loop turned at `now`: ping the watchdog when a ping is due."""
        if self.ping_every is None or self.address is None:
            return
        if self.next_ping is None or now >= self.next_ping:
            self.send("WATCHDOG=1")
            self.next_ping = now + self.ping_every


def watchdog_interval(usec: str | None, pid: str | None) -> float | None:
    """Given `$WATCHDOG_USEC` and `$WATCHDOG_PID`, the seconds between two pings
    (half the watchdog's timeout, as sd_watchdog_enabled(3) advises), or None
    when there is no watchdog for this process."""
    if not usec or not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 1e6 / 2
