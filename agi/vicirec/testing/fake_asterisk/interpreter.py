"""The pure model of one channel and the AGI command set: :class:`AgiInterpreter` (bytes in,
:class:`Reply` out, no I/O), with the dialplan functions it evaluates.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from typing import Callable, Optional

from vicirec.testing.fake_asterisk.apps import DEFAULT_APPLICATIONS, AppHandler
from vicirec.testing.fake_asterisk.args import _scan_int, _separate_args, _substring, parse_args
from vicirec.testing.fake_asterisk.channel import FakeChannel, _b, _s
from vicirec.testing.fake_asterisk.commands import (
    _USAGE,
    DEAD_REPLY,
    INVALID_REPLY,
    USAGE_HEAD,
    USAGE_TAIL,
    Reply,
    _find_command,
    _result,
)

GET_VARIABLE_MAX = 1023  # GET VARIABLE reads into a 1024-byte buffer

_CHANNEL_STATES: dict[str, int] = {
    "Down": 0, "Rsrvd": 1, "OffHook": 2, "Dialing": 3, "Ring": 4, "Ringing": 5, "Up": 6, "Busy": 7,
}


class _Ctx:
    """The channel an expression is evaluated on: this one (``chan`` set) or another one."""

    def __init__(self, name: str, variables: dict[str, str], chan: Optional[FakeChannel]) -> None:
        self.name = name
        self.vars = variables
        self.chan = chan


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
        self.gosubs: list[tuple[str, str, str]] = []

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

    def _fn_channels(self, ctx: _Ctx, args: bytes) -> Optional[bytes]:
        """``CHANNELS([regex])``: the names of this channel and of ``others`` that match, space-separated
        (func_channel.c: an extended regex searched anywhere in the name; a bad one fails the read)."""
        names = [self.channel.name, *self.channel.others]
        if not args:
            return _b(" ".join(names))
        try:
            pattern = re.compile(_s(args))
        except re.error:
            return None
        return _b(" ".join(name for name in names if pattern.search(name)))

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

    def _cmd_gosub(self, argv: list[bytes]) -> Optional[Reply]:
        """As Asterisk 22 answers (checked on the real one): ``100 result=0 Trying...`` then, once
        the subroutine returned, ``200 result=0 Gosub complete``; no such context: one line."""
        if len(argv) not in (4, 5):
            return None
        context, extension, priority = _s(argv[1]), _s(argv[2]), _s(argv[3])
        routine = self.channel.subroutines.get(context)
        if routine is None:
            return Reply([b"200 result=-1 Gosub label not found\n"])
        self.gosubs.append((context, extension, priority))
        routine(self.channel, extension, priority)
        return Reply([b"100 result=0 Trying...\n", b"200 result=0 Gosub complete\n"])

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
    "CHANNELS": AgiInterpreter._fn_channels,
    "CONFBRIDGE_INFO": AgiInterpreter._fn_empty,
    "MEETME_INFO": AgiInterpreter._fn_empty,
}
