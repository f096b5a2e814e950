"""rc.d/xenreconcile run for real by /bin/sh: start, status, reload, restart, check,
stop, and where the daemon's stderr goes.

FreeBSD's parts are test doubles in tests/rcd_stubs: rc.subr (a small faithful
subset of /etc/rc.subr) and fake_daemon.py (daemon(8) of FreeBSD 13, whose
supervisor exits on SIGTERM before its child has finished, or of 14, which
waits). The test runs a copy of the script with `. /etc/rc.subr`, the program
paths, /var/run and /var/log/xen rewritten to point at those doubles and a temp
directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from xenreconcile.simxl import wait_until

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="reads process states from Linux /proc"
)

ROOT = Path(__file__).resolve().parents[1]
STUBS = ROOT / "tests" / "rcd_stubs"
RC_SCRIPT = ROOT / "rc.d" / "xenreconcile"
RC_SUBR = STUBS / "rc.subr"
FAKE_DAEMON = STUBS / "fake_daemon.py"

# The daemon the script supervises in most tests: a stand-in (tests/rcd_stubs), because
# it lets a test hold the daemon in its graceful stop for as long as it likes, and
# record signals exactly. test_real_daemon_under_the_rc_script at the end runs the real
# `xenreconcile run` against the simulated xl under the same script.
STAND_IN = STUBS / "standin_daemon.py"
# The line `status` adds, as the stand-in prints it (`xenreconcile status --brief`).
STAND_IN_BRIEF = "guests: 0/0 running; problems: none"

DEADLINE = 20.0


def alive(pid: int) -> bool:
    """True when the process exists and is not a zombie (dead, waiting to be reaped)."""
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except (ProcessLookupError, FileNotFoundError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass
class Service:
    """A copy of the rc.d script wired to the doubles, in its own temp directory."""

    root: Path
    script: Path
    config: Path
    env: dict[str, str]
    pids: set[int] = field(default_factory=set)

    @property
    def supervisor_pidfile(self) -> Path:
        return self.root / "run" / "xenreconcile_daemon.pid"

    @property
    def child_pidfile(self) -> Path:
        return self.root / "run" / "xenreconcile.pid"

    @property
    def output_file(self) -> Path:
        """Where daemon(8) puts the daemon's stdout and stderr."""
        return self.root / "log" / "xenreconcile.stderr"

    def output(self) -> str:
        """What the daemon wrote to its stdout and stderr so far."""
        return self.output_file.read_text() if self.output_file.exists() else ""

    def starts(self) -> int:
        """How many times the daemon has started."""
        return sum(e.startswith("started") for e in self.events())

    def rc(self, command: str) -> subprocess.CompletedProcess[str]:
        """Run `/bin/sh xenreconcile COMMAND` to completion."""
        return subprocess.run(
            ["/bin/sh", str(self.script), command],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def rc_in_background(self, command: str) -> subprocess.Popen[str]:
        """Start `/bin/sh xenreconcile COMMAND` and return without waiting."""
        return subprocess.Popen(
            ["/bin/sh", str(self.script), command],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def events(self) -> list[str]:
        """What the stand-in daemon recorded, one event per item."""
        path = self.root / "events"
        return path.read_text(encoding="utf-8").splitlines() if path.exists() else []

    def read_pid(self, path: Path) -> int:
        """The pid in a pidfile, remembered for clean-up."""
        pid = int(path.read_text(encoding="ascii").split()[0])
        self.pids.add(pid)
        return pid

    def pid_if_written(self, path: Path) -> int | None:
        """The pid in a pidfile, or None while it is missing or being written
        (daemon(8) truncates a pidfile, then writes it, as the stand-in does)."""
        try:
            return self.read_pid(path)
        except (FileNotFoundError, IndexError, ValueError):
            return None

    def started(self) -> tuple[int, int, int]:
        """Wait for the daemon to be up; return (supervisor, daemon, monitor) pids."""
        wait_until(
            lambda: any(e.startswith("started") for e in self.events()), DEADLINE, "the daemon"
        )
        supervisor = self.read_pid(self.supervisor_pidfile)
        child = self.read_pid(self.child_pidfile)
        return supervisor, child, self.monitors()[-1]

    def monitors(self) -> list[int]:
        """The pids of the monitor processes the daemon left behind, oldest first."""
        path = self.root / "monitors"
        pids = [int(line) for line in path.read_text(encoding="ascii").split()]
        self.pids.update(pids)
        return pids

    def release(self) -> None:
        """Let the stand-in finish its graceful stop."""
        (self.root / "release").touch()


def rewrite(text: str, replacements: dict[str, str]) -> str:
    """Replace each key of replacements in text; each must occur."""
    for old, new in replacements.items():
        assert old in text, f"rc.d script no longer contains {old!r}"
        text = text.replace(old, new)
    return text


def install(
    root: Path,
    release: int,
    *,
    enable: str = "YES",
    flags: str = "",
    config_text: str = "interval: 30s\n",
    edit: Callable[[str], str] = lambda text: text,
    program_text: str | None = None,
) -> Service:
    """Lay out a Service in root for the daemon(8) of `release`."""
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True)
    (root / "run").mkdir()
    daemon = bin_dir / "daemon"
    daemon.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_DAEMON}" "$@"\n')
    program = bin_dir / "xenreconcile"
    program.write_text(
        f"#!{sys.executable}\n" + (program_text or STAND_IN.read_text(encoding="utf-8"))
    )
    for path in (daemon, program):
        path.chmod(0o755)
    config = root / "xenreconcile.yaml"
    config.write_text(config_text, encoding="utf-8")
    rc_conf = root / "rc.conf"
    rc_conf.write_text(
        f'xenreconcile_enable="{enable}"\n'
        f'xenreconcile_config="{config}"\n'
        f'xenreconcile_flags="{flags}"\n'
    )
    text = rewrite(
        RC_SCRIPT.read_text(encoding="utf-8"),
        {
            ". /etc/rc.subr": f". {RC_SUBR}",
            "/usr/sbin/daemon": str(daemon),
            "/usr/local/bin/xenreconcile": str(program),
            "/var/run/": f"{root / 'run'}/",
            "/var/log/xen/": f"{root / 'log'}/",
        },
    )
    script = root / "xenreconcile"
    script.write_text(edit(text), encoding="utf-8")
    env = dict(os.environ, RC_SUBR_STUB_RC_CONF=str(rc_conf), FAKE_DAEMON_RELEASE=str(release))
    return Service(root=root, script=script, config=config, env=env)


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """Make Services; at the end release their daemons and kill what is left, by pid."""
    made: list[Service] = []

    def make(release: int, **options: object) -> Service:
        service = install(tmp_path / f"svc{len(made)}", release, **options)  # type: ignore[arg-type]
        made.append(service)
        return service

    yield make
    for service in made:
        service.release()
        if (service.root / "monitors").exists():
            service.monitors()
        for pid in service.pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("release", [13, 14])
