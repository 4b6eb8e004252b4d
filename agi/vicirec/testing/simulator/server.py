"""The HTTP edge: :class:`VicidialSimulator`, a real HTTP server on 127.0.0.1 in front of a
:class:`~vicirec.testing.simulator.state.SimulatorState`, with the armed :class:`Fault` applied per request.
"""

from __future__ import annotations

import random
import socket
import socketserver
import struct
import threading
import urllib.parse
from collections.abc import Mapping
from datetime import tzinfo
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Callable, Optional

from vicirec.testing.simulator.faults import (
    _DRY_RUN_FAULTS,
    _PROXY_502,
    FAULT_CUT_MID_LINE,
    FAULT_EMPTY200,
    FAULT_GARBAGE200,
    FAULT_HANG,
    FAULT_HTTP500_EMPTY,
    FAULT_HUGE_BODY,
    FAULT_INVALID_UTF8,
    FAULT_LOGIN_ECHO,
    FAULT_PHP_WARNINGS,
    FAULT_PROXY502_HTML,
    FAULT_SLOW,
    FAULT_STALL_BODY,
    Fault,
    _ArmedFault,
    _garbage,
    _huge_filler,
    _invalid_utf8,
    _php_warning,
)
from vicirec.testing.simulator.php import _PASS_FILTER, _USER_FILTER, _USERPASS_STRIP, _Vars, php_form_decode
from vicirec.testing.simulator.records import RequestRecord
from vicirec.testing.simulator.state import (
    _LOCK_SECONDS,
    AGENT_API_PATH,
    NON_AGENT_API_PATH,
    SimulatorState,
    _auth_sql,
    _now_default,
)

X_POWERED_BY = "PHP/8.2.36"
_REDACTED = "<redacted>"
_HANG_LIMIT = 600.0  # a hung request never outlives this, even when stop() is never called
_MAX_BODY = 16 * 1024 * 1024
_IDLE_TIMEOUT = 60.0  # seconds an idle keep-alive connection is kept open
_REASONS = {
    200: "OK",
    404: "Not Found",
    418: "I'm a teapot",
    500: "Internal Server Error",
    502: "Bad Gateway",
}


