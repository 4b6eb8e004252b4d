"""VICIdial simulator: ``agc/api.php`` (agent API) and a slice of ``vicidial/non_agent_api.php``.

A real HTTP server (127.0.0.1 by default) that answers with the exact bytes VICIdial 2.14-81 on
PHP 8.2 / MariaDB 10.11 sends. The raw-response corpus (``shared/vicidial/agent-api-corpus.txt``)
is the ground truth; ``tests/test_simulator_corpus.py`` replays every case of it against this module.

It implements api.php's logic instead of replaying answers:

* the checks in api.php's order (version, coffee, source, login, system API flag, value/agent_user,
  ``api_allowed_functions``, alt_user, agent logged in), with api.php's own variable filters and
  "GET wins over POST" (PHP fills ``$_POST`` only for form-encoded POST bodies);
* ``user_authorization()``: the echoed password and SQL text, GOOD / LOCK / ERRSERVERS / IPBLOCK /
  BAD, ten failed logins lock a user for 15 minutes, a successful API call never resets the count;
* PHP 8 string/number comparisons (``'START_MIDCALL' > 0`` is true, ``'START' < 1`` is false);
* MariaDB's ``external_recording VARCHAR(20)`` (silently cut, or HTTP 500 with ``strict_sql_mode``;
  invalid UTF-8 likewise) and api.php's byte-wise 14-byte stage cut, including the ``\\n\\n`` case
  that loops until ``max_execution_time``.

A background "agent screen" emulates the agent's browser: ``screen_delay`` seconds after
``external_recording`` became ``START<stage>`` it starts a recording (new numeric id in
``external_recording``, a ``recording_log`` row named ``YYYYMMDD-HHMMSS_<user><stage>`` after the
call's start, stage reduced to ``[-_0-9a-zA-Z]``); after ``STOP`` it ends every open recording of
that agent and clears the column. Like the real poll it acts on whatever the column holds when it
looks (a STOP written before it looked wins over the START). ``screen_delay=None`` leaves commands
pending for ever; ``run_screen()`` makes the screen act at once.

Faults (:class:`Fault`) make the socket misbehave in the ways real deployments do.

Not simulated: ``conf_exten_check.php`` / ``manager_send.php`` (the screen is emulated instead),
``format=debug``, api.php functions other than ``recording`` / ``version`` / ``coffee`` (they answer
like an unknown function: an empty body). Non-agent API: ``logged_in_agents``, ``agent_status``,
``callid_info``, ``lead_search``, ``recording_lookup`` and ``version``; error lines the corpus does
not show are modelled on the documented ones.

Run it for a demo: ``python -m vicirec.testing.simulator --port 8089``.
"""

from __future__ import annotations

import argparse
import functools
import heapq
import random
import re
import signal
import socket
import socketserver
import struct
import threading
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Callable, Optional, Union

__all__ = [
    "AGENT_API_PATH",
    "API_BUILD",
    "API_PASS",
    "API_USER",
    "API_VERSION",
    "FAULT_KINDS",
    "FIRST_RECORDING_ID",
    "NON_AGENT_API_PATH",
    "ApiUser",
    "CallLog",
    "Fault",
    "Lead",
    "LiveAgent",
    "RecordingRow",
    "RequestRecord",
    "SimulatorState",
    "SystemFlags",
    "VicidialSimulator",
    "cut_stage",
    "main",
    "mysql_int",
    "php_compare_int",
    "php_form_decode",
]

API_VERSION = "2.14-81"
API_BUILD = "240429-2220"
#: Not in the corpus; the non-agent API has its own version line.
NON_AGENT_API_VERSION = "2.14-943"
NON_AGENT_API_BUILD = "240524-1720"
X_POWERED_BY = "PHP/8.2.36"
AGENT_API_PATH = "/agc/api.php"
NON_AGENT_API_PATH = "/vicidial/non_agent_api.php"
FIRST_RECORDING_ID = 121242
LAB_SERVER_IP = "10.10.10.15"
API_USER = "6666"
API_PASS = "1234"  # noqa: S105 - the lab fixture password of the corpus
_REDACTED = "<redacted>"

_LOCK_SECONDS = 900  # user_authorization(): a failed-login lock lasts 15 minutes
_LOCK_ATTEMPTS = 10
_COLUMN_CHARS = 20  # vicidial_live_agents.external_recording VARCHAR(20)
_STAGE_BYTES = 14
_HANG_LIMIT = 600.0  # a hung request never outlives this, even when stop() is never called
_MAX_BODY = 16 * 1024 * 1024
_HUGE_FILLER_BYTES = 4 * 1024 * 1024
_IDLE_TIMEOUT = 60.0  # seconds an idle keep-alive connection is kept open

# --- faults -------------------------------------------------------------------------------------

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


@dataclass(frozen=True)
class RequestRecord:
    """One request as received: the variables PHP saw (GET wins over POST), password redacted."""

    method: str
    path: str
    params: dict[str, str]
    at: float
    fault: Optional[str]


# --- state --------------------------------------------------------------------------------------


@dataclass
class ApiUser:
    """A ``vicidial_users`` row (the columns api.php looks at)."""

    user: str
    password: str
    full_name: str = ""
    user_level: int = 9
    active: bool = True
    vdc_agent_api_access: bool = True
    api_only_user: bool = False
    view_reports: bool = True
    api_allowed_functions: str = " ALL_FUNCTIONS "
    user_group: str = "ADMIN"
    custom_three: str = ""
    failed_login_count: int = 0
    last_login_date: Optional[int] = None  # epoch seconds; None is SQL NULL


@dataclass
class LiveAgent:
    """A ``vicidial_live_agents`` row. Plain fields: override them freely before traffic."""

    user: str
    conf_exten: str
    extension: str
    status: str = "READY"
    server_ip: str = LAB_SERVER_IP
    lead_id: int = 0
    callerid: str = ""
    uniqueid: str = ""
    channel: str = ""
    campaign_id: str = "TESTCAMP"
    calls_today: int = 0
    full_name: str = ""
    user_group: str = "AGENTS"
    user_level: int = 1
    pause_code: str = ""
    sub_status: str = ""
    external_recording: str = ""
    last_update_time: float = 0.0
    #: when the current call began; the screen's recording file names carry this date.
    call_started_at: float = 0.0


@dataclass
class Lead:
    """A ``vicidial_list`` row."""

    lead_id: int
    phone_number: str
    vendor_lead_code: str = ""
    list_id: int = 101
    status: str = "NEW"


@dataclass
class CallLog:
    """What ``callid_info`` reports for one call id."""

    call_id: str
    custtime: int
    call_date: float
    phone: str
    call_type: str
    campaign_id: str
    list_id: int
    status: str
    user: str


