"""Replay the script side of a recorded AGI transcript (tests/data/asterisk/transcripts/*.txt).

The replayer is the test oracle for the fake Asterisk, so it shares no code with it. It reads the
environment block like an AGI, then walks the transcript's events after the block:

* ``SEND b'...'``  -- write exactly these bytes (a write error is recorded, not raised);
* ``RECV b'...'``  -- read one line (bounded wait) and record what really arrived;
* ``NOTE slept X`` -- the recorded script slept X seconds: sleep X * sleep_scale, still reading;
* ``NOTE shutdown(SHUT_WR)...`` -- FastAGI half-close;
* ``NOTE read window ...`` -- collect whatever else arrives for a short window.

At the end it collects late lines for one more window. Everything it received after the block, in
order, is in the report, so a test can compare it with the transcript's RECV lines.
"""

from __future__ import annotations

import ast
import os
import re
import select
import socket
import time
from pathlib import Path
from typing import Optional, Union

_LINE_RE = re.compile(r"^\+(\d+(?:\.\d+)?) (RECV|SEND|SIG|NOTE)\s+(.*)$")

Event = tuple[str, Union[bytes, str]]


def data_dir() -> Path:
    """``tests/data``: the captured evidence, kept in the repo."""
    return Path(__file__).resolve().parents[1] / "data"


def transcript_path(name: str) -> Path:
    return data_dir() / "asterisk" / "transcripts" / (name if name.endswith(".txt") else name + ".txt")


def load_events(path: Path) -> list[Event]:
    events: list[Event] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        m = _LINE_RE.match(raw)
        if not m:
            continue
        kind, payload = m.group(2), m.group(3)
        if kind in ("RECV", "SEND"):
            data = ast.literal_eval(payload)
            assert isinstance(data, bytes)
            events.append((kind, data))
        else:
            events.append((kind, payload))
    return events


def split_env(events: list[Event]) -> tuple[list[bytes], list[Event]]:
    """The environment block lines (ending with the blank line) and the events after it."""
    env: list[bytes] = []
    for i, (kind, data) in enumerate(events):
        if kind == "RECV":
            assert isinstance(data, bytes)
            env.append(data)
            if data == b"\n":
                return env, events[i + 1:]
    raise ValueError("no environment block in transcript")


class Endpoint:
    """A line reader/writer over a pipe pair or a socket, with bounded waits."""

    def __init__(self, rfd: int, wfd: int, sock: Optional[socket.socket] = None) -> None:
        self.rfd = rfd
        self.wfd = wfd
        self.sock = sock
        self.buf = bytearray()
        self.eof = False

    def _pump(self, timeout: float) -> bool:
        if self.eof:
            return False
        r, _w, _x = select.select([self.rfd], [], [], max(0.0, timeout))
        if not r:
            return False
        try:
            if self.sock is not None:
                chunk = self.sock.recv(65536)
                quickack = getattr(socket, "TCP_QUICKACK", None)
                if quickack is not None and chunk:
                    try:
                        self.sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)
                    except OSError:
                        pass
            else:
                chunk = os.read(self.rfd, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            self.eof = True
        self.buf += chunk
        return True

    def read_line(self, timeout: float) -> Optional[bytes]:
        end = time.monotonic() + timeout
        while True:
            idx = self.buf.find(b"\n")
            if idx >= 0:
                line = bytes(self.buf[:idx + 1])
                del self.buf[:idx + 1]
                return line
            if self.eof:
                return None
            remaining = end - time.monotonic()
            if remaining <= 0:
                return None
            self._pump(remaining)

    def idle(self, seconds: float) -> None:
        """Sleep, but keep reading what arrives (like the recorded logger did)."""
        end = time.monotonic() + seconds
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                return
            if self.eof:
                time.sleep(remaining)
                return
            self._pump(remaining)

    def drain(self, window: float) -> list[bytes]:
        lines: list[bytes] = []
        end = time.monotonic() + window
        while True:
            line = self.read_line(max(0.0, end - time.monotonic()))
            if line is None:
                return lines
            lines.append(line)

    def write(self, data: bytes) -> Optional[str]:
        try:
            if self.sock is not None:
                self.sock.sendall(data)
            else:
                view = memoryview(data)
                while view:
                    view = view[os.write(self.wfd, view):]
        except OSError as exc:
            return f"{type(exc).__name__}({exc.errno})"
        return None

    def shutdown_write(self) -> None:
        if self.sock is not None:
            self.sock.shutdown(socket.SHUT_WR)


def replay(path: Path, ep: Endpoint, *, sleep_scale: float = 0.1, read_timeout: float = 3.0,
           window: float = 0.1) -> dict[str, object]:
    """Act as the script of transcript ``path`` on endpoint ``ep``; returns the report."""
    _env, rest = split_env(load_events(path))
    env_got: list[bytes] = []
    while True:
        line = ep.read_line(read_timeout)
        if line is None:
            break
        env_got.append(line)
        if line == b"\n":
            break
    received: list[bytes] = []
    write_errors: list[str] = []
    for kind, data in rest:
        if kind == "SEND":
            assert isinstance(data, bytes)
            error = ep.write(data)
            if error:
                write_errors.append(error)
        elif kind == "RECV":
            line = ep.read_line(read_timeout)
            if line is not None:
                received.append(line)
        elif kind == "NOTE":
            assert isinstance(data, str)
            m = re.match(r"slept ([\d.]+)", data)
            if m:
                ep.idle(float(m.group(1)) * sleep_scale)
            elif data.startswith("shutdown(SHUT_WR)"):
                ep.shutdown_write()
            elif data.startswith("read window"):
                received.extend(ep.drain(window))
    received.extend(ep.drain(window))
    return {"env": env_got, "received": received, "write_errors": write_errors, "eof": ep.eof}


def encode_report(report: dict[str, object]) -> dict[str, object]:
    """JSON-safe: bytes become latin-1 strings."""
    out: dict[str, object] = {}
    for key, value in report.items():
        if isinstance(value, list):
            out[key] = [v.decode("latin-1") if isinstance(v, bytes) else v for v in value]
        else:
            out[key] = value
    return out


def decode_report(data: dict[str, object]) -> dict[str, object]:
    out: dict[str, object] = dict(data)
    for key in ("env", "received"):
        value = data.get(key)
        if isinstance(value, list):
            out[key] = [v.encode("latin-1") for v in value]
    return out
