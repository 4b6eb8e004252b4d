"""systemd's ``sd_notify`` protocol without libsystemd: one datagram to ``$NOTIFY_SOCKET``.

The socket is a file system path or, with a leading ``@``, an abstract socket. Outside systemd the
variable is unset and every call is a cheap no-op. A failed send is never an error for the daemon:
systemd's view of it is a convenience, the calls it answers are what matter.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from typing import Optional

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"


def socket_address(value: str) -> Optional[str]:
    """The address to send to: ``@name`` becomes the abstract ``\\0name``; ``None`` if unusable."""
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # vsock and other forms systemd may grow: not for us


class Notifier:
    """Sends state lines (``READY=1``, ``STATUS=...``) to systemd, if systemd asked for them."""

    def __init__(self, environ: Optional[Mapping[str, str]] = None) -> None:
        environ = os.environ if environ is None else environ
        raw = environ.get(NOTIFY_SOCKET_ENV, "")
        self.address = socket_address(raw) if raw else None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send ``fields`` as one message (newline-separated); True if systemd got it."""
        if self.address is None or not fields:
            return False
        message = "\n".join(fields).encode("utf-8", "replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self.address)
                sock.sendall(message)
        except OSError:
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", _status(status))

    def reloading(self, status: str = "reloading configuration") -> bool:
        # MONOTONIC_USEC lets Type=notify-reload units (systemd 253+) match this reload to its READY=1.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", _status(status))

    def stopping(self, status: str = "stopping") -> bool:
        return self.send("STOPPING=1", _status(status))

    def status(self, status: str) -> bool:
        return self.send(_status(status))


def _status(text: str) -> str:
    return "STATUS=" + " ".join(text.split())
