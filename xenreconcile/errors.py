"""The root of every exception this project raises, and the exit code it means.

`commands.dispatch` catches `XenreconcileError` and exits with its `exit_code`:
1 for a failure at run time (the service manager may restart the daemon), 2 for
a `SetupError`, a usage or set-up mistake only the admin can mend (a bad config,
an unsafe state_dir, a bad request): restarting would fail the same way.
"""

from __future__ import annotations

from typing import ClassVar

EXIT_FAILURE = 1
EXIT_SETUP = 2


class XenreconcileError(Exception):
    """A failure at run time; the command exits 1."""

    exit_code: ClassVar[int] = EXIT_FAILURE


class SetupError(XenreconcileError):
    """A usage or set-up error the admin must fix; the command exits 2."""

    exit_code: ClassVar[int] = EXIT_SETUP
