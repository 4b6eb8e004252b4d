"""The AGI protocol as bytes: the environment block, commands and replies. No I/O here.

Everything follows what a real Asterisk 22 does (tests/data/asterisk/transcripts): the environment
block is ``key: value`` lines ended by an empty line, split on the first ``": "``; command words
are quoted the way res_agi's ``parse_args`` reads them; replies are ``200 result=N (data)`` with the
data unescaped (read to the *last* ``)``), ``510``, ``511``, or a multi-line ``520-`` usage ending
with ``520 ``; over FastAGI an unsolicited ``HANGUP`` line may come between any two replies.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Optional, Union

from vicirec.errors import AgiProtocolError

# Asterisk cuts command lines at 8191 bytes and answers the rest as a second command; stay far below.
MAX_COMMAND_BYTES = 4096
# Longest value vicirec ever writes; longer values are cut on a UTF-8 boundary.
MAX_VALUE_BYTES = 1000
DEFAULT_MAX_LINE_BYTES = 8192
DEFAULT_MAX_ENV_LINES = 256

_VARIABLE_NAME = re.compile(r"^[A-Za-z0-9_]+(?:\([^\s()]*\))?$")
_REPLY_200 = re.compile(r"^result=(-?\d+)(?: \((.*)\))?(.*)$", re.DOTALL)


# --- environment block ------------------------------------------------------------------------


@dataclass(frozen=True)
class AgiEnvironment:
    """The ``agi_*`` block Asterisk sends first, plus the AGI() arguments in order."""

    values: Mapping[str, str]
    args: tuple[str, ...]

    def get(self, key: str, default: str = "") -> str:
        return self.values.get(key, default)

    def known(self, key: str) -> str:
        """The value, or ``""`` where Asterisk wrote its placeholder ``unknown``."""
        value = self.values.get(key, "")
        return "" if value == "unknown" else value

    @property
    def network(self) -> bool:
        return self.values.get("agi_network") == "yes"

    @property
    def network_script(self) -> str:
        return self.values.get("agi_network_script", "")

    @property
    def channel(self) -> str:
        return self.values.get("agi_channel", "")

    @property
    def uniqueid(self) -> str:
        return self.values.get("agi_uniqueid", "")


class EnvironmentReader:
    """Incremental parser of the environment block: feed bytes until :attr:`environment` is set.

    Limits guard against a peer that never ends the block or sends absurd lines.
    """

    def __init__(
        self, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES, max_lines: int = DEFAULT_MAX_ENV_LINES
    ) -> None:
        self._buffer = bytearray()
        self._values: dict[str, str] = {}
        self._lines = 0
        self._max_line_bytes = max_line_bytes
        self._max_lines = max_lines
        self.environment: Optional[AgiEnvironment] = None
        self.leftover = b""

    def feed(self, data: bytes) -> Optional[AgiEnvironment]:
        if self.environment is not None:
            self.leftover += data
            return self.environment
        self._buffer += data
        while self.environment is None:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > self._max_line_bytes:
                    raise AgiProtocolError("environment line too long", raw=_preview(self._buffer))
                return None
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            self._take_line(line)
        self.leftover = bytes(self._buffer)
        self._buffer.clear()
        return self.environment

    def _take_line(self, line: bytes) -> None:
        if len(line) > self._max_line_bytes:
            raise AgiProtocolError("environment line too long", raw=_preview(line))
        if line in (b"", b"\r"):
            self.environment = _build_environment(self._values)
            return
        self._lines += 1
        if self._lines > self._max_lines:
            raise AgiProtocolError("environment block has too many lines")
        if b"\x00" in line:
            raise AgiProtocolError("NUL byte in the environment block", raw=_preview(line))
        text = line.decode("utf-8", "replace")
        key, sep, value = text.partition(": ")
        if not sep:
            if text.endswith(":"):
                key, value = text[:-1], ""
            else:
                raise AgiProtocolError("environment line without ': '", raw=_preview(line))
        if not key.startswith("agi_"):
            raise AgiProtocolError("environment key does not start with agi_", raw=_preview(line))
        self._values[key] = value


def _build_environment(values: Mapping[str, str]) -> AgiEnvironment:
    args: list[str] = []
    index = 1
    while f"agi_arg_{index}" in values:
        args.append(values[f"agi_arg_{index}"])
        index += 1
    return AgiEnvironment(values=dict(values), args=tuple(args))


def parse_environment(block: bytes) -> AgiEnvironment:
    """Parse a complete environment block (convenience for tests and tools)."""
    reader = EnvironmentReader()
    environment = reader.feed(block)
    if environment is None:
        raise AgiProtocolError("environment block is not terminated by an empty line")
    return environment


# --- commands ---------------------------------------------------------------------------------


def clean_value(value: str, max_bytes: int = MAX_VALUE_BYTES) -> str:
    """Drop what no AGI word can carry (CR, LF, NUL) and cut to ``max_bytes`` of UTF-8."""
    value = value.replace("\r", " ").replace("\n", " ").replace("\x00", "")
    encoded = value.encode("utf-8")
    if len(encoded) <= max_bytes:
        return value
    return encoded[:max_bytes].decode("utf-8", "ignore")


def quote_word(value: str) -> str:
    """One AGI word holding exactly ``value`` once Asterisk's parse_args has read it."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def encode_command(*words: str) -> bytes:
    line = " ".join(words).encode("utf-8") + b"\n"
    if len(line) > MAX_COMMAND_BYTES:
        raise ValueError(f"AGI command of {len(line)} bytes is too long")
    if b"\r" in line[:-1] or b"\x00" in line or b"\n" in line[:-1]:
        raise ValueError("AGI command contains CR, LF or NUL")
    return line