def test_start_status_reload_stop(services: Callable[..., Service], release: int) -> None:
    service = services(release, flags="--log-level debug")

    started = service.rc("start")
    assert started.returncode == 0, started.stderr
    assert "Starting xenreconcile." in started.stdout
    supervisor, child, monitor = service.started()
    assert service.events()[0] == f"started -c {service.config} --log-level debug run"

    status = service.rc("status")
    assert status.returncode == 0
    assert status.stdout.splitlines() == [
        f"xenreconcile is running as pid {supervisor}.",
        STAND_IN_BRIEF,
    ]
    again = service.rc("start")
    assert again.returncode == 1
    assert "already running" in again.stderr

    reload = service.rc("reload")
    assert reload.returncode == 0, reload.stderr
    wait_until(lambda: "hup" in service.events(), DEADLINE, "SIGHUP to reach the daemon")
    assert alive(supervisor), "reload must not signal the supervisor"
    assert alive(child)
    assert service.read_pid(service.child_pidfile) == child
    assert sum(e.startswith("started") for e in service.events()) == 1

    stop = service.rc_in_background("stop")
    wait_until(lambda: "term" in service.events(), DEADLINE, "SIGTERM to reach the daemon")
    assert stop.poll() is None, "stop returned while the daemon was still finishing"
    assert alive(child)
    service.release()
    out, err = stop.communicate(timeout=60)
    assert stop.returncode == 0, err
    assert "Stopping xenreconcile." in out
    assert not alive(child)
    assert not alive(supervisor)
    assert service.events()[-1] == "exit"
    assert alive(monitor), "stopping the service killed the xl monitor process"

    after = service.rc("status")
    assert after.returncode == 1
    assert after.stdout.strip() == "xenreconcile is not running."


