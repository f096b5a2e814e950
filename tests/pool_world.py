"""A pool on one machine for the tests: a real etcd on loopback, a TCP proxy per
host (the network between it and etcd, which a test can cut), and several hosts,
each its own simulated xl and real daemon process, on one shared guests
directory; plus the invariant checker, which samples every host's listing
throughout and records each moment a guest ran on two hosts."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_harness import GUEST_CFG, DaemonRun, wait_for
from xenreconcile.models import split_migration_name

LEASE_TTL = 3.0  # seconds: renewals every 1 s, creates stop 2 s after the last one sent


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EtcdServer:
    """A single-member etcd on loopback ports, with its data in `root`."""

    def __init__(self, root: Path) -> None:
        self.program = shutil.which("etcd")
        if self.program is None:
            pytest.skip("etcd is not installed (Debian: apt-get install etcd-server)")
        self.root = root
        self.client_port = free_port()
        self.peer_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def start(self, *, new_ports: bool = False) -> None:
        """Start etcd (one command) and wait until it answers; on its first start,
        ports another process took meanwhile are picked again (a few tries)."""
        for _ in range(5):
            if new_ports:
                self.client_port, self.peer_port = free_port(), free_port()
            self._spawn()
            wait_for(lambda: self.healthy() or self._exited(), 30, "etcd to answer")
            if self.healthy():
                return
            new_ports = new_ports or self.proc is None or self.proc.poll() is not None
        raise RuntimeError(f"etcd did not start; see {self.root / 'etcd.log'}")

    def _exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def _spawn(self) -> None:
        peer = f"http://127.0.0.1:{self.peer_port}"
        assert self.program is not None
        self.proc = subprocess.Popen(
            [
                self.program,
                "--name=pooltest",
                f"--data-dir={self.root / 'etcd-data'}",
                f"--listen-client-urls={self.url}",
                f"--advertise-client-urls={self.url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=pooltest={peer}",
                "--log-level=error",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "etcd.log", "ab"),  # noqa: SIM115 - lives with the process
        )

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1) as answer:
                return bool(json.loads(answer.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


class TcpProxy:
    """Forwards a loopback port to etcd. `cut()` is a partition: established
    connections are dropped and new ones are accepted but get no answer (as a
    silent network would); `heal()` forwards again."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.is_cut = threading.Event()
        self.closed = False
        self.lock = threading.Lock()
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self) -> None:
        self.is_cut.set()
        with self.lock:
            for sock in self.open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self.open.clear()

    def heal(self) -> None:
        self.is_cut.clear()

    def close(self) -> None:
        self.closed = True
        self.cut()
        self.listener.close()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.open.append(client)
            if self.is_cut.is_set():
                continue  # held open, never answered (closed by the next cut or close)
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.open.append(upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while not self.is_cut.is_set():
                data = source.recv(65536)
                if not data or self.is_cut.is_set():
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class Host:
    """One Dom0 of the pool: its simulated xl, its daemon, its proxy to etcd."""

    def __init__(
        self,
        root: Path,
        name: str,
        guests_dir: Path,
        etcd: EtcdServer,
        config: dict[str, Any],
        **pool: Any,
    ) -> None:
        self.name = name
        self.proxy = TcpProxy(etcd.client_port)
        (root / name).mkdir()
        self.run = DaemonRun(root / name)
        pool_config = {
            "name": "testpool",
            "host": name,
            "etcd": [self.proxy.url],
            "lease_ttl": f"{LEASE_TTL:g}s",
            **pool,
        }
        if "fence" in pool:
            feed = [arg.replace("{host}", name) for arg in pool["fence"]["feed"]]
            pool_config["fence"] = {**pool["fence"], "feed": feed}
        # "{host}" in a config value stands for the host's name (one textfile each)
        config = {
            k: v.replace("{host}", name) if isinstance(v, str) else v for k, v in config.items()
        }
        self.run.write_config(
            guests_dir=str(guests_dir), pool=pool_config, log_level="info", **config
        )

    def start(self) -> None:
        self.run.start()

    def spawn(self) -> None:
        """Start the daemon without waiting for it (a supervisor restarting it)."""
        self.run.proc = subprocess.Popen(
            [sys.executable, "-m", "xenreconcile", "-c", str(self.run.config_path), "run"],
            env=self.run.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.run.root / "daemon.stderr", "ab"),  # noqa: SIM115
        )

    def kill9(self) -> None:
        """kill -9 the daemon (its guests go on running)."""
        if self.run.proc is not None and self.run.proc.poll() is None:
            self.run.proc.kill()
            self.run.proc.wait(10)
        self.run.proc = None

    def lose(self) -> None:
        """The host dies: its guests are gone, its daemon with them."""
        self.run.sim.reboot()
        self.kill9()
        self.run.sim.kill_monitors()

    def running(self) -> set[str]:
        """Guests this host runs under their own name (any state but a create's pause)."""
        return {n for n in self.run.running() if split_migration_name(n)[1] is None}

    def domains(self) -> set[str]:
        """Every domain under its own name, a create's paused one too (the checker's view)."""
        names = {d.name for d in self.run.sim.domains()[1:]}
        return {n for n in names if split_migration_name(n)[1] is None}

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.run.kill()
        self.proxy.close()


