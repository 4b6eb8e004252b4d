"""Structural checker (and a tiny interpreter) for the Asterisk files vicirec ships under ``dialplan/``.

No Asterisk can be installed where the tests run, so this module reads the files the way Asterisk's
config parser and ``pbx_config`` do, as far as vicirec's files need it, and rejects the mistakes that
made real dialplans fail (see tests/data/asterisk/transcripts/scenario-output.txt):

    MACRO               Macro()/MacroExclusive()/... or a ``[macro-*]`` context (gone in Asterisk 21)
    DEPRECATED          an application or variable removed from Asterisk 18-22 (Monitor, DeadAGI, ...)
    SAME_BEFORE_EXTEN   ``same =>`` with no ``exten =>`` before it in the context
    EXTEN_CONTINUATION  ``exten => X,n,...`` for an extension already started (use ``same =>``);
                        a file marked ``; lint: vicidial-generated`` may (VICIdial writes that style)
    DUP_PRIORITY        a priority number used twice in one extension
    DUP_LABEL           a priority label used twice in one extension
    DUP_CONTEXT         one context defined in two shipped files (Asterisk would merge them)
    RESERVED_CONTEXT    ``[general]``/``[globals]`` in a shipped file (they belong to extensions.conf)
    CATCH_ALL           a pattern extension ending in ``.`` or ``!`` (clashes with the admin's own)
    BAD_TARGET          Goto/GotoIf/Gosub/GosubIf/ExecIf/Dial b()/B()/hangup_handler_push/include =>/
                        applicationmap Gosub/ConfBridge dialplan_exec naming a context, extension or
                        label that no shipped file defines (a context may be declared external with
                        a ``; lint: external-context NAME`` comment in the file that uses it)
    DYNAMIC_TARGET      a jump target built from a variable (cannot be checked)
    UNBALANCED          ``()``, ``${}``, ``$[]``, ``[]`` or ``{}`` not balanced in a line
    SYNTAX              a line this checker (and Asterisk) cannot parse
    UNQUOTED_COMPARE    ``$[ ... ]`` comparing a ``${...}`` that is not inside double quotes
    CALLERID_UNQUOTED   ``${CALLERID(...)}``/``${CONNECTEDLINE(...)}`` unquoted in AGI()/Gosub() args
    AGI_UNQUOTED_VAR    an AGI() argument (after the script) holding ``${...}`` without quotes
    AGI_TARGET          AGI() of something that is not vicirec (vicirec.agi, agi://.../vicirec); VICIdial's
                        own AGIs may be declared with a ``; lint: vicidial-agi NAME ...`` comment
    AGI_ACTION          AGI() action not START/STOP/STATUS/GRAB/ANSWER/GOSUB/CONSENT (or not a literal);
                        CONSENT on the process AGI (only the FastAGI daemon can hold a consent)
    AGI_OPTION          AGI() option other than agent=/confirm= (or agent-/confirm-), a bad confirm
                        value, a repeat, a bad GRAB/ANSWER/GOSUB argument, agent= on CONSENT
    AGI_STAGE           a stage on STOP/STATUS, or a literal stage VICIdial would mangle
    NO_RETURN           a Gosub routine (incl. pre-dial handlers, applicationmap Gosubs) with no
                        Return() reachable from its entry
    FALLS_OFF_END       an extension of a Gosub routine whose last priority is not Return/Goto/Hangup
    RETURN_WITHOUT_GOSUB  a ConfBridge ``dialplan_exec`` target that calls Return() (no frame there)
    FEATURE_SYNTAX      an applicationmap entry that is not ``name => digits,self|peer,App(args)``
    FEATURE_PEER        an applicationmap entry running vicirec on ``peer`` (the wrong channel)
    MENU_SYNTAX         a ConfBridge menu entry that cannot be parsed
    INCLUDE_MISSING     ``#include`` of a file that is not shipped; ``#exec`` is refused outright

Files are classified by name: ``features_*.conf`` hold applicationmap entries (no section header: they
are ``#include``d inside ``[applicationmap]``), ``confbridge_*.conf`` hold ConfBridge profiles, every
other ``.conf`` is dialplan (extensions.conf syntax).

Run ``python tests/dialplan_lint.py [FILE_OR_DIR ...]`` (default: the repo's ``dialplan/``); exit 1 on
any issue.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parent.parent
DIALPLAN_DIR = REPO / "dialplan"

ACTIONS = {"START", "STOP", "STATUS", "GRAB", "ANSWER", "GOSUB", "CONSENT"}
#: Actions whose first positional argument is a stage label (CONSENT carries a START's arguments).
STAGE_ACTIONS = {"START", "CONSENT"}
OPTIONS = {"agent", "confirm"}
DASH_OPTION_RE = re.compile(r"^(agent|confirm)-(.*)$", re.IGNORECASE)
MACRO_APPS = {"macro", "macroexclusive", "macroexit", "macroif"}
# Applications removed or deprecated somewhere in Asterisk 18-22 (app_macro and app_monitor went in 21).
DEPRECATED_APPS = {
    "monitor", "stopmonitor", "changemonitor", "pausemonitor", "unpausemonitor", "deadagi",
    "setmusiconhold", "waitmusiconhold", "setcallerpres", "setamaflags", "dbdel", "dbdeltree",
    "ices", "jabbersend", "jabberstatus", "dahdibarge", "dahdiscan", "osplookup", "ospauth",
}
DEPRECATED_VARS = ("${CALLERIDNUM}", "${CALLERIDNAME}", "${CALLERANI}", "${DATETIME}", "${TIMESTAMP}")
TERMINAL_APPS = {"return", "goto", "hangup", "stackpop"}
CALLER_FUNCS = ("CALLERID(", "CONNECTEDLINE(", "REDIRECTING(")
STAGE_RE = re.compile(r"^[A-Za-z0-9_-]{0,14}$")
CONFIRM_RE = re.compile(r"^[0-9]+(\.[0-9]+)?$")
EXTERNAL_RE = re.compile(r"lint:\s*external-context\s+(.+)", re.IGNORECASE)
VICIDIAL_AGI_RE = re.compile(r"lint:\s*vicidial-agi\s+(.+)", re.IGNORECASE)
VICIDIAL_GENERATED_RE = re.compile(r"lint:\s*vicidial-generated\b", re.IGNORECASE)


# --------------------------------------------------------------------------------------------
# data model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Issue:
    code: str
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.code}: {self.message}"


@dataclass
class Priority:
    number: int
    label: str
    app: str  # as written (case kept)
    data: str  # the text between the app's parentheses
    line: int
    path: str

    @property
    def app_l(self) -> str:
        return self.app.lower()


@dataclass
class Extension:
    name: str
    priorities: list[Priority] = field(default_factory=list)

    def by_label(self, label: str) -> Optional[Priority]:
        for p in self.priorities:
            if p.label == label:
                return p
        return None

    def by_number(self, number: int) -> Optional[Priority]:
        for p in self.priorities:
            if p.number == number:
                return p
        return None

    def ordered(self) -> list[Priority]:
        return sorted(self.priorities, key=lambda p: p.number)


@dataclass
class Context:
    name: str
    path: str
    line: int
    extensions: dict[str, Extension] = field(default_factory=dict)
    includes: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class FeatureEntry:
    name: str
    digits: str
    activate_on: str
    app: str
    data: str
    line: int
    path: str


@dataclass
class MenuEntry:
    section: str
    key: str
    action: str
    line: int
    path: str


@dataclass
class ConfFile:
    path: str
    kind: str  # extensions | features | confbridge
    contexts: list[Context] = field(default_factory=list)
    features: list[FeatureEntry] = field(default_factory=list)
    menu: list[MenuEntry] = field(default_factory=list)
    external: set[str] = field(default_factory=set)
    includes: list[tuple[str, int]] = field(default_factory=list)
    vicidial_agis: set[str] = field(default_factory=set)


# --------------------------------------------------------------------------------------------
# low-level text helpers
# --------------------------------------------------------------------------------------------


def strip_comments(text: str) -> tuple[list[tuple[int, str, str]], list[str]]:
    """Return (lineno, code, comment) triples and all comment texts.

    ``;`` starts a comment unless escaped as ``\\;``; ``;--`` ... ``--;`` is a block comment.
    """
    out: list[tuple[int, str, str]] = []
    comments: list[str] = []
    in_block = False
    for lineno, raw in enumerate(text.splitlines(), start=1):
        code = []
        comment = ""
        i = 0
        while i < len(raw):
            if in_block:
                end = raw.find("--;", i)
                if end < 0:
                    comments.append(raw[i:])
                    i = len(raw)
                    break
                comments.append(raw[i:end])
                in_block = False
                i = end + 3
                continue
            ch = raw[i]
            if ch == "\\" and i + 1 < len(raw):
                code.append(raw[i : i + 2])
                i += 2
                continue
            if ch == ";":
                if raw.startswith(";--", i):
                    in_block = True
                    i += 3
                    continue
                comment = raw[i + 1 :]
                comments.append(comment)
                break
            code.append(ch)
            i += 1
        out.append((lineno, "".join(code).rstrip(), comment))
    return out, comments


def split_args(data: str, delim: str = ",", remove_quotes: bool = True) -> list[str]:
    """Split application arguments like ``ast_app_separate_args`` does.

    Delimiters inside ``()``, ``[]`` or double quotes do not split; ``\\x`` keeps ``x`` (the
    backslash is dropped when quotes are removed); with ``remove_quotes`` the quote characters
    are removed (AGI(), Read(), ...), without it they are kept (Gosub's RAW parsing).
    """
    args: list[str] = []
    cur: list[str] = []
    paren = bracket = 0
    quote = False
    i = 0
    while i < len(data):
        ch = data[i]
        if ch == "\\" and i + 1 < len(data):
            cur.append(data[i + 1] if remove_quotes else data[i : i + 2])
            i += 2
            continue
        if ch == '"':
            quote = not quote
            if not remove_quotes:
                cur.append(ch)
            i += 1
            continue
        if not quote:
            if ch == "(":
                paren += 1
            elif ch == ")" and paren:
                paren -= 1
            elif ch == "[":
                bracket += 1
            elif ch == "]" and bracket:
                bracket -= 1
            elif ch == delim and not paren and not bracket:
                args.append("".join(cur))
                cur = []
                i += 1
                continue
        cur.append(ch)
        i += 1
    args.append("".join(cur))
    return args


def split_app(rest: str) -> tuple[str, str, bool]:
    """``App(args)`` -> (App, args, ok). ``App`` alone -> (App, "", ok). ``App,args`` -> not ok."""
    rest = rest.strip()
    paren = rest.find("(")
    comma = rest.find(",")
    if paren < 0:
        if comma >= 0:
            return rest[:comma].strip(), rest[comma + 1 :], False
        return rest, "", True
    if comma >= 0 and comma < paren:
        return rest[:comma].strip(), rest[comma + 1 :], False
    if not rest.endswith(")"):
        return rest[:paren].strip(), rest[paren + 1 :], False
    return rest[:paren].strip(), rest[paren + 1 : -1], True


_PAIRS = {"(": ")", "[": "]", "{": "}"}


def balance_error(text: str) -> Optional[str]:
    """Describe the first bracket mismatch in ``text`` (``${`` / ``$[`` count as openers)."""
    stack: list[tuple[str, int]] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "$" and i + 1 < len(text) and text[i + 1] in "{[":
            stack.append((_PAIRS[text[i + 1]], i))
            i += 2
            continue
        if ch in _PAIRS:
            stack.append((_PAIRS[ch], i))
        elif ch in ")]}":
            if not stack:
                return f"unexpected {ch!r} at column {i + 1}"
            want, _ = stack.pop()
            if want != ch:
                return f"expected {want!r} but found {ch!r} at column {i + 1}"
        i += 1
    if stack:
        want, pos = stack[-1]
        return f"{text[pos:pos + 2]!r} at column {pos + 1} is never closed (missing {want!r})"
    return None


def find_close(text: str, start: int, opener: str, closer: str) -> int:
    """Index of the ``closer`` matching ``text[start] == opener``, -1 when unbalanced."""
    depth = 0
    i = start
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == opener:
            depth += 1
        elif ch == closer:
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def expressions(text: str) -> list[str]:
    """Every ``$[...]`` body in ``text``, outer ones first, nested ones too."""
    found: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$[", i):
            end = find_close(text, i + 1, "[", "]")
            if end < 0:
                break
            body = text[i + 2 : end]
            found.append(body)
            found.extend(expressions(body))
            i = end + 1
            continue
        i += 1
    return found


_COMPARE_RE = re.compile(r"!=|<=|>=|=~|=|<|>")


def unquoted_compare(body: str) -> Optional[str]:
    """If the expression compares and has a top-level ``${...}`` outside quotes, return it."""
    top: list[str] = []  # top-level text outside quotes and outside ${}/$[]
    unquoted_vars: list[str] = []
    quote = False
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            i += 2
            continue
        if ch == '"':
            quote = not quote
            i += 1
            continue
        if ch == "$" and i + 1 < len(body) and body[i + 1] in "{[":
            opener = body[i + 1]
            end = find_close(body, i + 1, opener, "}" if opener == "{" else "]")
            if end < 0:
                return None  # UNBALANCED reports it
            if opener == "{" and not quote:
                unquoted_vars.append(body[i : end + 1])
            i = end + 1
            if not quote:
                top.append(" ")
            continue
        if not quote:
            top.append(ch)
        i += 1
    if unquoted_vars and _COMPARE_RE.search("".join(top)):
        return unquoted_vars[0]
    return None


def caller_value_unquoted(data: str, quotes_protect: bool = True) -> Optional[str]:
    """A ``${CALLERID(...)}``-like reference in ``data`` outside quotes and outside FILTER().

    With ``quotes_protect=False`` (Gosub: its RAW argument parsing keeps the quote characters in
    ``${ARGn}``, so quoting only moves the problem into the routine) only FILTER() protects.
    """
    quote = False
    filter_until = -1
    i = 0
    while i < len(data):
        ch = data[i]
        if ch == "\\":
            i += 2
            continue
        if ch == '"':
            quote = not quote
            i += 1
            continue
        if data.startswith("${FILTER(", i) and i > filter_until:
            filter_until = find_close(data, i + 1, "{", "}")
        if data.startswith("${", i) and not (quote and quotes_protect) and i > filter_until:
            for func in CALLER_FUNCS:
                if data.startswith("${" + func, i):
                    end = find_close(data, i + 1, "{", "}")
                    return data[i : end + 1 if end > 0 else len(data)]
        i += 1
    return None


def unquote(arg: str) -> str:
    return arg.replace('"', "")


def fully_quoted(raw_arg: str) -> bool:
    """True when every ``${`` of a raw (quotes kept) argument sits inside double quotes."""
    quote = False
    i = 0
    while i < len(raw_arg):
        ch = raw_arg[i]
        if ch == "\\":
            i += 2
            continue
        if ch == '"':
            quote = not quote
        elif raw_arg.startswith("${", i) and not quote:
            return False
        i += 1
    return True


# --------------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------------

_PRIO_RE = re.compile(r"^\s*(?P<prio>[0-9]+|n|hint)(?:\((?P<label>[A-Za-z0-9_-]+)\))?\s*$", re.IGNORECASE)


def classify(path: str) -> str:
    name = Path(path).name
    if name.startswith("features"):
        return "features"
    if name.startswith("confbridge"):
        return "confbridge"
    return "extensions"


def parse_text(path: str, text: str, issues: list[Issue]) -> ConfFile:
    kind = classify(path)
    cf = ConfFile(path=path, kind=kind)
    lines, comments = strip_comments(text)
    for comment in comments:
        m = EXTERNAL_RE.search(comment)
        if m:
            cf.external.update(n for n in re.split(r"[\s,]+", m.group(1).strip()) if n)
        m = VICIDIAL_AGI_RE.search(comment)
        if m:
            cf.vicidial_agis.update(n for n in re.split(r"[\s,]+", m.group(1).strip()) if n)
    vicidial_style = any(VICIDIAL_GENERATED_RE.search(comment) for comment in comments)

    ctx: Optional[Context] = None
    section = ""
    last_ext: Optional[Extension] = None
    last_number = 0
    for lineno, code, _comment in lines:
        line = code.strip()
        if not line:
            continue
        if line.startswith("#"):
            m = re.match(r'#include\s+"?([^"]+?)"?\s*$', line)
            if m:
                cf.includes.append((m.group(1), lineno))
            elif line.startswith("#exec"):
                issues.append(Issue("INCLUDE_MISSING", path, lineno, "#exec is not allowed in shipped files"))
            else:
                issues.append(Issue("SYNTAX", path, lineno, f"unknown directive {line!r}"))
            continue
        m = re.match(r"^\[([^\]]+)\](\([^)]*\))?\s*$", line)
        if m:
            section = m.group(1).strip()
            last_ext = None
            last_number = 0
            if kind == "extensions":
                ctx = Context(section, path, lineno)
                cf.contexts.append(ctx)
                if section.lower() in ("general", "globals"):
                    issues.append(
                        Issue("RESERVED_CONTEXT", path, lineno, f"[{section}] belongs in extensions.conf")
                    )
                if section.lower().startswith("macro-"):
                    issues.append(Issue("MACRO", path, lineno, f"macro context [{section}]"))
            continue
        m = re.match(r"^([A-Za-z0-9_./*#-]+)\s*=>?\s*(.*)$", line)
        if not m:
            issues.append(Issue("SYNTAX", path, lineno, f"cannot parse {line!r}"))
            continue
        key, value = m.group(1), m.group(2)
        if kind == "features":
            _parse_feature(cf, key, value, lineno, issues)
            continue
        if kind == "confbridge":
            if key.lower() == "type":
                continue
            cf.menu.append(MenuEntry(section, key, value.strip(), lineno, path))
            continue
        # extensions.conf
        if ctx is None:
            issues.append(Issue("SYNTAX", path, lineno, f"{key} outside any context"))
            continue
        kl = key.lower()
        if kl == "include":
            ctx.includes.append((value.strip(), lineno))
            continue
        if kl in ("switch", "ignorepat", "eswitch", "lswitch"):
            continue
        if kl not in ("exten", "same"):
            issues.append(Issue("SYNTAX", path, lineno, f"unknown keyword {key!r}"))
            continue
        if kl == "exten":
            parts = value.split(",", 2)
            if len(parts) < 3:
                issues.append(Issue("SYNTAX", path, lineno, "exten => needs name,priority,application"))
                continue
            ext_name = parts[0].strip().split("/")[0]
            prio_text, rest = parts[1], parts[2]
            if ext_name.startswith("_") and ext_name.rstrip()[-1:] in (".", "!"):
                msg = f"catch-all pattern {ext_name} clashes with the admin's dialplan"
                issues.append(Issue("CATCH_ALL", path, lineno, msg))
            ext = ctx.extensions.get(ext_name)
            pm = _PRIO_RE.match(prio_text)
            if ext is not None and pm and pm.group("prio") not in ("1", "hint") and not vicidial_style:
                msg = f"use 'same =>' to continue extension {ext_name}"
                issues.append(Issue("EXTEN_CONTINUATION", path, lineno, msg))
            if ext is None:
                ext = Extension(ext_name)
                ctx.extensions[ext_name] = ext
            last_ext = ext
        else:
            if last_ext is None:
                issues.append(Issue("SAME_BEFORE_EXTEN", path, lineno, "'same =>' before any 'exten =>'"))
                continue
            ext = last_ext
            parts = value.split(",", 1)
            if len(parts) < 2:
                issues.append(Issue("SYNTAX", path, lineno, "same => needs priority,application"))
                continue
            prio_text, rest = parts[0], parts[1]
        pm = _PRIO_RE.match(prio_text)
        if not pm:
            issues.append(Issue("SYNTAX", path, lineno, f"bad priority {prio_text!r}"))
            continue
        if pm.group("prio").lower() == "hint":
            continue
        if pm.group("prio").lower() == "n":
            if not ext.priorities:
                issues.append(Issue("SYNTAX", path, lineno, "priority 'n' with no priority before it"))
                continue
            number = last_number + 1
        else:
            number = int(pm.group("prio"))
            if ext.by_number(number) is not None:
                issues.append(Issue("DUP_PRIORITY", path, lineno, f"{ext.name} priority {number} used twice"))
        label = pm.group("label") or ""
        if label and ext.by_label(label) is not None:
            issues.append(Issue("DUP_LABEL", path, lineno, f"{ext.name} label {label!r} used twice"))
        app, data, ok = split_app(rest)
        if not ok:
            issues.append(Issue("SYNTAX", path, lineno, f"application must be written App(args): {rest!r}"))
        prio = Priority(number, label, app, data, lineno, path)
        ext.priorities.append(prio)
        last_number = number
    return cf


def _parse_feature(cf: ConfFile, name: str, value: str, lineno: int, issues: list[Issue]) -> None:
    parts = split_args(value, remove_quotes=False)
    if len(parts) < 3 or not parts[0].strip() or not parts[1].strip() or not parts[2].strip():
        issues.append(Issue("FEATURE_SYNTAX", cf.path, lineno, f"{name}: need digits,self|peer,App(args)"))
        return
    digits, activate_on, app_part = parts[0].strip(), parts[1].strip(), parts[2].strip()
    if not re.fullmatch(r"[0-9*#A-D]+", digits):
        issues.append(Issue("FEATURE_SYNTAX", cf.path, lineno, f"{name}: bad DTMF {digits!r}"))
    activate = activate_on.split("/")[0].lower()
    if activate not in ("self", "peer", "caller", "callee"):
        issues.append(Issue("FEATURE_SYNTAX", cf.path, lineno, f"{name}: activate_on must be self or peer"))
    app, data, ok = split_app(app_part)
    if not ok or "(" not in app_part:
        issues.append(Issue("FEATURE_SYNTAX", cf.path, lineno, f"{name}: write the application as App(args)"))
    cf.features.append(FeatureEntry(name, digits, activate, app, data, lineno, cf.path))


# --------------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------------


@dataclass
class Target:
    context: str
    exten: str
    priority: str  # number or label
    path: str
    line: int
    kind: str  # goto | gosub | exec (dialplan_exec) | include


class Linter:
    def __init__(self, files: Sequence[ConfFile], issues: list[Issue]) -> None:
        self.files = list(files)
        self.issues = issues
        self.contexts: dict[str, Context] = {}
        self.external: set[str] = set()
        self.vicidial_agis: set[str] = set()
        for f in self.files:
            self.external |= f.external
            self.vicidial_agis |= f.vicidial_agis
            for c in f.contexts:
                prev = self.contexts.get(c.name)
                if prev is not None and prev.path != c.path:
                    self.add("DUP_CONTEXT", c.path, c.line, f"[{c.name}] is also defined in {prev.path}")
                elif prev is not None:
                    # same file: Asterisk merges; keep the union
                    for name, ext in c.extensions.items():
                        prev.extensions.setdefault(name, ext)
                    continue
                self.contexts[c.name] = c
        self.targets: list[Target] = []

    def add(self, code: str, path: str, line: int, message: str) -> None:
        self.issues.append(Issue(code, path, line, message))

    # ---- jump targets -----------------------------------------------------------------------

    def _target(self, spec: str, here_ctx: str, here_ext: str, path: str, line: int, kind: str,
                strip_args: bool) -> None:
        spec = spec.strip()
        if not spec:
            return
        if strip_args and "(" in spec:
            spec = spec[: spec.index("(")]
        if "${" in spec or "$[" in spec:
            self.add("DYNAMIC_TARGET", path, line, f"jump target {spec!r} is built at run time")
            return
        parts = [p.strip() for p in spec.split(",")]
        if len(parts) == 1:
            ctx, ext, prio = here_ctx, here_ext, parts[0]
        elif len(parts) == 2:
            ctx, ext, prio = here_ctx, parts[0], parts[1]
        elif len(parts) == 3:
            ctx, ext, prio = parts
        else:
            self.add("BAD_TARGET", path, line, f"cannot parse jump target {spec!r}")
            return
        self.targets.append(Target(ctx, ext, prio, path, line, kind))

    def _caret_target(self, spec: str, here_ctx: str, path: str, line: int) -> None:
        """Dial b()/B() and the like: ``[[context^]exten^]priority[(args)]``."""
        if "(" in spec:
            spec = spec[: spec.index("(")]
        parts = spec.split("^")
        if len(parts) == 3 or len(parts) == 2:
            self._target(",".join(parts), here_ctx, "s", path, line, "gosub", False)
        else:
            self._target(parts[0], here_ctx, "s", path, line, "gosub", False)

    def check_app(self, app: str, data: str, ctx: str, ext: str, path: str, line: int) -> None:
        al = app.lower()
        if al in MACRO_APPS:
            self.add("MACRO", path, line, f"{app}() is gone in Asterisk 21: use Gosub")
        if al in DEPRECATED_APPS:
            self.add("DEPRECATED", path, line, f"{app}() is removed or deprecated in Asterisk 18-22")
        for var in DEPRECATED_VARS:
            if var in data:
                self.add("DEPRECATED", path, line, f"{var} is gone: use the CALLERID()/STRFTIME() functions")
        err = balance_error(f"{app}({data})")
        if err:
            self.add("UNBALANCED", path, line, err)
            return
        for body in expressions(data):
            bad = unquoted_compare(body)
            if bad:
                self.add("UNQUOTED_COMPARE", path, line,
                         f"quote {bad} in $[{body}]: an empty or spaced value is a syntax error")
        if al in ("agi", "eagi"):
            self.check_agi(data, path, line)
        if al in ("agi", "eagi"):
            bad = caller_value_unquoted(data)
            if bad:
                self.add("CALLERID_UNQUOTED", path, line,
                         f"{bad} unquoted in {app}(): a comma in it splits the arguments")
        if al in ("gosub", "gosubif"):
            bad = caller_value_unquoted(data, quotes_protect=False)
            if bad:
                self.add("CALLERID_UNQUOTED", path, line,
                         f"{bad} in {app}() arguments: a comma splits them and Gosub keeps quotes,"
                         " so pass caller data through FILTER()")
        if al == "goto":
            self._target(data, ctx, ext, path, line, "goto", False)
        elif al == "gosub":
            self._target(data, ctx, ext, path, line, "gosub", True)
        elif al in ("gotoif", "gosubif"):
            cond_branches = self._split_cond(data, path, line)
            if cond_branches is not None:
                for branch in cond_branches:
                    self._target(branch, ctx, ext, path, line, "gosub" if al == "gosubif" else "goto",
                                 al == "gosubif")
        elif al == "execif":
            cond_branches = self._split_cond(data, path, line)
            if cond_branches is not None:
                for branch in cond_branches:
                    inner_app, inner_data, ok = split_app(branch)
                    if inner_app:
                        self.check_app(inner_app, inner_data, ctx, ext, path, line)
        elif al == "dial":
            args = split_args(data, remove_quotes=False)
            if len(args) >= 3:
                for m in re.finditer(r"([bB])\(", args[2]):
                    end = find_close(args[2], m.end() - 1, "(", ")")
                    if end > 0:
                        self._caret_target(args[2][m.end() : end], ctx, path, line)
        elif al == "set":
            m = re.match(r"\s*CHANNEL\(hangup_handler_(?:push|wipe)\)\s*=(.*)$", data, re.IGNORECASE)
            if m:
                self._target(m.group(1), ctx, "s", path, line, "gosub", True)

    def _split_cond(self, data: str, path: str, line: int) -> Optional[list[str]]:
        """``cond?a:b`` -> [a, b]; the condition may hold ``?``/``:`` inside ``$[...]``."""
        i = 0
        depth = 0
        while i < len(data):
            if data.startswith("$[", i) or data.startswith("${", i):
                depth += 1
                i += 2
                continue
            ch = data[i]
            if ch in "]}" and depth:
                depth -= 1
            elif ch == "?" and not depth:
                rest = data[i + 1 :]
                # split the branches at the first ':' outside parentheses
                paren = 0
                for j, cj in enumerate(rest):
                    if cj == "(":
                        paren += 1
                    elif cj == ")":
                        paren -= 1
                    elif cj == ":" and not paren:
                        return [rest[:j], rest[j + 1 :]]
                return [rest]
            i += 1
        self.add("SYNTAX", path, line, f"conditional without '?': {data!r}")
        return None

    # ---- AGI ----------------------------------------------------------------------------------

    def check_agi(self, data: str, path: str, line: int) -> None:
        raw = split_args(data, remove_quotes=False)
        args = [unquote(a) if '"' in a else a for a in split_args(data)]
        target = args[0].strip()
        if target in self.vicidial_agis:
            return  # one of VICIdial's own AGIs, declared by the file: its arguments are VICIdial's
        if not (
            target.startswith("${")
            or re.fullmatch(r"(.*/)?vicirec\.agi", target)
            or re.fullmatch(r"agi://[^/]+/vicirec(\?.*)?", target)
        ):
            self.add("AGI_TARGET", path, line, f"AGI({target}) is not vicirec (vicirec.agi or agi://host:port/vicirec)")
        for r in raw[1:]:
            if "${" in r and not fully_quoted(r):
                self.add("AGI_UNQUOTED_VAR", path, line,
                         f"quote the AGI argument {r.strip()!r}: a comma in the value would split it")
        if len(args) < 2:
            self.add("AGI_ACTION", path, line, "AGI() without an action (START, STOP or STATUS)")
            return
        action = args[1].strip()
        if "${" in action or action.upper() not in ACTIONS:
            self.add("AGI_ACTION", path, line,
                     f"action {action!r} is not a literal {'/'.join(sorted(ACTIONS))}")
            return
        action = action.upper()
        if action in ("GRAB", "ANSWER", "GOSUB"):
            self.check_step(action, [a for a in args[2:] if a.strip()], path, line)
            return
        if action == "CONSENT" and re.fullmatch(r"(.*/)?vicirec\.agi", target):
            self.add("AGI_ACTION", path, line, "CONSENT needs the FastAGI daemon (agi://host:port/vicirec): "
                     "the process AGI refuses it and nothing would be recorded")
        seen: set[str] = set()
        for pos, arg in enumerate(args[2:]):
            key, eq, value = arg.partition("=")
            dash = DASH_OPTION_RE.match(arg.strip())
            if dash and not eq:
                key, eq, value = dash.group(1).lower(), "-", dash.group(2)
            if not eq or "${" in key:
                # positional: the stage, only right after a START
                if pos != 0 or action not in STAGE_ACTIONS:
                    if arg.strip() == "" and pos == 0:
                        continue
                    self.add("AGI_STAGE", path, line,
                             f"positional argument {arg!r} only allowed as the stage of START or CONSENT")
                    continue
                if "${" not in arg:
                    if not STAGE_RE.match(arg):
                        self.add("AGI_STAGE", path, line, f"stage {arg!r}: use [A-Za-z0-9_-], at most 14")
                    elif re.search("START|STOP|STATUS", arg, re.IGNORECASE):
                        self.add("AGI_STAGE", path, line, f"stage {arg!r} contains START/STOP/STATUS")
                continue
            key = key.strip()
            if key not in OPTIONS:
                self.add("AGI_OPTION", path, line, f"unknown option {key}= (only agent= and confirm=)")
                continue
            if key == "agent" and action == "CONSENT":
                self.add("AGI_OPTION", path, line,
                         "CONSENT takes no agent=: the agent is whoever takes the call")
            if key in seen:
                self.add("AGI_OPTION", path, line, f"option {key}= given twice")
            seen.add(key)
            if key == "confirm" and value and "${" not in value and not CONFIRM_RE.match(value):
                self.add("AGI_OPTION", path, line, f"confirm={value!r} is not a number of seconds")

    def check_step(self, action: str, args: list[str], path: str, line: int) -> None:
        """GRAB [agent=U], ANSWER WORD, GOSUB CONTEXT[,EXTEN[,PRIORITY]] (vicirec.request)."""
        literal = [a for a in args if "${" not in a]
        if action == "GRAB":
            for arg in literal:
                key = arg.partition("=")[0] if "=" in arg else (DASH_OPTION_RE.match(arg) or [None, ""])[1]
                if str(key).lower() != "agent":
                    self.add("AGI_OPTION", path, line, f"GRAB takes only agent= (got {arg!r})")
        elif action == "ANSWER":
            if len(args) != 1 or (literal and not re.fullmatch(r"[A-Za-z0-9_-]{1,20}", literal[0])):
                self.add("AGI_OPTION", path, line, "ANSWER takes one answer: [A-Za-z0-9_-], at most 20")
        else:
            if not 1 <= len(args) <= 3:
                self.add("AGI_OPTION", path, line, "GOSUB takes a context, then an extension and a priority")
            elif not args[0].startswith("${") and args[0] not in {*self.contexts, *self.external}:
                self.add("BAD_TARGET", path, line, f"GOSUB to [{args[0]}], which no shipped file defines")

    # ---- whole-file passes --------------------------------------------------------------------

    def run(self) -> None:
        for f in self.files:
            for c in f.contexts:
                for inc, line in c.includes:
                    self.targets.append(Target(inc, "", "", f.path, line, "include"))
                for ext in c.extensions.values():
                    for p in ext.priorities:
                        self.check_app(p.app, p.data, c.name, ext.name, p.path, p.line)
            for fe in f.features:
                self.check_app(fe.app, fe.data, "", "s", fe.path, fe.line)
                runs_vicirec = fe.app.lower() in ("agi", "eagi", "gosub")
                if runs_vicirec and fe.activate_on in ("peer", "callee"):
                    self.add("FEATURE_PEER", fe.path, fe.line,
                             f"{fe.name}: 'peer' runs on the other leg; vicirec features must be 'self'")
            for me in f.menu:
                m = re.fullmatch(r"dialplan_exec\((.*)\)", me.action.strip())
                if me.action.lower().startswith("dialplan_exec"):
                    if not m:
                        self.add("MENU_SYNTAX", me.path, me.line, f"bad dialplan_exec entry {me.action!r}")
                    else:
                        parts = m.group(1).split(",")
                        if len(parts) != 3:
                            self.add("MENU_SYNTAX", me.path, me.line, "dialplan_exec(context,exten,priority)")
                        else:
                            self._target(m.group(1), "", "", me.path, me.line, "exec", False)
            for inc, line in f.includes:
                base = Path(f.path).parent
                shipped = {str(Path(x.path).resolve()) for x in self.files}
                cands = [base / inc, DIALPLAN_DIR / inc, DIALPLAN_DIR / Path(inc).name]
                if not any(str(c.resolve()) in shipped or c.exists() for c in cands):
                    self.add("INCLUDE_MISSING", f.path, line, f"#include {inc}: no such shipped file")
        self.check_targets()

    def resolve(self, t: Target) -> Optional[tuple[Context, Extension, Priority]]:
        ctx = self.contexts.get(t.context)
        if ctx is None:
            if t.context in self.external:
                return None
            self.add("BAD_TARGET", t.path, t.line,
                     f"context [{t.context}] is not defined in the shipped files"
                     " (declare an admin context with '; lint: external-context NAME')")
            return None
        if t.kind == "include":
            return None
        ext = ctx.extensions.get(t.exten)
        if ext is None:
            self.add("BAD_TARGET", t.path, t.line, f"no extension {t.exten!r} in [{t.context}]")
            return None
        prio = ext.by_number(int(t.priority)) if t.priority.isdigit() else ext.by_label(t.priority)
        if prio is None:
            self.add("BAD_TARGET", t.path, t.line,
                     f"no priority/label {t.priority!r} in {t.exten}@{t.context}")
            return None
        return ctx, ext, prio

    def reachable(self, ctx: Context, ext: Extension) -> list[tuple[Context, Extension]]:
        """Extensions reachable from ``ext`` through static Goto/GotoIf jumps (Gosubs return)."""
        seen: list[tuple[Context, Extension]] = []
        todo = [(ctx, ext)]
        while todo:
            c, e = todo.pop()
            if any(c is sc and e is se for sc, se in seen):
                continue
            seen.append((c, e))
            for p in e.priorities:
                branches: list[str] = []
                if p.app_l == "goto":
                    branches = [p.data]
                elif p.app_l == "gotoif":
                    quiet: list[Issue] = []
                    saved, self.issues = self.issues, quiet
                    try:
                        branches = self._split_cond(p.data, p.path, p.line) or []
                    finally:
                        self.issues = saved
                for b in branches:
                    parts = [x.strip() for x in b.strip().split(",")] if b.strip() else []
                    if not parts or "${" in b:
                        continue
                    if len(parts) == 3:
                        nc = self.contexts.get(parts[0])
                        ne = nc.extensions.get(parts[1]) if nc else None
                    elif len(parts) == 2:
                        nc, ne = c, c.extensions.get(parts[0])
                    else:
                        nc, ne = c, e
                    if nc is not None and ne is not None:
                        todo.append((nc, ne))
        return seen

    def check_targets(self) -> None:
        routines: list[tuple[Context, Extension, Target]] = []
        execs: list[tuple[Context, Extension, Target]] = []
        for t in self.targets:
            res = self.resolve(t)
            if res is None:
                continue
            ctx, ext, _prio = res
            if t.kind == "gosub":
                routines.append((ctx, ext, t))
            elif t.kind == "exec":
                execs.append((ctx, ext, t))
        done: set[tuple[str, str]] = set()
        for ctx, ext, t in routines:
            if (ctx.name, ext.name) in done:
                continue
            done.add((ctx.name, ext.name))
            reach = self.reachable(ctx, ext)
            if not any(p.app_l == "return" for _c, e in reach for p in e.priorities):
                self.add("NO_RETURN", ext.priorities[0].path, ext.priorities[0].line,
                         f"Gosub routine {ext.name}@{ctx.name} (called at {t.path}:{t.line}) never Return()s")
            for _c, e in reach:
                last = e.ordered()[-1]
                if last.app_l not in TERMINAL_APPS:
                    self.add("FALLS_OFF_END", last.path, last.line,
                             f"{e.name}@{_c.name} ends with {last.app}(): a Gosub routine must end in "
                             "Return(), Goto() or Hangup()")
        for ctx, ext, t in execs:
            for _c, e in self.reachable(ctx, ext):
                for p in e.priorities:
                    if p.app_l == "return":
                        self.add("RETURN_WITHOUT_GOSUB", p.path, p.line,
                                 f"{e.name}@{_c.name} is a dialplan_exec target ({t.path}:{t.line}): "
                                 "Return() there has no Gosub frame and hangs the caller up")


# --------------------------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------------------------


def parse_files(texts: dict[str, str], issues: Optional[list[Issue]] = None) -> list[ConfFile]:
    issues = issues if issues is not None else []
    return [parse_text(path, text, issues) for path, text in texts.items()]


def lint_texts(texts: dict[str, str]) -> list[Issue]:
    """Lint a set of files given as ``{path: text}`` (they are checked together)."""
    issues: list[Issue] = []
    files = parse_files(texts, issues)
    Linter(files, issues).run()
    return issues


def collect(paths: Iterable[Path]) -> dict[str, str]:
    texts: dict[str, str] = {}
    for p in paths:
        if p.is_dir():
            for f in sorted(p.rglob("*.conf")):
                texts[str(f)] = f.read_text(encoding="utf-8")
        else:
            texts[str(p)] = p.read_text(encoding="utf-8")
    return texts


def lint_paths(paths: Iterable[Path]) -> list[Issue]:
    return lint_texts(collect(paths))


# --------------------------------------------------------------------------------------------
# a tiny dialplan interpreter, enough to run vicirec's routines in tests
# --------------------------------------------------------------------------------------------


class DialplanError(Exception):
    """What Asterisk would log as an error (and usually hang the channel up for)."""


AgiHandler = Callable[[list[str], dict[str, str]], Optional[dict[str, str]]]


class MiniPbx:
    """Runs Set/Goto/GotoIf/Gosub/Return/AGI/Read/Playback/... on one simulated channel.

    Substitution and argument splitting follow Asterisk: variables are substituted into the whole
    application data first, then the application splits its arguments (AGI() removes quotes, Gosub
    keeps them). ``$[...]`` supports quoted/bare operands, ``= != < > & | + -``; an operand made of
    several bare words or a missing operand is a syntax error, as in ast_expr2.
    """

    def __init__(self, files: Sequence[ConfFile], agi: Optional[AgiHandler] = None,
                 digits: Sequence[str] = (), globals_: Optional[dict[str, str]] = None,
                 agi_status: str = "SUCCESS", missing_sounds: Sequence[str] = ()) -> None:
        self.contexts: dict[str, Context] = {}
        for f in files:
            for c in f.contexts:
                self.contexts.setdefault(c.name, c)
        self.features = {fe.name: fe for f in files for fe in f.features}
        self.menu = {me.key: me for f in files for me in f.menu}
        self.agi = agi
        self.agi_status_when_silent = agi_status
        self.digits = list(digits)
        self.missing_sounds = set(missing_sounds)
        self.globals: dict[str, str] = dict(globals_ or {})
        self.vars: dict[str, str] = {"CHANNEL": "PJSIP/customer-00000001"}
        self.frames: list[tuple[tuple[str, str, int], dict[str, Optional[str]]]] = []
        self.agi_calls: list[list[str]] = []
        self.played: list[str] = []
        self.logs: list[str] = []
        self.dials: list[str] = []
        self.trace: list[str] = []
        self.hung_up = False

    # ---- substitution ---------------------------------------------------------------------------

    def get(self, name: str) -> str:
        if name in self.vars:
            return self.vars[name]
        return self.globals.get(name, "")

    def substitute(self, text: str) -> str:
        out: list[str] = []
        i = 0
        while i < len(text):
            if text.startswith("${", i):
                end = find_close(text, i + 1, "{", "}")
                if end < 0:
                    raise DialplanError(f"unbalanced ${{ in {text!r}")
                out.append(self._lookup(self.substitute(text[i + 2 : end])))
                i = end + 1
                continue
            if text.startswith("$[", i):
                end = find_close(text, i + 1, "[", "]")
                if end < 0:
                    raise DialplanError(f"unbalanced $[ in {text!r}")
                out.append(evaluate(self.substitute(text[i + 2 : end])))
                i = end + 1
                continue
            out.append(text[i])
            i += 1
        return "".join(out)

    def _lookup(self, expr: str) -> str:
        m = re.fullmatch(r"([A-Z_]+)\((.*)\)", expr, re.DOTALL)
        if not m:
            m2 = re.fullmatch(r"([^:]+):(-?\d+)(?::(\d+))?", expr)
            if m2:
                value = self.get(m2.group(1))
                start = int(m2.group(2))
                return value[start : start + int(m2.group(3))] if m2.group(3) else value[start:]
            return self.get(expr)
        func, arg = m.group(1), m.group(2)
        if func == "IF":
            cond, _, branches = arg.partition("?")
            true_v, _, false_v = branches.partition(":")
            return true_v if truthy(cond) else false_v
        if func == "LOCAL":
            return self.get(arg)
        if func == "LEN":
            return str(len(arg))
        if func == "FILTER":
            allowed, _, value = arg.partition(",")
            return "".join(ch for ch in value if _filter_allows(allowed, ch))
        raise DialplanError(f"function {func}() not known to MiniPbx")

    # ---- running ------------------------------------------------------------------------------

    def set_var(self, name: str, value: str) -> None:
        m = re.fullmatch(r"LOCAL\((.+)\)", name)
        if m:
            name = m.group(1)
            if not self.frames:
                raise DialplanError("LOCAL() outside a Gosub")
            saved = self.frames[-1][1]
            if name not in saved:
                saved[name] = self.vars.get(name)
        self.vars[name] = value

    def _jump(self, spec: str, ctx: str, ext: str) -> tuple[str, str, int]:
        parts = [p.strip() for p in spec.split(",")]
        if len(parts) == 1:
            c, e, p = ctx, ext, parts[0]
        elif len(parts) == 2:
            c, e, p = ctx, parts[0], parts[1]
        else:
            c, e, p = parts[0], parts[1], parts[2]
        return c, e, self.priority_of(c, e, p)

    def priority_of(self, ctx: str, ext: str, prio: str) -> int:
        context = self.contexts.get(ctx)
        if context is None or ext not in context.extensions:
            raise DialplanError(f"no such extension {ext}@{ctx}")
        e = context.extensions[ext]
        found = e.by_number(int(prio)) if prio.isdigit() else e.by_label(prio)
        if found is None:
            raise DialplanError(f"no priority {prio} in {ext}@{ctx}")
        return found.number

    def gosub(self, ctx: str, ext: str, prio: str = "1", args: Sequence[str] = ()) -> None:
        """Run ``Gosub(ctx,ext,prio(args))`` to completion as ast_app_exec_sub would."""
        self._push_frame(None, list(args))
        self.run(ctx, ext, self.priority_of(ctx, ext, prio), base=len(self.frames) - 1, routine=True)

    def feature(self, name: str) -> None:
        """Press an applicationmap key: run its application on this channel."""
        fe = self.features[name]
        self.exec_app(fe.app, fe.data, ("", "s", 0))

    def menu_key(self, key: str) -> None:
        """Press a ConfBridge menu key whose action is dialplan_exec(context,exten,priority)."""
        m = re.fullmatch(r"dialplan_exec\((.*)\)", self.menu[key].action)
        if not m:
            raise DialplanError(f"menu key {key} is not dialplan_exec")
        c, e, p = [x.strip() for x in m.group(1).split(",")]
        self.run(c, e, self.priority_of(c, e, p), base=len(self.frames), routine=False)

    def _push_frame(self, ret: Optional[tuple[str, str, int]], args: list[str]) -> None:
        saved: dict[str, Optional[str]] = {}
        prev_n = 0
        while f"ARG{prev_n + 1}" in self.vars:
            prev_n += 1
        self.frames.append((ret or ("", "", 0), saved))
        for n in range(1, max(prev_n, len(args)) + 1):
            self.set_var(f"LOCAL(ARG{n})", args[n - 1] if n <= len(args) else "")

    def _pop_frame(self) -> tuple[str, str, int]:
        ret, saved = self.frames.pop()
        for name, old in saved.items():
            if old is None:
                self.vars.pop(name, None)
            else:
                self.vars[name] = old
        return ret

    def run(self, ctx: str, ext: str, number: int, base: int, routine: bool) -> None:
        """Execute from ``number``; ``base`` = Gosub frames below this run.

        ``routine``: this run is a Gosub routine (its own frame is ``base + 1``) and ends at its
        Return(); otherwise it is top-level dialplan and ends when the extension runs out.
        """
        steps = 0
        pos: Optional[tuple[str, str, int]] = (ctx, ext, number)
        while pos is not None:
            steps += 1
            if steps > 10000:
                raise DialplanError("loop")
            c, e, n = pos
            extension = self.contexts[c].extensions[e]
            prio = extension.by_number(n)
            if prio is None:
                if len(self.frames) > base:
                    raise DialplanError(f"fell off the end of {e}@{c} inside a Gosub (channel hangs up)")
                return  # end of a top-level extension (e.g. dialplan_exec): back to the caller
            self.trace.append(f"{e}@{c}:{n} {prio.app}")
            nxt = self.exec_app(prio.app, prio.data, (c, e, n))
            if nxt == "HANGUP":
                self.hung_up = True
                return
            if nxt == "RETURN":
                if len(self.frames) <= base:
                    raise DialplanError("Return without Gosub: stack is empty")
                ret = self._pop_frame()
                if routine and len(self.frames) == base:
                    return
                pos = (ret[0], ret[1], ret[2] + 1)
            elif isinstance(nxt, tuple):
                pos = nxt
            else:
                pos = (c, e, n + 1)

    def exec_app(self, app: str, data: str, here: tuple[str, str, int]):  # noqa: ANN201
        al = app.lower()
        c, e, n = here
        if al == "gosub":
            spec = self.substitute(data)
            target, _, argtext = spec.partition("(")
            args = split_args(argtext[:-1], remove_quotes=False) if argtext else []
            if argtext and argtext[:-1] == "":
                args = []
            dest = self._jump(target, c, e)
            self._push_frame((c, e, n), args)
            if c == "":  # from a feature: run to completion
                self.run(dest[0], dest[1], dest[2], base=len(self.frames) - 1, routine=True)
                return None
            return dest
        if al == "return":
            return "RETURN"
        if al == "hangup":
            return "HANGUP"
        if al == "goto":
            return self._jump(self.substitute(data), c, e)
        if al == "gotoif":
            sub = self.substitute(data)
            cond, _, branches = sub.partition("?")
            true_b, _, false_b = branches.partition(":")
            branch = true_b if truthy(cond) else false_b
            return self._jump(branch, c, e) if branch.strip() else None
        sub = self.substitute(data)
        if al == "set":
            name, _, value = sub.partition("=")
            self.set_var(name.strip(), value)
        elif al in ("noop", "verbose", "answer", "wait", "waitexten"):
            pass
        elif al == "log":
            self.logs.append(sub)
        elif al in ("playback", "background"):
            self.played.extend(split_args(sub)[0].split("&"))
        elif al == "read":
            args = split_args(sub) + [""] * 6
            prompts = [p for p in args[1].split("&") if p]
            if self.missing_sounds.intersection(prompts):
                # Asterisk 22: a missing prompt ends Read() at once with READSTATUS ERROR
                self.vars[args[0]] = ""
                self.vars["READSTATUS"] = "ERROR"
                return None
            self.played.extend(prompts)
            self.vars[args[0]] = self.digits.pop(0) if self.digits else ""
            self.vars["READSTATUS"] = "OK" if self.vars[args[0]] else "TIMEOUT"
        elif al == "dial":
            self.dials.append(sub)
        elif al in ("agi", "eagi"):
            argv = split_args(sub)
            self.agi_calls.append(argv)
            result = self.agi(argv, dict(self.vars)) if self.agi else None
            if result is None:
                self.vars["AGISTATUS"] = self.agi_status_when_silent
            else:
                self.vars["AGISTATUS"] = "SUCCESS"
                self.vars.update(result)
        else:
            raise DialplanError(f"application {app}() not known to MiniPbx")
        return None


def _filter_allows(allowed: str, ch: str) -> bool:
    i = 0
    while i < len(allowed):
        if i + 2 < len(allowed) and allowed[i + 1] == "-":
            if allowed[i] <= ch <= allowed[i + 2]:
                return True
            i += 3
            continue
        if allowed[i] == ch:
            return True
        i += 1
    return False


def truthy(value: str) -> bool:
    v = value.strip()
    if not v:
        return False
    try:
        return float(v) != 0
    except ValueError:
        return True


_TOKEN_RE = re.compile(r'\s*(?:(?P<q>"[^"]*")|(?P<op>!=|<=|>=|=~|[=<>&|+\-()])|(?P<w>[^\s"=<>&|+\-()!]+))')


def evaluate(expr: str) -> str:
    """Evaluate an (already substituted) ``$[...]`` body the way ast_expr2 would for our operators."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        if not expr[pos:].strip():
            break
        m = _TOKEN_RE.match(expr, pos)
        if not m or m.end() == pos:
            raise DialplanError(f"syntax error in $[{expr}]")
        if m.group("q") is not None:
            tokens.append(("v", m.group("q")[1:-1]))
        elif m.group("op") is not None:
            tokens.append(("op", m.group("op")))
        else:
            tokens.append(("v", m.group("w")))
        pos = m.end()
    for a, b in zip(tokens, tokens[1:]):
        if a[0] == "v" and b[0] == "v":
            raise DialplanError(f"syntax error in $[{expr}]: two operands in a row")
    parser = _ExprParser(tokens, expr)
    value = parser.parse_or()
    if parser.i != len(tokens):
        raise DialplanError(f"syntax error in $[{expr}]")
    return value


class _ExprParser:
    def __init__(self, tokens: list[tuple[str, str]], expr: str) -> None:
        self.t = tokens
        self.i = 0
        self.expr = expr

    def _peek(self) -> Optional[tuple[str, str]]:
        return self.t[self.i] if self.i < len(self.t) else None

    def _op(self, *ops: str) -> Optional[str]:
        tok = self._peek()
        if tok and tok[0] == "op" and tok[1] in ops:
            self.i += 1
            return tok[1]
        return None

    def parse_or(self) -> str:
        left = self.parse_and()
        while self._op("|"):
            right = self.parse_and()
            left = left if truthy(left) else (right if truthy(right) else "0")
        return left

    def parse_and(self) -> str:
        left = self.parse_cmp()
        while self._op("&"):
            right = self.parse_cmp()
            left = left if truthy(left) and truthy(right) else "0"
        return left

    def parse_cmp(self) -> str:
        left = self.parse_add()
        op = self._op("=", "!=", "<", ">", "<=", ">=")
        if not op:
            return left
        right = self.parse_add()
        try:
            a: object = float(left)
            b: object = float(right)
        except ValueError:
            a, b = left, right
        result = {"=": a == b, "!=": a != b, "<": a < b, ">": a > b,  # type: ignore[operator]
                  "<=": a <= b, ">=": a >= b}[op]  # type: ignore[operator]
        return "1" if result else "0"

    def parse_add(self) -> str:
        left = self.parse_atom()
        while True:
            op = self._op("+", "-")
            if not op:
                return left
            right = self.parse_atom()
            try:
                num = float(left) + float(right) if op == "+" else float(left) - float(right)
            except ValueError as exc:
                raise DialplanError(f"non-numeric operand in $[{self.expr}]") from exc
            left = str(int(num)) if num == int(num) else str(num)

    def parse_atom(self) -> str:
        tok = self._peek()
        if tok is None:
            raise DialplanError(f"syntax error in $[{self.expr}]: missing operand")
        if tok == ("op", "("):
            self.i += 1
            value = self.parse_or()
            if not self._op(")"):
                raise DialplanError(f"syntax error in $[{self.expr}]: missing ')'")
            return value
        if tok[0] != "v":
            raise DialplanError(f"syntax error in $[{self.expr}]: unexpected {tok[1]!r}")
        self.i += 1
        return tok[1]


def main(argv: Sequence[str]) -> int:
    paths = [Path(a) for a in argv] or [DIALPLAN_DIR]
    issues = lint_paths(paths)
    for issue in issues:
        print(issue)
    files = sum(1 for p in paths for _ in ([p] if p.is_file() else p.rglob("*.conf")))
    print(f"dialplan_lint: {files} file(s), {len(issues)} issue(s)")
    return 1 if issues else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
