"""How Asterisk splits text: res_agi's :func:`parse_args` for a command line, and the dialplan's
argument splitting, substrings and integers for functions and applications.
"""

from __future__ import annotations

import re
from typing import Optional

MAX_ARGS = 128  # res_agi argv[] size; the last slot is the NULL terminator, so 127 words at most

# --------------------------------------------------------------------------------------------------
# res_agi parse_args
# --------------------------------------------------------------------------------------------------


def parse_args(line: bytes) -> list[bytes]:
    """Split one AGI command line into words exactly as res_agi's ``parse_args``.

    One trailing ``\\n`` is removed first (run_agi does that) and a NUL ends the line (C string).
    Space and TAB separate words; ``"`` toggles quoting and is removed (a quote coming off
    whitespace starts a word, so ``""`` is an empty word); ``\\x`` is a literal ``x`` (the backslash
    is dropped, a trailing lone backslash vanishes); ``\\r`` is an ordinary byte, so a CRLF line
    keeps ``\\r`` in its last word. At most 127 words (MAX_ARGS-1); bytes of further words are lost.
    """
    if line.endswith(b"\n"):
        line = line[:-1]
    nul = line.find(b"\0")
    if nul >= 0:
        line = line[:nul]
    words: list[bytearray] = []
    quoted = escaped = False
    whitespace = True
    for c in line:
        if c == 0x22 and not escaped:  # '"'
            quoted = not quoted
            if quoted and whitespace:
                if len(words) >= MAX_ARGS - 1:
                    continue
                words.append(bytearray())
                whitespace = False
            continue
        if c in (0x20, 0x09) and not quoted and not escaped:
            whitespace = True
            continue
        if c == 0x5C and not escaped:  # '\\'
            escaped = True
            continue
        if whitespace:
            if len(words) >= MAX_ARGS - 1:
                continue  # "Too many arguments, truncating" (escaped stays set, like the C code)
            words.append(bytearray())
            whitespace = False
        words[-1].append(c)
        escaped = False
    return [bytes(w) for w in words]


# --------------------------------------------------------------------------------------------------
# Dialplan helpers (argument splitting, substrings, integers as sscanf reads them)
# --------------------------------------------------------------------------------------------------


def _separate_args(data: bytes, maxargs: int, delim: int = 0x2C) -> list[bytes]:
    """``ast_app_separate_args`` (remove_chars=1): commas at paren/bracket/quote depth 0 separate;
    quotes and backslashes are removed (``\\x`` keeps ``x`` literally); the last argument gets the
    unparsed remainder once ``maxargs - 1`` arguments were taken."""
    out: list[bytes] = []
    i, n = 0, len(data)
    paren = bracket = 0
    quote = False
    was_delim = False
    while i < n and len(out) < maxargs - 1:
        cur = bytearray()
        was_delim = False
        while i < n:
            c = data[i]
            if c == 0x28:
                paren += 1
            elif c == 0x29:
                paren = max(0, paren - 1)
            elif c == 0x5B:
                bracket += 1
            elif c == 0x5D:
                bracket = max(0, bracket - 1)
            elif c == 0x22 and delim != 0x22:
                quote = not quote
                i += 1
                continue
            elif c == 0x5C:
                if i + 1 < n:
                    cur.append(data[i + 1])
                i += 2
                continue
            elif c == delim and not paren and not quote and not bracket:
                i += 1
                was_delim = True
                break
            cur.append(c)
            i += 1
        out.append(bytes(cur))
    if i < n or was_delim:
        out.append(data[i:])
    return out


_INT_RE = re.compile(rb"\s*([+-]?\d+)")


def _scan_int(data: bytes) -> tuple[Optional[int], bytes]:
    """``sscanf("%d")``: the integer at the start (after blanks) and the rest, or (None, data)."""
    m = _INT_RE.match(data)
    if not m:
        return None, data
    return int(m.group(1)), data[m.end():]


def _substring(value: bytes, offset: int, length: Optional[int]) -> bytes:
    lr = len(value)
    if offset < 0:
        offset = max(0, lr + offset)
    if offset >= lr:
        return b""
    value = value[offset:]
    if length is None:
        return value
    if length >= 0:
        return value[:length]
    return value[:length] if len(value) > -length else b""


def _ast_true(value: Optional[str]) -> bool:
    return (value or "").strip().lower() in ("yes", "true", "y", "t", "1", "on")


def _ast_false(value: Optional[str]) -> bool:
    return (value or "").strip().lower() in ("no", "false", "n", "f", "0", "off")