@dataclass
class RecordingRow:
    """A ``recording_log`` row."""

    recording_id: int
    channel: str
    server_ip: str
    extension: str
    start_time: float
    filename: str
    lead_id: int
    user: str
    vicidial_id: str
    end_time: Optional[float] = None
    length_in_sec: Optional[int] = None
    location: str = ""


@dataclass
class SystemFlags:
    """System-wide switches the corpus exercises."""

    api_active: bool = True  # system_settings.vdc_agent_api_active
    active_asterisk_server: bool = True  # servers.active_asterisk_server
    strict_sql_mode: bool = False  # MariaDB sql_mode STRICT_TRANS_TABLES
    allow_ip_lists: bool = False  # system_settings.allow_ip_lists
    max_execution_time: float = 30.0  # PHP max_execution_time (the stage \n\n loop)


@dataclass
class _Reply:
    status: int
    body: bytes
    hang: float = 0.0  # seconds PHP would spin before this reply (max_execution_time)


def _now_default() -> float:
    return time.time()


def _key(user: str) -> str:
    """MariaDB's *_ci collation: user names compare case-insensitively."""
    return user.lower()


def _b(text: object) -> bytes:
    return str(text).encode("utf-8")


# --- PHP / MariaDB semantics ----------------------------------------------------------------------

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