# --- HTTP ---------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512

    def __init__(self, address: tuple[str, int], sim: VicidialSimulator) -> None:
        self.sim = sim
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind() resolves the host name (getfqdn): slow without DNS. Skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: object, client_address: object) -> None:
        """Client went away mid-answer and the like: nothing worth a traceback on stderr."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = _IDLE_TIMEOUT
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.sim._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.sim._track(self.connection, add=False)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the simulator records requests in ``VicidialSimulator.requests`` instead."""

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_GET
    do_HEAD = do_GET
    do_PUT = do_GET
    do_DELETE = do_GET
    do_PATCH = do_GET
    do_OPTIONS = do_GET

    # -- reading -------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        if length <= 0:
            return b""
        if length > _MAX_BODY:
            self.close_connection = True
            length = _MAX_BODY
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        data = bytearray()
        while len(data) <= _MAX_BODY:
            size_line = self.rfile.readline(1024)
            try:
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
            except ValueError:
                break
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                break
            data += self.rfile.read(size)
            self.rfile.readline(1024)
        return bytes(data)

    # -- writing -------------------------------------------------------------------------------

    def _php_headers(self, body_length: Optional[int]) -> list[tuple[str, str]]:
        sim = self.server.sim
        if not sim.keep_alive:
            self.close_connection = True
        headers: list[tuple[str, str]] = []
        if self.close_connection:
            headers.append(("Connection", "close"))
        headers += [
            ("X-Powered-By", X_POWERED_BY),
            ("Content-type", "text/html; charset=utf-8"),
            ("Cache-Control", "no-cache, must-revalidate"),
            ("Pragma", "no-cache"),
        ]
        if body_length is not None:
            headers.append(("Content-Length", str(body_length)))
        return headers

    def _head_bytes(self, status: int, headers: list[tuple[str, str]]) -> bytes:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"]
        lines += [f"{name}: {value}\r\n" for name, value in headers]
        lines.append("\r\n")
        return "".join(lines).encode("latin-1")

    def _send(self, status: int, body: bytes, *, head_only: bool = False) -> None:
        length = len(body) if self.server.sim.keep_alive else None
        data = self._head_bytes(status, self._php_headers(length))
        self.wfile.write(data if head_only else data + body)

    def _send_partial(self, status: int, body: bytes, sent: int, declared: int) -> None:
        self.close_connection = True
        headers = self._php_headers(declared)
        self.wfile.write(self._head_bytes(status, headers) + body[:sent])
        self.wfile.flush()

    # -- the request ---------------------------------------------------------------------------

    def _serve(self) -> None:
        sim = self.server.sim
        target = self.path
        if "://" in target:  # absolute-form request target
            target = "/" + target.split("://", 1)[1].partition("/")[2]
        raw_path, _, query = target.partition("?")
        path = urllib.parse.unquote(raw_path)
        body = self._read_body()
        get = php_form_decode(query.encode("latin-1"))
        post: dict[str, bytes] = {}
        content_type = self.headers.get("Content-Type", "").lower()
        if self.command == "POST" and content_type.startswith("application/x-www-form-urlencoded"):
            post = php_form_decode(body)
        fault = sim._arrive(self.command, path, get, post)
        try:
            self._answer(sim, fault, path, get, post)
        except OSError:
            self.close_connection = True

    def _answer(
        self,
        sim: VicidialSimulator,
        fault: Optional[Fault],
        path: str,
        get: Mapping[str, bytes],
        post: Mapping[str, bytes],
    ) -> None:
        kind = fault.kind if fault is not None else None
        client_ip = str(self.client_address[0])
        head_only = self.command == "HEAD"
        if fault is not None and kind == FAULT_HANG:
            sim._stopping.wait(fault.delay or _HANG_LIMIT)
            self.close_connection = True
            return
        if kind == FAULT_HTTP500_EMPTY:
            self._send(500, b"", head_only=head_only)
            return
        if kind == FAULT_EMPTY200:
            self._send(200, b"", head_only=head_only)
            return
        if kind == FAULT_GARBAGE200:
            self._send(200, _garbage(sim._rng), head_only=head_only)
            return
        if kind == FAULT_INVALID_UTF8:
            self._send(200, _invalid_utf8(sim._rng), head_only=head_only)
            return
        if kind == FAULT_PROXY502_HTML:
            self.close_connection = True
            head = self._head_bytes(
                502,
                [
                    ("Server", "nginx/1.24.0"),
                    ("Content-Type", "text/html"),
                    ("Content-Length", str(len(_PROXY_502))),
                    ("Connection", "close"),
                ],
            )
            self.wfile.write(head if head_only else head + _PROXY_502)
            return
        if kind == FAULT_LOGIN_ECHO:
            self._send(200, sim._login_echo_line(get, post), head_only=head_only)
            return
        if fault is not None and kind == FAULT_SLOW:
            sim._stopping.wait(fault.delay)

        reply = sim.state.handle(path, get, post, client_ip, dry_run=kind in _DRY_RUN_FAULTS)
        if reply.hang > 0:
            sim._stopping.wait(min(reply.hang, _HANG_LIMIT))
        body = reply.body
        script = path if path in (AGENT_API_PATH, NON_AGENT_API_PATH) else AGENT_API_PATH
        if kind == FAULT_PHP_WARNINGS:
            body = (
                _php_warning(script, "Undefined variable $x", 1234)
                + body
                + _php_warning(script, 'Undefined array key "stage"', 2345)
            )
        elif kind == FAULT_HUGE_BODY:
            body = _huge_filler() + body
        elif fault is not None and kind in _DRY_RUN_FAULTS:
            self._misbehave(sim, fault, reply.status, body or b"\n")
            return
        self._send(reply.status, body, head_only=head_only)

    def _misbehave(self, sim: VicidialSimulator, fault: Fault, status: int, body: bytes) -> None:
        if fault.kind == FAULT_STALL_BODY:
            self._send_partial(status, body, len(body) // 2, len(body))
            sim._stopping.wait(fault.delay or _HANG_LIMIT)
        elif fault.kind == FAULT_CUT_MID_LINE:
            line_end = body.find(b"\n")
            line = body if line_end < 0 else body[: line_end + 1]
            self._send_partial(status, body, len(line) // 2, len(body) + 1)
        else:  # reset_mid_body: part of the body, then RST instead of FIN
            self._send_partial(status, body, len(body) // 2, len(body))
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()


class VicidialSimulator:
    """The simulated VICIdial web server. Use as a context manager or ``start()`` / ``stop()``."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        screen_delay: Optional[float] = 1.0,
        keep_alive: bool = False,
        clock: Optional[Callable[[], float]] = None,
        tz: Optional[tzinfo] = None,
    ) -> None:
        if screen_delay is not None and screen_delay < 0:
            raise ValueError("screen_delay must be None or >= 0")
        self.host = host
        self._wanted_port = port
        self.screen_delay = screen_delay
        self.keep_alive = keep_alive
        self._clock: Callable[[], float] = clock or _now_default
        self.state = SimulatorState(clock=self._clock, screen_delay=screen_delay, tz=tz)
        self.requests: list[RequestRecord] = []
        self._faults: list[_ArmedFault] = []
        self._stopping = threading.Event()
        self._server: Optional[_Server] = None
        self._serve_thread: Optional[threading.Thread] = None
        self._screen_thread: Optional[threading.Thread] = None
        self._connections: set[socket.socket] = set()
        self._rng = random.Random()
        self.port = 0

    # -- addresses -------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return self.base_url + AGENT_API_PATH

    @property
    def non_agent_api_url(self) -> str:
        return self.base_url + NON_AGENT_API_PATH

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> VicidialSimulator:
        if self._server is not None:
            raise RuntimeError("simulator already started")
        server = _Server((self.host, self._wanted_port), self)
        self._server = server
        self.port = int(server.server_address[1])
        self._serve_thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="vicidial-sim-http", daemon=True
        )
        self._serve_thread.start()
        if self.screen_delay is not None:
            self._screen_thread = threading.Thread(
                target=self._screen_loop, name="vicidial-sim-screen", daemon=True
            )
            self._screen_thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; hung and stalled requests are released, open connections closed."""
        self._stopping.set()
        with self.state._cond:
            self.state._cond.notify_all()
        server = self._server
        if server is not None and self._serve_thread is not None and self._serve_thread.is_alive():
            server.shutdown()
        with self.state.lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if server is not None:
            server.server_close()
        for thread in (self._serve_thread, self._screen_thread):
            if thread is not None:
                thread.join(timeout=5.0)

    def __enter__(self) -> VicidialSimulator:
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()

    # -- observation -----------------------------------------------------------------------------

    def count(
        self,
        *,
        function: Optional[str] = None,
        value: Optional[str] = None,
        agent_user: Optional[str] = None,
        path: Optional[str] = None,
    ) -> int:
        """How many received requests (faulted ones included) carried these submitted values."""
        with self.state.lock:
            records = list(self.requests)
        return sum(
            1
            for r in records
            if (function is None or r.params.get("function") == function)
            and (value is None or r.params.get("value") == value)
            and (agent_user is None or r.params.get("agent_user") == agent_user)
            and (path is None or r.path == path)
        )

    def starts_for(self, agent_user: str) -> int:
        """START commands api.php accepted (SUCCESS, external_recording written) for that agent."""
        return self.state.starts_for(agent_user)

    def reset_counters(self) -> None:
        with self.state.lock:
            self.requests.clear()
            self.state._starts.clear()

    def reset(self) -> None:
        """Fixtures back to the lab state; counters and faults cleared."""
        self.clear_faults()
        self.reset_counters()
        self.state.reset()

    def run_screen(self, user: Optional[str] = None) -> int:
        """Let the agent screen carry out pending commands now (see ``SimulatorState.run_screen``)."""
        return self.state.run_screen(user)

    # -- faults ----------------------------------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        with self.state.lock:
            self._faults.append(_ArmedFault(fault))

    def clear_faults(self) -> None:
        with self.state.lock:
            self._faults.clear()

    # -- internals -------------------------------------------------------------------------------

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self.state.lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _arrive(
        self, method: str, path: str, get: Mapping[str, bytes], post: Mapping[str, bytes]
    ) -> Optional[Fault]:
        merged = {name: raw.decode("utf-8", "replace") for name, raw in post.items()}
        merged.update((name, raw.decode("utf-8", "replace")) for name, raw in get.items())
        at = self._clock()
        with self.state.lock:
            chosen: Optional[Fault] = None
            for armed in self._faults:
                if armed.fault.matches(path, merged):
                    chosen = armed.fault
                    if armed.remaining is not None:
                        armed.remaining -= 1
                        if armed.remaining <= 0:
                            self._faults.remove(armed)
                    break
            if "pass" in merged:
                merged["pass"] = _REDACTED
            self.requests.append(
                RequestRecord(method, path, merged, at, chosen.kind if chosen is not None else None)
            )
            return chosen

    def _login_echo_line(self, get: Mapping[str, bytes], post: Mapping[str, bytes]) -> bytes:
        var = _Vars(get, post)
        user = _USER_FILTER.sub(b"", _USERPASS_STRIP.sub(b"", var("user")))
        password = _PASS_FILTER.sub(b"", _USERPASS_STRIP.sub(b"", var("pass")))
        sql = _auth_sql(user, password, int(self._clock()) - _LOCK_SECONDS)
        return b"ERROR: Invalid Username/Password: |%s|%s|0|1|BAD|0|api|%s|\n" % (user, password, sql)

    def _screen_loop(self) -> None:
        state = self.state
        with state._cond:
            while not self._stopping.is_set():
                remaining = state._screen_due()
                if remaining is None or remaining > 0:
                    state._cond.wait(timeout=1.0 if remaining is None else min(remaining, 1.0))
                    continue
                if state._screen_poll_next():
                    state._cond.notify_all()
