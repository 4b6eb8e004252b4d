"""A lean FastAGI load generator: one thread, one selector, many concurrent "Asterisk channels".

The fake Asterisk (``vicirec.testing.fake_asterisk``) is exact but costly: a thread per call, a
``select`` per line, a transcript of every byte. Driving 50 to 200 concurrent sessions with it would
spend more CPU in the load generator than in the daemon under test, on the same two cores. This
client speaks the same bytes a real Asterisk 22 sends (transcripts protocol-fastagi.txt,
fast-halfclose.txt): the environment block (``agi_network: yes`` first), ``200 result=...`` replies
to ``GET VARIABLE`` / ``GET FULL VARIABLE`` / ``SET VARIABLE`` / ``VERBOSE``, ``510`` to anything
else, and ``HANGUP`` once the server closes. Two simplifications, both in the load generator's
favour only on CPU: the environment block goes out in one ``send`` (Asterisk writes it line by
line) and channel variables live in a dict (no function evaluation: ``GET FULL VARIABLE`` reads
``()``).

A caller whose session was refused ("busy") waits ``busy_pause`` (0.1 s) before its next session:
a refused call ends and the next call on that line comes later (Asterisk never retries), and a
retry storm would measure the load generator rather than the daemon.

Closed loop by default (every caller starts its next session as soon as one ends: the most the
daemon can do); with ``rate`` an open loop: a new call every ``1/rate`` s on a free caller (line),
late when all are busy, which is how calls reach a dialer.

A *session* is one call: a fresh channel runs the AGI once per action (by default
``START,_CONSENT`` then ``STATUS``), each a FastAGI connection of its own, as a dialplan's two
``Gosub(vicirec,...)`` would. Variables set by the first (``VICIREC_AGENT`` and
``VICIREC_AGENT_DISCOVERED``) are seen by the second, as on a real channel.
"""

from __future__ import annotations

import errno
import re
import selectors
import socket
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

DEFAULT_ACTIONS: tuple[tuple[str, ...], ...] = (("START", "_CONSENT"), ("STATUS",))
_SET_VARIABLE = re.compile(rb'^SET VARIABLE (\S+) "((?:[^"\\]|\\.)*)"$', re.DOTALL)
_UNESCAPE = re.compile(rb"\\(.)", re.DOTALL)
_REPLY_SET = b"200 result=1\n"


@dataclass
class Outcome:
    action: str
    wait: float                  # seconds from connect() to the server's close: what Asterisk waits
    result: str                  # OK, BUSY, or the VICIREC_ERROR (or a transport error) otherwise
    agent: str = ""
    action_done: str = ""        # VICIREC_ACTION the server reported


@dataclass
class LoadResult:
    outcomes: list[Outcome] = field(default_factory=list)
    sessions: list[float] = field(default_factory=list)       # seconds per completed session
    sessions_started: int = 0
    elapsed: float = 0.0
    starts_by_agent: Counter[str] = field(default_factory=Counter)  # START invocations that ran
    aborted: int = 0
    late_starts: int = 0          # open loop: calls that started late because every line was busy
    max_lateness: float = 0.0

    def results(self) -> Counter[str]:
        return Counter(outcome.result for outcome in self.outcomes)


@dataclass
class _Caller:
    user: str
    call_id: str
    serial: int = 0
    variables: dict[bytes, bytes] = field(default_factory=dict)
    step: int = 0
    session_started: float = 0.0
    session_failed: bool = False
    refused: bool = False


class _Connection:
    __slots__ = ("action", "buffer", "caller", "connected", "sock", "started")

    def __init__(self, caller: _Caller, action: tuple[str, ...], sock: socket.socket) -> None:
        self.caller = caller
        self.action = action
        self.sock = sock
        self.buffer = b""
        self.started = time.monotonic()
        self.connected = False