class SimulatorState:
    """Everything the simulated database holds, behind one lock (``state.lock``)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = _now_default,
        screen_delay: Optional[float] = 1.0,
        tz: Optional[tzinfo] = None,
    ) -> None:
        self.lock = threading.Lock()
        self._cond = threading.Condition(self.lock)
        self._clock = clock
        self._tz = tz or timezone.utc
        self.screen_delay = screen_delay
        self.flags = SystemFlags()
        self.users: dict[str, ApiUser] = {}
        self.live_agents: dict[str, list[LiveAgent]] = {}
        self.leads: dict[int, Lead] = {}
        self.calls: dict[str, CallLog] = {}
        self.recordings: dict[int, RecordingRow] = {}
        self.ip_lists: dict[str, set[str]] = {}
        self.group_api_ip_list: dict[str, str] = {}
        self.next_recording_id = FIRST_RECORDING_ID
        self._open: dict[str, list[int]] = {}
        self._starts: dict[str, int] = {}
        self._pending: set[str] = set()  # agents with a screen poll scheduled
        self._heap: list[tuple[float, int, str]] = []  # (due on time.monotonic(), seq, agent key)
        self._seq = 0
        self.reset()

    # -- fixtures ----------------------------------------------------------------------------

    def reset(self) -> None:
        """Back to the corpus lab fixtures (timestamps taken from the clock now)."""
        now = self._clock()
        with self._cond:
            self.flags = SystemFlags()
            self.users = {}
            for api_user in _lab_users():
                self.users[_key(api_user.user)] = api_user
            self.live_agents = {}
            for agent in _lab_agents(now):
                self.live_agents[_key(agent.user)] = [agent]
            self.leads = {n: Lead(n, "7275551212", status="INCALL" if n == 1 else "NEW") for n in range(1, 8)}
            self.calls = {
                "V1123181500000000001": CallLog(
                    call_id="V1123181500000000001",
                    custtime=42,
                    call_date=float(int(now)),
                    phone="7275551212",
                    call_type="OUTBOUND_AUTO",
                    campaign_id="TESTCAMP",
                    list_id=101,
                    status="INCALL",
                    user="1000",
                )
            }
            self.recordings = {}
            self.ip_lists = {}
            self.group_api_ip_list = {}
            self.next_recording_id = FIRST_RECORDING_ID
            self._open = {}
            self._starts = {}
            self._pending = set()
            self._heap = []
            self._cond.notify_all()

    # -- time ----------------------------------------------------------------------------------

    def now(self) -> float:
        return self._clock()

    def format_time(self, epoch: float) -> str:
        """``Y-m-d H:i:s`` in the simulator's time zone (UTC unless ``tz`` was given)."""
        return datetime.fromtimestamp(int(epoch), self._tz).strftime("%Y-%m-%d %H:%M:%S")

    def _filedate(self, epoch: float) -> str:
        return datetime.fromtimestamp(int(epoch), self._tz).strftime("%Y%m%d-%H%M%S")

    # -- helpers for tests and the demo ---------------------------------------------------------

    def user(self, name: str) -> Optional[ApiUser]:
        with self.lock:
            return self.users.get(_key(name))

    def add_user(self, api_user: ApiUser) -> ApiUser:
        with self.lock:
            self.users[_key(api_user.user)] = api_user
        return api_user

    def agent(self, user: str) -> Optional[LiveAgent]:
        """The first ``vicidial_live_agents`` row of ``user`` (the one api.php reports)."""
        with self.lock:
            rows = self.live_agents.get(_key(user))
            return rows[0] if rows else None

    def agent_rows(self, user: str) -> list[LiveAgent]:
        with self.lock:
            return list(self.live_agents.get(_key(user), ()))

    def log_in_agent(
        self,
        user: str,
        *,
        conf_exten: str,
        extension: str,
        status: str = "READY",
        server_ip: str = LAB_SERVER_IP,
        campaign_id: str = "TESTCAMP",
        lead_id: int = 0,
        callerid: str = "",
        uniqueid: str = "",
        channel: str = "",
        full_name: Optional[str] = None,
        user_group: str = "AGENTS",
        user_level: int = 1,
        pause_code: str = "",
    ) -> LiveAgent:
        """Log ``user`` in (replacing any live row); creates the ``vicidial_users`` row if needed."""
        now = self._clock()
        with self._cond:
            key = _key(user)
            if key not in self.users:
                self.users[key] = _agent_user(user, full_name or f"Agent {user}")
            agent = LiveAgent(
                user=user,
                conf_exten=conf_exten,
                extension=extension,
                status=status,
                server_ip=server_ip,
                lead_id=lead_id,
                callerid=callerid,
                uniqueid=uniqueid,
                channel=channel,
                campaign_id=campaign_id,
                full_name=full_name if full_name is not None else self.users[key].full_name,
                user_group=user_group,
                user_level=user_level,
                pause_code=pause_code,
                last_update_time=now,
                call_started_at=now,
            )
            self.live_agents[key] = [agent]
            self._cond.notify_all()
            return agent

    def add_live_agent_row(self, agent: LiveAgent) -> LiveAgent:
        """Append one more ``vicidial_live_agents`` row for ``agent.user`` (a stale duplicate)."""
        with self.lock:
            self.live_agents.setdefault(_key(agent.user), []).append(agent)
        return agent

    def log_out_agent(self, user: str) -> bool:
        with self._cond:
            key = _key(user)
            found = self.live_agents.pop(key, None) is not None
            self._cond.notify_all()
            return found

    def set_external_recording(self, user: str, value: str) -> None:
        """Write ``vicidial_live_agents.external_recording`` (all rows of ``user``) as api.php does;
        the screen emulation reacts to START*/STOP values like after an API call."""
        with self._cond:
            key = _key(user)
            if key not in self.live_agents:
                raise KeyError(f"agent {user!r} is not logged in")
            self._write_external_recording(key, value)

    def add_recording(
        self,
        *,
        user: str,
        start_time: float,
        filename: str,
        recording_id: Optional[int] = None,
        channel: str = "",
        server_ip: str = LAB_SERVER_IP,
        extension: str = "8309",
        lead_id: int = 0,
        vicidial_id: str = "",
        end_time: Optional[float] = None,
        length_in_sec: Optional[int] = None,
    ) -> RecordingRow:
        """Insert a ``recording_log`` row; open (no end_time) rows are what a STOP ends."""
        with self.lock:
            rec_id = self.next_recording_id if recording_id is None else recording_id
            self.next_recording_id = max(self.next_recording_id, rec_id + 1)
            row = RecordingRow(
                recording_id=rec_id,
                channel=channel,
                server_ip=server_ip,
                extension=extension,
                start_time=start_time,
                filename=filename,
                lead_id=lead_id,
                user=user,
                vicidial_id=vicidial_id,
                end_time=end_time,
                length_in_sec=length_in_sec,
            )
            self.recordings[rec_id] = row
            if end_time is None:
                self._open.setdefault(_key(user), []).append(rec_id)
            return row

    def end_recording(self, recording_id: int, end_time: Optional[float] = None) -> RecordingRow:
        with self.lock:
            row = self.recordings[recording_id]
            self._end(row, self._clock() if end_time is None else end_time)
            return row

    def recordings_for(self, user: str) -> list[RecordingRow]:
        with self.lock:
            return sorted(
                (r for r in self.recordings.values() if _key(r.user) == _key(user)),
                key=lambda r: r.recording_id,
            )

    def open_recordings(self, user: str) -> list[RecordingRow]:
        with self.lock:
            return [self.recordings[i] for i in self._open.get(_key(user), ())]

    def starts_for(self, agent_user: str) -> int:
        with self.lock:
            return self._starts.get(_key(agent_user), 0)

    def restrict_api_ips(self, ips: Sequence[str], *, user_group: str = "ADMIN") -> None:
        """Turn on IP lists: API users of ``user_group`` may only call from ``ips``."""
        with self.lock:
            self.flags.allow_ip_lists = True
            list_id = f"SIM_{user_group}"
            self.ip_lists[list_id] = set(ips)
            self.group_api_ip_list[user_group] = list_id

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait (bounded) until ``predicate()`` - evaluated with the lock held - is true."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(timeout=min(remaining, 0.5))
            return True

    def run_screen(self, user: Optional[str] = None) -> int:
        """Let the agent screen act now on pending START/STOP commands (all agents or one).
        Returns how many commands it carried out."""
        with self._cond:
            keys = [_key(user)] if user is not None else list(self.live_agents)
            acted = sum(1 for key in keys if self._screen_act(key))
            if acted:
                self._cond.notify_all()
            return acted

    # -- internals (lock held) -------------------------------------------------------------------

    def _write_external_recording(self, key: str, value: str) -> None:
        for row in self.live_agents.get(key, ()):
            row.external_recording = value
        # The screen looks ``screen_delay`` after a command became pending and acts on whatever the
        # column holds then (a later START/STOP written meanwhile wins, as with the real poll).
        if self.screen_delay is not None and _screen_command(value) and key not in self._pending:
            self._pending.add(key)
            self._seq += 1
            heapq.heappush(self._heap, (time.monotonic() + self.screen_delay, self._seq, key))
        self._cond.notify_all()

    def _screen_due(self) -> Optional[float]:
        """Seconds until the next scheduled screen poll (0: due now), None when none is scheduled."""
        if not self._heap:
            return None
        return max(0.0, self._heap[0][0] - time.monotonic())

    def _screen_poll_next(self) -> bool:
        _due, _seq, key = heapq.heappop(self._heap)
        self._pending.discard(key)
        return self._screen_act(key)

    def _end(self, row: RecordingRow, when: float) -> None:
        if row.end_time is None:
            row.end_time = when
            row.length_in_sec = max(0, int(when) - int(row.start_time))
        opened = self._open.get(_key(row.user))
        if opened and row.recording_id in opened:
            opened.remove(row.recording_id)

    def _screen_act(self, key: str) -> bool:
        rows = self.live_agents.get(key)
        if not rows:
            return False
        agent = rows[0]
        command = _screen_command(agent.external_recording)
        if command is None:
            return False
        now = self._clock()
        if command == "START":
            stage = agent.external_recording.encode("utf-8")[len(b"START") :]
            # The screen reads the value out of a '|'-separated, line-based poll reply and posts
            # the file name unencoded: '|', newline and '&' end it; manager_send.php then keeps
            # only [-_0-9a-zA-Z].
            stage = re.split(rb"[|\n&]", stage, maxsplit=1)[0]
            stage = _SCREEN_FILENAME_DROP.sub(b"", stage)
            rec_id = self.next_recording_id
            self.next_recording_id += 1
            row = RecordingRow(
                recording_id=rec_id,
                channel=f"Local/5{agent.conf_exten}@default",
                server_ip=agent.server_ip,
                extension="8309",
                start_time=float(int(now)),
                filename=f"{self._filedate(agent.call_started_at)}_{agent.user}{stage.decode('ascii')}",
                lead_id=agent.lead_id,
                user=agent.user,
                vicidial_id=agent.uniqueid,
            )
            self.recordings[rec_id] = row
            self._open.setdefault(key, []).append(rec_id)
            value = str(rec_id)
        else:
            for rec_id in list(self._open.get(key, ())):
                self._end(self.recordings[rec_id], float(int(now)))
            value = ""
        for live in rows:
            live.external_recording = value
        return True

    def _user_by_alt(self, alt_user: bytes) -> Optional[ApiUser]:
        wanted = alt_user.decode("latin-1").lower()
        found = sorted(
            (u for u in self.users.values() if u.custom_three and u.custom_three.lower() == wanted),
            key=lambda u: u.user,
        )
        return found[0] if found else None

    # -- user_authorization() -------------------------------------------------------------------

    def _authorize(self, user: bytes, password: bytes, now: float, client_ip: str, dry: bool) -> bytes:
        lock_over = int(now) - _LOCK_SECONDS
        row = self.users.get(_key(user.decode("latin-1")))
        good = (
            row is not None
            and row.password.lower() == password.decode("latin-1").lower()
            and row.user_level > 0
            and row.active
            and (
                row.failed_login_count < _LOCK_ATTEMPTS
                or (row.last_login_date is not None and row.last_login_date < lock_over)
            )
        )
        if not good:
            if row is not None:
                if row.failed_login_count < _LOCK_ATTEMPTS:
                    if not dry:
                        row.failed_login_count += 1
                elif row.last_login_date is None or lock_over > row.last_login_date:
                    if not dry:
                        row.last_login_date = int(now)
                        row.failed_login_count = 1
                else:
                    return b"LOCK"
            return b"BAD|0|api|" + _auth_sql(user, password, lock_over)
        assert row is not None
        if self.flags.allow_ip_lists:
            list_id = self.group_api_ip_list.get(row.user_group)
            if list_id and client_ip not in self.ip_lists.get(list_id, set()):
                return b"IPBLOCK"
        if not self.flags.active_asterisk_server:
            return b"ERRSERVERS"
        return b"GOOD"

    # -- request dispatch -----------------------------------------------------------------------

    def handle(
        self,
        path: str,
        get: Mapping[str, bytes],
        post: Mapping[str, bytes],
        client_ip: str,
        *,
        dry_run: bool = False,
    ) -> _Reply:
        """Run one request against the state (``dry_run``: compute the answer, change nothing)."""
        with self._cond:
            if path == AGENT_API_PATH:
                return self._agent_api(_Vars(get, post), client_ip, dry_run)
            if path == NON_AGENT_API_PATH:
                return self._non_agent_api(_Vars(get, post), client_ip, dry_run)
        return _Reply(404, _not_found_page(path))

    def _agent_api(self, var: _Vars, client_ip: str, dry: bool) -> _Reply:
        now = self._clock()
        user = _USER_FILTER.sub(b"", _USERPASS_STRIP.sub(b"", var("user")))
        password = _PASS_FILTER.sub(b"", _USERPASS_STRIP.sub(b"", var("pass")))
        agent_user = _USER_FILTER.sub(b"", var("agent_user"))
        function = _USER_FILTER.sub(b"", var("function"))
        value = _VALUE_FILTER.sub(b"", var("value"))
        source = _ALNUM_FILTER.sub(b"", var("source"))
        alt_user = _ALNUM_FILTER.sub(b"", var("alt_user"))
        stage = _STAGE_STRIP.sub(b"", var("stage"))
        close_window_link = _USER_FILTER.sub(b"", var("close_window_link"))

        if function == b"version":
            line = (
                f"VERSION: {API_VERSION}|BUILD: {API_BUILD}|DATE: {self.format_time(now)}|EPOCH: {int(now)}\n"
            )
            return _Reply(200, line.encode("ascii"))
        if function in _COFFEE:
            return _Reply(418, b"Coffee: %s|Error 418 I'm a teapot" % function)
        if len(source) < 2:
            return _Reply(200, b"ERROR: Invalid Source - %s\n" % source)
        auth_message = self._authorize(user, password, now, client_ip, dry)
        auth = 1 if auth_message == b"GOOD" else 0
        api_user = self.users.get(_key(user.decode("latin-1")))
        auth_api = 1 if api_user is not None and api_user.vdc_agent_api_access else 0
        if len(user) < 2 or len(password) < 2 or not auth or not auth_api:
            template = b"ERROR: Invalid Username/Password: |%s|%s|%d|%d|%s|\n"
            return _Reply(200, template % (user, password, auth, auth_api, auth_message))
        assert api_user is not None
        if not self.flags.api_active:
            return _Reply(200, b"ERROR: System API NOT ACTIVE\n")

        out = bytearray()
        exited = False
        if function == b"recording":
            outcome = self._recording(
                out=out,
                api_user=api_user,
                user=user,
                value=value,
                agent_user=agent_user,
                alt_user=alt_user,
                stage=stage,
                dry=dry,
            )
            if isinstance(outcome, _Reply):
                return outcome
            exited = outcome
        if not exited and php_compare_int(close_window_link, 0) > 0:
            out += _CLOSE_WINDOW_LINK
        return _Reply(200, bytes(out))

    def _recording(
        self,
        *,
        out: bytearray,
        api_user: ApiUser,
        user: bytes,
        value: bytes,
        agent_user: bytes,
        alt_user: bytes,
        stage: bytes,
        dry: bool,
    ) -> Union[bool, _Reply]:
        """api.php's ``recording`` block. Returns True where api.php calls ``exit``."""
        if (b"START" not in value and b"STOP" not in value and b"STATUS" not in value) or (
            len(agent_user) < 1 and len(alt_user) < 2
        ):
            out += b"ERROR: recording not valid - %s|%s\n" % (value, agent_user)
            return False
        allowed = api_user.api_allowed_functions
        if " recording " not in allowed and "ALL_FUNCTIONS" not in allowed:
            line = b"ERROR: auth USER DOES NOT HAVE PERMISSION TO USE THIS FUNCTION - %s|%s|recording|%s\n"
            out += line % (value, user, _b(api_user.user_group))
            return True
        if len(alt_user) > 1:
            by_alt = self._user_by_alt(alt_user)
            if by_alt is not None:
                agent_user = by_alt.user.encode("utf-8")
            else:
                out += b"ERROR: no user found - %s\n" % alt_user
        rows = self.live_agents.get(_key(agent_user.decode("latin-1")))
        if not rows:
            out += b"ERROR: agent_user is not logged in - %s\n" % agent_user
            return False
        agent = rows[0]
        recording_id = agent.external_recording.encode("utf-8")
        where = b"%s|%s|%s\n" % (_b(agent.server_ip), _b(agent.conf_exten), _b(agent.status))

        if value == b"STATUS":
            if recording_id not in (b"START", b"STOP") and php_compare_int(recording_id, 0) > 0:
                row = self.recordings.get(mysql_int(recording_id))
                filename, server_ip, start = (
                    (_b(row.filename), _b(row.server_ip), _b(self.format_time(row.start_time)))
                    if row is not None
                    else (b"", b"", b"")
                )
                fields = (agent_user, recording_id, filename, server_ip, start, where)
                out += b"NOTICE: recording active - %s|%s|%s|%s|%s|%s" % fields
            else:
                out += b"NOTICE: not recording - %s|||||%s" % (agent_user, where)
            return False

        if b"STOP" in value and (recording_id == b"STOP" or php_compare_int(recording_id, 1) < 0):
            out += b"ERROR: stop recording error - %s|%s||||%s" % (agent_user, recording_id, where)
            return True
        if len(stage) > 0 and b"START" in value:
            cut = cut_stage(stage)
            if cut is None:  # PHP spins until max_execution_time, then a fatal error
                return _Reply(500, b"", hang=self.flags.max_execution_time)
            value += cut
        stored = _column_value(value, self.flags.strict_sql_mode)
        if stored is None:  # mysqli throws on the strict-mode error; api.php does not catch it
            return _Reply(500, b"")
        if not dry:
            key = _key(agent_user.decode("latin-1"))
            self._write_external_recording(key, stored)
            if b"START" in value:
                self._starts[key] = self._starts.get(key, 0) + 1
        out += b"SUCCESS: recording function sent - %s|%s||||%s" % (agent_user, value, where)
        return False

    # -- non_agent_api.php ----------------------------------------------------------------------

    def _non_agent_api(self, var: _Vars, client_ip: str, dry: bool) -> _Reply:
        now = self._clock()
        user = _USER_FILTER.sub(b"", _USERPASS_STRIP.sub(b"", var("user")))
        password = _PASS_FILTER.sub(b"", _USERPASS_STRIP.sub(b"", var("pass")))
        function = _USER_FILTER.sub(b"", var("function"))
        source = _ALNUM_FILTER.sub(b"", var("source"))

        if function == b"version":
            line = (
                f"VERSION: {NON_AGENT_API_VERSION}|BUILD: {NON_AGENT_API_BUILD}|"
                f"DATE: {self.format_time(now)}|EPOCH: {int(now)}\n"
            )
            return _Reply(200, line.encode("ascii"))
        if len(source) < 2:
            return _Reply(200, b"ERROR: Invalid Source - %s\n" % source)
        auth_message = self._authorize(user, password, now, client_ip, dry)
        if len(user) < 2 or len(password) < 2 or auth_message != b"GOOD":
            return _text(b"ERROR: Invalid Username/Password: |%s|%s|%s|\n", user, password, auth_message)
        api_user = self.users[_key(user.decode("latin-1"))]
        allowed = _b(api_user.api_allowed_functions)
        if function and b" %s " % function not in allowed and b"ALL_FUNCTIONS" not in allowed:
            return _text(
                b"ERROR: auth USER DOES NOT HAVE PERMISSION TO USE THIS FUNCTION: |%s|%s|\n", user, function
            )
        query = _NonAgentQuery(
            var=var,
            user=user,
            reports=api_user.view_reports and api_user.user_level >= 7,
            delimiter={b"csv": b",", b"tab": b"\t"}.get(_ALNUM_FILTER.sub(b"", var("stage")), b"|"),
            header=_ALNUM_FILTER.sub(b"", var("header")) == b"YES",
        )
        handler = {
            b"logged_in_agents": self._logged_in_agents,
            b"agent_status": self._agent_status,
            b"callid_info": self._callid_info,
            b"lead_search": self._lead_search,
            b"recording_lookup": self._recording_lookup,
        }.get(function)
        return handler(query) if handler is not None else _Reply(200, b"")

    def _logged_in_agents(self, q: _NonAgentQuery) -> _Reply:
        if not q.reports:
            return _text(
                b"ERROR: logged_in_agents USER DOES NOT HAVE PERMISSION TO GET AGENT INFO: |%s|0|\n", q.user
            )
        campaigns = {c for c in _LIST_FILTER.sub(b"", q.var("campaigns")).split(b"|") if c}
        groups = {g for g in _LIST_FILTER.sub(b"", q.var("user_groups")).split(b"|") if g}
        sub_status = _ALNUM_FILTER.sub(b"", q.var("show_sub_status")) == b"YES"
        rows: list[list[object]] = []
        for key in sorted(self.live_agents):
            for a in self.live_agents[key]:
                if (campaigns and _b(a.campaign_id) not in campaigns) or (
                    groups and _b(a.user_group) not in groups
                ):
                    continue
                row: list[object] = [a.user, a.campaign_id, a.conf_exten, a.status, a.lead_id, a.callerid]
                row += [a.calls_today, a.full_name, a.user_group, a.user_level]
                if sub_status:
                    row += [a.pause_code, a.sub_status]
                rows.append(row)
        if not rows:
            return _Reply(200, b"ERROR: logged_in_agents NO LOGGED IN AGENTS\n")
        names = _LOGGED_IN_AGENTS_HEADER + (_SUB_STATUS_HEADER if sub_status else ())
        return q.table(names, rows)

    def _agent_status(self, q: _NonAgentQuery) -> _Reply:
        if not q.reports:
            return _text(
                b"ERROR: agent_status USER DOES NOT HAVE PERMISSION TO GET AGENT INFO: |%s|0|\n", q.user
            )
        agent_user = _USER_FILTER.sub(b"", q.var("agent_user"))
        if not agent_user:
            return _text(b"ERROR: agent_status INVALID SEARCH PARAMETERS: |%s||\n", q.user)
        rows = self.live_agents.get(_key(agent_user.decode("latin-1")))
        if not rows:
            return _text(b"ERROR: agent_status AGENT NOT LOGGED IN: %s|%s\n", q.user, agent_user)
        a = rows[0]
        lead = self.leads.get(a.lead_id) if a.lead_id > 0 else None
        row: list[object] = [a.status, a.callerid, a.lead_id, a.campaign_id, a.calls_today, a.full_name]
        row += [a.user_group, a.user_level, a.pause_code, a.sub_status]
        row += [lead.phone_number if lead else "", lead.vendor_lead_code if lead else "", a.conf_exten]
        return q.table(_AGENT_STATUS_HEADER, [row])

    def _callid_info(self, q: _NonAgentQuery) -> _Reply:
        if not q.reports:
            return _text(
                b"ERROR: callid_info USER DOES NOT HAVE PERMISSION TO GET CALL INFO: |%s|0|\n", q.user
            )
        call_id = _USER_FILTER.sub(b"", q.var("call_id"))
        if not 16 <= len(call_id) <= 40:
            return _text(b"ERROR: callid_info INVALID SEARCH PARAMETERS: |%s|%s|\n", q.user, call_id)
        call = self.calls.get(call_id.decode("ascii"))
        if call is None:
            return _text(b"ERROR: callid_info CALL NOT FOUND: %s|\n", q.user)
        if _ALNUM_FILTER.sub(b"", q.var("detail")) != b"YES":
            return q.table(_CALLID_INFO_HEADER[:2], [[call.call_id, call.custtime]])
        row: list[object] = [call.call_id, call.custtime, self.format_time(call.call_date), call.phone]
        row += [call.call_type, call.campaign_id, call.list_id, call.status, call.user]
        return q.table(_CALLID_INFO_HEADER, [row])

    def _lead_search(self, q: _NonAgentQuery) -> _Reply:
        phone = _DIGITS_FILTER.sub(b"", q.var("phone_number"))
        if len(phone) < 6:
            return _text(b"ERROR: lead_search INVALID SEARCH PARAMETERS: |%s|%s|\n", q.user, phone)
        wanted = phone.decode("ascii")
        ids = sorted(
            (lead.lead_id for lead in self.leads.values() if lead.phone_number == wanted), reverse=True
        )
        if not ids:
            return _text(b"ERROR: lead_search NO RECORDS FOUND: |%s|%s|\n", q.user, phone)
        body = q.delimiter.join((phone, _b(len(ids)), b"-".join(_b(i) for i in ids))) + b"\n"
        if q.header:  # reproduced as the real server sends it: the header fields have no delimiter
            body = b"".join(_LEAD_SEARCH_HEADER) + b"\n" + body
        return _Reply(200, body)

    def _recording_lookup(self, q: _NonAgentQuery) -> _Reply:
        if not q.reports:
            return _text(
                b"ERROR: recording_lookup USER DOES NOT HAVE PERMISSION TO GET RECORDING INFO: |%s|0|\n",
                q.user,
            )
        agent_user = _USER_FILTER.sub(b"", q.var("agent_user")).decode("latin-1")
        lead_id = _DIGITS_FILTER.sub(b"", q.var("lead_id")).decode("ascii")
        date = _DATE_FILTER.sub(b"", q.var("date")).decode("ascii")
        duration = _ALNUM_FILTER.sub(b"", q.var("duration")) == b"Y"
        if not agent_user and not lead_id:
            return _text(b"ERROR: recording_lookup INVALID SEARCH PARAMETERS: |%s|\n", q.user)
        rows: list[list[object]] = []
        for r in sorted(self.recordings.values(), key=lambda r: r.recording_id):
            if (agent_user and _key(r.user) != _key(agent_user)) or (lead_id and str(r.lead_id) != lead_id):
                continue
            if date and not self.format_time(r.start_time).startswith(date):
                continue
            row: list[object] = [self.format_time(r.start_time), r.user, r.recording_id, r.lead_id]
            if duration:  # the real server adds the column but not its header
                row.append(r.length_in_sec or 0)
            row.append(r.location)
            rows.append(row)
        if not rows:
            return _text(b"ERROR: recording_lookup NO RECORDINGS FOUND: |%s|\n", q.user)
        return q.table(_RECORDING_LOOKUP_HEADER, rows)


