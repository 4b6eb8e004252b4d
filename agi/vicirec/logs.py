"""structlog set up as vicirec needs it: one JSON object per line, to a file, syslog or stderr.

Never stdout: in a process AGI that is the protocol channel. Secrets are masked by a processor
that sees every event, so no call site has to remember to.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from typing import Any, Optional, TextIO

import structlog

from vicirec.config import Config, LogSettings
from vicirec.redaction import Redactor
from vicirec.shared_files import open_for_append

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_FACILITIES = {
    "kern": 0, "user": 1, "daemon": 3, "auth": 4, "syslog": 5,
    **{f"local{n}": 16 + n for n in range(8)},
}
_SEVERITY = {"debug": 7, "info": 6, "warning": 4, "warn": 4, "error": 3, "critical": 2, "exception": 3}


class _Sink:
    """Base of the line sinks structlog writes to; the level method names all end in ``msg``."""

    def msg(self, message: str, *, level: str = "info") -> None:
        raise NotImplementedError

    def _at(self, level: str) -> Any:
        return lambda message: self.msg(message, level=level)

    def __getattr__(self, name: str) -> Any:
        if name in _SEVERITY or name in ("log", "fatal", "failure", "msg"):
            return self._at("critical" if name == "fatal" else name)
        raise AttributeError(name)

    def reopen(self) -> None:
        """Called after log rotation (the daemon's SIGHUP)."""

    def close(self) -> None:
        """Release the file or socket."""


class FileSink(_Sink):
    """Appends whole lines with one ``write(2)`` each on an ``O_APPEND`` descriptor: lines from
    many processes never interleave, and a rotated file is noticed and reopened."""

    _CHECK_EVERY = 1.0

    def __init__(self, path: str) -> None:
        self._path = path
        self._fd: Optional[int] = None
        self._inode: Optional[int] = None
        self._checked = 0.0
        self.reopen()

    def reopen(self) -> None:
        self.close()
        directory = os.path.dirname(self._path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        self._fd = open_for_append(self._path)[0]
        self._inode = os.fstat(self._fd).st_ino
        self._checked = time.monotonic()

    def _rotated(self) -> bool:
        now = time.monotonic()
        if now - self._checked < self._CHECK_EVERY:
            return False
        self._checked = now
        try:
            return os.stat(self._path).st_ino != self._inode
        except FileNotFoundError:
            return True

    def msg(self, message: str, *, level: str = "info") -> None:
        if self._fd is None or self._rotated():
            self.reopen()
        assert self._fd is not None
        os.write(self._fd, message.encode("utf-8", "replace") + b"\n")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class StreamSink(_Sink):
    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def msg(self, message: str, *, level: str = "info") -> None:
        self._stream.write(message + "\n")
        self._stream.flush()


class SyslogSink(_Sink):
    """RFC 3164 datagrams to a local socket path (``/dev/log``) or ``host:port`` over UDP."""

    def __init__(self, address: str, facility: str) -> None:
        self._facility = _FACILITIES.get(facility, 16)
        self._address = address
        self._sock: Optional[socket.socket] = None
        self.reopen()

    def reopen(self) -> None:
        self.close()
        if self._address.startswith("/"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            target: Any = self._address
        else:
            host, _, port = self._address.rpartition(":")
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            target = (host or "127.0.0.1", int(port or 514))
        try:
            sock.connect(target)
        except OSError:
            sock.close()
            return
        self._sock = sock

    def msg(self, message: str, *, level: str = "info") -> None:
        if self._sock is None:
            return
        priority = self._facility * 8 + _SEVERITY.get(level, 6)
        try:
            self._sock.send(f"<{priority}>vicirec[{os.getpid()}]: {message}".encode("utf-8", "replace"))
        except OSError:
            pass  # a full or missing syslog socket must never fail a call

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class NullSink(_Sink):
    def msg(self, message: str, *, level: str = "info") -> None:
        return None


_current_sink: _Sink = NullSink()
_current_redactor = Redactor()
_learnt_secrets: list[str] = []  # kept across configure(): once a secret is known it stays masked


def make_sink(settings: LogSettings) -> _Sink:
    if settings.target == "file":
        try:
            return FileSink(settings.path)
        except OSError as exc:
            sys.stderr.write(f"vicirec: cannot open log file {settings.path}: {exc.strerror}; using stderr\n")
            return StreamSink(sys.stderr)
    if settings.target == "syslog":
        return SyslogSink(settings.syslog_address, settings.syslog_facility)
    if settings.target == "stderr":
        return StreamSink(sys.stderr)
    return NullSink()


def configure(settings: LogSettings, redactor: Redactor, *, sink: Optional[_Sink] = None) -> None:
    """(Re)configure structlog; safe to call again on reload."""
    global _current_sink
    previous = _current_sink
    _current_sink = sink or make_sink(settings)
    if previous is not _current_sink:
        previous.close()

    global _current_redactor
    _current_redactor = redactor.including(_learnt_secrets)

    def redact(_logger: Any, _method: str, event: Any) -> Any:
        return _current_redactor.value(event)

    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            structlog.processors.JSONRenderer(sort_keys=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(settings.level.lower(), 20)),
        logger_factory=lambda *_: _current_sink,
        cache_logger_on_first_use=False,
    )


def configure_for(config: Config) -> None:
    """Logging as ``config`` says, masking its API password."""
    configure(config.log, Redactor([config.vicidial.password]))


def configure_fallback() -> None:
    """Before the config is read (or when it cannot be): warnings and worse to stderr."""
    configure(LogSettings(target="stderr", level="warning"), Redactor())


def protect(secrets: list[str]) -> None:
    """Mask ``secrets`` too in every event from now on (secrets read after logging was set up)."""
    global _current_redactor
    _learnt_secrets.extend(s for s in secrets if s and s not in _learnt_secrets)
    _current_redactor = _current_redactor.including(_learnt_secrets)


def reopen() -> None:
    _current_sink.reopen()


def get_logger(**bound: Any) -> Any:
    return structlog.get_logger("vicirec").bind(**bound)
