"""An AGI session over a real byte stream: pipes (process AGI) or a TCP socket (FastAGI).

This is the I/O edge around :mod:`vicirec.asterisk.codec`. It knows three ways a caller's hangup
shows: SIGHUP (process AGI; the flag is passed in), the unsolicited ``HANGUP`` line (FastAGI) and a
``511`` reply. None of them stops the session: Asterisk still accepts ``SET VARIABLE`` afterwards
and the ``h`` extension sees those variables.
"""

from __future__ import annotations

import errno
import os
import select
from typing import Callable, Optional, Protocol

from vicirec.asterisk import codec
from vicirec.asterisk.codec import AgiEnvironment, AgiReply, HangupNotice
from vicirec.deadline import Deadline
from vicirec.errors import (
    AgiChannelClosed,
    AgiCommandRejected,
    AgiDeadChannel,
    AgiProtocolError,
    AgiTimeout,
)

_READ_CHUNK = 65536


class Transport(Protocol):
    def send(self, data: bytes, deadline: Deadline) -> None: ...

    def receive(self, deadline: Deadline) -> bytes:
        """Some bytes, ``b""`` at end of stream; raises :class:`AgiTimeout` when time is up."""
        ...

    def close(self) -> None: ...


class PipeTransport:
    """Process AGI: Asterisk writes to our stdin and reads our stdout."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self._read_fd = read_fd
        self._write_fd = write_fd

    def send(self, data: bytes, deadline: Deadline) -> None:
        view = memoryview(data)
        while view:
            _wait_fd(self._write_fd, writable=True, deadline=deadline)
            try:
                written = os.write(self._write_fd, view)
            except BrokenPipeError as exc:
                raise AgiChannelClosed("Asterisk closed the AGI pipe") from exc
            view = view[written:]

    def receive(self, deadline: Deadline) -> bytes:
        _wait_fd(self._read_fd, writable=False, deadline=deadline)
        try:
            return os.read(self._read_fd, _READ_CHUNK)
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.ECONNRESET, errno.EBADF):
                return b""
            raise

    def close(self) -> None:
        for fd in {self._read_fd, self._write_fd}:
            try:
                os.close(fd)
            except OSError:
                pass


def _receive(transport: Transport, deadline: Deadline, *, partial: bool) -> bytes:
    """The next bytes from Asterisk. A transport that can defer its ACK (the daemon's: TCP_QUICKACK)
    ACKs only before waiting for the rest of a reply or environment block that came in part
    (Asterisk writes them line by line), not after a complete one: the next command carries it."""
    receive_unacked = getattr(transport, "receive_unacked", None)
    if receive_unacked is None:
        return transport.receive(deadline)
    if partial:
        transport.acknowledge()  # type: ignore[attr-defined]
    data: bytes = receive_unacked(deadline)
    return data


def _wait_fd(fd: int, *, writable: bool, deadline: Deadline) -> None:
    while True:
        remaining = deadline.remaining()
        if remaining <= 0:
            raise AgiTimeout("Asterisk did not answer in time" if not writable else "pipe write stalled")
        try:
            if writable:
                ready = select.select([], [fd], [], remaining)[1]
            else:
                ready = select.select([fd], [], [], remaining)[0]
        except InterruptedError:  # pragma: no cover - PEP 475 retries select for us
            continue
        if ready:
            return


class AgiSession:
    """Commands and replies on one channel, with hangup tracking."""

    def __init__(
        self,
        transport: Transport,
        environment: AgiEnvironment,
        *,
        leftover: bytes = b"",
        sighup_received: Callable[[], bool] = lambda: False,
        max_line_bytes: int = codec.DEFAULT_MAX_LINE_BYTES,
    ) -> None:
        self.transport = transport
        self.environment = environment
        self._sighup_received = sighup_received
        self._reader = codec.ReplyReader(max_line_bytes=max_line_bytes)
        self._reader.feed(leftover)
        self._hangup_line = False
        self._dead = False
        self.closed = False

    @classmethod
    def open(
        cls,
        transport: Transport,
        deadline: Deadline,
        *,
        sighup_received: Callable[[], bool] = lambda: False,
        max_line_bytes: int = codec.DEFAULT_MAX_LINE_BYTES,
    ) -> AgiSession:
        """Read the environment block, then hand back a session ready for commands."""
        reader = codec.EnvironmentReader(max_line_bytes=max_line_bytes)
        environment: Optional[AgiEnvironment] = None
        received = False
        while environment is None:
            data = _receive(transport, deadline, partial=received)
            received = True
            if not data:
                raise AgiChannelClosed("Asterisk closed the channel inside the environment block")
            environment = reader.feed(data)
        return cls(
            transport,
            environment,
            leftover=reader.leftover,
            sighup_received=sighup_received,
            max_line_bytes=max_line_bytes,
        )

    @property
    def hung_up(self) -> bool:
        """True once the caller hung up, however Asterisk told us."""
        return self._hangup_line or self._dead or self._sighup_received()

    def _pending_events(self) -> Optional[AgiReply]:
        for event in self._reader.events():
            if isinstance(event, HangupNotice):
                self._hangup_line = True
                continue
            return event
        return None

    def execute(self, command: bytes, deadline: Deadline) -> AgiReply:
        self.before_command()
        try:
            self.transport.send(command, deadline)
        except AgiChannelClosed:
            self.closed = True
            raise
        return self.check_reply(command, self._read_reply(deadline))

    # The three steps of execute() for a caller that does the I/O itself (the FastAGI daemon's
    # reporter sends and receives on a non-blocking loop): same checks, same order.

    def before_command(self) -> None:
        """Raise what a command may not be sent after (a closed channel, a reply nobody asked for)."""
        if self.closed:
            raise AgiChannelClosed("the AGI channel is closed")
        # Anything already buffered (a HANGUP line) belongs before our reply.
        early = self._pending_events()
        if early is not None:
            raw = early.lines[0] if early.lines else ""
            raise AgiProtocolError("reply arrived before any command", raw=raw)

    def take_reply(self, data: bytes) -> Optional[AgiReply]:
        """Feed what the transport received (``b""``: none yet); the reply once it is complete."""
        if data:
            self._reader.feed(data)
        return self._pending_events()

    def check_reply(self, command: bytes, reply: AgiReply) -> AgiReply:
        """``reply`` to ``command``, or the error it means (511: the caller hung up)."""
        if reply.code == 511:
            self._dead = True
            raise AgiDeadChannel("the caller has hung up", raw=reply.lines[0])
        if reply.code != 200:
            raise AgiCommandRejected(
                f"Asterisk rejected {command[:40].decode('utf-8', 'replace').strip()!r} with {reply.code}",
                raw=reply.lines[0] if reply.lines else "",
            )
        return reply

    def _read_reply(self, deadline: Deadline) -> AgiReply:
        received = False
        while True:
            reply = self._pending_events()
            if reply is not None:
                return reply
            data = _receive(self.transport, deadline, partial=received)
            received = True
            if not data:
                self.closed = True
                raise AgiChannelClosed("Asterisk closed the channel before replying")
            self._reader.feed(data)

    # --- the commands vicirec uses ------------------------------------------------------------

    def get_variable(self, name: str, deadline: Deadline) -> Optional[str]:
        """The value, ``""`` when set but empty, ``None`` when unset."""
        reply = self.execute(codec.get_variable(name), deadline)
        return reply.data if reply.result == 1 else None

    def get_full_variable(self, expression: str, deadline: Deadline, channel: Optional[str] = None) -> str:
        """Dialplan expansion of ``expression`` (unset and empty both read ``""``)."""
        reply = self.execute(codec.get_full_variable(expression, channel), deadline)
        return reply.data or "" if reply.result == 1 else ""

    def set_variable(self, name: str, value: str, deadline: Deadline) -> None:
        self.execute(codec.set_variable(name, value), deadline)

    def verbose(self, message: str, deadline: Deadline, level: int = 3) -> None:
        self.execute(codec.verbose(message, level), deadline)

    def gosub(self, context: str, extension: str, priority: str, deadline: Deadline) -> Optional[int]:
        """Run a dialplan subroutine now (``100 Trying`` first, ``200`` when it returns): the
        result (0 done, -1 no such location)."""
        return self.execute(codec.gosub(context, extension, priority), deadline).result

    def close(self) -> None:
        if not self.closed:
            self.closed = True
        self.transport.close()