class LeanLoadClient:
    def __init__(
        self,
        host: str,
        port: int,
        agents: Sequence[tuple[str, str]],
        *,
        sessions: int,
        actions: Sequence[Sequence[str]] = DEFAULT_ACTIONS,
        script: str = "vicirec",
        invocation_timeout: float = 5.0,
        max_seconds: float = 60.0,
        busy_pause: float = 0.1,
        rate: Optional[float] = None,
    ) -> None:
        self.host, self.port = host, port
        self.callers = [_Caller(user, call_id) for user, call_id in agents]
        self.total_sessions = sessions
        self.actions = [tuple(action) for action in actions]
        self.script = script
        self.invocation_timeout = invocation_timeout
        self.max_seconds = max_seconds
        self.busy_pause = busy_pause
        self._paused: list[tuple[float, _Caller]] = []
        self.rate = rate
        self._idle: list[_Caller] = []
        self._next_arrival = 0.0
        self._selector = selectors.DefaultSelector()
        self._open: dict[socket.socket, _Connection] = {}
        self.result = LoadResult()

    # --- driving --------------------------------------------------------------------------------

    def run(self) -> LoadResult:
        started = time.monotonic()
        stop_starting = started + self.max_seconds
        if self.rate:
            self._idle = list(self.callers)
            self._next_arrival = started
        else:
            for caller in self.callers:
                self._next_session(caller)
        while self._open or self._paused or self._arrivals_pending():
            now = time.monotonic()
            if now >= stop_starting + self.invocation_timeout:
                self._abort_all()
                break
            self._resume_paused(now)
            self._start_arrivals(now)
            wait = min([0.2] + [max(0.0, due - now) for due, _caller in self._paused])
            if self._arrivals_pending() and self._idle:
                wait = min(wait, max(0.0, self._next_arrival - now))
            ready = self._selector.select(timeout=wait) if self._open else self._sleep(wait)
            for key, _events in ready:
                conn = self._open.get(key.fileobj)  # type: ignore[call-overload]
                if conn is not None:
                    self._service(conn)
            now = time.monotonic()
            for conn in [c for c in self._open.values() if now - c.started > self.invocation_timeout]:
                self._finish(conn, "TIMEOUT")
            if now >= stop_starting:
                self.total_sessions = min(self.total_sessions, self.result.sessions_started)
        self.result.elapsed = time.monotonic() - started
        self._selector.close()
        return self.result

    def _arrivals_pending(self) -> bool:
        return bool(self.rate) and self.result.sessions_started < self.total_sessions

    def _start_arrivals(self, now: float) -> None:
        """Open loop: a new call every 1/rate seconds, on a free line; late if none is free."""
        if not self.rate:
            return
        while self._arrivals_pending() and now >= self._next_arrival and self._idle:
            lateness = now - self._next_arrival
            if lateness > 0.001:
                self.result.late_starts += 1
                self.result.max_lateness = max(self.result.max_lateness, lateness)
            self._next_session(self._idle.pop())
            self._next_arrival += 1.0 / self.rate

    def _sleep(self, seconds: float) -> list[tuple[selectors.SelectorKey, int]]:
        time.sleep(seconds)
        return []

    def _resume_paused(self, now: float) -> None:
        due = [caller for at, caller in self._paused if at <= now]
        if due:
            self._paused = [(at, caller) for at, caller in self._paused if at > now]
            for caller in due:
                self._next_session(caller)

    def _next_session(self, caller: _Caller) -> None:
        if self.result.sessions_started >= self.total_sessions:
            return
        self.result.sessions_started += 1
        caller.serial += 1
        caller.variables = {}
        caller.step = 0
        caller.session_failed = False
        caller.refused = False
        caller.session_started = time.monotonic()
        self._connect(caller)

    def _connect(self, caller: _Caller) -> None:
        action = self.actions[caller.step]
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        conn = _Connection(caller, action, sock)
        code = sock.connect_ex((self.host, self.port))
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self._record(conn, f"CONNECT_{errno.errorcode.get(code, code)}")
            self._after(conn)
            return
        self._open[sock] = conn
        self._selector.register(sock, selectors.EVENT_WRITE)

    def _service(self, conn: _Connection) -> None:
        sock = conn.sock
        if not conn.connected:
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self._finish(conn, f"CONNECT_{errno.errorcode.get(code, code)}")
                return
            conn.connected = True
            self._send(conn, self._environment(conn))
            self._selector.modify(sock, selectors.EVENT_READ)
            return
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._send(conn, b"HANGUP\n")  # what Asterisk writes when the server closes
            self._finish(conn, None)
            return
        conn.buffer += data
        *lines, conn.buffer = conn.buffer.split(b"\n")
        if lines:  # one write for all the replies due now (Nagle would merge Asterisk's writes too)
            self._send(conn, b"".join(self._answer(conn.caller, line) for line in lines))

    def _environment(self, conn: _Connection) -> bytes:
        caller = conn.caller
        lines = [
            "agi_network: yes",
            f"agi_network_script: {self.script}",
            f"agi_request: agi://{self.host}:{self.port}/{self.script}",
            f"agi_channel: SIP/trunk-{caller.user}{caller.serial:06d}",
            "agi_language: en",
            "agi_type: SIP",
            f"agi_uniqueid: 1795459430.{caller.user}{caller.serial}",
            "agi_version: 22.10.1",
            "agi_callerid: 7275551212",
            f"agi_calleridname: {caller.call_id}",
            "agi_callingpres: 0",
            "agi_callingani2: 0",
            "agi_callington: 0",
            "agi_callingtns: 0",
            "agi_dnid: unknown",
            "agi_rdnis: unknown",
            "agi_context: default",
            "agi_extension: s",
            "agi_priority: 1",
            "agi_enhanced: 0.0",
            "agi_accountcode: ",
            "agi_threadid: 139741755602624",
        ]
        lines += [f"agi_arg_{number}: {arg}" for number, arg in enumerate(conn.action, start=1)]
        return ("\n".join(lines) + "\n\n").encode()

    @staticmethod
    def _answer(caller: _Caller, line: bytes) -> bytes:
        if line.startswith(b"SET VARIABLE "):
            match = _SET_VARIABLE.match(line)
            if match is None:
                return b"520-Invalid command syntax.  Proper usage follows:\nSets a variable.\n" \
                       b"520 End of proper usage.\n"
            caller.variables[match.group(1)] = _UNESCAPE.sub(rb"\1", match.group(2))
            return _REPLY_SET
        if line.startswith(b"GET VARIABLE "):
            value = caller.variables.get(line[13:].strip())
            return b"200 result=0\n" if value is None else b"200 result=1 (" + value + b")\n"
        if line.startswith(b"GET FULL VARIABLE "):
            return b"200 result=1 ()\n"
        if line.startswith((b"VERBOSE", b"NOOP")):
            return b"200 result=1\n" if line.startswith(b"VERBOSE") else b"200 result=0\n"
        return b"510 Invalid or unknown command\n"

    @staticmethod
    def _send(conn: _Connection, data: bytes) -> None:
        try:
            sent = conn.sock.send(data)
            if sent < len(data):  # never with replies this small; be correct anyway
                conn.sock.setblocking(True)
                conn.sock.sendall(data[sent:])
                conn.sock.setblocking(False)
        except OSError:
            pass  # the server is gone; its EOF ends the invocation

    # --- bookkeeping ----------------------------------------------------------------------------

    def _finish(self, conn: _Connection, error: Optional[str]) -> None:
        self._selector.unregister(conn.sock)
        del self._open[conn.sock]
        conn.sock.close()
        self._record(conn, error)
        self._after(conn)

    def _record(self, conn: _Connection, error: Optional[str]) -> None:
        variables = conn.caller.variables
        result = error
        if result is None:
            status = variables.get(b"VICIREC_RESULT", b"").decode()
            code = variables.get(b"VICIREC_ERROR", b"").decode()
            message = variables.get(b"VICIREC_MESSAGE", b"").decode()
            if status == "OK":
                result = "OK"
            elif code == "UNREACHABLE" and "busy" in message:
                result = "BUSY"
            else:
                result = code or "NO_VARIABLES"
        done = variables.get(b"VICIREC_ACTION", b"").decode()
        outcome = Outcome(action=conn.action[0], wait=time.monotonic() - conn.started, result=result,
                          agent=variables.get(b"VICIREC_AGENT", b"").decode(), action_done=done)
        self.result.outcomes.append(outcome)
        if conn.action[0] == "START" and done == "START" and result not in ("BUSY", "TIMEOUT"):
            self.result.starts_by_agent[conn.caller.user] += 1
        if result != "OK":
            conn.caller.session_failed = True
        if result == "BUSY":
            conn.caller.refused = True
        # Each invocation starts from the variables the channel had; the next one of this session
        # must not see this one's VICIREC_RESULT as its own.
        kept = (b"VICIREC_AGENT", b"VICIREC_AGENT_DISCOVERED")
        for name in [n for n in variables if n.startswith(b"VICIREC_") and n not in kept]:
            del variables[name]

    def _after(self, conn: _Connection) -> None:
        caller = conn.caller
        caller.step += 1
        if caller.step < len(self.actions):
            self._connect(caller)
            return
        if not caller.session_failed:
            self.result.sessions.append(time.monotonic() - caller.session_started)
        if self.rate:
            self._idle.append(caller)  # the line is free for the next arrival
            return
        if caller.refused and self.busy_pause > 0:
            # A refused call ends; the next call on this line comes later: Asterisk never retries.
            self._paused.append((time.monotonic() + self.busy_pause, caller))
            return
        self._next_session(caller)

    def _abort_all(self) -> None:
        self._paused.clear()
        for conn in list(self._open.values()):
            self.result.aborted += 1
            self._selector.unregister(conn.sock)
            del self._open[conn.sock]
            conn.sock.close()
