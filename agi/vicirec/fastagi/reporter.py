"""The end of every FastAGI session, on one thread: the ``SET VARIABLE`` lines, the summary event,
the graceful close.

Setting the 16 ``VICIREC_*`` variables is 16 round trips (Asterisk reads one command line at a
time and polls its socket between them: a command sent before the previous reply is read would
sit in its stdio buffer unseen, so commands cannot be pipelined). On a worker thread each round
trip is a blocking ``recv`` and a GIL hand-off; with dozens of sessions in flight those hand-offs,
not the protocol, were most of the daemon's CPU. Here one selector loop drives every session's
report at once: a command goes out when the previous reply is in, exactly as ``write_report``
sends them, and each wake-up serves every socket that is ready.

The worker hands a session over once the action is done and the audit record written
(:func:`vicirec.reporting.audit_invocation`); from then on this loop owns the connection until
``release`` is called with it. The checks are ``AgiSession``'s own (``before_command``,
``take_reply``, ``check_reply``), the budget is ``write_report``'s ``REPORT_SECONDS``, the
summary event is ``log_invocation``'s, and the close is graceful (half-close, read until Asterisk
closes or ``CLOSE_DRAIN_SECONDS`` pass, so no reset races the last replies).
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from collections import deque
from typing import Any, Callable, Optional

from vicirec import logs
from vicirec.asterisk.channel import AgiSession
from vicirec.engine import Report
from vicirec.errors import AgiChannelClosed, AgiError, AgiTimeout
from vicirec.reporting import REPORT_SECONDS, log_invocation, report_commands

#: After the last variable is set: how long to wait for Asterisk to close its side.
CLOSE_DRAIN_SECONDS = 0.5
#: How often budgets are checked (they are seconds long; the session deadline is the server's).
CHECK_INTERVAL = 0.05
_READ_CHUNK = 65536
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)

#: Called once per session, when it no longer counts as in flight (the variables are set and the
#: write side shut, or it failed); the reporter closes the socket itself.
Release = Callable[[socket.socket], None]


class _Job:
    __slots__ = ("audited", "commands", "conn", "drain_until", "index", "log", "outgoing", "peer",
                 "release", "report", "report_until", "session", "started", "writing")

    def __init__(self, conn: socket.socket, peer: str, session: AgiSession, report: Report, log: Any, *,
                 started: float, audited: Optional[bool], release: Release) -> None:
        self.conn = conn
        self.peer = peer
        self.session = session
        self.report = report
        self.log = log
        self.started = started
        self.audited = audited
        self.release: Optional[Release] = release
        self.commands: list[bytes] = []
        self.index = 0
        self.outgoing = b""
        self.writing = False  # registered for EVENT_WRITE (a command only partly sent)
        self.report_until = 0.0
        self.drain_until: Optional[float] = None  # set once the variables are done: draining


class Reporter:
    """One thread, one selector, every session's report (see the module's docstring)."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._wakeup_read, self._wakeup_write = socket.socketpair()
        self._wakeup_read.setblocking(False)
        self._wakeup_write.setblocking(False)
        self._selector.register(self._wakeup_read, selectors.EVENT_READ, None)
        self._incoming: deque[_Job] = deque()
        self._jobs: dict[socket.socket, _Job] = {}
        self._wake_pending = False
        self._stopping = False
        self._thread: Optional[threading.Thread] = None

    # --- the workers' side ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the loop (from a thread with the daemon's signals blocked: it inherits the mask)."""
        self._thread = threading.Thread(target=self._run, name="fastagi-reporter", daemon=True)
        self._thread.start()

    def submit(self, conn: socket.socket, peer: str, session: AgiSession, report: Report, log: Any, *,
               started: float, audited: Optional[bool], release: Release) -> None:
        """Hand the session over; ``release(conn)`` is called once it no longer counts as in flight
        (whatever happens), and the reporter closes ``conn`` when it is done with it."""
        self._incoming.append(
            _Job(conn, peer, session, report, log, started=started, audited=audited, release=release))
        if not self._wake_pending:
            self._wake_pending = True
            with contextlib.suppress(OSError):  # full: a wake-up is pending anyway
                self._wakeup_write.send(b"\0")

    def stop(self, timeout: float = 2.0) -> None:
        """End the loop: sessions still in it are released (their sockets closed) first."""
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wakeup_write.send(b"\0")
        if self._thread is not None:
            self._thread.join(timeout)

    def busy(self) -> int:
        return len(self._jobs) + len(self._incoming)

    # --- the loop ------------------------------------------------------------------------------

    def _run(self) -> None:
        next_check = time.monotonic() + CHECK_INTERVAL
        try:
            while not self._stopping:
                timeout = max(0.0, next_check - time.monotonic()) if self._jobs else None
                try:
                    for key, _events in self._selector.select(timeout):
                        if key.data is None:
                            self._take_incoming()
                        else:
                            self._step(key.data)
                    now = time.monotonic()
                    if now >= next_check:
                        next_check = now + CHECK_INTERVAL
                        self._expire(now)
                except Exception as error:  # noqa: BLE001 - a dead loop would leak every slot
                    with contextlib.suppress(Exception):
                        logs.get_logger().error("fastagi_reporter_error", error_type=error.__class__.__name__,
                                                exc_info=error)
                    time.sleep(0.01)  # no busy loop if it keeps failing
        finally:
            while self._incoming:
                self._adopt(self._incoming.popleft())
            for job in list(self._jobs.values()):
                self._finish(job)
            self._selector.close()
            self._wakeup_read.close()
            self._wakeup_write.close()

    def _take_incoming(self) -> None:
        with contextlib.suppress(OSError):
            while self._wakeup_read.recv(4096):
                pass
        self._wake_pending = False  # before emptying the queue: a later submit wakes us again
        while self._incoming:
            self._begin(self._incoming.popleft())

    def _adopt(self, job: _Job) -> None:
        self._jobs[job.conn] = job
        self._selector.register(job.conn, selectors.EVENT_READ, job)

    def _begin(self, job: _Job) -> None:
        self._adopt(job)
        job.report_until = time.monotonic() + REPORT_SECONDS
        try:
            job.commands = report_commands(job.report)
            self._next_command(job)
        except Exception as error:  # noqa: BLE001 - whatever it is, the session ends cleanly
            self._reported(job, False, error)

    def _step(self, job: _Job) -> None:
        try:
            if job.drain_until is not None:
                self._drain(job)
            elif job.outgoing:
                self._flush(job)
            else:
                self._receive(job)
        except Exception as error:  # noqa: BLE001
            if job.drain_until is None:
                self._reported(job, False, error)
            else:
                self._finish(job)

    def _next_command(self, job: _Job) -> None:
        """Send the next SET VARIABLE, or end the report when all were answered."""
        if job.index >= len(job.commands):
            self._reported(job, True)
            return
        job.session.before_command()
        job.outgoing = job.commands[job.index]
        self._flush(job)

    def _flush(self, job: _Job) -> None:
        try:
            sent = job.conn.send(job.outgoing, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            job.session.closed = True
            raise AgiChannelClosed(f"Asterisk closed the connection ({exc.__class__.__name__})") from exc
        job.outgoing = job.outgoing[sent:]
        # A reply only follows a whole command: wait for writability until it is all out.
        if job.outgoing or job.writing:
            job.writing = bool(job.outgoing)
            events = selectors.EVENT_WRITE if job.writing else selectors.EVENT_READ
            self._selector.modify(job.conn, events, job)

    def _receive(self, job: _Job) -> None:
        try:
            data = job.conn.recv(_READ_CHUNK, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            job.session.closed = True
            raise AgiChannelClosed("Asterisk closed the channel before replying")
        reply = job.session.take_reply(data)
        if reply is None:
            # More is due (a HANGUP line came first, or a reply in pieces): Asterisk may hold it
            # back (Nagle) until this is acknowledged, so acknowledge now, as the transports do
            # after every receive. A complete reply needs no such ACK: the next command (or the
            # FIN of the half-close) carries it a few microseconds later, and an ACK of its own
            # would be one more packet per round trip.
            _quickack(job.conn)
            return
        job.session.check_reply(job.commands[job.index], reply)
        job.index += 1
        self._next_command(job)

    def _reported(self, job: _Job, reported: bool, error: Optional[BaseException] = None) -> None:
        if error is not None and not isinstance(error, AgiError):
            # what write_report lets escape ends the session with fastagi_session_failed and no
            # summary event (on a worker the exception would have reached _work_loop)
            _log_failure(job, error)
            self._finish(job)
            return
        with contextlib.suppress(Exception):  # not even a failing log sink may end the loop
            log_invocation(job.log, job.session, job.report, transport="fastagi", started=job.started,
                           reported=reported, audited=job.audited)
        if not reported:
            self._finish(job)
            return
        try:  # half-close, then read until Asterisk closes too
            job.conn.shutdown(socket.SHUT_WR)
        except OSError:
            self._finish(job)
            return
        self._release(job)  # the session is done; what is left is a bounded drain
        job.drain_until = time.monotonic() + CLOSE_DRAIN_SECONDS
        if job.writing:
            job.writing = False
            self._selector.modify(job.conn, selectors.EVENT_READ, job)
        self._drain(job)

    def _drain(self, job: _Job) -> None:
        try:
            while True:
                if not job.conn.recv(_READ_CHUNK, socket.MSG_DONTWAIT):
                    break
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._finish(job)

    def _expire(self, now: float) -> None:
        for job in list(self._jobs.values()):
            if job.drain_until is not None:
                if now >= job.drain_until:
                    self._finish(job)
            elif now >= job.report_until:
                self._reported(job, False, AgiTimeout("Asterisk did not answer in time"))

    def _finish(self, job: _Job) -> None:
        if self._jobs.pop(job.conn, None) is None:
            return
        with contextlib.suppress(Exception):
            self._selector.unregister(job.conn)
        with contextlib.suppress(OSError):
            job.conn.close()
        self._release(job)

    def _release(self, job: _Job) -> None:
        release, job.release = job.release, None
        if release is None:
            return
        try:
            release(job.conn)
        except Exception as error:  # noqa: BLE001
            _log_failure(job, error)


def _quickack(conn: socket.socket) -> None:
    # Asterisk writes a multi-line reply one line per write(): see fastagi_transport.
    if _QUICKACK is not None:
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)


def _log_failure(job: _Job, error: BaseException) -> None:
    # what the server's worker logs when serve_connection raises
    with contextlib.suppress(Exception):  # not even a failing log sink may end the loop
        logs.get_logger(peer=job.peer).error(
            "fastagi_session_failed", error_type=error.__class__.__name__, exc_info=error)
