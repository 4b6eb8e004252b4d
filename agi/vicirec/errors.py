"""One exception hierarchy, rooted in :class:`VicirecError`.

Every error carries one stable :class:`ErrorCode` (what ``VICIREC_ERROR`` is set to) and, where a
line from a peer caused it, that line in ``raw``. Whoever raises an error passes ``raw`` already
redacted: the parsers redact the shapes they know (the echoed login), the HTTP edge redacts the
configured password on top.
"""

from __future__ import annotations

import enum
from typing import ClassVar, Optional


class ErrorCode(str, enum.Enum):
    """The values ``VICIREC_ERROR`` can take; dialplan branches on these, so never rename one."""

    NO_AGENT = "NO_AGENT"
    NOT_LOGGED_IN = "NOT_LOGGED_IN"
    AUTH = "AUTH"
    PERMISSION = "PERMISSION"
    NOTHING_TO_STOP = "NOTHING_TO_STOP"
    NOT_CONFIRMED = "NOT_CONFIRMED"
    TIMEOUT = "TIMEOUT"
    UNREACHABLE = "UNREACHABLE"
    BAD_RESPONSE = "BAD_RESPONSE"
    BAD_REQUEST = "BAD_REQUEST"
    CONFIG = "CONFIG"
    INTERNAL = "INTERNAL"

    def __str__(self) -> str:
        return self.value


class VicirecError(Exception):
    """Base of every error vicirec raises on purpose."""

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL

    def __init__(self, message: str, *, raw: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.raw = raw

    def __str__(self) -> str:
        return self.message


# --- configuration and dialplan input ---------------------------------------------------------


class ConfigError(VicirecError):
    code = ErrorCode.CONFIG


class BadRequest(VicirecError):
    """The dialplan asked for something vicirec cannot do (unknown action, bad option...)."""

    code = ErrorCode.BAD_REQUEST


# --- Asterisk side ----------------------------------------------------------------------------


class AgiError(VicirecError):
    """Something went wrong talking AGI to Asterisk."""


class AgiProtocolError(AgiError):
    """Asterisk sent bytes that do not follow the AGI protocol (or too many of them)."""


class AgiChannelClosed(AgiError):
    """Asterisk closed the pipe or socket: nothing more can be said on this channel."""


class AgiDeadChannel(AgiError):
    """``511``: the command needs a live channel and the caller has hung up."""


class AgiCommandRejected(AgiError):
    """``510`` (unknown command) or ``520`` (usage): a vicirec bug, never the caller's doing."""


class AgiTimeout(AgiError):
    """Asterisk did not answer within the time vicirec allows."""

    code = ErrorCode.TIMEOUT


# --- finding the agent ------------------------------------------------------------------------


class NoAgent(VicirecError):
    """No agent, or more than one, could be tied to this call."""

    code = ErrorCode.NO_AGENT


# --- VICIdial side ----------------------------------------------------------------------------


class VicidialError(VicirecError):
    """VICIdial answered, or failed to, in a way that ends this action."""


class AuthFailed(VicidialError):
    code = ErrorCode.AUTH


class PermissionDenied(VicidialError):
    code = ErrorCode.PERMISSION


class AgentNotLoggedIn(VicidialError):
    code = ErrorCode.NOT_LOGGED_IN


class NothingToStop(VicidialError):
    code = ErrorCode.NOTHING_TO_STOP


class NotConfirmed(VicidialError):
    code = ErrorCode.NOT_CONFIRMED


class RequestRejected(VicidialError):
    """VICIdial refused the request as malformed (``recording not valid``, a bad ``source``)."""

    code = ErrorCode.BAD_REQUEST


class SourceRejected(VicidialError):
    """``Invalid Source``: the configured ``source`` is not acceptable to VICIdial."""

    code = ErrorCode.CONFIG


class BadResponse(VicidialError):
    """The body holds no result line we understand (empty, HTML, garbage, cut short)."""

    code = ErrorCode.BAD_RESPONSE


class VicidialTimeout(VicidialError):
    code = ErrorCode.TIMEOUT


class Unreachable(VicidialError):
    """The request provably never reached VICIdial (refused, no such host, connect timeout)."""

    code = ErrorCode.UNREACHABLE
