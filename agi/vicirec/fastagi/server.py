"""The FastAGI listener: admission, a fixed pool of worker threads, deadlines and a clean stop.

One thread (the caller of :meth:`FastAgiServer.run`, the main thread) owns the listening socket
and a selector. For each accepted connection it decides at once:

* peer not in ``fastagi.allow``: closed and logged;
* all ``max_sessions`` slots taken: refused *without a thread and without waiting*: the
  ``SET VARIABLE`` lines of an UNREACHABLE report are written (they fit in the socket buffer),
  the write side is shut, and the selector drains what Asterisk still sends until it closes (or a
  second passes), so no reset can cost Asterisk the lines it has not read yet;
* otherwise the connection goes to an idle worker (there is always one: workers == slots). The
  worker runs the action and writes the audit record, then hands the session to the reporter
  (:mod:`vicirec.fastagi.reporter`: one thread sets every session's variables and closes it); the
  slot is free once the variables are set and the write side is shut.

The same loop enforces ``session_deadline`` from outside the workers (it shuts an overdue session's
socket down, which ends any read or write the worker is blocked in) and, on stop, answers what is
left in the backlog, closes the listener and waits up to ``grace_seconds`` for the sessions in
flight. Worker threads start with the daemon's signals blocked, so every signal reaches the main
thread and no worker ever runs (or installs) a handler.
"""

from __future__ import annotations

import contextlib
import errno
import queue
import selectors
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

from vicirec import logs
from vicirec.fastagi.reporter import Reporter
from vicirec.fastagi.sdnotify import Notifier
from vicirec.fastagi.session import (
    DaemonRuntime,
    busy_report,
    refusal_bytes,
    serve_connection,
    stopping_report,
)

HANDLED_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
#: How long a refused connection is drained before it is closed regardless.
REFUSAL_DRAIN_SECONDS = 1.0
#: Refused connections drained at once; beyond that they are closed straight away.
MAX_DRAINING = 512
#: Connections accepted per wake-up before the loop looks at its timers again.
ACCEPT_BATCH = 64
#: How often overdue sessions are looked for while any is in flight.
REAP_INTERVAL = 0.1
#: After EMFILE / ENFILE: how long accepting pauses (the listener would stay readable).
ACCEPT_PAUSE_SECONDS = 0.1
#: Rate limit of the busy / refused-peer warnings.
WARN_INTERVAL = 1.0

Reloader = Callable[[DaemonRuntime], Optional[DaemonRuntime]]


@dataclass
class _InFlight:
    conn: socket.socket
    peer: str
    hard_deadline: float
    reaped: bool = False


@dataclass
class ServerStats:
    accepted: int = 0
    served: int = 0
    refused_busy: int = 0
    refused_peer: int = 0
    refused_stopping: int = 0
    overdue: int = 0
    abandoned: int = 0


@dataclass
class _RateLimitedWarning:
    event: str
    pending: int = 0
    last: float = field(default=-1e9)

    def note(self, now: float, **fields: object) -> None:
        self.pending += 1
        if now - self.last >= WARN_INTERVAL:
            logs.get_logger().warning(self.event, count=self.pending, **fields)
            self.pending = 0
            self.last = now


class _Mark:
    """Selector payloads: what a ready file object is."""

    LISTENER = "listener"
    WAKEUP = "wakeup"
    DRAIN = "drain"