def test_stop_without_waiting_for_the_daemon_returns_too_early(
    services: Callable[..., Service],
) -> None:
    """The double reproduces the hazard the script guards against (FreeBSD 13)."""

    def drop_wait(text: str) -> str:
        return rewrite(text, {'stop_postcmd="${name}_poststop"\n': ""})

    service = services(13, edit=drop_wait)
    assert service.rc("start").returncode == 0
    supervisor, child, _ = service.started()

    stop = service.rc("stop")

    assert stop.returncode == 0
    assert not alive(supervisor)
    assert alive(child), "the fake daemon(8) 13 should exit before its child"
    assert "exit" not in service.events()


@pytest.mark.parametrize("release", [13, 14])
def test_fake_daemon_behaves_like_the_release(
    services: Callable[..., Service], release: int
) -> None:
    service = services(release)
    assert service.rc("start").returncode == 0
    supervisor, child, _ = service.started()

    os.kill(supervisor, signal.SIGTERM)
    wait_until(lambda: "term" in service.events(), DEADLINE, "SIGTERM forwarded to the daemon")
    if release == 13:
        wait_until(lambda: not alive(supervisor), DEADLINE, "the 13 supervisor to exit")
        assert not service.supervisor_pidfile.exists()
        assert not service.child_pidfile.exists()
        assert alive(child)
    else:
        assert alive(supervisor), "a 14 supervisor waits for its child"
    service.release()
    wait_until(lambda: not alive(child) and not alive(supervisor), DEADLINE, "both to exit")


def without_reopen(text: str) -> str:
    """The script with daemon(8) started without -H."""
    return rewrite(text, {"-f -H -o": "-f -o"})


def test_sighup_kills_a_13_supervisor_and_not_a_14_one(services: Callable[..., Service]) -> None:
    """Without -H, that is: the reason reload signals the daemon, not the supervisor."""
    old, new = services(13, edit=without_reopen), services(14, edit=without_reopen)
    for service in (old, new):
        assert service.rc("start").returncode == 0
    old_supervisor, old_child, _ = old.started()
    new_supervisor, _, _ = new.started()

    os.kill(old_supervisor, signal.SIGHUP)
    os.kill(new_supervisor, signal.SIGHUP)

    wait_until(lambda: not alive(old_supervisor), DEADLINE, "SIGHUP to kill the 13 supervisor")
    assert alive(old_child)
    assert alive(new_supervisor)
    assert "hup" not in old.events() + new.events()


def test_start_refuses_a_broken_config(services: Callable[..., Service]) -> None:
    service = services(13, config_text="broken: true\n")

    started = service.rc("start")

    assert started.returncode == 1
    assert "broken: unknown key" in started.stderr
    assert not service.supervisor_pidfile.exists()
    assert service.rc("status").returncode == 1


BROKEN = "broken: true\n"


@pytest.mark.parametrize("release", [13, 14])
def test_restart_with_a_broken_config_leaves_the_daemon_running(
    services: Callable[..., Service], release: int
) -> None:
    service = services(release)
    assert service.rc("start").returncode == 0
    supervisor, child, _ = service.started()
    service.config.write_text(BROKEN, encoding="utf-8")

    restart = service.rc("restart")

    assert restart.returncode == 1
    assert "broken: unknown key" in restart.stderr
    assert "xenreconcile not restarted:" in restart.stderr
    assert "the running daemon is left as it is" in restart.stderr
    assert "Stopping" not in restart.stdout
    assert alive(supervisor)
    assert alive(child)
    assert "term" not in service.events()
    assert service.rc("status").stdout.splitlines()[0] == (
        f"xenreconcile is running as pid {supervisor}."
    )

    service.config.write_text("interval: 30s\n", encoding="utf-8")
    service.release()  # the old daemon may finish its stop at once
    again = service.rc("restart")

    assert again.returncode == 0, again.stderr
    assert not alive(child)
    wait_until(lambda: service.starts() == 2, DEADLINE, "the restarted daemon")


