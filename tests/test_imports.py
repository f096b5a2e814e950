"""What `import xenreconcile.daemon` loads: only what the way to the first create
needs. Modules needed only later (the status document, a create's failure, a
restore, `run --once`) or only when configured (syslog, metrics, pool mode, a
watcher backend) are imported where first used, so that a slow Dom0 does not
pay for them at every start. Not timed: it checks `sys.modules`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# Each module, with where it is imported instead.
DEFERRED = {
    "logging.handlers": "log_file: syslog only (logsyslog)",
    "difflib": "a config error's suggestion of a known key",
    "xenreconcile.report": "the first status document, after the first pass's creates",
    "xenreconcile.hints": "a create's failure",
    "xenreconcile.restore": "a pass with save images due",
    "xenreconcile.converge": "run --once",
    "xenreconcile.logsyslog": "log_file: syslog only",
    "xenreconcile.metrics": "metrics_listen / metrics_textfile only",
    "xenreconcile.metricsexport": "metrics_listen / metrics_textfile only",
    "prometheus_client": "metrics_listen / metrics_textfile only",
    "xenreconcile.pool": "pool mode only",
    "etcd3gw": "pool mode only",
    "tenacity": "not used by the daemon",
    "pyinotify": "the inotify watcher, when the loop opens it",
    "xenreconcile.watch.inotify": "the watcher the config names, when the loop opens it",
    "xenreconcile.watch.kqueue": "the watcher the config names, when the loop opens it",
    "xenreconcile.drain": "the host shutdown drain",
    "xenreconcile.hostshutdown": "the host shutdown drain",
    "xenreconcile.doctor": "the doctor command",
    "xenreconcile.commands": "the CLI's commands",
    "xenreconcile.simxl": "tests and the demo",
    "structlog": "the log, configured once the first pass started the creates (logs.complete)",
    "asyncio": "structlog imports it; it alone takes 1.2 s of the QEMU Dom0's start",
    "pathlib": "nothing on the way to the first create (its import costs 0.25 s in the QEMU Dom0)",
}
# What `xenreconcile run` does not load either: the other commands' own modules.
DEFERRED_BY_THE_CLI = {
    "xenreconcile.demo": "the demo command",
    "xenreconcile.simxl": "the demo command",
    "xenreconcile.doctor": "the doctor command",
    "xenreconcile.guestops": "stop / start / restart NAME",
    "xenreconcile.hostshutdown": "shutdown-guests and check",
    "xenreconcile.drain": "shutdown-guests and check",
    "xenreconcile.budget": "check",
    "xenreconcile.pool": "pool mode only",
    "xenreconcile.metricsexport": "metrics_listen / metrics_textfile only",
    "logging.handlers": "log_file: syslog only",
    "xenreconcile.report": "status and plan; the daemon's first status document, after its creates",
    "xenreconcile.hints": "a create's failure",
    "xenreconcile.liveness": "status",
}


def loaded_by_importing(*modules: str) -> set[str]:
    """Given module names, the names in `sys.modules` after a fresh interpreter
    imported them (with the environment of the tests, bytecode or not)."""
    code = f"import json, sys, {', '.join(modules)}; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout))


@pytest.fixture(scope="module")
def daemon_modules() -> set[str]:
    return loaded_by_importing("xenreconcile.daemon")


@pytest.fixture(scope="module")
def run_command_modules() -> set[str]:
    # What `xenreconcile run` imports before the daemon starts: the CLI, then the commands.
    return loaded_by_importing("xenreconcile.cli", "xenreconcile.commands")


def loaded_of(package: str, modules: set[str]) -> list[str]:
    """The module `package` and its submodules among `modules`."""
    return sorted(m for m in modules if m == package or m.startswith(package + "."))


@pytest.mark.parametrize("deferred", sorted(DEFERRED))
def test_importing_the_daemon_does_not_load(deferred: str, daemon_modules: set[str]) -> None:
    assert loaded_of(deferred, daemon_modules) == [], f"needed only for {DEFERRED[deferred]}"


@pytest.mark.parametrize("deferred", sorted(DEFERRED_BY_THE_CLI))
def test_the_run_command_does_not_load(deferred: str, run_command_modules: set[str]) -> None:
    why = DEFERRED_BY_THE_CLI[deferred]
    assert loaded_of(deferred, run_command_modules) == [], f"needed only for {why}"


def test_the_check_sees_what_the_daemon_does_load(
    daemon_modules: set[str], run_command_modules: set[str]
) -> None:
    # The planner, the scanner and the xl adapter are on the way to the first create.
    needed = {"xenreconcile.planner", "xenreconcile.guestdir", "xenreconcile.xl"}
    assert needed <= daemon_modules
    assert needed | {"xenreconcile.daemon"} <= run_command_modules
