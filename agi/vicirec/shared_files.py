"""Files both transports append to: the process AGI runs as Asterisk's user, the FastAGI daemon as
``vicirec`` in Asterisk's group. Each must be able to write what the other created, whatever the
creator's umask (Asterisk's is often 022), so new files are made group-writable explicitly."""

from __future__ import annotations

import os

SHARED_FILE_MODE = 0o660
SHARED_SECRET_MODE = 0o640  # group members read it (the hash key), nobody else


def open_for_append(path: str, *, readable: bool = False) -> tuple[int, bool]:
    """``(fd, created)`` for appending to ``path``; a file this call creates is ``0660``."""
    flags = (os.O_RDWR if readable else os.O_WRONLY) | os.O_APPEND | os.O_CLOEXEC
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, SHARED_FILE_MODE)
    except FileExistsError:
        return os.open(path, flags), False
    set_mode(fd, SHARED_FILE_MODE)
    return fd, True


def set_mode(fd: int, mode: int) -> None:
    """The umask took bits off ``mode`` at creation; put them back (best effort)."""
    try:
        os.fchmod(fd, mode)
    except OSError:
        pass  # a file system without modes (or not ours): the umask's result stands