@dataclass(frozen=True)
class _NonAgentQuery:
    var: _Vars
    user: bytes
    reports: bool  # view_reports=1 and user_level >= 7
    delimiter: bytes  # stage=csv|tab|pipe
    header: bool  # header=YES

    def table(self, names: Sequence[bytes], rows: Sequence[Sequence[object]]) -> _Reply:
        lines = [self.delimiter.join(names)] if self.header else []
        lines += [self.delimiter.join(_b(value) for value in row) for row in rows]
        return _Reply(200, b"".join(line + b"\n" for line in lines))


_LOGGED_IN_AGENTS_HEADER = (
    b"user", b"campaign_id", b"session_id", b"status", b"lead_id", b"callerid", b"calls_today", b"full_name",
    b"user_group", b"user_level",
)  # fmt: skip
_SUB_STATUS_HEADER = (b"pause_code", b"sub_status")
_AGENT_STATUS_HEADER = (
    b"status", b"callerid", b"lead_id", b"campaign_id", b"calls_today", b"full_name", b"user_group",
    b"user_level", b"pause_code", b"real_time_sub_status", b"phone_number", b"vendor_lead_code",
    b"session_id",
)  # fmt: skip
_CALLID_INFO_HEADER = (
    b"call_id", b"custtime", b"call_date", b"phone", b"call_type", b"campaign_id", b"list_id", b"status",
    b"user",
)  # fmt: skip
_LEAD_SEARCH_HEADER = (b"search_key", b"records_found", b"lead_ids")
_RECORDING_LOOKUP_HEADER = (b"start_time", b"user", b"recording_id", b"lead_id", b"location")


