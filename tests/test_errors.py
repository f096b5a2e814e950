"""One root for the project's exceptions, and the one rule that maps them to exit codes."""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil

import pytest

import xenreconcile
from xenreconcile import commands, config, control, daemon, errors, logs, state, xl
from xenreconcile.errors import SetupError, XenreconcileError


def project_exceptions() -> list[type[BaseException]]:
    """Every exception class defined in a module of the package."""
    found = []
    for info in pkgutil.walk_packages(xenreconcile.__path__, "xenreconcile."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for _name, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == module.__name__:
                found.append(value)
    return found


def test_every_project_exception_derives_from_the_one_base() -> None:
    classes = project_exceptions()
    assert len(classes) >= 15
    assert [c.__qualname__ for c in classes if not issubclass(c, XenreconcileError)] == []


def test_only_set_up_errors_exit_2() -> None:
    setup = {c for c in project_exceptions() if c.exit_code == errors.EXIT_SETUP}
    assert setup == {
        SetupError,
        config.ConfigError,
        config.ConfigErrors,
        state.StateDirError,
        control.RequestError,
    }
    assert all(issubclass(c, SetupError) for c in setup)
    assert {c.exit_code for c in project_exceptions()} == {errors.EXIT_FAILURE, errors.EXIT_SETUP}


@pytest.mark.parametrize(
    "cls",
    [
        state.StateDirError,
        state.StateLockedError,
        state.UnsafeFileError,
        state.StateReadOnlyError,
        control.RequestDirError,
        logs.LogDirError,
    ],
)
def test_os_errors_stay_os_errors(cls: type[OSError]) -> None:
    error = cls(13, "Permission denied", "/var/db/xenreconcile")
    assert isinstance(error, OSError)
    assert (error.errno, error.filename) == (13, "/var/db/xenreconcile")


def run_dispatch(monkeypatch: pytest.MonkeyPatch, raised: BaseException) -> int:
    """Run `dispatch` of a `status` command whose body raises `raised`."""

    def failing(_config: config.Config, _args: argparse.Namespace) -> int:
        raise raised

    monkeypatch.setattr(commands, "load_config", lambda _path: config.Config())
    monkeypatch.setitem(commands.COMMANDS, "status", failing)
    return commands.dispatch(argparse.Namespace(command="status", config=None))


@pytest.mark.parametrize(
    ("raised", "code"),
    [
        (config.ConfigError("xenreconcile.yaml: line 3: unknown key 'intervall'"), 2),
        (state.StateDirError("/var/db/xenreconcile: writable by group"), 2),
        (daemon.DaemonError("state directory locked by pid 7"), 1),
        (xl.ToolstackError("xl list timed out after 10s"), 1),
        (PermissionError(13, "Permission denied", "/var/log/xenreconcile.log"), 1),
    ],
    ids=["config", "state-dir", "daemon", "toolstack", "plain-os-error"],
)
def test_dispatch_maps_every_error_by_the_one_rule(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    raised: Exception,
    code: int,
) -> None:
    assert run_dispatch(monkeypatch, raised) == code
    assert capsys.readouterr().err == f"xenreconcile: {raised}\n"
