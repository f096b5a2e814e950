"""XlRunner against the simulated xl run as a real subprocess."""

from __future__ import annotations

from pathlib import Path

import pytest

from xenreconcile.models import split_migration_name
from xenreconcile.simxl import SimXl, process_alive, wait_for, write_cfg
from xenreconcile.xl import ToolstackError, XlListError, XlRunner


def last_call_pid(sim: SimXl) -> int:
    """The pid of the latest simulated xl invocation."""
    return int(sim.calls()[-1]["pid"])


def names(runner: XlRunner) -> list[str]:
    """The listed domain names."""
    return [d.name for d in runner.list()]


# --- list ----------------------------------------------------------------------------------


def test_list_returns_the_domains(simxl: SimXl) -> None:
    simxl.add_domain("guest1")
    simxl.add_domain("guest2", state="---sc-")
    domains = XlRunner(simxl.command).list()
    assert [(d.name, d.flags) for d in domains] == [
        ("Domain-0", "r-----"),
        ("guest1", "-b----"),
        ("guest2", "---sc-"),
    ]


def test_list_failing_is_a_toolstack_error_with_xls_message(simxl: SimXl) -> None:
    simxl.set_faults(list_fail=True)
    with pytest.raises(ToolstackError, match=r"xl list exited 1: .*cannot init xl context"):
        XlRunner(simxl.command).list()


def test_list_printing_garbage_is_a_toolstack_error(simxl: SimXl) -> None:
    simxl.set_faults(list_garbage=True)
    with pytest.raises(XlListError):
        XlRunner(simxl.command).list()


def test_list_hanging_is_killed_at_the_timeout_and_reaped(simxl: SimXl) -> None:
    simxl.set_faults(list_hang=True)
    with pytest.raises(ToolstackError, match="xl list timed out after 1s"):
        XlRunner(simxl.command, list_timeout=1, kill_grace=1).list()
    pid = last_call_pid(simxl)
    assert not Path(f"/proc/{pid}").exists() or not process_alive(pid)
    assert simxl.calls()[-1]["rc"] is None


def test_list_hanging_and_ignoring_sigterm_gets_sigkill(simxl: SimXl) -> None:
    simxl.set_faults(list_hang=True, ignore_sigterm=True)
    with pytest.raises(ToolstackError, match="timed out"):
        XlRunner(simxl.command, list_timeout=1, kill_grace=0.5).list()
    assert not process_alive(last_call_pid(simxl))


def test_list_of_a_missing_program_is_a_toolstack_error(tmp_path: Path) -> None:
    with pytest.raises(ToolstackError, match="cannot run"):
        XlRunner([str(tmp_path / "no-such-xl")]).list()


def test_list_after_a_dom0_reboot_has_only_domain0(simxl: SimXl, tmp_path: Path) -> None:
    runner = XlRunner(simxl.command)
    assert runner.create(str(write_cfg(tmp_path / "g.cfg", "guest1"))).ok
    monitor = simxl.domains()[1].monitor_pid
    boot = simxl.boot_time()
    simxl.reboot()
    assert names(runner) == ["Domain-0"]
    assert simxl.boot_time() > boot
    assert monitor is not None
    assert wait_for(lambda: not process_alive(monitor))


def test_list_shows_migration_names(simxl: SimXl) -> None:
    simxl.add_domain("guest1")
    simxl.add_domain("guest2")
    simxl.migrate_away("guest1", seconds=30)
    simxl.failed_localhost_migration("guest2", seconds=0.5)
    listed = names(XlRunner(simxl.command))
    assert listed == ["Domain-0", "guest1--migratedaway", "guest2", "guest2--incoming"]
    assert [split_migration_name(n) for n in listed[1:]] == [
        ("guest1", "migratedaway"),
        ("guest2", None),
        ("guest2", "incoming"),
    ]
    assert wait_for(lambda: "guest2--incoming" not in names(XlRunner(simxl.command)))
    assert "guest2" in names(XlRunner(simxl.command))


# --- create --------------------------------------------------------------------------------


def test_create_ok_returns_while_the_monitor_keeps_xls_output_open(
    simxl: SimXl, tmp_path: Path
) -> None:
    cfg = write_cfg(tmp_path / "guest1.cfg", "guest1")
    result = XlRunner(simxl.command, create_timeout=60).create(str(cfg))
    assert result.ok
    assert result.exit_code == 0
    assert not result.timed_out
    assert result.stderr_tail == f"Parsing config from {cfg}"
    guest = simxl.domains()[1]
    assert guest.name == "guest1"
    assert guest.monitor_pid is not None
    assert process_alive(guest.monitor_pid)
    assert simxl.faults().get("monitor_fds", "keep") == "keep"