def _text(template: bytes, *args: bytes) -> _Reply:
    return _Reply(200, template % args)


def _auth_sql(user: bytes, password: bytes, lock_over: int) -> bytes:
    """The login query user_authorization() runs; api.php echoes it in the BAD message."""
    return (
        b"SELECT count(*) from vicidial_users where user='%s' and pass='%s' and user_level > 0 "
        b"and active='Y' and ( (failed_login_count < %d) or (UNIX_TIMESTAMP(last_login_date) < %d) );"
        % (user, password, _LOCK_ATTEMPTS, lock_over)
    )


def _screen_command(value: str) -> Optional[str]:
    if value.startswith("START"):
        return "START"
    if value.startswith("STOP"):
        return "STOP"
    return None


def _agent_user(user: str, full_name: str) -> ApiUser:
    return ApiUser(
        user=user,
        password=f"{user}pw",
        full_name=full_name,
        user_level=1,
        vdc_agent_api_access=False,
        view_reports=False,
        api_allowed_functions="",
        user_group="AGENTS",
    )


def _lab_users() -> list[ApiUser]:
    return [
        ApiUser(API_USER, API_PASS, full_name="Admin", user_level=9),
        ApiUser("apinoaccess", "1234", user_level=8, vdc_agent_api_access=False),
        ApiUser("apilevel0", "1234", user_level=0),
        ApiUser("apiinactive", "1234", user_level=8, active=False),
        ApiUser("apionly", "1234", user_level=8, api_only_user=True, view_reports=False),
        ApiUser("apiagentlvl1", "1234", user_level=1, view_reports=False),
        ApiUser("apilimited", "1234", user_level=8, api_allowed_functions=" external_pause webserver "),
        ApiUser("apirec", "1234", user_level=8, api_allowed_functions=" recording "),
        ApiUser("apirecnospc", "1234", user_level=8, api_allowed_functions="recording"),
        _agent_user("1000", "Agent One Thousand"),
        _agent_user("1001", "Agent 1001"),
        _agent_user("1002", "Agent 1002"),
        _agent_user("1003", "Agent 1003"),
    ]