class FastAgiServer:
    def __init__(
        self,
        listener: socket.socket,
        runtime: DaemonRuntime,
        *,
        max_sessions: int,
        notifier: Optional[Notifier] = None,
        reloader: Optional[Reloader] = None,
    ) -> None:
        self.listener: Optional[socket.socket] = listener
        listener.setblocking(False)
        self.runtime = runtime
        self.max_sessions = max_sessions
        self.stats = ServerStats()
        self._notifier = notifier or Notifier({})
        self._reloader = reloader
        self._slots = threading.BoundedSemaphore(max_sessions)
        self._work: queue.SimpleQueue[Optional[tuple[socket.socket, str, float, DaemonRuntime]]] = (
            queue.SimpleQueue()
        )
        self._workers: list[threading.Thread] = []
        # Sets every session's variables and closes it, on one thread (see fastagi_reporter).
        self._reporter = Reporter()
        self._lock = threading.Lock()
        self._in_flight: dict[int, _InFlight] = {}
        self._draining: dict[socket.socket, float] = {}
        self._selector = selectors.DefaultSelector()
        self._wakeup_read, self._wakeup_write = socket.socketpair()
        self._wakeup_read.setblocking(False)
        self._wakeup_write.setblocking(False)
        self._busy_answer = refusal_bytes(busy_report(max_sessions))
        self._stopping_answer = refusal_bytes(stopping_report())
        self._busy_warning = _RateLimitedWarning("fastagi_busy")
        self._peer_warning = _RateLimitedWarning("fastagi_peer_refused")
        self._stop_requested = False
        self._force_stop = False
        self._reload_requested = False
        self._grace_end: Optional[float] = None
        self._accept_paused_until = 0.0
        self._next_reap = 0.0

    # --- control (signal handlers, tests) --------------------------------------------------------

    @property
    def wakeup_fd(self) -> int:
        """A non-blocking descriptor for ``signal.set_wakeup_fd``."""
        return self._wakeup_write.fileno()

    def request_stop(self) -> None:
        """Stop accepting and finish; a second request ends the grace period at once."""
        if self._stop_requested:
            self._force_stop = True
        self._stop_requested = True
        self._wake()

    def request_reload(self) -> None:
        self._reload_requested = True
        self._wake()

    def in_flight(self) -> int:
        with self._lock:
            return len(self._in_flight)

    def _wake(self) -> None:
        try:
            self._wakeup_write.send(b"\0")
        except OSError:  # full: a wake-up is pending anyway
            pass

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> None:
        """Serve until a stop was requested and the sessions in flight are done (or given up)."""
        assert self.listener is not None
        self._start_workers()
        self._selector.register(self.listener, selectors.EVENT_READ, _Mark.LISTENER)
        self._selector.register(self._wakeup_read, selectors.EVENT_READ, _Mark.WAKEUP)
        try:
            while self._loop_once():
                pass
        finally:
            self._shut_down()

    def _loop_once(self) -> bool:
        if self._reload_requested:
            self._reload_requested = False
            self._reload()
        if self._stop_requested and self._grace_end is None:
            self._begin_stop()
        now = time.monotonic()
        if self._grace_end is not None:
            if self.in_flight() == 0 and not self._draining:
                return False
            if now >= self._grace_end or self._force_stop:
                self._abandon_in_flight()
                return False
        if self.listener is not None and self._accept_paused_until and now >= self._accept_paused_until:
            self._accept_paused_until = 0.0
            self._selector.register(self.listener, selectors.EVENT_READ, _Mark.LISTENER)
        for key, _events in self._selector.select(self._timeout(now)):
            if key.data is _Mark.LISTENER:
                self._accept_batch()
            elif key.data is _Mark.WAKEUP:
                self._drain_wakeups()
            else:
                self._drain_refused(key.fileobj)  # type: ignore[arg-type]
        now = time.monotonic()
        self._expire_drains(now)
        if now >= self._next_reap:
            self._reap_overdue(now)
        return True

    def _timeout(self, now: float) -> Optional[float]:
        moments = list(self._draining.values())
        if self._in_flight:
            moments.append(self._next_reap)
        if self._grace_end is not None:
            moments.append(self._grace_end)
        if self._accept_paused_until:
            moments.append(self._accept_paused_until)
        if not moments:
            return None
        return max(0.0, min(moments) - now)

    # --- admission ---------------------------------------------------------------------------

    def _accept_batch(self, limit: int = ACCEPT_BATCH) -> None:
        listener = self.listener
        if listener is None:
            return
        for _ in range(limit):
            try:
                conn, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._accept_failed(exc)
                return
            self._admit(conn, str(address[0]), time.monotonic())

    def _accept_failed(self, exc: OSError) -> None:
        if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM) and self.listener:
            # The pending connection stays in the backlog and the listener stays readable: pause.
            logs.get_logger().error("fastagi_accept_failed", error=exc.strerror, pause=ACCEPT_PAUSE_SECONDS)
            self._selector.unregister(self.listener)
            self._accept_paused_until = time.monotonic() + ACCEPT_PAUSE_SECONDS
        # ECONNABORTED and the like: that one connection is gone, nothing to do.

    def _admit(self, conn: socket.socket, peer: str, accepted_at: float) -> None:
        self.stats.accepted += 1
        runtime = self.runtime
        if not runtime.peer_allowed(peer):
            self.stats.refused_peer += 1
            conn.close()
            self._peer_warning.note(accepted_at, peer=peer)
            return
        if self._grace_end is not None:
            self.stats.refused_stopping += 1
            self._refuse(conn, self._stopping_answer, accepted_at)
            return
        if not self._slots.acquire(blocking=False):
            self.stats.refused_busy += 1
            self._refuse(conn, self._busy_answer, accepted_at)
            self._busy_warning.note(accepted_at, max_sessions=self.max_sessions)
            return
        hard_deadline = accepted_at + runtime.config.fastagi.session_deadline
        with self._lock:
            self._in_flight[id(conn)] = _InFlight(conn, peer, hard_deadline)
        self._work.put((conn, peer, accepted_at, runtime))

    def _refuse(self, conn: socket.socket, answer: bytes, now: float) -> None:
        """Answer with the report's variables, shut the write side, drain from the selector."""
        try:
            # ~1 KB into an empty socket buffer: all of it goes. MSG_DONTWAIT rather than
            # setblocking(False): one system call (and one GIL hand-off) less per refusal.
            conn.send(answer, socket.MSG_DONTWAIT)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            conn.close()
            return
        if len(self._draining) >= MAX_DRAINING:
            conn.close()
            return
        self._draining[conn] = now + REFUSAL_DRAIN_SECONDS
        self._selector.register(conn, selectors.EVENT_READ, _Mark.DRAIN)

    def _drain_refused(self, conn: socket.socket) -> None:
        try:
            while conn.recv(65536, socket.MSG_DONTWAIT):
                pass
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._close_drained(conn)  # EOF or error: Asterisk is done

    def _expire_drains(self, now: float) -> None:
        if not self._draining:
            return
        for conn in [c for c, until in self._draining.items() if until <= now]:
            self._close_drained(conn)

    def _close_drained(self, conn: socket.socket) -> None:
        if self._draining.pop(conn, None) is not None:
            self._selector.unregister(conn)
        conn.close()

    def _drain_wakeups(self) -> None:
        try:
            while self._wakeup_read.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            return

    # --- workers -----------------------------------------------------------------------------

    def _start_workers(self) -> None:
        # Threads inherit the creating thread's signal mask: block ours while they are created.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        try:
            self._reporter.start()
            for number in range(self.max_sessions):
                worker = threading.Thread(target=self._work_loop, name=f"fastagi-{number}", daemon=True)
                worker.start()
                self._workers.append(worker)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def _work_loop(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            conn, peer, accepted_at, runtime = item
            handed_over = False
            try:
                handed_over = serve_connection(
                    conn, peer, accepted_at, runtime, reporter=self._reporter, release=self._free_slot)
            except Exception as error:  # noqa: BLE001 - a bug in one session must not end the worker
                _log_session_failure(peer, error)
            finally:
                if not handed_over:  # else the reporter releases it once the variables are set
                    self._release(conn)

    def _release(self, conn: socket.socket) -> None:
        try:
            conn.close()
        except OSError:
            pass
        self._free_slot(conn)

    def _free_slot(self, conn: socket.socket) -> None:
        """The session is over for admission and stop (the reporter may still be draining ``conn``,
        as the loop drains a refused connection: bounded, without a slot)."""
        with self._lock:
            self._in_flight.pop(id(conn), None)
            self.stats.served += 1
        self._slots.release()
        if self._grace_end is not None:
            self._wake()

    # --- deadlines ---------------------------------------------------------------------------

    def _reap_overdue(self, now: float) -> None:
        self._next_reap = now + REAP_INTERVAL
        with self._lock:
            overdue = [s for s in self._in_flight.values() if not s.reaped and s.hard_deadline <= now]
            for session in overdue:
                session.reaped = True
        for session in overdue:
            self.stats.overdue += 1
            _shut(session.conn)
            logs.get_logger(peer=session.peer).warning(
                "fastagi_session_deadline", session_deadline=self.runtime.config.fastagi.session_deadline)

    # --- reload and stop ---------------------------------------------------------------------

    def _reload(self) -> None:
        if self._reloader is None:
            return
        replacement = self._reloader(self.runtime)
        if replacement is not None:
            self.runtime = replacement  # one reference swap: sessions keep the runtime they started with

    def _begin_stop(self) -> None:
        grace = self.runtime.config.fastagi.grace_seconds
        self._grace_end = time.monotonic() + grace
        in_flight = self.in_flight()
        self._notifier.stopping(f"stopping: {in_flight} session(s) in flight, grace {grace:g} s")
        logs.get_logger().info("fastagi_stopping", in_flight=in_flight, grace_seconds=grace)
        listener = self.listener
        if listener is None:
            return
        # Whatever is already in the backlog gets an answer instead of a reset, then no more.
        self._accept_batch(limit=4096)
        if not self._accept_paused_until:
            self._selector.unregister(listener)
        self._accept_paused_until = 0.0
        listener.close()
        self.listener = None

    def _abandon_in_flight(self) -> None:
        with self._lock:
            left = list(self._in_flight.values())
        self.stats.abandoned = len(left)
        for session in left:
            _shut(session.conn)
        logs.get_logger().warning("fastagi_grace_expired", abandoned=len(left))

    def _shut_down(self) -> None:
        for conn in list(self._draining):
            self._close_drained(conn)
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        for _worker in self._workers:
            self._work.put(None)
        self._reporter.stop()
        self._selector.close()
        self._wakeup_read.close()
        self._wakeup_write.close()


def _log_session_failure(peer: str, error: Exception) -> None:
    log = logs.get_logger(peer=peer)
    with contextlib.suppress(Exception):  # not even a failing log sink may end a worker
        log.exception("fastagi_session_failed", error_type=error.__class__.__name__)


def _shut(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def bind_listener(host: str, port: int, backlog: int = socket.SOMAXCONN) -> socket.socket:
    """A listening TCP socket on ``host:port`` (raises OSError when it cannot be had)."""
    infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    if not infos:  # pragma: no cover - getaddrinfo raises instead
        raise OSError(errno.EADDRNOTAVAIL, f"no address for {host}")
    family, kind, proto, _name, address = infos[0]
    listener = socket.socket(family, kind, proto)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(backlog)
    except OSError:
        listener.close()
        raise
    return listener


def listening_address(listener: socket.socket) -> tuple[str, int]:
    address: Union[tuple[str, int], tuple[str, int, int, int]] = listener.getsockname()
    return str(address[0]), int(address[1])
