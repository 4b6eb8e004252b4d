"""PHP 8 / MariaDB 10.11 semantics api.php relies on: its variable filters, string/number
comparison, the 14-byte stage cut, form decoding, and what a ``VARCHAR(20)`` column stores.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from typing import Optional

_COLUMN_CHARS = 20  # vicidial_live_agents.external_recording VARCHAR(20)
_STAGE_BYTES = 14


def _b(text: object) -> bytes:
    return str(text).encode("utf-8")


_USERPASS_STRIP = re.compile(rb"['\"\\; ]")
_USER_FILTER = re.compile(rb"[^-_0-9a-zA-Z]")
_PASS_FILTER = re.compile(rb"[^-.+/=_0-9a-zA-Z]")
_VALUE_FILTER = re.compile(rb"[^-|_0-9a-zA-Z]")
_ALNUM_FILTER = re.compile(rb"[^0-9a-zA-Z]")
_STAGE_STRIP = re.compile(rb"['\"\\;]")
_DIGITS_FILTER = re.compile(rb"[^0-9]")
_LIST_FILTER = re.compile(rb"[^-_|0-9a-zA-Z]")
_DATE_FILTER = re.compile(rb"[^-0-9]")
_PHP_WS = b" \t\n\r\x0b\x0c"
_PHP_NUMERIC = re.compile(
    rb"[ \t\n\r\x0b\x0c]*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[ \t\n\r\x0b\x0c]*"
)
_MYSQL_INT = re.compile(rb"[ \t\n\r]*[+-]?[0-9]+")
_SCREEN_FILENAME_DROP = re.compile(rb"[^-_0-9a-zA-Z]")
_COFFEE = frozenset({b"coffee", b"start_coffee", b"make_coffee", b"brew_coffee"})
_CLOSE_WINDOW_LINK = b"\n<a href=\"javascript:window.opener='x';window.close();\">Close This Window</a>\n"


def php_compare_int(text: bytes, number: int) -> int:
    """PHP 8 ``$text <=> $number`` for a string and an int: numeric strings compare as numbers,
    anything else compares as a string with the number's decimal form (``'START' > 0``)."""
    if _PHP_NUMERIC.fullmatch(text):
        num = float(text.strip(_PHP_WS).decode("ascii"))
        return (num > number) - (num < number)
    other = str(number).encode("ascii")
    return (text > other) - (text < other)


def mysql_int(text: bytes) -> int:
    """MariaDB's cast of a string compared with an INT column (``'START_X'`` is 0)."""
    match = _MYSQL_INT.match(text)
    return int(match.group().strip()) if match else 0


def cut_stage(stage: bytes) -> Optional[bytes]:
    """api.php: ``while (strlen($stage)>14) {$stage = preg_replace("/.$/",'',$stage);}``.

    Byte-wise (no ``/u``), and ``$`` also matches before a final newline, so a trailing ``\\n``
    survives. Returns None when the loop never ends (the ``.$`` cannot match ``...\\n\\n``)."""
    if len(stage) <= _STAGE_BYTES:
        return stage
    last_newline = stage.rfind(b"\n", _STAGE_BYTES)
    if last_newline < 0:
        return stage[:_STAGE_BYTES]
    if b"\n" in stage[_STAGE_BYTES - 1 : last_newline]:
        return None
    return stage[: _STAGE_BYTES - 1] + b"\n"


def php_form_decode(raw: bytes) -> dict[str, bytes]:
    """PHP's ``parse_str``-like parsing of a query string or form body; the last duplicate wins."""
    out: dict[str, bytes] = {}
    for part in raw.split(b"&"):
        if not part:
            continue
        name, _, value = part.partition(b"=")
        key = urllib.parse.unquote_to_bytes(name.replace(b"+", b" ")).decode("latin-1")
        if not key:
            continue
        out[key] = urllib.parse.unquote_to_bytes(value.replace(b"+", b" "))
    return out


def _column_value(value: bytes, strict: bool) -> Optional[str]:
    """What MariaDB stores in a utf8 (utf8mb3) VARCHAR(20); None where strict mode raises."""
    try:
        text = value.decode("utf-8")
        valid = True
    except UnicodeDecodeError as exc:
        text = value[: exc.start].decode("utf-8")
        valid = False
    for index, char in enumerate(text):
        if ord(char) > 0xFFFF:  # utf8mb3 holds no 4-byte characters
            text = text[:index]
            valid = False
            break
    if strict and (not valid or len(text) > _COLUMN_CHARS):
        return None
    return text[:_COLUMN_CHARS]


class _Vars:
    """``if (isset($_GET[x])) {$x=$_GET[x];} elseif (isset($_POST[x])) {$x=$_POST[x];}``."""

    def __init__(self, get: Mapping[str, bytes], post: Mapping[str, bytes]) -> None:
        self._get = get
        self._post = post

    def __call__(self, name: str) -> bytes:
        if name in self._get:
            return self._get[name]
        return self._post.get(name, b"")
