"""Logging: structlog events rendered through stdlib logging.

One event per line with `event=` first, then `guest=` where there is one.
The file handler is a `WatchedFileHandler`, so newsyslog (or logrotate) can
rename the file and the next line goes to a new one without any signal.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from typing import Any

import structlog

LOGGER_NAME = "xenreconcile"
_handler: logging.Handler | None = None


def _renderer(fmt: str, console: bool) -> Any:
    """The last structlog processor for `fmt` ("logfmt" | "json"), or a
    colourless console renderer for a terminal."""
    if console:
        return structlog.dev.ConsoleRenderer(colors=False, sort_keys=False)
    if fmt == "json":
        return structlog.processors.JSONRenderer(sort_keys=False)
    return structlog.processors.LogfmtRenderer(
        key_order=["timestamp", "level", "event", "guest"], drop_missing=True
    )


def _open_handler(log_file: str) -> logging.Handler:
    """A stderr handler for "-", else a WatchedFileHandler (parent dir created)."""
    if log_file == "-":
        return logging.StreamHandler(sys.stderr)
    parent = os.path.dirname(log_file)
    if parent:
        os.makedirs(parent, mode=0o755, exist_ok=True)
    return logging.handlers.WatchedFileHandler(log_file, encoding="utf-8")


def configure(log_file: str, fmt: str = "logfmt", level: str = "info") -> None:
    """Send every structlog event to `log_file` ("-" = stderr) in `fmt` at `level`.

    Raises OSError when the log file cannot be opened; the caller decides
    whether that is fatal. Calling it again replaces the previous handler."""
    global _handler
    console = log_file == "-" and sys.stderr.isatty()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="%Y-%m-%dT%H:%M:%S%z", utc=False),
    ]
    handler = _open_handler(log_file)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _renderer(fmt, console),
            ],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger(LOGGER_NAME)
    if _handler is not None:
        root.removeHandler(_handler)
        _handler.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False
    _handler = handler
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def reopen() -> None:
    """Close and reopen the log file (SIGHUP); a no-op for stderr."""
    handler = _handler
    if isinstance(handler, logging.handlers.WatchedFileHandler):
        handler.acquire()
        try:
            if handler.stream:
                handler.stream.close()
            handler.stream = handler._open()
        finally:
            handler.release()


def get_logger() -> Any:
    """The project's structlog logger."""
    return structlog.get_logger(LOGGER_NAME)