def test_create_ok_leaves_the_monitor_running_after_return(simxl: SimXl, tmp_path: Path) -> None:
    runner = XlRunner(simxl.command)
    assert runner.create(str(write_cfg(tmp_path / "a.cfg", "a"))).ok
    assert runner.create(str(write_cfg(tmp_path / "b.cfg", "b"))).ok
    monitors = [d.monitor_pid for d in simxl.domains()[1:]]
    assert all(pid is not None and process_alive(pid) for pid in monitors)
    assert names(runner) == ["Domain-0", "a", "b"]


def test_create_with_missing_kernel_reports_xls_exit_code_and_texts(
    simxl: SimXl, tmp_path: Path
) -> None:
    simxl.set_faults(create_fail={"guest1": "kernel"})
    result = XlRunner(simxl.command).create(str(write_cfg(tmp_path / "g.cfg", "guest1")))
    assert not result.ok
    assert result.exit_code == 3
    assert "xc_dom_kernel_file failed: No such file or directory" in result.stderr_tail
    assert result.error == (  # the cause, not libxl's clean-up lines after it
        "xl create exited 3: xc: error: panic: xg_dom_core.c:205: failed to open file "
        "'/boot/vmlinuz': No such file or directory: Internal error"
    )
    assert simxl.names() == []


def test_create_of_a_bad_file_reports_the_parse_error(simxl: SimXl, tmp_path: Path) -> None:
    bad = tmp_path / "bad.cfg"
    bad.write_text('name = "g"\nthis is bad\n')
    result = XlRunner(simxl.command).create(str(bad))
    assert result.exit_code == 1
    assert result.stderr_tail.splitlines() == [
        f"Parsing config from {bad}",
        f"{bad}:2: config parsing error near `is': syntax error, unexpected IDENT, "
        "expecting += or '='",
        "Failed to parse config: Invalid argument",
    ]


def test_create_of_a_missing_file_exits_3(simxl: SimXl, tmp_path: Path) -> None:
    missing = tmp_path / "missing.cfg"
    result = XlRunner(simxl.command).create(str(missing))
    assert result.exit_code == 3
    assert result.stderr_tail == f"Failed to read config file: {missing}: No such file or directory"


def test_create_of_an_existing_name_exits_3(simxl: SimXl, tmp_path: Path) -> None:
    simxl.add_domain("guest1")
    result = XlRunner(simxl.command).create(str(write_cfg(tmp_path / "g.cfg", "guest1")))
    assert result.exit_code == 3
    assert 'Domain with name "guest1" already exists.' in result.stderr_tail


def test_create_hanging_is_killed_at_the_timeout_and_leaves_no_zombie(
    simxl: SimXl, tmp_path: Path
) -> None:
    simxl.set_faults(create_hang=True)
    result = XlRunner(simxl.command, create_timeout=1, kill_grace=1).create(
        str(write_cfg(tmp_path / "g.cfg", "guest1"))
    )
    assert result.timed_out
    assert not result.ok
    assert result.exit_code is None
    assert result.error == f"xl create timed out after {result.duration:.0f}s"
    pid = last_call_pid(simxl)
    assert not process_alive(pid)
    assert not Path(f"/proc/{pid}").exists()
    assert simxl.names() == []


def test_create_slow_but_within_the_timeout_succeeds(simxl: SimXl, tmp_path: Path) -> None:
    simxl.set_faults(create_delay=0.5)
    result = XlRunner(simxl.command, create_timeout=60).create(
        str(write_cfg(tmp_path / "g.cfg", "guest1"))
    )
    assert result.ok
    assert simxl.names() == ["guest1"]


def test_create_keeps_only_the_last_lines_of_output(tmp_path: Path) -> None:
    chatty = tmp_path / "xl"
    chatty.write_text('#!/bin/sh\nfor i in $(seq 1 30); do echo "line $i" >&2; done\nexit 4\n')
    chatty.chmod(0o755)
    result = XlRunner([str(chatty)]).create("/guests/g.cfg")
    assert result.exit_code == 4
    assert result.stderr_tail.splitlines() == [f"line {i}" for i in range(11, 31)]


def test_create_refuses_a_relative_path(simxl: SimXl) -> None:
    with pytest.raises(ValueError, match="absolute"):
        XlRunner(simxl.command).create("guests/g.cfg")
    assert simxl.calls() == []


def test_create_with_a_missing_program_is_a_failed_result(tmp_path: Path) -> None:
    result = XlRunner([str(tmp_path / "no-such-xl")]).create("/guests/g.cfg")
    assert not result.ok
    assert result.exit_code == 127
    assert "cannot run" in result.stderr_tail