def _lab_agents(now: float) -> list[LiveAgent]:
    return [
        LiveAgent(
            user="1000",
            conf_exten="8600051",
            extension="SIP/1000",
            status="INCALL",
            lead_id=1,
            callerid="V1123181500000000001",
            uniqueid="1795459430.20",
            channel="SIP/trunk-0000002a",
            full_name="Agent One Thousand",
            last_update_time=now,
            call_started_at=now,
        ),
        LiveAgent(
            user="1001",
            conf_exten="8600052",
            extension="PJSIP/1001",
            status="PAUSED",
            full_name="Agent 1001",
            pause_code="LOGIN",
            last_update_time=now,
            call_started_at=now,
        ),
        LiveAgent(
            user="1002",
            conf_exten="8600053",
            extension="SIP/1002",
            status="READY",
            full_name="Agent 1002",
            last_update_time=now,
            call_started_at=now,
        ),
    ]


def _not_found_page(path: str) -> bytes:
    safe = path.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return (
        "<!doctype html><html><head><title>404 Not Found</title></head><body><h1>Not Found</h1>"
        f'<p>The requested resource <code class="url">{safe}</code> was not found on this server.</p>'
        "</body></html>"
    ).encode()


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


_REASONS = {
    200: "OK",
    404: "Not Found",
    418: "I'm a teapot",
    500: "Internal Server Error",
    502: "Bad Gateway",
}


