"""Logging: structlog events rendered through stdlib logging.

One event per line with `event=` first, then `guest=` where there is one. Every
character that is not printable (C0, DEL, C1, U+2028/U+2029, the lone surrogates
an undecodable file name decodes to) is escaped, so a line is always one line of
text, whatever a file name or xl's stderr contained.

The file handler reopens the file when it was renamed or removed, so newsyslog
(or logrotate) needs no signal. A log call never raises: while the file cannot
be written the lines go to stderr (said once there), and back to the file as
soon as it can be opened again.

structlog (with the asyncio it imports: 2 s of a QEMU Dom0's start) is loaded
when logging is configured, or, for the daemon (`configure(..., defer=True)`),
only after its first pass started the boot's creates: until then `get_logger`
gives an `EarlyLogger`, which keeps each event with the time it happened and
hands them on, in order and with those times, once `complete` configured
structlog. A daemon killed (-9) before that loses those lines; every other end
runs `complete`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from xenreconcile.errors import XenreconcileError

LOGGER_NAME = "xenreconcile"
KEY_ORDER = ("timestamp", "level", "event", "guest")
REOPEN_RETRY = 10.0  # seconds between two attempts to go back to an unwritable log file
LOG_DIR_MODE = 0o755
LOG_FILE_MODE = 0o644
SYSLOG = "syslog"  # the log_file value that sends the log to the local syslog daemon
# The local syslog socket: FreeBSD's syslogd, then Linux's (journald or rsyslog).
SYSLOG_SOCKETS = ("/var/run/log", "/dev/log")
SYSLOG_TAG = "xenreconcile"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"
# The key an EarlyLogger's replay carries an event's own time (epoch seconds) in.
LOGGED_AT = "_xenreconcile_logged_at"
_handler: logging.Handler | None = None
_early: EarlyLogger | None = None
_deferred: tuple[str, str, str, Callable[[], float]] | None = None


def add_timestamp(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """The event with `timestamp`, local time: when it was logged (an EarlyLogger's
    replay says when), else now."""
    at = event_dict.pop(LOGGED_AT, None)
    event_dict["timestamp"] = time.strftime(
        TIME_FORMAT, time.localtime(time.time() if at is None else at)
    )
    return event_dict


def shared_processors() -> list[Any]:
    """The processors every event goes through, structlog's and foreign ones alike."""
    import structlog  # noqa: PLC0415 - see the module's docstring

    return [structlog.contextvars.merge_contextvars, structlog.stdlib.add_log_level, add_timestamp]


# --- escaping -----------------------------------------------------------------------------


def escape_char(char: str) -> str:
    """The JSON-style escape of one character: `\\n`, `\\u001b`, `\\udcff`..."""
    return json.dumps(char)[1:-1]


def escape_text(text: str) -> str:
    """`text` with the backslash and every character that is not printable escaped
    JSON-style; the result is printable and contains no line break of any kind."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(c if c.isprintable() and c != "\\" else escape_char(c) for c in text)


def logfmt_value(value: Any) -> str:
    """`value` as a logfmt value: bare when it is plain, else double-quoted with
    JSON string escapes (so `json.loads` of a quoted value gives the original)."""
    text = str(value)
    if text.isprintable() and not any(c in text for c in ' ="\\'):
        return text
    return '"' + escape_text(text).replace('"', '\\"') + '"'


def logfmt_key(key: str) -> str:
    """`key` with anything a logfmt key cannot hold escaped."""
    safe = escape_text(key)
    return safe.replace(" ", "\\u0020").replace("=", "\\u003d").replace('"', "\\u0022")


def ordered_items(event_dict: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """The items of `event_dict`, those of KEY_ORDER first in that order."""
    for key in KEY_ORDER:
        if key in event_dict:
            yield key, event_dict[key]
    for key, value in event_dict.items():
        if key not in KEY_ORDER:
            yield key, value


def render_logfmt(_logger: Any, _name: str, event_dict: dict[str, Any]) -> str:
    """The event as one logfmt line: `None` is `key=`, `True` a bare `key`."""
    pairs = []
    for key, value in ordered_items(event_dict):
        name = logfmt_key(key)
        if value is None:
            pairs.append(f"{name}=")
        elif value is True:
            pairs.append(name)
        else:
            pairs.append(f"{name}={logfmt_value('false' if value is False else value)}")
    return " ".join(pairs)


def escape_for_console(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """The event with its keys and string values escaped (the console renderer
    writes strings raw; it shows other values with repr, which escapes)."""
    return {
        escape_text(key): escape_text(value) if isinstance(value, str) else value
        for key, value in event_dict.items()
    }


def _renderers(fmt: str, console: bool) -> list[Any]:
    """The last structlog processors for `fmt` ("logfmt" | "json"), or those of a
    colourless console renderer for a terminal."""
    import structlog  # noqa: PLC0415 - see the module's docstring

    if console:
        return [escape_for_console, structlog.dev.ConsoleRenderer(colors=False, sort_keys=False)]
    if fmt == "json":
        # ensure_ascii escapes every non-ASCII character, C1, U+2028/9 and lone
        # surrogates included: the line stays valid JSON and one line.
        return [structlog.processors.JSONRenderer(sort_keys=False, ensure_ascii=True)]
    return [render_logfmt]


# --- the log file ----------------------------------------------------------------------------


class LogDirError(XenreconcileError, OSError):
    """The log file's directory is missing and may not be created."""


