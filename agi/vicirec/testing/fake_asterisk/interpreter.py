"""A fake Asterisk 22 that runs an AGI the way ``res_agi`` does, byte for byte.

Ground truth: the transcripts recorded from a real Asterisk 22.10.1 (``shared/asterisk/transcripts``).
The module has two layers:

* a pure model -- :func:`parse_args` (res_agi's word splitter), :func:`build_env_block` and
  :class:`AgiInterpreter` (one channel plus the AGI command set: bytes in, :class:`Reply` out, no I/O);
* thin drivers in :class:`FakeAsterisk` that run a real process AGI over pipes
  (:meth:`FakeAsterisk.run_process`) or talk to a real FastAGI server over TCP
  (:meth:`FakeAsterisk.run_fastagi`), reading command lines exactly like res_agi's ``fgets`` loop
  (8191-byte cut, NUL handling, ``failure`` lines), delivering hangups (SIGHUP / ``HANGUP`` line,
  AGISIGHUP, AGIEXITONHANGUP) and computing AGISTATUS.

Every wait is bounded by the run's ``timeout``: a child that overruns it is killed (its whole process
group) and the result says ``timed_out=True``.
"""

from __future__ import annotations

import argparse
import ast
import math
import os
import re
import select
import signal as _signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Optional

__all__ = [
    "AST_ENVIRONMENT",
    "ASTERISK_VERSION",
    "AgiInterpreter",
    "AgiRun",
    "AppHandler",
    "FakeAsterisk",
    "FakeChannel",
    "HangupPlan",
    "Reply",
    "TranscriptLine",
    "build_env_block",
    "format_transcript",
    "main",
    "parse_args",
    "parse_transcript",
]

ASTERISK_VERSION = "22.10.1"
AGI_BUF_LEN = 8192  # res_agi's command buffer: a line is cut after 8191 bytes
MAX_ARGS = 128  # res_agi argv[] size; the last slot is the NULL terminator, so 127 words at most
GET_VARIABLE_MAX = 1023  # GET VARIABLE reads into a 1024-byte buffer
FASTAGI_CONNECT_TIMEOUT = 2.0  # MAX_AGI_CONNECT, hard-coded 2000 ms

DEAD_REPLY = b"511 Command Not Permitted on a dead channel or intercept routine\n"
INVALID_REPLY = b"510 Invalid or unknown command\n"
USAGE_HEAD = b"520-Invalid command syntax.  Proper usage follows:\n"
USAGE_TAIL = b"520 End of proper usage.\n"
HANGUP_LINE = b"HANGUP\n"

#: The ``AST_*`` environment variables Asterisk 22.10.1 exported to process AGIs (protocol-process.txt;
#: the lab build's module and log dirs are replaced by the stock ones).
AST_ENVIRONMENT: dict[str, str] = {
    "AST_AGI_DIR": "/var/lib/asterisk/agi-bin",
    "AST_BUILD_DATE": "2026-11-23 18:24:58 UTC",
    "AST_BUILD_HOST": "vm",
    "AST_BUILD_KERNEL": "6.18.44-fc-v669",
    "AST_BUILD_MACHINE": "x86_64",
    "AST_BUILD_OS": "Linux",
    "AST_BUILD_USER": "root",
    "AST_CONFIG_DIR": "/etc/asterisk",
    "AST_CONFIG_FILE": "/etc/asterisk/asterisk.conf",
    "AST_DATA_DIR": "/var/lib/asterisk",
    "AST_KEY_DIR": "/var/lib/asterisk/keys",
    "AST_LOG_DIR": "/var/log/asterisk",
    "AST_MODULE_DIR": "/usr/lib/asterisk/modules",
    "AST_MONITOR_DIR": "/var/spool/asterisk/monitor",
    "AST_RUN_DIR": "/var/run/asterisk",
    "AST_SPOOL_DIR": "/var/spool/asterisk",
    "AST_SYSTEMNAME": "",
    "AST_VAR_DIR": "/var/lib/asterisk",
    "AST_VERSION": ASTERISK_VERSION,
}

_CHANNEL_STATES: dict[str, int] = {
    "Down": 0, "Rsrvd": 1, "OffHook": 2, "Dialing": 3, "Ring": 4, "Ringing": 5, "Up": 6, "Busy": 7,
}