@pytest.mark.parametrize("release", [13, 14])
def test_reload_with_a_broken_config_does_not_signal(
    services: Callable[..., Service], release: int
) -> None:
    service = services(release)
    assert service.rc("start").returncode == 0
    supervisor, child, _ = service.started()
    service.config.write_text(BROKEN, encoding="utf-8")

    refused = service.rc("reload")

    assert refused.returncode == 1
    assert "broken: unknown key" in refused.stderr
    assert "xenreconcile not reloaded:" in refused.stderr
    assert "Reloading" not in refused.stdout
    # A reload that does signal, so that a SIGHUP from the refused one would show too.
    service.config.write_text("interval: 30s\n", encoding="utf-8")
    assert service.rc("reload").returncode == 0
    wait_until(lambda: "hup" in service.events(), DEADLINE, "SIGHUP to reach the daemon")
    assert service.events().count("hup") == 1
    assert alive(supervisor)
    assert alive(child)


@pytest.mark.parametrize("release", [13, 14])
def test_a_crashing_daemons_traceback_lands_in_the_output_file(
    services: Callable[..., Service], release: int
) -> None:
    service = services(release)
    assert service.rc("start").returncode == 0
    supervisor, child, _ = service.started()

    os.kill(child, signal.SIGUSR1)

    crash = f"Crash: stand-in daemon {child} crashed on SIGUSR1"
    wait_until(lambda: crash in service.output(), DEADLINE, "the traceback in the output file")
    assert "Traceback (most recent call last):" in service.output()
    assert service.output_file.stat().st_mode & 0o777 == 0o600
    wait_until(lambda: service.starts() == 2, DEADLINE, "the supervisor to restart the daemon")
    assert alive(supervisor)


@pytest.mark.parametrize("release", [13, 14])
def test_sighup_to_the_supervisor_reopens_the_output_file(
    services: Callable[..., Service], release: int
) -> None:
    """What newsyslog does after rotating the file: rename it, SIGHUP the supervisor."""
    service = services(release)
    assert service.rc("start").returncode == 0
    supervisor, first, _ = service.started()
    os.kill(first, signal.SIGUSR1)
    wait_until(
        lambda: f"daemon {first} crashed" in service.output(), DEADLINE, "the first traceback"
    )
    wait_until(lambda: service.starts() == 2, DEADLINE, "the supervisor to restart the daemon")
    second = service.read_pid(service.child_pidfile)
    rotated = service.output_file.with_name("xenreconcile.stderr.0")
    service.output_file.rename(rotated)

    os.kill(supervisor, signal.SIGHUP)

    wait_until(service.output_file.exists, DEADLINE, "the supervisor to reopen the output file")
    assert alive(supervisor)
    os.kill(second, signal.SIGUSR1)
    wait_until(
        lambda: f"daemon {second} crashed" in service.output(), DEADLINE, "the second traceback"
    )
    assert f"daemon {second} crashed" not in rotated.read_text()
    assert "hup" not in service.events()


def test_disabled_service_does_not_start(services: Callable[..., Service]) -> None:
    service = services(13, enable="NO")

    started = service.rc("start")

    assert started.returncode == 0
    assert "Set xenreconcile_enable to YES" in started.stdout
    assert not service.supervisor_pidfile.exists()


def test_check_runs_xenreconcile_check(services: Callable[..., Service]) -> None:
    good = services(13)
    bad = services(13, config_text="broken: true\n")

    good_check, bad_check = good.rc("check"), bad.rc("check")

    assert good_check.returncode == 0
    assert good_check.stdout.strip() == f"{good.config}: ok"
    assert bad_check.returncode != 0
    assert "broken: unknown key" in bad_check.stderr


def test_reload_and_stop_when_not_running_fail(services: Callable[..., Service]) -> None:
    service = services(13)

    reload, stop = service.rc("reload"), service.rc("stop")

    assert reload.returncode == 1
    assert "not running" in reload.stderr
    assert stop.returncode == 1
    assert "not running" in stop.stderr


def test_stop_waits_for_a_daemon_restarted_by_the_supervisor(
    services: Callable[..., Service],
) -> None:
    service = services(13)
    assert service.rc("start").returncode == 0
    supervisor, first, _ = service.started()
    service.release()  # the first daemon exits at once when killed below

    os.kill(first, signal.SIGTERM)
    wait_until(
        lambda: service.pid_if_written(service.child_pidfile) not in (None, first),
        DEADLINE,
        "the supervisor to restart the daemon",
    )
    second = service.read_pid(service.child_pidfile)
    wait_until(lambda: service.events().count("exit") == 1, DEADLINE, "the first daemon to exit")
    wait_until(
        lambda: sum(e.startswith("started") for e in service.events()) == 2, DEADLINE, "restart"
    )

    stop = service.rc("stop")

    assert stop.returncode == 0
    assert not alive(second)
    assert not alive(supervisor)
    assert service.events().count("exit") == 2


