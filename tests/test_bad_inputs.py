"""The bad-input matrix: what the admin sees for each kind of bad input.

Each class is checked end to end, through the command line (`xenreconcile
check`, exit code and the exact line printed) or the real daemon's JSON log,
and each message below is quoted in the table of docs/reliability.md (a test
here keeps the two in step). Guest-file classes also check that the bad file
changes nothing for a good guest next to it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.daemon_harness import DaemonRun, wait_for

DOC = Path(__file__).resolve().parent.parent / "docs" / "reliability.md"
DOC_DIR = "/usr/local/etc/xen/guests"  # the guests dir the doc's messages show


def write(path: Path, data: str | bytes, mode: int = 0o644) -> Path:
    """Write `data` to `path` with `mode`."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    path.chmod(mode)
    return path


@dataclass(frozen=True)
class FileCase:
    """A bad file `x.cfg` made by `make(guests_dir)`, and the line `check` prints
    for it ({dir} stands for the guests dir), or None when it is ignored silently."""

    make: Callable[[Path], object]
    message: str | None


def _fifo(d: Path) -> None:
    os.mkfifo(d / "x.cfg")


def _other_owner(d: Path) -> None:
    write(d / "x.cfg", 'name = "x"\n')
    os.chown(d / "x.cfg", 65534, -1)


FILE_CASES: dict[str, FileCase] = {
    "syntax-error": FileCase(
        lambda d: write(d / "x.cfg", 'name = "x"\nmemory = = 3\n'),
        "{dir}/x.cfg:2:10: expected a value (a quoted string, a number or a '[' list) "
        "for key 'memory', found '='",
    ),
    "no-name": FileCase(
        lambda d: write(d / "x.cfg", "memory = 128\n"),
        "{dir}/x.cfg: no 'name' key: xl needs the guest's name",
    ),
    "not-utf8": FileCase(
        lambda d: write(d / "x.cfg", b'name = "\xff"\n'),
        "{dir}/x.cfg:1:9: not UTF-8: invalid byte 0xff at byte offset 8",
    ),
    "over-1MiB": FileCase(
        lambda d: write(d / "x.cfg", 'name = "x"\n' + "#" * (1 << 20)),
        "{dir}/x.cfg: larger than 1 MiB",
    ),
    "empty": FileCase(lambda d: write(d / "x.cfg", ""), "{dir}/x.cfg: empty file (no name)"),
    "fifo": FileCase(_fifo, None),
    "symlink-to-dev-zero": FileCase(
        lambda d: (d / "x.cfg").symlink_to("/dev/zero"),
        "{dir}/x.cfg: symlink to /dev/zero, which is not a regular file (a character device)",
    ),
    "symlink-loop": FileCase(
        lambda d: (d / "x.cfg").symlink_to("x.cfg"),
        "{dir}/x.cfg: symlink loop (too many levels of symbolic links)",
    ),
    "dangling-symlink": FileCase(
        lambda d: (d / "x.cfg").symlink_to("nowhere.cfg"),
        "{dir}/x.cfg: dangling symlink to nowhere.cfg",
    ),
    "owned-by-another-user": FileCase(
        _other_owner,
        "{dir}/x.cfg: unsafe: owned by uid 65534 (nobody), must be owned by uid 0 (root) "
        "(or set strict_permissions: false)",
    ),
    "group-writable-file": FileCase(
        lambda d: write(d / "x.cfg", 'name = "x"\n', 0o664),
        "{dir}/x.cfg: unsafe: mode 0664 is writable by group or others "
        "(chmod go-w, or set strict_permissions: false)",
    ),
    "world-writable-file": FileCase(
        lambda d: write(d / "x.cfg", 'name = "x"\n', 0o646),
        "{dir}/x.cfg: unsafe: mode 0646 is writable by group or others "
        "(chmod go-w, or set strict_permissions: false)",
    ),
    "directory-named-x.cfg": FileCase(lambda d: (d / "x.cfg").mkdir(), None),
}