FEED_SCRIPT = "import sys, time; open(sys.argv[1], 'w').write(repr(time.time()))"


def fence_config(root: Path, timeout: float) -> dict[str, Any]:
    """The `pool.fence` of a test host: the feed writes the time into
    `root/HOST.fed` (`{host}` is filled in per host), read by `Watchdog`."""
    return {
        "feed": [sys.executable, "-c", FEED_SCRIPT, str(root / "{host}.fed")],
        "timeout": f"{timeout:g}s",
    }


class Watchdog:
    """The stand-in for each host's Xen watchdog: a host fed once and then not
    for `timeout` seconds is reset (`Host.lose`); `resets` records when."""

    def __init__(self, root: Path, hosts: list[Host], timeout: float) -> None:
        self.root = root
        self.hosts = hosts
        self.timeout = timeout
        self.resets: dict[str, float] = {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        while not self.done.wait(0.05):
            for host in self.hosts:
                fed = self.fed_at(host.name)
                if host.name not in self.resets and fed and time.time() - fed > self.timeout:
                    host.lose()
                    self.resets[host.name] = time.time()

    def fed_at(self, name: str) -> float | None:
        with contextlib.suppress(OSError, ValueError):
            return float((self.root / f"{name}.fed").read_text())
        return None

    def stop(self) -> None:
        self.done.set()
        self.thread.join(10)


class InvariantChecker:
    """Samples every host's listing every few milliseconds, in a thread, and
    records each sample in which one guest existed on two hosts."""

    def __init__(self, hosts: list[Host]) -> None:
        self.hosts = hosts
        self.violations: list[tuple[float, str, tuple[str, ...]]] = []
        self.first_seen: dict[tuple[str, str], float] = {}
        self.samples = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while not self.done.is_set():
            where: dict[str, list[str]] = {}
            for host in self.hosts:
                with contextlib.suppress(OSError, ValueError):
                    for guest in host.domains():
                        where.setdefault(guest, []).append(host.name)
                        self.first_seen.setdefault((guest, host.name), time.time())
            self.violations += [(time.time(), g, tuple(h)) for g, h in where.items() if len(h) > 1]
            self.samples += 1
            self.done.wait(0.01)

    def stop(self) -> None:
        self.done.set()
        self.thread.join(10)

    def assert_held(self) -> None:
        assert self.samples > 0
        assert self.violations == [], f"guests ran on two hosts: {self.violations[:5]}"


class Pool:
    """etcd, the hosts and the shared guests directory of one test."""

    def __init__(
        self, root: Path, names: list[str], config: dict[str, Any] | None = None, **pool: Any
    ) -> None:
        self.root = root
        self.guests_dir = root / "shared-guests"
        self.guests_dir.mkdir(mode=0o755)
        self.etcd = EtcdServer(root)
        self.etcd.start(new_ports=True)
        self.hosts = {
            n: Host(root, n, self.guests_dir, self.etcd, config or {}, **pool) for n in names
        }
        self.checker = InvariantChecker(list(self.hosts.values()))

    def add_guest(self, name: str) -> None:
        path = self.guests_dir / f"{name}.cfg"
        temp = self.guests_dir / f".{name}.tmp"
        temp.write_text(GUEST_CFG.format(name=name), encoding="utf-8")
        temp.chmod(0o644)
        os.replace(temp, path)

    def start(self, *names: str) -> None:
        """Start the daemons of `names` (default: every host) and wait until each
        is alive in etcd."""
        for name in names or self.hosts:
            self.hosts[name].start()
        self.wait_alive(*(names or self.hosts))

    def wait_alive(self, *names: str, timeout: float = 30) -> None:
        def alive() -> bool:
            hosts = self.pool_status(self.any_running())["hosts"]
            return all(hosts.get(n, {}).get("alive") for n in names)

        wait_for(alive, timeout, f"pool hosts {names} alive")

    def where(self, guest: str) -> list[str]:
        """The hosts running `guest`."""
        return [h.name for h in self.hosts.values() if guest in h.running()]

    def placed(self, guests: list[str]) -> dict[str, str]:
        """guest -> its one host, once every guest runs somewhere (else {})."""
        found = {g: self.where(g) for g in guests}
        return {g: h[0] for g, h in found.items()} if all(found.values()) else {}

    def wait_placed(self, guests: list[str], timeout: float = 60) -> dict[str, str]:
        return wait_for(lambda: self.placed(guests), timeout, f"{guests} to run")

    def wait_passes(self, count: int, *names: str) -> None:
        """Wait until each host of `names` (default: every running one) ran `count`
        passes from now: every chance to act, without a fixed sleep."""
        since = time.time()
        for name in names or [n for n, h in self.hosts.items() if h.run.proc is not None]:
            self.hosts[name].run.wait_passes(count, after=since, timeout=60)

    def claims(self) -> dict[str, str]:
        return dict(self.pool_status(self.any_running())["claims"])

    def any_running(self) -> str:
        return next(n for n, h in self.hosts.items() if h.run.proc is not None)

    def pool_status(self, via: str) -> dict[str, Any]:
        out = self.hosts[via].run.cli("pool", "status", "--json")
        assert out.returncode == 0, out.stderr
        doc: dict[str, Any] = json.loads(out.stdout)
        return doc

    def admin(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run `xenreconcile pool ...` as the admin would, on etcd directly."""
        config = self.root / "admin.yaml"
        if not config.exists():
            state = self.root / "admin-state"
            config.write_text(
                json.dumps(
                    {
                        "guests_dir": str(self.guests_dir),
                        "state_dir": str(state),
                        "log_file": "-",
                        "pool": {"name": "testpool", "host": "admin", "etcd": [self.etcd.url]},
                    }
                ),
                encoding="utf-8",
            )
        return subprocess.run(
            [sys.executable, "-m", "xenreconcile", "-c", str(config), "pool", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def close(self) -> None:
        self.checker.stop()
        for host in self.hosts.values():
            host.close()
        self.etcd.stop()


@contextlib.contextmanager
def pool_of(
    root: Path, *names: str, config: dict[str, Any] | None = None, **pool: Any
) -> Iterator[Pool]:
    """A started etcd and hosts `names` (daemons not started; `config`: more keys
    for every host, `pool`: more `pool` keys); everything torn down after."""
    world = Pool(root, list(names), config, **pool)
    try:
        yield world
    finally:
        world.close()