def _split_lines(data: bytes) -> list[bytes]:
    """Split after each ``\n`` only (``bytes.splitlines`` would also split at ``\r``)."""
    parts = data.split(b"\n")
    lines = [part + b"\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _s(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------------------------------
# Channel model
# --------------------------------------------------------------------------------------------------


@dataclass
class FakeChannel:
    """One Asterisk channel as an AGI sees it.

    ``callerid_num`` / ``callerid_name`` equal to ``"unknown"`` mean "not set" (the env block then
    says ``unknown``; ``CALLERID(name)`` reads empty and ``CALLERID(all)`` gives ``"" <num>``).
    ``variables`` holds channel variables and function reads by literal key (``"BRIDGEPEER"``,
    ``"CONNECTEDLINE(all)"``, ``"CONFBRIDGE_CHANNELS(parties,room1)"``...); a literal key wins over
    the built-in functions. ``others`` holds the variables of other channels by channel name (for
    ``GET FULL VARIABLE <expr> <channel>``, ``IMPORT(chan,var)``, ``CHANNEL STATUS <chan>``).
    ``hung_up=True`` means the AGI starts on a dead channel (``h`` extension); after a run in which
    the caller hung up it is set to True. The object is mutated in place by the runs.
    """

    name: str = "SIP/trunk-0000002a"
    uniqueid: str = "1795459430.20"
    callerid_num: str = "unknown"
    callerid_name: str = "unknown"
    context: str = "default"
    extension: str = "s"
    priority: str = "1"
    language: str = "en"
    channel_type: str = "SIP"
    accountcode: str = ""
    dnid: str = "unknown"
    rdnis: str = "unknown"
    callingpres: Optional[str] = None  # None: 67 with no caller id at all, else 0
    callingani2: str = "0"
    callington: str = "0"
    callingtns: str = "0"
    threadid: str = "139741756114624"
    state: str = "Up"
    dtmf: str = ""  # digits WAIT FOR DIGIT returns, first one first
    variables: dict[str, str] = field(default_factory=dict)
    others: dict[str, dict[str, str]] = field(default_factory=dict)
    hung_up: bool = False

    def effective_callingpres(self) -> str:
        if self.callingpres is not None:
            return self.callingpres
        if self.callerid_num == "unknown" and self.callerid_name == "unknown":
            return "67"
        return "0"


def build_env_block(channel: FakeChannel, request: str, args: Sequence[str], *, network: bool = False,
                    network_script: Optional[str] = None, enhanced: bool = False) -> list[bytes]:
    """The environment block as res_agi writes it: one ``write()`` per line, then ``\\n``.

    ``network`` adds ``agi_network: yes`` first (FastAGI) and ``agi_network_script`` when
    ``network_script`` is non-empty.
    """
    lines: list[tuple[str, str]] = []
    if network:
        lines.append(("agi_network", "yes"))
        if network_script:
            lines.append(("agi_network_script", network_script))
    lines += [
        ("agi_request", request),
        ("agi_channel", channel.name),
        ("agi_language", channel.language),
        ("agi_type", channel.channel_type),
        ("agi_uniqueid", channel.uniqueid),
        ("agi_version", ASTERISK_VERSION),
        ("agi_callerid", channel.callerid_num),
        ("agi_calleridname", channel.callerid_name),
        ("agi_callingpres", channel.effective_callingpres()),
        ("agi_callingani2", channel.callingani2),
        ("agi_callington", channel.callington),
        ("agi_callingtns", channel.callingtns),
        ("agi_dnid", channel.dnid),
        ("agi_rdnis", channel.rdnis),
        ("agi_context", channel.context),
        ("agi_extension", channel.extension),
        ("agi_priority", channel.priority),
        ("agi_enhanced", "1.0" if enhanced else "0.0"),
        ("agi_accountcode", channel.accountcode),
        ("agi_threadid", channel.threadid),
    ]
    lines += [(f"agi_arg_{i}", arg) for i, arg in enumerate(args, start=1)]
    return [_b(f"{key}: {value}\n") for key, value in lines] + [b"\n"]


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


# --------------------------------------------------------------------------------------------------
# The interpreter (pure)
# --------------------------------------------------------------------------------------------------


@dataclass
class Reply:
    """What one command makes Asterisk write, and how long it blocks first.

    ``chunks`` are the separate ``write()`` calls (the 520 usage reply is three). ``wait`` is how
    long the command blocks before replying (``math.inf`` = until hangup). ``interrupted`` is the
    reply if the caller hangs up during the wait (None: not interruptible). ``hangup_after``: the
    command itself hung the channel up (``HANGUP``).
    """

    chunks: list[bytes]
    wait: float = 0.0
    interrupted: Optional[list[bytes]] = None
    hangup_after: bool = False


#: An application for ``EXEC``: gets the interpreter and the raw argument string, returns
#: (application return value, seconds it blocks before returning).
AppHandler = Callable[["AgiInterpreter", bytes], tuple[int, float]]


def _result(n: int, data: Optional[bytes] = None) -> Reply:
    if data is None:
        return Reply([b"200 result=%d\n" % n])
    return Reply([b"200 result=%d (" % n + data + b")\n"])


class _Ctx:
    """The channel an expression is evaluated on: this one (``chan`` set) or another one."""

    def __init__(self, name: str, variables: dict[str, str], chan: Optional[FakeChannel]) -> None:
        self.name = name
        self.vars = variables
        self.chan = chan


_USAGE: dict[str, str] = {
    # Seen in the transcripts (protocol-process.txt):
    "set variable": "Sets a variable to the current channel.",
    "get variable": (
        "Returns <literal>0</literal> if <replaceable>variablename</replaceable> is not set. Returns "
        "<literal>1</literal> if <replaceable>variablename</replaceable> is set and returns the variable in "
        "parentheses.\nExample return code: 200 result=1 (testvariable)"
    ),
    "channel status": (
        "Returns the status of the specified <replaceable>channelname</replaceable>. If no channel name is "
        "given then returns the status of the current channel.\nReturn values:\n"
        "    <enum>0</enum> - Channel is down and available.\n"
        "    <enum>1</enum> - Channel is down, but reserved.\n"
        "    <enum>2</enum> - Channel is off hook.\n"
        "    <enum>3</enum> - Digits (or equivalent) have been dialed.\n"
        "    <enum>4</enum> - Line is ringing.\n"
        "    <enum>5</enum> - Remote end is ringing.\n"
        "    <enum>6</enum> - Line is up.\n"
        "    <enum>7</enum> - Line is busy."
    ),
    # Rendered from res_agi's XML documentation the same way (not observed on the wire):
    "get full variable": (
        "Returns <literal>0</literal> if <replaceable>variablename</replaceable> is not set or channel does "
        "not exist. Returns <literal>1</literal> if <replaceable>variablename</replaceable> is set "
        "and returns "
        "the variable in parenthesis. Understands complex variable names and builtin variables, unlike GET "
        "VARIABLE.\nExample return code: 200 result=1 (testvariable)"
    ),
    "database get": (
        "Retrieves an entry in the Asterisk database for a given <replaceable>family</replaceable> and "
        "<replaceable>key</replaceable>.\nReturns <literal>0</literal> if <replaceable>key</replaceable> "
        "is not set. Returns <literal>1</literal> if <replaceable>key</replaceable> is set and returns the "
        "variable in "
        "parenthesis.\nExample return code: 200 result=1 (testvariable)"
    ),
    "database put": (
        "Adds or updates an entry in the Asterisk database for a given <replaceable>family</replaceable>, "
        "<replaceable>key</replaceable>, and <replaceable>value</replaceable>.\nReturns "
        "<literal>1</literal> if "
        "successful, <literal>0</literal> otherwise."
    ),
    "database del": (
        "Deletes an entry in the Asterisk database for a given <replaceable>family</replaceable> and "
        "<replaceable>key</replaceable>.\nReturns <literal>1</literal> if successful, <literal>0</literal> "
        "otherwise."
    ),
    "database deltree": (
        "Deletes a <replaceable>family</replaceable> or specific <replaceable>keytree</replaceable> within a "
        "<replaceable>family</replaceable> in the Asterisk database.\nReturns <literal>1</literal> if "
        "successful, <literal>0</literal> otherwise."
    ),
    "exec": (
        "Executes <replaceable>application</replaceable> with given <replaceable>options</replaceable>.\n"
        "Returns whatever the <replaceable>application</replaceable> returns, or <literal>-2</literal> on "
        "failure to find <replaceable>application</replaceable>."
    ),
    "hangup": (
        "Hangs up the specified channel. If no channel name is given, hangs up the current channel"
    ),
    "stream file": (
        "Send the given file, allowing playback to be interrupted by the given digits, if any. Returns "
        "<literal>0</literal> if playback completes without a digit being pressed, or the ASCII numerical "
        "value of the digit if one was pressed, or <literal>-1</literal> on error or if the channel was "
        "disconnected. If musiconhold is playing before calling stream file it will be automatically "
        "stopped and will not be restarted after completion."
    ),
    "verbose": (
        "Sends <replaceable>message</replaceable> to the console via verbose message system. "
        "<replaceable>level</replaceable> is the verbose level (1-4). Always returns <literal>1</literal>"
    ),
    "wait for digit": (
        "Waits up to <replaceable>timeout</replaceable> milliseconds for channel to receive a DTMF digit. "
        "Returns <literal>-1</literal> on channel failure, <literal>0</literal> if no digit is received in "
        "the timeout, or the numerical value of the ascii of the digit if one is received. Use "
        "<literal>-1</literal> "
        "for the <replaceable>timeout</replaceable> value if you desire the call to block indefinitely."
    ),
    "set context": "Sets the context for continuation upon exiting the application.",
    "set extension": "Changes the extension for continuation upon exiting the application.",
    "set priority": (
        "Changes the priority for continuation upon exiting the application. The priority must be a valid "
        "priority or label."
    ),
    "set callerid": "Changes the callerid of the current channel.",
}

# (words, allowed on a dead channel, handler method name or "" for the generic 200 result=0), in
# res_agi's registration order (find_command takes the first whose words all match).
_COMMANDS: list[tuple[tuple[str, ...], bool, str]] = [
    (("answer",), False, "_cmd_answer"),
    (("asyncagi", "break"), True, ""),
    (("channel", "status"), False, "_cmd_channel_status"),
    (("database", "del"), True, "_cmd_database_del"),
    (("database", "deltree"), True, "_cmd_database_deltree"),
    (("database", "get"), True, "_cmd_database_get"),
    (("database", "put"), True, "_cmd_database_put"),
    (("exec",), True, "_cmd_exec"),
    (("get", "data"), False, ""),
    (("get", "full", "variable"), True, "_cmd_get_full_variable"),
    (("get", "option"), False, ""),
    (("get", "variable"), True, "_cmd_get_variable"),
    (("hangup",), False, "_cmd_hangup"),
    (("noop",), True, "_cmd_noop"),
    (("receive", "char"), False, ""),
    (("receive", "text"), False, ""),
    (("record", "file"), False, ""),
    (("say", "alpha"), False, ""),
    (("say", "digits"), False, ""),
    (("say", "number"), False, ""),
    (("say", "phonetic"), False, ""),
    (("say", "date"), False, ""),
    (("say", "time"), False, ""),
    (("say", "datetime"), False, ""),
    (("send", "image"), False, ""),
    (("send", "text"), False, ""),
    (("set", "autohangup"), False, ""),
    (("set", "callerid"), False, "_cmd_set_callerid"),
    (("set", "context"), False, "_cmd_set_context"),
    (("set", "extension"), False, "_cmd_set_extension"),
    (("set", "music"), False, ""),
    (("set", "priority"), False, "_cmd_set_priority"),
    (("set", "variable"), True, "_cmd_set_variable"),
    (("stream", "file"), False, "_cmd_stream_file"),
    (("control", "stream", "file"), False, ""),
    (("tdd", "mode"), False, ""),
    (("verbose",), True, "_cmd_verbose"),
    (("wait", "for", "digit"), False, "_cmd_wait_for_digit"),
    (("speech", "create"), False, ""),
    (("speech", "set"), False, ""),
    (("speech", "destroy"), True, ""),
    (("speech", "load", "grammar"), False, ""),
    (("speech", "unload", "grammar"), True, ""),
    (("speech", "activate", "grammar"), False, ""),
    (("speech", "deactivate", "grammar"), False, ""),
    (("speech", "recognize"), False, ""),
    (("gosub",), False, ""),
]


def _find_command(argv: list[bytes]) -> Optional[tuple[tuple[str, ...], bool, str]]:
    """res_agi ``find_command(argv, 0)``: every word of the command name must match (any case);
    extra words are arguments."""
    for entry in _COMMANDS:
        words = entry[0]
        if len(argv) < len(words):
            continue
        if all(argv[i].lower() == _b(w) for i, w in enumerate(words)):
            return entry
    return None


def _app_set(interp: AgiInterpreter, data: bytes) -> tuple[int, float]:
    name, eq, value = data.partition(b"=")
    if eq and name:
        interp.set_variable(name, value)
    return 0, 0.0


def _app_wait(interp: AgiInterpreter, data: bytes) -> tuple[int, float]:
    try:
        seconds = float(_s(data).strip() or "0")
    except ValueError:
        seconds = 0.0
    return 0, max(0.0, seconds)


def _app_verbose(interp: AgiInterpreter, data: bytes) -> tuple[int, float]:
    level, comma, msg = data.partition(b",")
    lvl, _rest = _scan_int(level)
    if comma and lvl is not None:
        interp.verbose.append((lvl, _s(msg)))
    else:
        interp.verbose.append((0, _s(data)))
    return 0, 0.0


def _app_ok(interp: AgiInterpreter, data: bytes) -> tuple[int, float]:
    return 0, 0.0


#: EXEC applications known by default (names are case-insensitive). The rest give ``result=-2``.
DEFAULT_APPLICATIONS: dict[str, AppHandler] = {
    "set": _app_set,
    "noop": _app_ok,
    "verbose": _app_verbose,
    "wait": _app_wait,
    "userevent": _app_ok,
    "log": _app_ok,
    "answer": _app_ok,
    "playback": _app_ok,
    "mixmonitor": _app_ok,
    "stopmixmonitor": _app_ok,
}


class AgiInterpreter:
    """One channel plus the AGI command set, with no I/O: :meth:`handle` takes a command line and
    returns the :class:`Reply` Asterisk would write.

    ``database`` is the AstDB as ``{"/family/key": value}``; ``applications`` the EXEC apps by
    lower-case name; ``wait_scale`` multiplies WAIT FOR DIGIT / EXEC Wait durations (tests use it
    to run the recorded sessions fast). ``clock`` gives EPOCH.
    """

    def __init__(self, channel: FakeChannel, *, database: Optional[dict[str, str]] = None,
                 applications: Optional[Mapping[str, AppHandler]] = None, wait_scale: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.channel = channel
        self.database: dict[str, str] = database if database is not None else {}
        self.applications: dict[str, AppHandler] = {
            k.lower(): v
            for k, v in (applications if applications is not None else DEFAULT_APPLICATIONS).items()
        }
        self.wait_scale = wait_scale
        self.clock = clock
        self.dead = channel.hung_up
        self.verbose: list[tuple[int, str]] = []
        self.execs: list[tuple[str, str]] = []

    # ---- state changes -------------------------------------------------------------------------

    def hang_up(self) -> None:
        """The caller hung up: from now on channel commands get 511."""
        self.dead = True

    # ---- the command loop ----------------------------------------------------------------------

    def handle(self, line: bytes) -> Reply:
        """Answer one command line (without its ``\\n``; a NUL already ended it)."""
        argv = parse_args(line)
        entry = _find_command(argv)
        if entry is None:
            return Reply([INVALID_REPLY])
        words, dead_ok, method = entry
        if self.dead and not dead_ok:
            return Reply([DEAD_REPLY])
        if not method:
            return _result(0)
        handler: Callable[[list[bytes]], Optional[Reply]] = getattr(self, method)
        reply = handler(argv)
        if reply is None:
            return self.usage(" ".join(words))
        return reply

    @staticmethod
    def usage(command: str) -> Reply:
        text = _USAGE.get(command, "Usage: " + command.upper())
        return Reply([USAGE_HEAD, _b(text) + b"\n", USAGE_TAIL])

    # ---- variables -----------------------------------------------------------------------------

    def _self_ctx(self) -> _Ctx:
        return _Ctx(self.channel.name, self.channel.variables, self.channel)

    def _find_channel(self, name: bytes) -> Optional[_Ctx]:
        """``ast_channel_get_by_name``: exact name (any case) or this channel's uniqueid."""
        text = _s(name)
        if text.lower() == self.channel.name.lower() or text == self.channel.uniqueid:
            return self._self_ctx()
        if text in self.channel.others:
            return _Ctx(text, self.channel.others[text], None)
        for other, variables in self.channel.others.items():
            if other.lower() == text.lower():
                return _Ctx(other, variables, None)
        return None

    def set_variable(self, name: bytes, value: bytes) -> None:
        """``pbx_builtin_setvar_helper``: ``FUNC(...)`` names are function writes, ``_``/``__``
        prefixes (inheritance) are stripped."""
        if name.endswith(b")") and b"(" in name:
            self._function_write(name, value)
            return
        if name.startswith(b"__"):
            name = name[2:]
        elif name.startswith(b"_"):
            name = name[1:]
        self.channel.variables[_s(name)] = _s(value)

    def _function_write(self, name: bytes, value: bytes) -> None:
        func, _, rest = name.partition(b"(")
        arg = rest[:-1].strip().lower()
        chan = self.channel
        if func == b"CALLERID" and arg in (b"name", b"num", b"number", b"all"):
            for literal in [k for k in chan.variables if k.startswith("CALLERID(")]:
                del chan.variables[literal]  # literal seeds would shadow the new caller id
            if arg == b"name":
                chan.callerid_name = _s(value)
            elif arg in (b"num", b"number"):
                chan.callerid_num = _s(value)
            else:
                m = re.match(rb'\s*"?(.*?)"?\s*<(.*)>\s*$', value)
                if m:
                    chan.callerid_name, chan.callerid_num = _s(m.group(1)), _s(m.group(2))
                else:
                    chan.callerid_num = _s(value)
            return
        if func == b"DB":
            family, _, key = rest[:-1].partition(b"/")
            self.database[f"/{_s(family)}/{_s(key)}"] = _s(value)
            return
        chan.variables[_s(name)] = _s(value)

    def get_variable(self, name: bytes) -> Optional[bytes]:
        """What ``GET VARIABLE name`` reads (untruncated): None = unset / error."""
        ctx = self._self_ctx()
        if name.endswith(b")"):
            return self._func_read(ctx, name)
        return self._retrieve(ctx, name)

    def evaluate(self, expr: bytes, channel_name: Optional[bytes] = None) -> Optional[bytes]:
        """What ``GET FULL VARIABLE expr [channel]`` expands to: None if the channel does not exist."""
        ctx = self._self_ctx() if channel_name is None else self._find_channel(channel_name)
        if ctx is None:
            return None
        return self._substitute(ctx, expr)

    def _retrieve(self, ctx: _Ctx, name: bytes) -> Optional[bytes]:
        """``pbx_retrieve_variable``: a few builtins, the channel's variables, then EPOCH."""
        text = _s(name)
        chan = ctx.chan
        if text == "CHANNEL":
            return _b(ctx.name)
        if chan is not None:
            builtin = {
                "UNIQUEID": chan.uniqueid,
                "EXTEN": chan.extension,
                "CONTEXT": chan.context,
                "PRIORITY": chan.priority,
                "HANGUPCAUSE": "16" if (self.dead and ctx.chan is self.channel) else "0",
            }.get(text)
            if builtin is not None:
                return _b(builtin)
        if text in ctx.vars:
            return _b(ctx.vars[text])
        if text == "EPOCH":
            return b"%d" % int(self.clock())
        return None

    def _substitute(self, ctx: _Ctx, text: bytes, depth: int = 0) -> bytes:
        """``pbx_substitute_variables_helper``: expand ``${...}`` (nested ones first); values are
        not expanded again. ``$[...]`` expressions are not modelled (copied literally)."""
        if depth > 20:
            return b""
        out = bytearray()
        i, n = 0, len(text)
        while i < n:
            j = text.find(b"${", i)
            if j < 0:
                out += text[i:]
                break
            out += text[i:j]
            p = j + 2
            brackets = 1
            needsub = False
            while brackets and p < n:
                c = text[p]
                if c == 0x24 and p + 1 < n and text[p + 1] in (0x7B, 0x5B):  # "${" or "$["
                    needsub = True
                elif c == 0x7B:
                    brackets += 1
                elif c == 0x7D:
                    brackets -= 1
                p += 1
            inner = text[j + 2:p - 1]
            i = p
            if needsub:
                inner = self._substitute(ctx, inner, depth + 1)
            out += self._expand_one(ctx, inner)
        return bytes(out)

    def _expand_one(self, ctx: _Ctx, name: bytes) -> bytes:
        """One ``${name}``: ``parse_variable_name`` (``:offset:length`` outside parentheses),
        then a function read or a variable lookup."""
        parens = 0
        isfunc = False
        offset, length = 0, None
        for k, c in enumerate(name):
            if c == 0x28:
                isfunc = True
                parens += 1
            elif c == 0x29:
                parens -= 1
            elif c == 0x3A and parens == 0:
                spec = name[k + 1:]
                name = name[:k]
                off, rest = _scan_int(spec)
                if off is not None:
                    offset = off
                    if rest.startswith(b":"):
                        length, _r = _scan_int(rest[1:])
                break
        value = self._func_read(ctx, name) if isfunc else self._retrieve(ctx, name)
        return _substring(value or b"", offset, length)

    def _func_read(self, ctx: _Ctx, text: bytes) -> Optional[bytes]:
        """``ast_func_read``: a literal key in the channel's variables first, then the built-in
        functions; None for an unknown function or an error."""
        literal = _s(text)
        if literal in ctx.vars:
            return _b(ctx.vars[literal])
        open_ = text.find(b"(")
        close = text.rfind(b")")
        if open_ < 0:
            return None
        fname = text[:open_].strip()
        args = text[open_ + 1:close] if close > open_ else text[open_ + 1:]
        impl = _FUNCTIONS.get(_s(fname))
        if impl is None:
            return None
        return impl(self, ctx, args)

    # ---- built-in dialplan functions -----------------------------------------------------------

    def _fn_channel(self, ctx: _Ctx, args: bytes) -> Optional[bytes]:
        item = _s(args).strip().lower()
        if item == "name":
            return _b(ctx.name)
        chan = ctx.chan
        if chan is None:
            return b""
        bridgepeer = chan.variables.get("BRIDGEPEER", "")
        values = {
            "uniqueid": chan.uniqueid,
            "linkedid": chan.uniqueid,
            "state": chan.state,
            "peer": "" if "," in bridgepeer else bridgepeer,
            "language": chan.language,
            "context": chan.context,
            "exten": chan.extension,
            "priority": chan.priority,
            "channeltype": chan.channel_type,
            "accountcode": chan.accountcode,
        }
        value = values.get(item)
        return None if value is None else _b(value)

    def _fn_callerid(self, ctx: _Ctx, args: bytes) -> Optional[bytes]:
        item = _separate_args(args, 2)[0].strip().lower() if args else b""
        chan = ctx.chan
        name = num = ""
        if chan is not None:
            name = "" if chan.callerid_name == "unknown" else chan.callerid_name
            num = "" if chan.callerid_num == "unknown" else chan.callerid_num
        if item == b"name":
            return _b(name)
        if item in (b"num", b"number"):
            return _b(num)
        if item == b"all":
            return _b(f'"{name}" <{num}>')
        if item in (b"ani", b"dnid", b"rdnis", b"ani2", b"pres", b"tag", b"subaddr"):
            return b""
        return None

    def _fn_connectedline(self, ctx: _Ctx, args: bytes) -> Optional[bytes]:
        item = args.strip().lower()
        if item == b"all":
            return b'"" <>'
        return b"" if item in (b"name", b"num", b"number", b"pres", b"tag", b"subaddr", b"source") else None

    def _fn_import(self, ctx: _Ctx, args: bytes) -> Optional[bytes]:
        parts = _separate_args(args, 2)
        if len(parts) < 2 or not parts[1]:
            return b""
        other = self._find_channel(parts[0])
        if other is None:
            return b""
        return self._substitute(other, b"${" + parts[1] + b"}")

    def _fn_len(self, ctx: _Ctx, args: bytes) -> Optional[bytes]:
        return b"%d" % len(args)

    def _fn_cut(self, ctx: _Ctx, args: bytes) -> Optional[bytes]:
        parts = _separate_args(args, 3)
        if len(parts) < 3:
            return None
        value = self._substitute(ctx, b"${" + parts[0] + b"}")
        delim = parts[1][:1] or b"-"
        if not value:
            return b""
        fields = value.split(delim)
        out: list[bytes] = []
        cur = 1  # like strsep() over the value: ranges can only move forward
        for spec in parts[2].split(b"&"):
            start, rest = _scan_int(spec)
            if start is not None and rest.startswith(b"-") and _scan_int(rest[1:])[0] is not None:
                stop = _scan_int(rest[1:])[0]
            elif spec.startswith(b"-") and _scan_int(spec[1:])[0] is not None:
                start, stop = 1, _scan_int(spec[1:])[0]
            elif start is not None and rest.startswith(b"-"):
                stop = len(fields)
            elif start is not None:
                stop = start
            else:
                return None
            assert start is not None and stop is not None
            cur = max(cur, start)
            while cur <= stop and cur <= len(fields):
                out.append(fields[cur - 1])
                cur += 1
        return delim.join(out)

    def _fn_db(self, ctx: _Ctx, args: bytes) -> Optional[bytes]:
        family, _, key = args.partition(b"/")
        return _b(self.database.get(f"/{_s(family)}/{_s(key)}", ""))

    def _fn_db_exists(self, ctx: _Ctx, args: bytes) -> Optional[bytes]:
        family, _, key = args.partition(b"/")
        return b"1" if f"/{_s(family)}/{_s(key)}" in self.database else b"0"

    def _fn_exists(self, ctx: _Ctx, args: bytes) -> Optional[bytes]:
        return b"1" if args else b"0"

    def _fn_isnull(self, ctx: _Ctx, args: bytes) -> Optional[bytes]:
        return b"0" if args else b"1"

    def _fn_empty(self, ctx: _Ctx, args: bytes) -> Optional[bytes]:
        return b""

    # ---- command handlers (None = usage error) -------------------------------------------------

    def _cmd_answer(self, argv: list[bytes]) -> Optional[Reply]:
        self.channel.state = "Up"
        return _result(0)

    def _cmd_channel_status(self, argv: list[bytes]) -> Optional[Reply]:
        if len(argv) == 2:
            return _result(_CHANNEL_STATES.get(self.channel.state, 6))
        if len(argv) == 3:
            ctx = self._find_channel(argv[2])
            if ctx is None:
                return _result(-1)
            return _result(_CHANNEL_STATES.get(self.channel.state, 6) if ctx.chan is not None else 6)
        return None

    def _db_key(self, family: bytes, key: bytes) -> str:
        return f"/{_s(family)}/{_s(key)}"

    def _cmd_database_del(self, argv: list[bytes]) -> Optional[Reply]:
        if len(argv) != 4:
            return None
        return _result(1 if self.database.pop(self._db_key(argv[2], argv[3]), None) is not None else 0)

    def _cmd_database_deltree(self, argv: list[bytes]) -> Optional[Reply]:
        if len(argv) not in (3, 4):
            return None
        prefix = "/" + _s(argv[2]) + ("/" + _s(argv[3]) if len(argv) == 4 and argv[3] else "")
        doomed = [k for k in self.database if k == prefix or k.startswith(prefix + "/")]
        for k in doomed:
            del self.database[k]
        return _result(1 if doomed else 0)

    def _cmd_database_get(self, argv: list[bytes]) -> Optional[Reply]:
        if len(argv) != 4:
            return None
        value = self.database.get(self._db_key(argv[2], argv[3]))
        return _result(0) if value is None else _result(1, _b(value))

    def _cmd_database_put(self, argv: list[bytes]) -> Optional[Reply]:
        if len(argv) != 5:
            return None
        self.database[self._db_key(argv[2], argv[3])] = _s(argv[4])
        return _result(1)

    def _cmd_exec(self, argv: list[bytes]) -> Optional[Reply]:
        if len(argv) < 2:
            return None
        app_name = _s(argv[1])
        data = argv[2] if len(argv) > 2 else b""
        app = self.applications.get(app_name.lower())
        if app is None:
            return _result(-2)
        self.execs.append((app_name, _s(data)))
        res, seconds = app(self, data)
        if seconds <= 0:
            return _result(res)
        wait = seconds * self.wait_scale
        return Reply([b"200 result=%d\n" % res], wait=wait,
                     interrupted=None if self.dead else [b"200 result=-1\n"])

    def _cmd_get_full_variable(self, argv: list[bytes]) -> Optional[Reply]:
        if len(argv) not in (4, 5):
            return None
        value = self.evaluate(argv[3], argv[4] if len(argv) == 5 else None)
        return _result(0) if value is None else _result(1, value)

    def _cmd_get_variable(self, argv: list[bytes]) -> Optional[Reply]:
        if len(argv) != 3:
            return None
        value = self.get_variable(argv[2])
        return _result(0) if value is None else _result(1, value[:GET_VARIABLE_MAX])

    def _cmd_hangup(self, argv: list[bytes]) -> Optional[Reply]:
        if len(argv) == 1:
            return Reply([b"200 result=1\n"], hangup_after=True)
        if len(argv) == 2:
            ctx = self._find_channel(argv[1])
            if ctx is None:
                return _result(-1)
            if ctx.chan is not None:
                return Reply([b"200 result=1\n"], hangup_after=True)
            return _result(1)
        return None

    def _cmd_noop(self, argv: list[bytes]) -> Optional[Reply]:
        return _result(0)

    def _cmd_set_variable(self, argv: list[bytes]) -> Optional[Reply]:
        if len(argv) != 4:
            return None
        self.set_variable(argv[2], argv[3])
        return _result(1)

    def _cmd_set_context(self, argv: list[bytes]) -> Optional[Reply]:
        if len(argv) != 3:
            return None
        self.channel.context = _s(argv[2])
        return _result(0)

    def _cmd_set_extension(self, argv: list[bytes]) -> Optional[Reply]:
        if len(argv) != 3:
            return None
        self.channel.extension = _s(argv[2])
        return _result(0)

    def _cmd_set_priority(self, argv: list[bytes]) -> Optional[Reply]:
        if len(argv) != 3:
            return None
        self.channel.priority = _s(argv[2])
        return _result(0)

    def _cmd_set_callerid(self, argv: list[bytes]) -> Optional[Reply]:
        if len(argv) != 3:
            return None
        self._function_write(b"CALLERID(all)", argv[2])
        return _result(1)

    def _cmd_stream_file(self, argv: list[bytes]) -> Optional[Reply]:
        if len(argv) not in (4, 5):
            return None
        return Reply([b"200 result=0 endpos=0\n"])

    def _cmd_verbose(self, argv: list[bytes]) -> Optional[Reply]:
        if len(argv) < 2:
            return None
        level = _scan_int(argv[2])[0] if len(argv) > 2 else 0
        self.verbose.append((level or 0, _s(argv[1])))
        return _result(1)

    def _cmd_wait_for_digit(self, argv: list[bytes]) -> Optional[Reply]:
        if len(argv) != 4:
            return None
        timeout_ms, _rest = _scan_int(argv[3])
        if timeout_ms is None:
            return None
        if self.channel.dtmf:
            digit, self.channel.dtmf = self.channel.dtmf[0], self.channel.dtmf[1:]
            return _result(ord(digit))
        wait = math.inf if timeout_ms < 0 else timeout_ms / 1000.0 * self.wait_scale
        return Reply([b"200 result=0\n"], wait=wait, interrupted=[b"200 result=-1\n"])


_FUNCTIONS: dict[str, Callable[[AgiInterpreter, _Ctx, bytes], Optional[bytes]]] = {
    "CHANNEL": AgiInterpreter._fn_channel,
    "CALLERID": AgiInterpreter._fn_callerid,
    "CONNECTEDLINE": AgiInterpreter._fn_connectedline,
    "IMPORT": AgiInterpreter._fn_import,
    "LEN": AgiInterpreter._fn_len,
    "CUT": AgiInterpreter._fn_cut,
    "DB": AgiInterpreter._fn_db,
    "DB_EXISTS": AgiInterpreter._fn_db_exists,
    "EXISTS": AgiInterpreter._fn_exists,
    "ISNULL": AgiInterpreter._fn_isnull,
    "CONFBRIDGE_CHANNELS": AgiInterpreter._fn_empty,
    "CONFBRIDGE_INFO": AgiInterpreter._fn_empty,
}


# --------------------------------------------------------------------------------------------------
# Results and transcripts
# --------------------------------------------------------------------------------------------------


class TranscriptLine(NamedTuple):
    """One event, named like the shared transcripts: RECV = bytes Asterisk sent to the script,
    SEND = bytes the script sent, SIG = a signal Asterisk delivered, NOTE = the fake's remarks."""

    t: float
    kind: str
    data: bytes


@dataclass
class HangupPlan:
    """When the caller hangs up (the first trigger wins; a channel that starts dead never does).

    ``after``: seconds after the AGI started. ``on_command``: a predicate on each command line (without
    its ``\\n``); ``before_reply`` says whether the hangup happens before Asterisk answers that command
    (notification first, then the command runs in dead mode) or after the reply. ``after_env``: right
    after the environment block.
    """

    after: Optional[float] = None
    on_command: Optional[Callable[[bytes], bool]] = None
    before_reply: bool = True
    after_env: bool = False

    @classmethod
    def on_prefix(cls, prefix: bytes, *, before_reply: bool = True) -> HangupPlan:
        """Hang up on the first command line that starts with ``prefix`` (case-insensitive)."""
        low = prefix.lower()
        return cls(on_command=lambda line: line.lower().startswith(low), before_reply=before_reply)


@dataclass
class AgiRun:
    """What happened during one AGI() call."""

    transcript: list[TranscriptLine]
    channel: FakeChannel
    agistatus: str
    exit_code: Optional[int]
    signal: Optional[int]
    stderr: bytes
    elapsed: float
    timed_out: bool
    commands: list[bytes]
    verbose: list[tuple[int, str]] = field(default_factory=list)
    execs: list[tuple[str, str]] = field(default_factory=list)
    hangup_at: Optional[float] = None

    def sent_by_script(self) -> bytes:
        """All bytes Asterisk read from the script (stdout / socket), in order."""
        return b"".join(line.data for line in self.transcript if line.kind == "SEND")

    def received_by_script(self) -> bytes:
        """All bytes Asterisk wrote to the script (stdin / socket), env block included."""
        return b"".join(line.data for line in self.transcript if line.kind == "RECV")

    def replies(self) -> list[bytes]:
        """The RECV lines after the environment block (replies and HANGUP lines)."""
        lines = [line.data for line in self.transcript if line.kind == "RECV"]
        if b"\n" in lines:
            return lines[lines.index(b"\n") + 1:]
        return lines

    def notes(self) -> list[str]:
        return [_s(line.data) for line in self.transcript if line.kind == "NOTE"]

    def var(self, name: str) -> Optional[str]:
        return self.channel.variables.get(name)

    def dump(self) -> str:
        return format_transcript(self.transcript)


def format_transcript(lines: Sequence[TranscriptLine]) -> str:
    """Lines in the shared transcripts' format: ``+seconds KIND payload``."""
    out = []
    for line in lines:
        payload = _s(line.data) if line.kind in ("NOTE", "SIG") else repr(line.data)
        out.append(f"+{line.t:.6f} {line.kind:<4} {payload}")
    return "\n".join(out) + ("\n" if out else "")


_TRANSCRIPT_RE = re.compile(r"^\+(\d+(?:\.\d+)?) (RECV|SEND|SIG|NOTE)\s+(.*)$")


def parse_transcript(text: str) -> list[TranscriptLine]:
    """Parse the shared transcript format (``RECV``/``SEND`` payloads are Python byte literals)."""
    out: list[TranscriptLine] = []
    for raw in text.splitlines():
        m = _TRANSCRIPT_RE.match(raw)
        if not m:
            continue
        kind, payload = m.group(2), m.group(3)
        if kind in ("RECV", "SEND"):
            value = ast.literal_eval(payload)
            if not isinstance(value, bytes):
                raise ValueError(f"not a bytes literal: {payload[:60]!r}")
            data = value
        else:
            data = _b(payload)
        out.append(TranscriptLine(float(m.group(1)), kind, data))
    return out


# --------------------------------------------------------------------------------------------------
# I/O drivers
# --------------------------------------------------------------------------------------------------


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


class FakeAsterisk:
    """Runs AGIs like Asterisk 22's res_agi.

    Instance-wide knobs (each run can override the last five): ``agi_dir`` (AST_AGI_DIR, used to
    resolve a relative script), ``database`` (AstDB shared by all runs, ``{"/family/key": value}``),
    ``applications`` (EXEC apps), ``ast_environment`` (the AST_* variables), ``wait_scale``
    (multiplies WAIT FOR DIGIT / EXEC Wait), ``env_block_override`` (raw bytes sent instead of the
    environment block), ``close_after_env`` (close the pipes / socket right after the block, no
    signal), ``reply_delay`` (seconds before every reply), ``tcp_nodelay`` (FastAGI; off like Asterisk,
    whose one-write-per-line replies then meet Nagle).
    """

    def __init__(self, *, agi_dir: str = "/var/lib/asterisk/agi-bin",
                 database: Optional[dict[str, str]] = None,
                 applications: Optional[Mapping[str, AppHandler]] = None,
                 ast_environment: Optional[Mapping[str, str]] = None, wait_scale: float = 1.0,
                 env_block_override: Optional[bytes] = None, close_after_env: bool = False,
                 reply_delay: float = 0.0, tcp_nodelay: bool = False) -> None:
        self.agi_dir = agi_dir
        self.database: dict[str, str] = database if database is not None else {}
        self.applications: dict[str, AppHandler] = dict(
            applications if applications is not None else DEFAULT_APPLICATIONS)
        self.ast_environment: dict[str, str] = dict(ast_environment or AST_ENVIRONMENT)
        self.ast_environment["AST_AGI_DIR"] = agi_dir
        self.wait_scale = wait_scale
        self.env_block_override = env_block_override
        self.close_after_env = close_after_env
        self.reply_delay = reply_delay
        self.tcp_nodelay = tcp_nodelay

    def interpreter(self, channel: FakeChannel) -> AgiInterpreter:
        """The pure command interpreter this fake uses for ``channel``."""
        return AgiInterpreter(channel, database=self.database, applications=self.applications,
                              wait_scale=self.wait_scale)

    @staticmethod
    def _flags(channel: FakeChannel, agi_sighup: bool, exit_on_hangup: bool) -> tuple[bool, bool]:
        """AGISIGHUP / AGIEXITONHANGUP: the keyword arguments, or the channel variables."""
        send_sighup = agi_sighup and not _ast_false(channel.variables.get("AGISIGHUP"))
        exit_flag = exit_on_hangup or _ast_true(channel.variables.get("AGIEXITONHANGUP"))
        return send_sighup, exit_flag

    def _finish(self, session: Optional[_Session], channel: FakeChannel, agistatus: str, *,
                transcript: list[TranscriptLine], exit_code: Optional[int], sig: Optional[int], stderr: bytes,
                elapsed: float, timed_out: bool) -> AgiRun:
        channel.variables["AGISTATUS"] = agistatus
        if session is not None and session.hungup_during:
            channel.hung_up = True
        return AgiRun(
            transcript=transcript, channel=channel, agistatus=agistatus, exit_code=exit_code, signal=sig,
            stderr=stderr, elapsed=elapsed, timed_out=timed_out,
            commands=session.commands if session else [],
            verbose=session.interp.verbose if session else [],
            execs=session.interp.execs if session else [],
            hangup_at=session.hangup_at if session else None,
        )

    # ---- process AGI ---------------------------------------------------------------------------

    def run_process(self, argv: Sequence[str], args: Sequence[str], channel: FakeChannel, *,
                    env: Optional[Mapping[str, str]] = None, hangup: Optional[HangupPlan] = None,
                    agi_sighup: bool = True, exit_on_hangup: bool = False, timeout: float = 30.0,
                    request: Optional[str] = None, cwd: Optional[str] = None,
                    env_block_override: Optional[bytes] = None, close_after_env: Optional[bool] = None,
                    reply_delay: Optional[float] = None) -> AgiRun:
        """``AGI(argv[0],args...)`` as a process AGI: spawn ``argv + args`` (argv[1:] lets a test run
        ``[sys.executable, script]``) with pipes on fds 0/1/2, then serve it until it closes stdout.

        ``request`` replaces ``agi_request`` (default ``argv[0]``).
        """
        if not argv:
            raise ValueError("argv must name the script")
        start = time.monotonic()
        deadline = start + timeout
        script = argv[0]
        path = script if os.path.isabs(script) else os.path.join(self.agi_dir, script)
        early: list[TranscriptLine] = []
        if not os.path.exists(path):
            early.append(TranscriptLine(0.0, "NOTE", _b(f"Failed to execute '{path}': File does not exist.")))
            return self._finish(None, channel, "NOTFOUND", transcript=early, exit_code=None, sig=None,
                                stderr=b"", elapsed=time.monotonic() - start, timed_out=False)
        child_env = dict(os.environ if env is None else env)
        child_env.update(self.ast_environment)
        try:
            proc = subprocess.Popen(  # noqa: S603 - running the AGI under test is the point
                list(argv) + list(args), executable=path, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, close_fds=True, env=child_env, cwd=cwd, start_new_session=True)
        except OSError as exc:
            early.append(TranscriptLine(0.0, "NOTE", _b(f"Failed to execute '{path}': {exc.strerror}")))
            return self._finish(None, channel, "FAILURE", transcript=early, exit_code=None, sig=None,
                                stderr=b"", elapsed=time.monotonic() - start, timed_out=False)
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        stderr_chunks: list[bytes] = []
        stderr_thread = threading.Thread(target=_drain, args=(proc.stderr, stderr_chunks), daemon=True)
        stderr_thread.start()

        send_sighup, exit_flag = self._flags(channel, agi_sighup, exit_on_hangup)
        transport = _Transport(proc.stdout.fileno(), proc.stdin.fileno())
        session: _Session

        def sighup() -> None:
            if proc.returncode is None:
                try:
                    os.kill(proc.pid, _signal.SIGHUP)
                except ProcessLookupError:
                    return
                session.record("SIG", b"SIGHUP")

        session = _Session(self, channel, transport, fast=False, start=start, deadline=deadline,
                           hangup=hangup, send_sighup=send_sighup, exit_on_hangup=exit_flag,
                           reply_delay=self.reply_delay if reply_delay is None else reply_delay,
                           notify=sighup)
        env_lines = build_env_block(channel, script if request is None else request, args)
        override = self.env_block_override if env_block_override is None else env_block_override
        closing = self.close_after_env if close_after_env is None else close_after_env
        reason = session.run(env_lines, override, closing)

        timed_out = False
        if reason in ("failure", "exit_on_hangup") and send_sighup:
            sighup()  # run_agi's "Notify process" after the loop (pid not reaped yet)
        if reason != "eof":
            _close_quietly(proc.stdin, proc.stdout)  # fclose(readf) / close(fds): the script now gets EPIPE
        if reason == "timeout":
            timed_out = True
            session.note(f"fake: timeout after {timeout:g} s; killing the AGI's process group")
            _kill_group(proc)
        elapsed_at_leave = time.monotonic() - start
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()) if not timed_out else 5.0)
        except subprocess.TimeoutExpired:
            timed_out = True
            session.note(f"fake: the AGI process outlived the {timeout:g} s timeout; "
                         "killed its process group")
            _kill_group(proc)
            proc.wait(timeout=5.0)
        if reason == "eof":
            elapsed_at_leave = time.monotonic() - start  # Asterisk's waitpid() blocks until the exit
            _close_quietly(proc.stdin, proc.stdout)
        elif reason in ("failure", "exit_on_hangup", "closed"):
            session.note(f"process exited ({proc.returncode}) after Asterisk left the AGI")
        stderr_thread.join(timeout=1.0)
        if not stderr_thread.is_alive():  # else a grandchild still holds fd 2; leave it to the thread
            _close_quietly(proc.stderr)
        code = proc.returncode
        status_nonzero = code != 0
        agistatus = _agistatus(reason, session.hungup_during, status_nonzero)
        if reason == "exit_on_hangup":
            agistatus = "HANGUP"
        return self._finish(
            session, channel, agistatus, transcript=session.transcript,
            exit_code=code if code is not None and code >= 0 else None,
            sig=-code if code is not None and code < 0 else None,
            stderr=b"".join(stderr_chunks), elapsed=elapsed_at_leave, timed_out=timed_out)

    # ---- FastAGI -------------------------------------------------------------------------------

    def run_fastagi(self, host: str, port: int, script: str, args: Sequence[str], channel: FakeChannel, *,
                    hangup: Optional[HangupPlan] = None, agi_sighup: bool = True,
                    exit_on_hangup: bool = False,
                    timeout: float = 30.0, request: Optional[str] = None,
                    env_block_override: Optional[bytes] = None, close_after_env: Optional[bool] = None,
                    reply_delay: Optional[float] = None, tcp_nodelay: Optional[bool] = None) -> AgiRun:
        """``AGI(agi://host:port/script,args...)``: connect (2 s timeout), send the block, serve the
        server's commands until it closes, then send ``HANGUP`` as Asterisk does."""
        start = time.monotonic()
        deadline = start + timeout
        url = f"agi://{host}:{port}" + (f"/{script}" if script else "")
        try:
            sock = socket.create_connection((host, port), timeout=min(FASTAGI_CONNECT_TIMEOUT, timeout))
        except OSError as exc:
            text = f"Connecting to '{host}:{port}' failed for url '{url}': {exc}"
            note = TranscriptLine(0.0, "NOTE", _b(text))
            return self._finish(None, channel, "FAILURE", transcript=[note], exit_code=None, sig=None,
                                stderr=b"", elapsed=time.monotonic() - start, timed_out=False)
        nodelay = self.tcp_nodelay if tcp_nodelay is None else tcp_nodelay
        if nodelay:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        send_sighup, exit_flag = self._flags(channel, agi_sighup, exit_on_hangup)
        transport = _Transport(sock.fileno(), sock.fileno(), sock)
        session: _Session

        def hangup_line() -> None:
            session.notify_fast()

        session = _Session(self, channel, transport, fast=True, start=start, deadline=deadline, hangup=hangup,
                           send_sighup=send_sighup, exit_on_hangup=exit_flag,
                           reply_delay=self.reply_delay if reply_delay is None else reply_delay,
                           notify=hangup_line)
        env_lines = build_env_block(channel, url if request is None else request, args, network=True,
                                    network_script=script)
        override = self.env_block_override if env_block_override is None else env_block_override
        closing = self.close_after_env if close_after_env is None else close_after_env
        try:
            reason = session.run(env_lines, override, closing)
            if reason == "timeout":
                session.note(f"fake: timeout after {timeout:g} s; closing the socket")
            elif reason != "closed" and send_sighup:
                session.send(HANGUP_LINE)  # run_agi's "Notify process" after the loop
        finally:
            try:
                sock.close()
            except OSError:
                pass
        agistatus = _agistatus(reason, session.hungup_during, False)
        if reason == "exit_on_hangup":
            agistatus = "HANGUP"
        return self._finish(session, channel, agistatus, transcript=session.transcript, exit_code=None,
                            sig=None, stderr=b"", elapsed=time.monotonic() - start,
                            timed_out=reason == "timeout")


