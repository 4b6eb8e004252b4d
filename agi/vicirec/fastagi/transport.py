"""The daemon's socket transport (:class:`vicirec.asterisk.channel.Transport` over TCP), with the
deadline kept by the kernel instead of by Python's socket timeout.

A Python socket with a timeout does three blocking calls per ``recv`` (the ``ioctl`` of
``settimeout``, a ``poll``, the ``recv``), and each releases the GIL. With dozens of sessions in
flight every release hands the GIL to another thread and back: that hand-off, not the protocol,
was most of the daemon's CPU under load. Here the socket stays blocking and the deadline is armed
with ``SO_RCVTIMEO`` / ``SO_SNDTIMEO`` (a ``setsockopt`` that keeps the GIL): one blocking call per
receive. When the kernel's timer fires the call fails with ``EAGAIN``, which becomes
:class:`AgiTimeout`.

``TCP_NODELAY`` once; ``TCP_QUICKACK`` re-armed whenever more is awaited (Asterisk writes a
multi-line reply one line per ``write()``; without an immediate ACK, Nagle on its side waits for
our delayed ACK, ~40 ms).
"""

from __future__ import annotations

import socket
import struct
import time

from vicirec.deadline import Deadline
from vicirec.errors import AgiChannelClosed, AgiTimeout

_READ_CHUNK = 65536
#: How far a call may run past its deadline because the kernel timeout was armed a little earlier.
REARM_SECONDS = 0.05
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


def timeval(seconds: float) -> bytes:
    """``struct timeval`` for SO_RCVTIMEO / SO_SNDTIMEO; never all zero (that means "no timeout")."""
    whole, fraction = divmod(max(seconds, 0.000001), 1.0)
    return struct.pack("@ll", int(whole), max(1, int(fraction * 1_000_000)) if whole == 0 else int(
        fraction * 1_000_000))


class KernelTimeoutTransport:
    """FastAGI: one TCP connection from Asterisk (see the module's docstring)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        sock.settimeout(None)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self._quickack = _QUICKACK
        self._set_quickack()
        # per option: (the deadline it was armed for, when); see _arm
        self._armed: dict[int, tuple[float, float]] = {}

    def _arm(self, option: int, deadline: Deadline, late: str) -> None:
        """Set the kernel timeout to what is left of ``deadline``. The kernel counts it from the
        start of each call, so a timeout armed earlier lets a later call run over the deadline by
        the time since arming: re-armed for another deadline or once that exceeds REARM_SECONDS.
        (One ``setsockopt`` per deadline instead of one per call: most of a session's calls share
        one deadline and take well under a millisecond.)"""
        now = time.monotonic()
        remaining = deadline.at - now
        if remaining <= 0:
            raise AgiTimeout(late)
        armed = self._armed.get(option)
        if armed is not None and armed[0] == deadline.at and now - armed[1] < REARM_SECONDS:
            return
        self._sock.setsockopt(socket.SOL_SOCKET, option, timeval(remaining))
        self._armed[option] = (deadline.at, now)

    def _set_quickack(self) -> None:
        if self._quickack is None:
            return
        try:
            self._sock.setsockopt(socket.IPPROTO_TCP, self._quickack, 1)
        except OSError:
            self._quickack = None

    def send(self, data: bytes, deadline: Deadline) -> None:
        try:
            self._arm(socket.SO_SNDTIMEO, deadline, "no time left to write to Asterisk")
            self._sock.sendall(data)
        except BlockingIOError as exc:  # EAGAIN: SO_SNDTIMEO expired
            raise AgiTimeout("Asterisk did not read our command in time") from exc
        except OSError as exc:
            raise AgiChannelClosed(f"Asterisk closed the connection ({exc.__class__.__name__})") from exc

    def receive(self, deadline: Deadline) -> bytes:
        data = self.receive_unacked(deadline)
        if data:
            self._set_quickack()
        return data

    def receive_unacked(self, deadline: Deadline) -> bytes:
        """:meth:`receive` without the immediate ACK: for a caller that knows whether more is due
        (``AgiSession`` after a reply: the next command carries the ACK) and calls
        :meth:`acknowledge` before it waits again."""
        try:
            self._arm(socket.SO_RCVTIMEO, deadline, "Asterisk did not answer in time")
            return self._sock.recv(_READ_CHUNK)
        except BlockingIOError as exc:  # EAGAIN: SO_RCVTIMEO expired
            raise AgiTimeout("Asterisk did not answer in time") from exc
        except OSError:
            return b""

    def acknowledge(self) -> None:
        """ACK what was received now (TCP_QUICKACK): Asterisk's Nagle may hold its next line until then."""
        self._set_quickack()

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
