"""Faults: the ways a real VICIdial deployment's socket misbehaves, and the canned bodies they send."""

from __future__ import annotations

import functools
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

_HUGE_FILLER_BYTES = 4 * 1024 * 1024


FAULT_HANG = "hang"
FAULT_STALL_BODY = "stall_body"
FAULT_HTTP500_EMPTY = "http500_empty"
FAULT_PROXY502_HTML = "proxy502_html"
FAULT_EMPTY200 = "empty200"
FAULT_GARBAGE200 = "garbage200"
FAULT_INVALID_UTF8 = "invalid_utf8"
FAULT_CUT_MID_LINE = "cut_mid_line"
FAULT_RESET_MID_BODY = "reset_mid_body"
FAULT_PHP_WARNINGS = "php_warnings"
FAULT_HUGE_BODY = "huge_body"
FAULT_SLOW = "slow"
FAULT_LOGIN_ECHO = "login_echo"

FAULT_KINDS = frozenset(
    {
        FAULT_HANG,
        FAULT_STALL_BODY,
        FAULT_HTTP500_EMPTY,
        FAULT_PROXY502_HTML,
        FAULT_EMPTY200,
        FAULT_GARBAGE200,
        FAULT_INVALID_UTF8,
        FAULT_CUT_MID_LINE,
        FAULT_RESET_MID_BODY,
        FAULT_PHP_WARNINGS,
        FAULT_HUGE_BODY,
        FAULT_SLOW,
        FAULT_LOGIN_ECHO,
    }
)
#: Faults that still perform the real action (and change state).
_REAL_ACTION_FAULTS = frozenset({FAULT_SLOW, FAULT_PHP_WARNINGS, FAULT_HUGE_BODY})
#: Faults that send part of the real answer: computed without touching state.
_DRY_RUN_FAULTS = frozenset({FAULT_STALL_BODY, FAULT_CUT_MID_LINE, FAULT_RESET_MID_BODY})


@dataclass(frozen=True)
class Fault:
    """One misbehaviour to inject.

    ``count=None`` applies it to every matching request until :meth:`VicidialSimulator.clear_faults`;
    ``count=N`` to the next N matching requests. ``path`` (``/agc/api.php``), ``function`` and
    ``value`` (the submitted, unfiltered parameter) narrow which requests match. ``delay`` is the
    sleep of ``slow`` and, when given, bounds how long ``hang`` / ``stall_body`` wait (otherwise they
    wait until the simulator stops).
    """

    kind: str
    count: Optional[int] = None
    path: Optional[str] = None
    function: Optional[str] = None
    value: Optional[str] = None
    delay: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {sorted(FAULT_KINDS)}")
        if self.count is not None and self.count < 1:
            raise ValueError("Fault.count must be None or at least 1")
        if self.delay < 0:
            raise ValueError("Fault.delay must not be negative")

    def matches(self, path: str, params: Mapping[str, str]) -> bool:
        if self.path is not None and path != self.path:
            return False
        if self.function is not None and params.get("function") != self.function:
            return False
        return self.value is None or params.get("value") == self.value


class _ArmedFault:
    __slots__ = ("fault", "remaining")

    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        self.remaining = fault.count


# --- canned misbehaviour ------------------------------------------------------------------------

_PROXY_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.24.0</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
_WORDS = ("lorem", "ipsum", "dolor", "sit", "amet", "welcome", "index", "page", "maintenance", "array")


def _php_warning(script: str, message: str, line: int) -> bytes:
    return (
        f"<br />\n<b>Warning</b>:  {message} in <b>/srv/www/htdocs{script}</b> on line <b>{line}</b><br />\n"
    ).encode()


@functools.lru_cache(maxsize=1)
def _huge_filler() -> bytes:
    line = b"<!-- " + b"x" * 57 + b" -->\n"  # 64 bytes, never a result line
    return line * (_HUGE_FILLER_BYTES // len(line))


def _garbage(rng: random.Random) -> bytes:
    words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12)))
    shapes = (
        f"<html><head><title>{words}</title></head><body>{words}</body></html>\n",
        f"{words}\n",
        f"ok {rng.getrandbits(64):x} {words}\n",
    )
    return rng.choice(shapes).encode("ascii")


def _invalid_utf8(rng: random.Random) -> bytes:
    return b"\xff\xfe" + bytes(rng.randrange(0x80, 0x100) for _ in range(30)) + b"\n"
