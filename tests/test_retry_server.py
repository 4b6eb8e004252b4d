"""Helper (no tests here): a tiny scripted HTTP server on 127.0.0.1 for the retry and breaker tests;
each connection gets the next behaviour of a script, and every complete request is counted."""

from __future__ import annotations

import socket
import struct
import threading
import urllib.parse
from collections.abc import Sequence
from typing import Optional

# Behaviours, one per connection (the last one repeats):
#   "ok:<body>"  HTTP 200 with that body       "500" / "404"  that status, empty body
#   "reset"      read the request, then RST    "close"        read the request, then FIN, no answer
#   "hang"       read the request, never answer (until the server stops)


class ScriptedServer:
    def __init__(self, script: Sequence[str], *, port: int = 0) -> None:
        if not script:
            raise ValueError("empty script")
        self.script = list(script)
        self.requests: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(16)
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._accepted = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/agc/api.php"

    def count(self, value: Optional[str] = None) -> int:
        with self._lock:
            return sum(1 for form in self.requests if value is None or form.get("value") == value)

    def close(self) -> None:
        self._stop.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() at once
        except OSError:
            pass
        self._thread.join(timeout=5)
        self._listener.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.close()
            except OSError:
                pass

    def __enter__(self) -> ScriptedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except (socket.timeout, OSError):
                continue
            with self._lock:
                behaviour = self.script[min(self._accepted, len(self.script) - 1)]
                self._accepted += 1
                self._conns.append(conn)
            threading.Thread(target=self._handle, args=(conn, behaviour), daemon=True).start()

    def _handle(self, conn: socket.socket, behaviour: str) -> None:
        conn.settimeout(5.0)
        try:
            form = _read_request(conn)
            if form is None:
                conn.close()
                return
            with self._lock:
                self.requests.append(form)
            if behaviour == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
            elif behaviour == "close":
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            elif behaviour == "hang":
                self._stop.wait(30)
                conn.close()
            else:
                status, _, body = behaviour.partition(":")
                status = "200" if status == "ok" else status
                reason = {"200": "OK", "404": "Not Found", "500": "Internal Server Error"}[status]
                data = body.encode()
                conn.sendall(
                    f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\n"
                    f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data
                )
                conn.shutdown(socket.SHUT_WR)
                conn.close()
        except OSError:
            pass


def _read_request(conn: socket.socket) -> Optional[dict[str, str]]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        body += chunk
    return dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def refused_port() -> tuple[socket.socket, int]:
    """A port bound but not listening: connecting gets ECONNREFUSED. Keep the socket open."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    return holder, holder.getsockname()[1]


def saturated_listener() -> tuple[list[socket.socket], int]:
    """A listener whose accept queue is full: new connections are never accepted (connect timeout)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    held = [listener]
    filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    filler.settimeout(1.0)
    filler.connect(("127.0.0.1", port))
    held.append(filler)
    return held, port