@pytest.mark.parametrize("release", [13, 14])
def test_faststop_drains_the_guests_before_it_stops_the_daemon(
    services: Callable[..., Service], release: int
) -> None:
    service = services(release)
    assert service.rc("start").returncode == 0
    _supervisor, child, _ = service.started()
    service.release()

    stop = service.rc("faststop")

    assert stop.returncode == 0, stop.stderr
    events = service.events()
    assert "drain daemon-up" in events, "the drain runs while the daemon can still stand down"
    assert events.index("drain daemon-up") < events.index("term")
    assert not alive(child)


def test_faststop_drains_even_when_the_daemon_is_not_running(
    services: Callable[..., Service],
) -> None:
    service = services(14)

    stop = service.rc("faststop")

    assert stop.returncode == 0, stop.stderr
    assert service.events() == ["drain"]


def test_plain_stop_and_restart_never_drain(services: Callable[..., Service]) -> None:
    service = services(14)
    assert service.rc("start").returncode == 0
    service.started()
    service.release()

    assert service.rc("restart").returncode == 0
    wait_until(lambda: service.starts() == 2, DEADLINE, "the restarted daemon")
    assert service.rc("stop").returncode == 0

    assert not any(e.startswith("drain") for e in service.events())


# What pip writes as the `xenreconcile` entry point, so ps(1) shows the daemon as
# "<python> <program> ..." just as on an installed system.
ENTRY_POINT = "import sys\nfrom xenreconcile.cli import main\nsys.exit(main())\n"


def test_real_daemon_under_the_rc_script(services: Callable[..., Service], tmp_path: Path) -> None:
    """The real `xenreconcile run` against the simulated xl, started and stopped by rc.d."""
    simxl = pytest.importorskip("xenreconcile.simxl")
    world = tmp_path / "world"
    guests = world / "guests"
    guests.mkdir(parents=True, mode=0o755)
    guests.chmod(0o755)
    sim = simxl.SimXl(world / "xl-state")
    (world / "bin").mkdir()
    xl = sim.write_wrapper(world / "bin" / "xl")
    # A kernel path that exists on every host: the daemon waits for a missing one.
    cfg = simxl.write_cfg(guests / "web.cfg", "web", kernel="/dev/null")
    cfg.chmod(0o644)
    log = world / "xenreconcile.log"
    config = (
        f"guests_dir: {guests}\nxl: {xl}\nstate_dir: {world / 'state'}\n"
        f"log_file: {log}\ninterval: 5s\n"
    )
    service = services(14, config_text=config, program_text=ENTRY_POINT)
    service.env.update(sim.env())
    try:
        assert service.rc("start").returncode == 0
        wait_until(service.child_pidfile.exists, DEADLINE, "the daemon's pidfile")
        supervisor = service.read_pid(service.supervisor_pidfile)
        child = service.read_pid(service.child_pidfile)

        def web_monitor() -> int | None:
            return next((d.monitor_pid for d in sim.domains() if d.name == "web"), None)

        wait_until(lambda: web_monitor() is not None, DEADLINE, "the daemon to create the guest")
        monitor = web_monitor()
        assert monitor is not None

        def status_lines() -> list[str]:
            return service.rc("status").stdout.splitlines()

        running = [
            f"xenreconcile is running as pid {supervisor}.",
            "guests: 1/1 running; problems: none",
        ]
        wait_until(lambda: status_lines() == running, DEADLINE, "status: the guest running")

        assert service.rc("reload").returncode == 0
        wait_until(lambda: "config_reloaded" in log.read_text(), DEADLINE, "the daemon to reload")
        assert alive(supervisor)
        assert alive(child)

        stop = service.rc("stop")

        assert stop.returncode == 0, stop.stderr
        assert not alive(child)
        assert not alive(supervisor)
        assert alive(monitor), "stopping the service killed the xl monitor process"
        assert "web" in sim.names()
    finally:
        sim.kill_monitors()