# --- HTTP ---------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512

    def __init__(self, address: tuple[str, int], sim: VicidialSimulator) -> None:
        self.sim = sim
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind() resolves the host name (getfqdn): slow without DNS. Skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: object, client_address: object) -> None:
        """Client went away mid-answer and the like: nothing worth a traceback on stderr."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = _IDLE_TIMEOUT
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.sim._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.sim._track(self.connection, add=False)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the simulator records requests in ``VicidialSimulator.requests`` instead."""

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_GET
    do_HEAD = do_GET
    do_PUT = do_GET
    do_DELETE = do_GET
    do_PATCH = do_GET
    do_OPTIONS = do_GET

    # -- reading -------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        if length <= 0:
            return b""
        if length > _MAX_BODY:
            self.close_connection = True
            length = _MAX_BODY
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        data = bytearray()
        while len(data) <= _MAX_BODY:
            size_line = self.rfile.readline(1024)
            try:
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
            except ValueError:
                break
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                break
            data += self.rfile.read(size)
            self.rfile.readline(1024)
        return bytes(data)

    # -- writing -------------------------------------------------------------------------------

    def _php_headers(self, body_length: Optional[int]) -> list[tuple[str, str]]:
        sim = self.server.sim
        if not sim.keep_alive:
            self.close_connection = True
        headers: list[tuple[str, str]] = []
        if self.close_connection:
            headers.append(("Connection", "close"))
        headers += [
            ("X-Powered-By", X_POWERED_BY),
            ("Content-type", "text/html; charset=utf-8"),
            ("Cache-Control", "no-cache, must-revalidate"),
            ("Pragma", "no-cache"),
        ]
        if body_length is not None:
            headers.append(("Content-Length", str(body_length)))
        return headers

    def _head_bytes(self, status: int, headers: list[tuple[str, str]]) -> bytes:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"]
        lines += [f"{name}: {value}\r\n" for name, value in headers]
        lines.append("\r\n")
        return "".join(lines).encode("latin-1")

    def _send(self, status: int, body: bytes, *, head_only: bool = False) -> None:
        length = len(body) if self.server.sim.keep_alive else None
        data = self._head_bytes(status, self._php_headers(length))
        self.wfile.write(data if head_only else data + body)

    def _send_partial(self, status: int, body: bytes, sent: int, declared: int) -> None:
        self.close_connection = True
        headers = self._php_headers(declared)
        self.wfile.write(self._head_bytes(status, headers) + body[:sent])
        self.wfile.flush()

    # -- the request ---------------------------------------------------------------------------

    def _serve(self) -> None:
        sim = self.server.sim
        target = self.path
        if "://" in target:  # absolute-form request target
            target = "/" + target.split("://", 1)[1].partition("/")[2]
        raw_path, _, query = target.partition("?")
        path = urllib.parse.unquote(raw_path)
        body = self._read_body()
        get = php_form_decode(query.encode("latin-1"))
        post: dict[str, bytes] = {}
        content_type = self.headers.get("Content-Type", "").lower()
        if self.command == "POST" and content_type.startswith("application/x-www-form-urlencoded"):
            post = php_form_decode(body)
        fault = sim._arrive(self.command, path, get, post)
        try:
            self._answer(sim, fault, path, get, post)
        except OSError:
            self.close_connection = True

    def _answer(
        self,
        sim: VicidialSimulator,
        fault: Optional[Fault],
        path: str,
        get: Mapping[str, bytes],
        post: Mapping[str, bytes],
    ) -> None:
        kind = fault.kind if fault is not None else None
        client_ip = str(self.client_address[0])
        head_only = self.command == "HEAD"
        if fault is not None and kind == FAULT_HANG:
            sim._stopping.wait(fault.delay or _HANG_LIMIT)
            self.close_connection = True
            return
        if kind == FAULT_HTTP500_EMPTY:
            self._send(500, b"", head_only=head_only)
            return
        if kind == FAULT_EMPTY200:
            self._send(200, b"", head_only=head_only)
            return
        if kind == FAULT_GARBAGE200:
            self._send(200, _garbage(sim._rng), head_only=head_only)
            return
        if kind == FAULT_INVALID_UTF8:
            self._send(200, _invalid_utf8(sim._rng), head_only=head_only)
            return
        if kind == FAULT_PROXY502_HTML:
            self.close_connection = True
            head = self._head_bytes(
                502,
                [
                    ("Server", "nginx/1.24.0"),
                    ("Content-Type", "text/html"),
                    ("Content-Length", str(len(_PROXY_502))),
                    ("Connection", "close"),
                ],
            )
            self.wfile.write(head if head_only else head + _PROXY_502)
            return
        if kind == FAULT_LOGIN_ECHO:
            self._send(200, sim._login_echo_line(get, post), head_only=head_only)
            return
        if fault is not None and kind == FAULT_SLOW:
            sim._stopping.wait(fault.delay)

        reply = sim.state.handle(path, get, post, client_ip, dry_run=kind in _DRY_RUN_FAULTS)
        if reply.hang > 0:
            sim._stopping.wait(min(reply.hang, _HANG_LIMIT))
        body = reply.body
        script = path if path in (AGENT_API_PATH, NON_AGENT_API_PATH) else AGENT_API_PATH
        if kind == FAULT_PHP_WARNINGS:
            body = (
                _php_warning(script, "Undefined variable $x", 1234)
                + body
                + _php_warning(script, 'Undefined array key "stage"', 2345)
            )
        elif kind == FAULT_HUGE_BODY:
            body = _huge_filler() + body
        elif fault is not None and kind in _DRY_RUN_FAULTS:
            self._misbehave(sim, fault, reply.status, body or b"\n")
            return
        self._send(reply.status, body, head_only=head_only)

    def _misbehave(self, sim: VicidialSimulator, fault: Fault, status: int, body: bytes) -> None:
        if fault.kind == FAULT_STALL_BODY:
            self._send_partial(status, body, len(body) // 2, len(body))
            sim._stopping.wait(fault.delay or _HANG_LIMIT)
        elif fault.kind == FAULT_CUT_MID_LINE:
            line_end = body.find(b"\n")
            line = body if line_end < 0 else body[: line_end + 1]
            self._send_partial(status, body, len(line) // 2, len(body) + 1)
        else:  # reset_mid_body: part of the body, then RST instead of FIN
            self._send_partial(status, body, len(body) // 2, len(body))
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()


class VicidialSimulator:
    """The simulated VICIdial web server. Use as a context manager or ``start()`` / ``stop()``."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        screen_delay: Optional[float] = 1.0,
        keep_alive: bool = False,
        clock: Optional[Callable[[], float]] = None,
        tz: Optional[tzinfo] = None,
    ) -> None:
        if screen_delay is not None and screen_delay < 0:
            raise ValueError("screen_delay must be None or >= 0")
        self.host = host
        self._wanted_port = port
        self.screen_delay = screen_delay
        self.keep_alive = keep_alive
        self._clock: Callable[[], float] = clock or _now_default
        self.state = SimulatorState(clock=self._clock, screen_delay=screen_delay, tz=tz)
        self.requests: list[RequestRecord] = []
        self._faults: list[_ArmedFault] = []
        self._stopping = threading.Event()
        self._server: Optional[_Server] = None
        self._serve_thread: Optional[threading.Thread] = None
        self._screen_thread: Optional[threading.Thread] = None
        self._connections: set[socket.socket] = set()
        self._rng = random.Random()
        self.port = 0

    # -- addresses -------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return self.base_url + AGENT_API_PATH

    @property
    def non_agent_api_url(self) -> str:
        return self.base_url + NON_AGENT_API_PATH

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> VicidialSimulator:
        if self._server is not None:
            raise RuntimeError("simulator already started")
        server = _Server((self.host, self._wanted_port), self)
        self._server = server
        self.port = int(server.server_address[1])
        self._serve_thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="vicidial-sim-http", daemon=True
        )
        self._serve_thread.start()
        if self.screen_delay is not None:
            self._screen_thread = threading.Thread(
                target=self._screen_loop, name="vicidial-sim-screen", daemon=True
            )
            self._screen_thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; hung and stalled requests are released, open connections closed."""
        self._stopping.set()
        with self.state._cond:
            self.state._cond.notify_all()
        server = self._server
        if server is not None and self._serve_thread is not None and self._serve_thread.is_alive():
            server.shutdown()
        with self.state.lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if server is not None:
            server.server_close()
        for thread in (self._serve_thread, self._screen_thread):
            if thread is not None:
                thread.join(timeout=5.0)

    def __enter__(self) -> VicidialSimulator:
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()

    # -- observation -----------------------------------------------------------------------------

    def count(
        self,
        *,
        function: Optional[str] = None,
        value: Optional[str] = None,
        agent_user: Optional[str] = None,
        path: Optional[str] = None,
    ) -> int:
        """How many received requests (faulted ones included) carried these submitted values."""
        with self.state.lock:
            records = list(self.requests)
        return sum(
            1
            for r in records
            if (function is None or r.params.get("function") == function)
            and (value is None or r.params.get("value") == value)
            and (agent_user is None or r.params.get("agent_user") == agent_user)
            and (path is None or r.path == path)
        )

    def starts_for(self, agent_user: str) -> int:
        """START commands api.php accepted (SUCCESS, external_recording written) for that agent."""
        return self.state.starts_for(agent_user)

    def reset_counters(self) -> None:
        with self.state.lock:
            self.requests.clear()
            self.state._starts.clear()

    def reset(self) -> None:
        """Fixtures back to the lab state; counters and faults cleared."""
        self.clear_faults()
        self.reset_counters()
        self.state.reset()

    def run_screen(self, user: Optional[str] = None) -> int:
        """Let the agent screen carry out pending commands now (see ``SimulatorState.run_screen``)."""
        return self.state.run_screen(user)

    # -- faults ----------------------------------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        with self.state.lock:
            self._faults.append(_ArmedFault(fault))

    def clear_faults(self) -> None:
        with self.state.lock:
            self._faults.clear()

    # -- internals -------------------------------------------------------------------------------

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self.state.lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _arrive(
        self, method: str, path: str, get: Mapping[str, bytes], post: Mapping[str, bytes]
    ) -> Optional[Fault]:
        merged = {name: raw.decode("utf-8", "replace") for name, raw in post.items()}
        merged.update((name, raw.decode("utf-8", "replace")) for name, raw in get.items())
        at = self._clock()
        with self.state.lock:
            chosen: Optional[Fault] = None
            for armed in self._faults:
                if armed.fault.matches(path, merged):
                    chosen = armed.fault
                    if armed.remaining is not None:
                        armed.remaining -= 1
                        if armed.remaining <= 0:
                            self._faults.remove(armed)
                    break
            if "pass" in merged:
                merged["pass"] = _REDACTED
            self.requests.append(
                RequestRecord(method, path, merged, at, chosen.kind if chosen is not None else None)
            )
            return chosen

    def _login_echo_line(self, get: Mapping[str, bytes], post: Mapping[str, bytes]) -> bytes:
        var = _Vars(get, post)
        user = _USER_FILTER.sub(b"", _USERPASS_STRIP.sub(b"", var("user")))
        password = _PASS_FILTER.sub(b"", _USERPASS_STRIP.sub(b"", var("pass")))
        sql = _auth_sql(user, password, int(self._clock()) - _LOCK_SECONDS)
        return b"ERROR: Invalid Username/Password: |%s|%s|0|1|BAD|0|api|%s|\n" % (user, password, sql)

    def _screen_loop(self) -> None:
        state = self.state
        with state._cond:
            while not self._stopping.is_set():
                remaining = state._screen_due()
                if remaining is None or remaining > 0:
                    state._cond.wait(timeout=1.0 if remaining is None else min(remaining, 1.0))
                    continue
                if state._screen_poll_next():
                    state._cond.notify_all()


# --- command line -------------------------------------------------------------------------------


def _screen_delay_arg(text: str) -> Optional[float]:
    if text.lower() in ("none", "off", "never"):
        return None
    delay = float(text)
    if delay < 0:
        raise argparse.ArgumentTypeError("must be >= 0, or 'off'")
    return delay


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Serve the simulator until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m vicirec.testing.simulator",
        description="Simulated VICIdial agent API (agc/api.php) for tests, demos and dry runs.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8089, help="port (default 8089; 0 picks a free one)")
    parser.add_argument(
        "--screen-delay",
        type=_screen_delay_arg,
        default=1.0,
        help="seconds until the emulated agent screen acts on START/STOP ('off': never; default 1.0)",
    )
    parser.add_argument("--keep-alive", action="store_true", help="HTTP/1.1 keep-alive with Content-Length")
    args = parser.parse_args(argv)

    done = threading.Event()

    def _on_signal(signum: int, frame: Optional[FrameType]) -> None:
        done.set()

    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, _on_signal)
    sim = VicidialSimulator(
        host=args.host, port=args.port, screen_delay=args.screen_delay, keep_alive=args.keep_alive
    )
    try:
        sim.start()
        print(
            f"vicidial simulator listening on {sim.base_url} (API user {API_USER}, agents 1000-1002)",
            flush=True,
        )
        while not done.wait(timeout=1.0):
            pass
    finally:
        sim.stop()
        for restored, handler in previous.items():
            signal.signal(restored, handler)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