def _checked_name(name: str) -> str:
    if not _VARIABLE_NAME.match(name):
        raise ValueError(f"not a channel variable name: {name!r}")
    return name


def set_variable(name: str, value: str) -> bytes:
    return encode_command("SET VARIABLE", _checked_name(name), quote_word(clean_value(value)))


def get_variable(name: str) -> bytes:
    return encode_command("GET VARIABLE", _checked_name(name))


def get_full_variable(expression: str, channel: Optional[str] = None) -> bytes:
    """``expression`` is written as in dialplan; the AGI-level backslash escaping is added here."""
    words = ["GET FULL VARIABLE", quote_word(clean_value(expression))]
    if channel is not None:
        words.append(quote_word(clean_value(channel)))
    return encode_command(*words)


def verbose(message: str, level: int = 1) -> bytes:
    return encode_command("VERBOSE", quote_word(clean_value(message)), str(int(level)))


def gosub(context: str, extension: str, priority: str) -> bytes:
    return encode_command("GOSUB", context, extension, priority)


def channel_status() -> bytes:
    return encode_command("CHANNEL STATUS")


def noop() -> bytes:
    return encode_command("NOOP")


# --- replies ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgiReply:
    """One complete reply. ``lines`` keeps the raw text (the usage text of a 520)."""

    code: int
    result: Optional[int] = None
    data: Optional[str] = None
    rest: str = ""
    lines: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.code == 200


@dataclass(frozen=True)
class HangupNotice:
    """The unsolicited ``HANGUP`` line FastAGI sends when the caller hangs up (or at close)."""


AgiEvent = Union[AgiReply, HangupNotice]


class ReplyReader:
    """Incremental reader of what Asterisk sends after the environment block.

    Feed bytes with :meth:`feed`, take complete events from :meth:`events`.
    """

    def __init__(self, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self._buffer = bytearray()
        self._usage: Optional[list[str]] = None
        self._max_line_bytes = max_line_bytes

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def events(self) -> Iterator[AgiEvent]:
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > self._max_line_bytes:
                    raise AgiProtocolError("reply line too long", raw=_preview(self._buffer))
                return
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            event = self._take_line(line)
            if event is not None:
                yield event

    def _take_line(self, line: bytes) -> Optional[AgiEvent]:
        if len(line) > self._max_line_bytes:
            raise AgiProtocolError("reply line too long", raw=_preview(line))
        text = line.decode("utf-8", "replace")
        if self._usage is not None:
            self._usage.append(text)
            if text.startswith("520 "):
                usage, self._usage = self._usage, None
                return AgiReply(code=520, lines=tuple(usage))
            if len(self._usage) > 200:
                raise AgiProtocolError("520 usage text never ends")
            return None
        if text == "HANGUP":
            return HangupNotice()
        if text.startswith("100 "):
            return None  # "100 result=0 Trying...": GOSUB's interim line; its 200 follows

        if text.startswith("520-"):
            self._usage = [text]
            return None
        return parse_reply_line(text)


def parse_reply_line(text: str) -> AgiReply:
    """Parse one single-line reply (``200 ...``, ``510 ...``, ``511 ...``, ``520 ...``)."""
    code_text, _, remainder = text.partition(" ")
    if len(code_text) != 3 or not code_text.isdigit():
        raise AgiProtocolError("not an AGI reply", raw=_preview(text.encode("utf-8", "replace")))
    code = int(code_text)
    if code != 200:
        return AgiReply(code=code, lines=(text,))
    match = _REPLY_200.match(remainder)
    if match is None:
        raise AgiProtocolError("200 reply without result=", raw=_preview(text.encode("utf-8", "replace")))
    result, data, rest = match.groups()
    if data is not None:
        # The data is not escaped: it runs from the first "(" to the LAST ")".
        inner = remainder[remainder.index("(") + 1 : remainder.rindex(")")]
        data, rest = inner, remainder[remainder.rindex(")") + 1 :]
    return AgiReply(code=200, result=int(result), data=data, rest=rest.strip(), lines=(text,))


def _preview(data: Union[bytes, bytearray], limit: int = 120) -> str:
    return bytes(data[:limit]).decode("utf-8", "replace")