def make_log_dir(directory: str) -> None:
    """Create `directory` (mode 0755), only when its parent exists and only root
    (or this process's user) can write there: in a directory anyone can write to,
    someone else could have put a symlink or their own directory under the name.
    Raises LogDirError (or the OSError of mkdir) when it cannot."""
    parent = os.path.dirname(os.path.abspath(directory))
    try:
        info = os.stat(parent)
    except OSError as exc:
        raise LogDirError(f"cannot create {directory}: {parent}: {exc.strerror}") from exc
    if info.st_uid not in (0, os.geteuid()):
        raise LogDirError(
            f"not creating {directory}: {parent} is owned by uid {info.st_uid}, not root"
        )
    if info.st_mode & 0o022:
        raise LogDirError(
            f"not creating {directory}: {parent} is writable by group or others"
            f" (mode {info.st_mode & 0o7777:04o})"
        )
    try:
        os.mkdir(directory, LOG_DIR_MODE)
    except FileExistsError:
        return  # made meanwhile, by someone who may write to a root-only parent
    os.chmod(directory, LOG_DIR_MODE)


def write_stderr(line: str) -> None:
    """Write `line` to stderr; nothing, if even that fails."""
    stream = sys.stderr
    if stream is None:
        return
    with contextlib.suppress(OSError, ValueError):
        stream.write(line)
        stream.flush()