def _drain(stream: object, sink: list[bytes]) -> None:
    read = getattr(stream, "read1", None) or getattr(stream, "read", None)
    if read is None:
        return
    try:
        while True:
            chunk = read(65536)
            if not chunk:
                return
            sink.append(chunk)
    except (OSError, ValueError):
        return


def _close_quietly(*streams: object) -> None:
    for stream in streams:
        close = getattr(stream, "close", None)
        if close is None:
            continue
        try:
            close()
        except OSError:
            pass


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the AGI's own process group (it was started in a new session)."""
    try:
        os.killpg(proc.pid, _signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            proc.kill()
        except ProcessLookupError:
            pass


# --------------------------------------------------------------------------------------------------
# CLI (demo / manual poking)
# --------------------------------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m vicirec.testing.fake_asterisk [options] -- script [args...]`` or
    ``... --fastagi agi://host:port/script [args...]``: run one AGI and print the transcript."""
    parser = argparse.ArgumentParser(prog="fake_asterisk", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--fastagi", metavar="URL", help="agi://host[:port]/script instead of a process")
    parser.add_argument("--channel", default=FakeChannel.name)
    parser.add_argument("--uniqueid", default=FakeChannel.uniqueid)
    parser.add_argument("--callerid", default="unknown", help="caller id number")
    parser.add_argument("--var", action="append", default=[], metavar="NAME=VALUE", help="channel variable")
    parser.add_argument("--hangup-after", type=float, default=None, metavar="SECONDS")
    parser.add_argument("--no-sighup", action="store_true", help="AGISIGHUP=no")
    parser.add_argument("--exit-on-hangup", action="store_true", help="AGIEXITONHANGUP=yes")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("command", nargs="*", help="script [args...] (or the args of the FastAGI)")
    opts = parser.parse_args(argv)
    channel = FakeChannel(name=opts.channel, uniqueid=opts.uniqueid, callerid_num=opts.callerid)
    for item in opts.var:
        key, _, value = item.partition("=")
        channel.variables[key] = value
    plan = HangupPlan(after=opts.hangup_after) if opts.hangup_after is not None else None
    fake = FakeAsterisk()
    if opts.fastagi:
        m = re.match(r"^agi://([^/:]+)(?::(\d+))?(?:/(.*))?$", opts.fastagi)
        if not m:
            parser.error("--fastagi wants agi://host[:port]/script")
        run = fake.run_fastagi(m.group(1), int(m.group(2) or 4573), m.group(3) or "", opts.command, channel,
                               hangup=plan, agi_sighup=not opts.no_sighup, exit_on_hangup=opts.exit_on_hangup,
                               timeout=opts.timeout)
    else:
        if not opts.command:
            parser.error("give the script to run")
        run = fake.run_process(opts.command[:1], opts.command[1:], channel, hangup=plan,
                               agi_sighup=not opts.no_sighup, exit_on_hangup=opts.exit_on_hangup,
                               timeout=opts.timeout)
    sys.stdout.write(run.dump())
    sys.stdout.write(f"AGISTATUS={run.agistatus} exit={run.exit_code} signal={run.signal} "
                     f"elapsed={run.elapsed:.3f} timed_out={run.timed_out}\n")
    for key, value in sorted(channel.variables.items()):
        sys.stdout.write(f"  {key}={value!r}\n")
    if run.stderr:
        sys.stdout.write("stderr:\n" + _s(run.stderr))
    return 0 if run.agistatus == "SUCCESS" else 1


if __name__ == "__main__":
    sys.exit(main())