class Setup:
    """A guests dir with one good guest, a state dir and a config, for the CLI."""

    def __init__(self, root: Path, config: str = "") -> None:
        self.root = root
        self.guests = root / "guests"
        self.guests.mkdir(mode=0o755)
        self.guests.chmod(0o755)
        write(self.guests / "good.cfg", 'name = "good"\n')
        self.config = root / "xenreconcile.yaml"
        self.config.write_text(
            f"guests_dir: {self.guests}\nstate_dir: {root / 'state'}\nlog_file: '-'\n{config}",
            encoding="utf-8",
        )

    def cli(self, *args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        """Run `xenreconcile -c CONFIG ARGS` (after `prefix`, e.g. setpriv)."""
        return subprocess.run(
            [*prefix, sys.executable, "-m", "xenreconcile", "-c", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=30,  # a scan that blocks (a FIFO) fails here instead of hanging
            check=False,
        )


def is_root() -> bool:
    return os.geteuid() == 0


needs_root = pytest.mark.skipif(not is_root(), reason="needs root (chown, mount, setpriv)")


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_bad_guest_file(tmp_path: Path, case: str) -> None:
    if case == "owned-by-another-user" and not is_root():
        pytest.skip("chown needs root")
    setup = Setup(tmp_path)
    FILE_CASES[case].make(setup.guests)
    result = setup.cli("check")
    expected = FILE_CASES[case].message
    assert f"ok  good  {setup.guests}/good.cfg" in result.stdout  # the others are unaffected
    if expected is None:
        assert result.returncode == 0, result.stdout
        assert "x.cfg" not in result.stdout
    else:
        assert result.returncode == 1
        assert expected.format(dir=setup.guests) in result.stdout.splitlines()


def test_duplicate_names(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    write(setup.guests / "a.cfg", 'name = "twin"\n')
    write(setup.guests / "b.cfg", 'name = "twin"\n')
    result = setup.cli("check")
    assert result.returncode == 1
    expected = DUPLICATE.format(dir=setup.guests)
    assert expected in result.stdout.splitlines()


DUPLICATE = "duplicate guest name 'twin' in: {dir}/a.cfg, {dir}/b.cfg"


@needs_root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv(1)")
def test_unreadable_file(tmp_path: Path) -> None:
    # Root reads a mode-000 file anyway; dropping CAP_DAC_OVERRIDE and
    # CAP_DAC_READ_SEARCH from the bounding set makes open() really fail.
    setup = Setup(tmp_path)
    write(setup.guests / "x.cfg", 'name = "x"\n', 0o000)
    caps = "-dac_override,-dac_read_search"
    result = setup.cli("check", prefix=("setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}"))
    assert result.returncode == 1
    assert UNREADABLE.format(dir=setup.guests) in result.stdout.splitlines()


UNREADABLE = "{dir}/x.cfg: unreadable: Permission denied"

DIR_CASES = {
    "guests-dir-missing": "{dir}: guests directory {dir} does not exist",
    "guests-dir-is-a-file": "{dir}: guests directory {dir} is not a directory",
    "guests-dir-world-writable": "{dir}: guests directory {dir} is unsafe: mode 0777 is "
    "writable by group or others (chmod go-w, or set strict_permissions: false)",
}


@pytest.mark.parametrize("case", sorted(DIR_CASES))
def test_bad_guests_dir(tmp_path: Path, case: str) -> None:
    setup = Setup(tmp_path)
    if case == "guests-dir-missing":
        shutil.rmtree(setup.guests)
    elif case == "guests-dir-is-a-file":
        shutil.rmtree(setup.guests)
        write(setup.guests, 'name = "x"\n')
    else:
        setup.guests.chmod(0o777)
    result = setup.cli("check")
    assert result.returncode == 1
    assert DIR_CASES[case].format(dir=setup.guests) in result.stdout.splitlines()


CONFIG_CASES = {
    "config-wrong-type": (
        "interval: fast\n",
        "interval: 'fast' is not a duration; use seconds (30) or units h, m, s (30s, 5m, 1h30m)",
    ),
    "config-unknown-key": ("intervall: 5s\n", "intervall: unknown key; did you mean 'interval'?"),
    "config-nested-wrong-type": (
        "backoff: {max: [1]}\n",
        "backoff.max: expected a duration, got a list",
    ),
    "config-not-yaml": (
        "a: [\n",
        "not valid YAML: expected the node content, but found '<stream end>'",
    ),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_config(tmp_path: Path, case: str) -> None:
    text, message = CONFIG_CASES[case]
    setup = Setup(tmp_path)
    setup.config.write_text(text, encoding="utf-8")
    result = setup.cli("check")
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stderr.startswith(f"xenreconcile: {setup.config}, line ")


def test_check_prints_every_config_problem(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    setup.config.write_text("intervall: 5s\nbackoff: {max: [1]}\n", encoding="utf-8")
    result = setup.cli("check")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"xenreconcile: {setup.config}, line 1: intervall: unknown key; did you mean 'interval'?",
        f"xenreconcile: {setup.config}, line 2: backoff.max: expected a duration, got a list",
    ]


# --- the running daemon -------------------------------------------------------------------


@pytest.fixture
def run(tmp_path: Path) -> Iterator[DaemonRun]:
    daemon_run = DaemonRun(tmp_path, watch="poll", interval="0.5s")
    try:
        yield daemon_run
    finally:
        daemon_run.kill()


@pytest.mark.integration
def test_garbage_from_xl_means_no_action(run: DaemonRun) -> None:
    run.sim.set_faults(list_garbage=True)
    run.add_guest("web")
    run.start()
    errors = wait_for(lambda: run.events("toolstack_error"), 10, "toolstack_error")
    assert errors[0]["error"].startswith(XL_GARBAGE)
    assert run.sim.creates() == []
    assert run.status()["toolstack"]["ok"] is False
    run.sim.set_faults(list_garbage=None)
    wait_for(lambda: "web" in run.running(), 15, "web once xl lists properly")


XL_GARBAGE = "xl list output line 1: not the xl list header: 'Name ID Mem'"


@pytest.mark.integration
def test_sighup_with_a_broken_config_keeps_the_old_one(run: DaemonRun) -> None:
    run.start()
    run.config_path.write_text("interval: fast\n", encoding="utf-8")
    run.signal(signal.SIGHUP)
    failed = wait_for(lambda: run.events("config_reload_failed"), 10, "config_reload_failed")
    assert SIGHUP_MESSAGE in failed[0]["error"] and failed[0]["kept"] == "previous config"
    run.add_guest("after")  # the old config still works
    wait_for(lambda: "after" in run.running(), 15, "a guest created after the bad reload")


SIGHUP_MESSAGE = "line 1: interval: 'fast' is not a duration"


@pytest.mark.integration
def test_sighup_with_several_config_problems_logs_them_all(run: DaemonRun) -> None:
    run.start()
    run.config_path.write_text("interval: fast\nconcurrency: 0\n", encoding="utf-8")
    run.signal(signal.SIGHUP)
    failed = wait_for(lambda: run.events("config_reload_failed"), 10, "config_reload_failed")
    assert failed[0]["error"].splitlines() == [
        f"{run.config_path}, line 1: interval: 'fast' is not a duration; use seconds (30) "
        "or units h, m, s (30s, 5m, 1h30m)",
        f"{run.config_path}, line 2: concurrency: must be at least 1, got 0",
    ]
    assert failed[0]["kept"] == "previous config"


@pytest.mark.integration
def test_corrupt_state_file_is_moved_aside(run: DaemonRun) -> None:
    run.state_dir.mkdir()
    (run.state_dir / "state.json").write_text("{not json", encoding="utf-8")
    run.add_guest("web")
    run.start()
    corrupt = run.events("state_corrupt")
    assert corrupt and CORRUPT_STATE in corrupt[0]["error"]
    assert list(run.state_dir.glob("state.json.corrupt-*"))
    # Its hold may have been lost with the file: web waits for the admin.
    wait_for(lambda: run.guest_state("web") == "uncertain", 15, "web to be uncertain")
    assert run.events("state_uncertain", guest="*")
    assert run.sim.creates("web") == []
    assert run.cli("release", "web").returncode == 0
    wait_for(lambda: "web" in run.running(), 15, "web once released")


CORRUPT_STATE = "is corrupt (not JSON: Expecting property name enclosed in double quotes"


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[None]:
    """A tmpfs of `size` mounted on `path` for the block; skips if mount fails."""
    path.mkdir(exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@needs_root
@pytest.mark.integration
def test_state_dir_full_while_running(run: DaemonRun) -> None:
    with tmpfs(run.state_dir, "256k"):
        run.start()
        filler = run.state_dir / "filler"
        with contextlib.suppress(OSError), open(filler, "wb") as fh:
            while True:
                fh.write(b"\0" * 65536)
        run.add_guest("web")
        failed = wait_for(lambda: run.events("state_save_failed"), 15, "state_save_failed")
        assert STATE_FULL in failed[0]["error"]
        wait_for(lambda: "web" in run.running(), 15, "web although state cannot be saved")
        filler.unlink()
        run.add_guest("more")
        wait_for(lambda: run.events("state_saved"), 15, "state_saved once there is room")
        assert run.stop() == 0


@needs_root
def test_state_dir_read_only_at_start(tmp_path: Path) -> None:
    # A running daemon keeps its lock file open for writing, so the file system
    # cannot be remounted read-only under it; read-only is a start-up condition.
    setup = Setup(tmp_path, "xl: ['true']\n")
    state = tmp_path / "state"
    with tmpfs(state, "64k"):
        subprocess.run(["mount", "-o", "remount,ro", str(state)], check=True)
        result = setup.cli("run", "--once")
    assert result.returncode == 1  # a run-time failure, not a usage error (2)
    assert STATE_READ_ONLY.format(dir=state) in result.stderr


STATE_FULL = "[Errno 28] No space left on device"
STATE_READ_ONLY = "xenreconcile: [Errno 30] Read-only file system: '{dir}/lock'"


# --- the doc quotes every message -----------------------------------------------------------


def test_every_message_is_in_the_reliability_doc() -> None:
    doc = DOC.read_text(encoding="utf-8")
    messages = [c.message for c in FILE_CASES.values() if c.message]
    messages += [DUPLICATE, UNREADABLE, *DIR_CASES.values()]
    messages += [m for _, m in CONFIG_CASES.values()]
    messages += [XL_GARBAGE, SIGHUP_MESSAGE, CORRUPT_STATE, STATE_FULL]
    missing = [m for m in messages if m.format(dir=DOC_DIR) not in doc]
    assert STATE_READ_ONLY.format(dir="/var/db/xenreconcile") in doc
    assert not missing, f"not quoted in {DOC.name}: {missing}"
