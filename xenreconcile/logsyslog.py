"""The log handler for `log_file: syslog`, apart from `logs` so that the daemon
imports logging.handlers only when its config asks for syslog."""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os

from xenreconcile.logs import SYSLOG_TAG, write_stderr


class SyslogHandler(logging.handlers.SysLogHandler):
    """Sends each line to the local syslog socket `address` as facility daemon,
    tagged `xenreconcile[PID]`. A socket that is not there yet, or went away
    (syslogd restarting), is connected again at the next line; a line that
    cannot be sent goes to stderr instead."""

    def __init__(self, address: str) -> None:
        super().__init__(address, logging.handlers.SysLogHandler.LOG_DAEMON)
        self.ident = f"{SYSLOG_TAG}[{os.getpid()}]: "

    def handleError(self, record: logging.LogRecord) -> None:
        """The line could not be sent: write it to stderr (never raises)."""
        with contextlib.suppress(Exception):
            write_stderr(self.format(record) + "\n")