def encode(line: str) -> bytes:
    """`line` as UTF-8; whatever cannot be encoded is backslash-escaped, never an error."""
    return line.encode("utf-8", "backslashreplace")


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to `fd` (raises OSError)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class LogFileHandler(logging.Handler):
    """Appends each record as one line to `path`. Reopens the file when it was
    renamed or removed, recreating its directory when that is safe; while the file
    cannot be opened or written, writes to stderr instead, says so there once, and
    tries the file again every REOPEN_RETRY seconds (of `clock`) and on `reopen`.
    Never raises from a log call."""

    def __init__(self, path: str, formatter: logging.Formatter, clock: Callable[[], float]) -> None:
        super().__init__()
        self.setFormatter(formatter)
        self.path = path
        self.clock = clock
        self.fd: int | None = None
        self.identity: tuple[int, int] | None = None
        self.failure: str | None = None  # why lines go to stderr; None while the file works
        self.retry_at = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        """Format `record` and write it to the file, or to stderr."""
        try:
            line = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        self._write(line)

    def reopen(self) -> None:
        """Close the file and open it again now (SIGHUP, start-up)."""
        with self._locked():
            self._close_file()
            self._open_or_fall_back()

    def close(self) -> None:
        """Close the file; the handler is done."""
        with self._locked():
            self._close_file()
        super().close()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()

    def _write(self, line: str) -> None:
        if self.fd is not None and self._file_replaced():
            self._close_file()
            self._open_or_fall_back()
        elif self.fd is None and self.clock() >= self.retry_at:
            self._open_or_fall_back()
        if self.fd is not None:
            try:
                write_all(self.fd, encode(line))
                return
            except OSError as exc:
                self._close_file()
                self._fall_back(exc)
        write_stderr(line)

    def _file_replaced(self) -> bool:
        """True when `path` is no longer the file we have open (rotated, removed)."""
        try:
            info = os.stat(self.path)
        except OSError:
            return True
        return (info.st_dev, info.st_ino) != self.identity

    def _open_or_fall_back(self) -> None:
        try:
            self._open_file()
        except OSError as exc:
            self._fall_back(exc)
            return
        if self.failure is not None and self.fd is not None:
            self.failure = None
            with contextlib.suppress(OSError):
                write_all(self.fd, encode(self._notice_line("info", "log_file_restored")))

    def _open_file(self) -> None:
        directory = os.path.dirname(self.path)
        if directory and not os.path.isdir(directory):
            make_log_dir(directory)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOCTTY
        fd = os.open(self.path, flags, LOG_FILE_MODE)
        try:
            info = os.fstat(fd)
        except OSError:
            os.close(fd)
            raise
        self.fd, self.identity = fd, (info.st_dev, info.st_ino)

    def _close_file(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
        self.fd = self.identity = None

    def _fall_back(self, exc: OSError) -> None:
        """Send lines to stderr from now on; say why there, once per outage."""
        self.retry_at = self.clock() + REOPEN_RETRY
        if self.failure is None:
            self.failure = str(exc)
            notice = self._notice_line(
                "error",
                "log_file_unavailable",
                error=self.failure,
                logging_to="stderr",
                retry=f"every {REOPEN_RETRY:g}s and on SIGHUP",
            )
            write_stderr(notice)

    def _notice_line(self, level: str, event: str, **fields: Any) -> str:
        """The handler's own event about `path`, rendered like any other, as a line."""
        record = notice_record(level, event, file=self.path, **fields)
        try:
            return self.format(record) + "\n"
        except Exception:
            return f"{event} file={logfmt_value(self.path)}\n"


def notice_record(level: str, event: str, **fields: Any) -> logging.LogRecord:
    """A log record carrying a structlog event, as if logged at `level`."""
    event_dict: Any = {"event": event, **fields}
    for processor in shared_processors():
        event_dict = processor(None, level, event_dict)
    return logging.makeLogRecord(
        {
            "name": LOGGER_NAME,
            "levelname": level.upper(),
            "levelno": logging.getLevelNamesMapping()[level.upper()],
            "msg": event_dict,
            "_logger": logging.getLogger(LOGGER_NAME),
            "_name": level,
        }
    )


# --- configuration -----------------------------------------------------------------------------


def syslog_socket() -> str:
    """The first of SYSLOG_SOCKETS that exists (the last one when none does)."""
    return next((p for p in SYSLOG_SOCKETS if os.path.exists(p)), SYSLOG_SOCKETS[-1])


def _open_handler(
    log_file: str, formatter: logging.Formatter, clock: Callable[[], float]
) -> logging.Handler:
    """A stderr handler for "-", a SyslogHandler for "syslog", else a
    LogFileHandler, opened (or fallen back)."""
    if log_file == SYSLOG:
        # deferred: logging.handlers (and pickle) only for the log_file that needs them
        from xenreconcile.logsyslog import SyslogHandler  # noqa: PLC0415

        syslog = SyslogHandler(syslog_socket())
        syslog.setFormatter(formatter)
        return syslog
    if log_file == "-":
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(formatter)
        return handler
    file_handler = LogFileHandler(log_file, formatter, clock)
    file_handler.reopen()
    return file_handler


class EarlyLogger:
    """The logger before structlog is configured: keeps every event (level, name,
    fields, time) until `attach`, then passes each on to the logger it was given.
    Safe from any thread; the replay keeps the order in which events came."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[tuple[str, str, dict[str, Any], float]] = []
        self._logger: Any = None

    def _log(self, level: str, event: str, fields: dict[str, Any]) -> None:
        logger = self._logger
        if logger is None:
            with self._lock:
                logger = self._logger
                if logger is None:
                    self._events.append((level, event, fields, time.time()))
                    return
        getattr(logger, level)(event, **fields)

    def debug(self, event: str, **fields: Any) -> None:
        self._log("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log("error", event, fields)

    def attach(self, logger: Any) -> None:
        """Log every kept event to `logger`, with its time; forward from now on."""
        with self._lock:
            for level, event, fields, at in self._events:
                getattr(logger, level)(event, **fields, **{LOGGED_AT: at})
            self._events.clear()
            self._logger = logger


def configure(
    log_file: str,
    fmt: str = "logfmt",
    level: str = "info",
    clock: Callable[[], float] = time.monotonic,
    *,
    defer: bool = False,
) -> None:
    """Send every structlog event to `log_file` ("-" = stderr) in `fmt` at `level`;
    with `defer`, only once `complete` is called (events meanwhile are kept).

    Never raises for the file: while it cannot be written, lines go to stderr
    (`clock` times the retries). Calling it again replaces the previous handler."""
    global _deferred, _early
    if defer:
        _deferred = (log_file, fmt, level, clock)
        _early = _early or EarlyLogger()
        return
    _deferred = None
    _configure_now(log_file, fmt, level, clock)
    if _early is not None:
        _early.attach(_structlog_logger())
        _early = None


def complete() -> None:
    """Configure what `configure(..., defer=True)` put off and log the events kept
    meanwhile; nothing when nothing is put off."""
    if _deferred is not None:
        configure(*_deferred)


def _configure_now(log_file: str, fmt: str, level: str, clock: Callable[[], float]) -> None:
    import structlog  # noqa: PLC0415 - see the module's docstring

    global _handler
    console = log_file == "-" and sys.stderr.isatty()
    formatter = structlog.stdlib.ProcessorFormatter(
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *_renderers(fmt, console),
        ],
        foreign_pre_chain=shared_processors(),
    )
    handler = _open_handler(log_file, formatter, clock)
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
            *shared_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def reopen() -> None:
    """Close and reopen the log file (SIGHUP); a no-op for stderr. Never raises."""
    if isinstance(_handler, LogFileHandler):
        _handler.reopen()


def get_logger() -> Any:
    """The project's structlog logger (an EarlyLogger while configuring is put off)."""
    return _early if _early is not None else _structlog_logger()


def _structlog_logger() -> Any:
    import structlog  # noqa: PLC0415 - see the module's docstring

    return structlog.get_logger(LOGGER_NAME)
