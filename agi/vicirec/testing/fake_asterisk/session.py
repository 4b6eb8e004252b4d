"""One AGI session over a transport (pipes or a socket): res_agi's ``fgets`` line reader
(8191-byte cut, NUL handling, ``failure`` lines), hangup delivery and the command loop.
"""

from __future__ import annotations

import os
import select
import socket
import time
from typing import TYPE_CHECKING, Callable, Optional

from vicirec.testing.fake_asterisk.channel import FakeChannel, _b
from vicirec.testing.fake_asterisk.transcript import HangupPlan, TranscriptLine

if TYPE_CHECKING:
    from vicirec.testing.fake_asterisk.runner import FakeAsterisk


AGI_BUF_LEN = 8192  # res_agi's command buffer: a line is cut after 8191 bytes
HANGUP_LINE = b"HANGUP\n"


def _split_lines(data: bytes) -> list[bytes]:
    """Split after each ``\n`` only (``bytes.splitlines`` would also split at ``\r``)."""
    parts = data.split(b"\n")
    lines = [part + b"\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


class _Timeout(Exception):
    """The run's deadline passed while Asterisk was blocked."""


class _Transport:
    """A non-blocking read side and write side (pipes or one socket)."""

    def __init__(self, rfd: int, wfd: int, sock: Optional[socket.socket] = None) -> None:
        self.rfd = rfd
        self.wfd = wfd
        self.sock = sock
        self.write_broken = False
        if sock is not None:
            sock.setblocking(False)
        else:
            os.set_blocking(rfd, False)
            os.set_blocking(wfd, False)

    def read_chunk(self) -> Optional[bytes]:
        """Bytes available now; b"" at EOF; None if nothing is there after all."""
        try:
            if self.sock is not None:
                return self.sock.recv(65536)
            return os.read(self.rfd, 65536)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            return b""  # ECONNRESET and friends: the other side is gone

    def write_all(self, data: bytes, deadline: float) -> Optional[str]:
        """Write everything; returns an error text on failure (EPIPE, timeout), else None."""
        if self.write_broken:
            return "write side already broken"
        view = memoryview(data)
        while view:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timeout while writing"
            _r, w, _x = select.select([], [self.wfd], [], remaining)
            if not w:
                continue
            try:
                sent = self.sock.send(view) if self.sock is not None else os.write(self.wfd, view)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:
                self.write_broken = True
                return f"{type(exc).__name__}({exc.errno}, {exc.strerror!r})"
            view = view[sent:]
        return None


class _LineReader:
    """res_agi's ``FILE *readf`` + ``fgets`` loop on top of a transport."""

    def __init__(self, transport: _Transport) -> None:
        self.transport = transport
        self.buf = bytearray()
        self.eof = False

    def wait_data(self, until: float) -> bool:
        """Block until a byte (or EOF) is available or ``until`` passes (ast_waitfor_nandfds)."""
        while not self.buf and not self.eof:
            remaining = until - time.monotonic()
            if remaining <= 0:
                return False
            r, _w, _x = select.select([self.transport.rfd], [], [], remaining)
            if r:
                self._fill()
        return True

    def _fill(self) -> None:
        chunk = self.transport.read_chunk()
        if chunk is None:
            return
        if chunk == b"":
            self.eof = True
        else:
            self.buf += chunk

    def fgets(self, size: int, deadline: float) -> tuple[Optional[bytes], bool]:
        """``fgets(s, size)``: up to size-1 bytes, through the first ``\\n``. Returns (data or None,
        hit_eof)."""
        limit = size - 1
        while True:
            idx = self.buf.find(b"\n", 0, limit)
            if idx >= 0:
                return self._take(idx + 1), False
            if len(self.buf) >= limit:
                return self._take(limit), False
            if self.eof:
                return (self._take(len(self.buf)) if self.buf else None), True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Timeout
            r, _w, _x = select.select([self.transport.rfd], [], [], remaining)
            if r:
                self._fill()

    def _take(self, n: int) -> bytes:
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def read_command(self, fast: bool, deadline: float, raws: list[bytes]) -> bytes:
        """One pass of run_agi's read loop. Returns the C string it handles (may be empty = the
        script closed); every raw chunk read is appended to ``raws``."""
        size = AGI_BUF_LEN
        buf = b""
        buflen = 0
        while size > 1:
            chunk, hit_eof = self.fgets(size, deadline)
            if chunk is not None:
                raws.append(chunk)
                buf = buf[:buflen] + chunk
            if hit_eof:
                break
            if chunk is not None and not fast:
                break
            nul = buf.find(b"\0")
            buflen = nul if nul >= 0 else len(buf)
            if buflen and buf[buflen - 1:buflen] == b"\n":
                break
            size = AGI_BUF_LEN - buflen
        nul = buf.find(b"\0")
        return buf if nul < 0 else buf[:nul]


class _Session:
    """The part of run_agi both modes share: env block, command loop, hangups, replies."""

    def __init__(self, fake: FakeAsterisk, channel: FakeChannel, transport: _Transport, *, fast: bool,
                 start: float, deadline: float, hangup: Optional[HangupPlan], send_sighup: bool,
                 exit_on_hangup: bool, reply_delay: float, notify: Callable[[], None]) -> None:
        self.fake = fake
        self.channel = channel
        self.transport = transport
        self.reader = _LineReader(transport)
        self.fast = fast
        self.start = start
        self.deadline = deadline
        self.plan = hangup if not channel.hung_up else None
        self.send_sighup = send_sighup
        self.exit_on_hangup = exit_on_hangup
        self.reply_delay = reply_delay
        self._notify_cb = notify
        self.interp = fake.interpreter(channel)
        self.transcript: list[TranscriptLine] = []
        self.commands: list[bytes] = []
        self.hungup_during = False
        self.hangup_at: Optional[float] = None

    # ---- recording -----------------------------------------------------------------------------

    def now(self) -> float:
        return time.monotonic() - self.start

    def record(self, kind: str, data: bytes) -> None:
        self.transcript.append(TranscriptLine(self.now(), kind, data))

    def note(self, text: str) -> None:
        self.record("NOTE", _b(text))

    def send(self, data: bytes) -> bool:
        """One ``ast_agi_send``: a single write, recorded line by line."""
        error = self.transport.write_all(data, self.deadline)
        if error is not None:
            self.note(f"write error: {error} (lost {data[:60]!r})")
            return False
        for line in _split_lines(data):
            self.record("RECV", line)
        return True

    def send_env(self, override: Optional[bytes], lines: list[bytes]) -> None:
        if override is not None:
            self.send(override)
            return
        for line in lines:
            self.send(line)

    # ---- hangups -------------------------------------------------------------------------------

    def hangup_due(self) -> Optional[float]:
        """Monotonic time of the timed hangup, if one is still to come."""
        if self.plan is None or self.plan.after is None or self.hungup_during:
            return None
        return self.start + self.plan.after

    def hang_up_now(self, why: str) -> bool:
        """The caller hangs up: dead mode, SIGHUP / HANGUP line. True if the loop must end
        (AGIEXITONHANGUP)."""
        if self.hungup_during or self.channel.hung_up:
            return False
        self.hungup_during = True
        self.hangup_at = self.now()
        self.note(f"caller hung up ({why})")
        self.interp.hang_up()
        if self.send_sighup:
            self._notify_cb()
        return self.exit_on_hangup

    def notify_fast(self) -> None:
        self.send(HANGUP_LINE)

    def _sleep_until(self, until: float) -> None:
        while True:
            remaining = until - time.monotonic()
            if remaining <= 0:
                return
            time.sleep(min(remaining, 0.05))

    # ---- the loop ------------------------------------------------------------------------------

    def run(self, env_lines: list[bytes], override: Optional[bytes], close_after_env: bool) -> str:
        """Returns why the loop ended: eof | failure | exit_on_hangup | timeout | closed."""
        self.send_env(override, env_lines)
        if close_after_env:
            self.note("fake: closing right after the environment block")
            return "closed"
        if self.plan is not None and self.plan.after_env and self.hang_up_now("after the env block"):
            return "exit_on_hangup"
        while True:
            due = self.hangup_due()
            if due is not None and time.monotonic() >= due:
                if self.hang_up_now(f"{self.plan.after if self.plan else 0:.3f} s after start"):
                    return "exit_on_hangup"
                continue
            until = self.deadline if due is None else min(self.deadline, due)
            if not self.reader.wait_data(until):
                if due is not None and time.monotonic() >= due:
                    continue
                return "timeout"
            raws: list[bytes] = []
            try:
                line = self.reader.read_command(self.fast, self.deadline, raws)
            except _Timeout:
                for raw in raws:
                    self.record("SEND", raw)
                self.note("fake: timeout while reading a command line (partial line pending)")
                return "timeout"
            for raw in raws:
                self.record("SEND", raw)
            if not line:
                if raws:  # res_agi tests buf[0]: a line that starts with NUL reads as "script ended"
                    self.note("a line starting with NUL: Asterisk takes it for the end of the script")
                else:
                    self.note("EOF from the script (stdout / socket closed)")
                return "eof"
            if line[:7].lower() == b"failure":
                self.note("line starts with 'failure': AGI ends with FAILURE")
                return "failure"
            command = line[:-1] if line.endswith(b"\n") else line
            self.commands.append(command)
            outcome = self.dispatch(command)
            if outcome:
                return outcome

    def dispatch(self, command: bytes) -> str:
        """Answer one command (with the hangup plan around it); returns a loop-exit reason or ""."""
        plan = self.plan
        hit = plan is not None and plan.on_command is not None and not self.hungup_during \
            and plan.on_command(command)
        if hit and plan is not None and plan.before_reply \
                and self.hang_up_now(f"on command {command[:40]!r}"):
            return "exit_on_hangup"
        reply = self.interp.handle(command)
        chunks = reply.chunks
        interrupted = False
        if reply.wait > 0:
            end = time.monotonic() + reply.wait
            due = self.hangup_due() if reply.interrupted is not None else None
            if due is not None and due < end and due < self.deadline:
                self._sleep_until(due)
                chunks = reply.interrupted or chunks
                interrupted = True
            elif end > self.deadline:
                self._sleep_until(self.deadline)
                self.note("fake: timeout while a blocking command was running")
                return "timeout"
            else:
                self._sleep_until(end)
        if self.reply_delay > 0:
            self._sleep_until(min(self.deadline, time.monotonic() + self.reply_delay))
        for chunk in chunks:
            self.send(chunk)
        if interrupted and self.hang_up_now("during a blocking command"):
            return "exit_on_hangup"
        if reply.hangup_after and self.hang_up_now("HANGUP command"):
            return "exit_on_hangup"
        if hit and plan is not None and not plan.before_reply \
                and self.hang_up_now(f"after replying to {command[:40]!r}"):
            return "exit_on_hangup"
        return ""


def _agistatus(reason: str, hungup: bool, status_nonzero: bool) -> str:
    """run_agi's return status + agi_exec_full's exit-status rule."""
    if reason == "failure":
        return "FAILURE"
    if hungup:
        return "HANGUP"
    if reason == "timeout" or status_nonzero:
        return "FAILURE"
    return "SUCCESS"
