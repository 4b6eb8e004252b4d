"""The simulated VICIdial database and api.php's logic over it: :class:`SimulatorState`.

One lock guards every table (users, live agents, leads, calls, recordings). ``handle()`` answers
an agent-API or non-agent-API request with api.php's checks in api.php's order; the background
"agent screen" (``_screen_*``) plays the agent's browser acting on ``external_recording``.
"""

from __future__ import annotations

import heapq
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from typing import Callable, Optional, Union

from vicirec.testing.simulator.fixtures import _agent_user, _lab_agents, _lab_users
from vicirec.testing.simulator.php import (
    _ALNUM_FILTER,
    _CLOSE_WINDOW_LINK,
    _COFFEE,
    _DATE_FILTER,
    _DIGITS_FILTER,
    _LIST_FILTER,
    _PASS_FILTER,
    _SCREEN_FILENAME_DROP,
    _STAGE_STRIP,
    _USER_FILTER,
    _USERPASS_STRIP,
    _VALUE_FILTER,
    _b,
    _column_value,
    _Vars,
    cut_stage,
    mysql_int,
    php_compare_int,
)
from vicirec.testing.simulator.records import (
    LAB_SERVER_IP,
    ApiUser,
    CallLog,
    Lead,
    LiveAgent,
    RecordingRow,
    SystemFlags,
)

API_VERSION = "2.14-81"
API_BUILD = "240429-2220"
#: Not in the corpus; the non-agent API has its own version line.
NON_AGENT_API_VERSION = "2.14-943"
NON_AGENT_API_BUILD = "240524-1720"
AGENT_API_PATH = "/agc/api.php"
NON_AGENT_API_PATH = "/vicidial/non_agent_api.php"
FIRST_RECORDING_ID = 121242
_LOCK_SECONDS = 900  # user_authorization(): a failed-login lock lasts 15 minutes
_LOCK_ATTEMPTS = 10
#: api.php's park_call values, each matched as a substring of what was sent (corpus K07).
_PARK_CALL_WORDS = (b"PARK_IVR_CUSTOMER", b"GRAB_IVR_CUSTOMER", b"PARK_CUSTOMER", b"GRAB_CUSTOMER",
                    b"PARK_XFER", b"GRAB_XFER")


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
        #: Called as ``listener(agent key, "api" | "screen")`` with the lock held (read the fields
        #: directly) after api.php or the screen wrote an agent's ``external_recording``: tests mirror
        #: the state into a real database or a fake Asterisk's channel list with it.
        self.listeners: list[Callable[[str, str], None]] = []
        #: agent key -> ``time.monotonic()`` when the screen last carried out a START or STOP.
        self.screen_acted: dict[str, float] = {}
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
            self.screen_acted = {}
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
        self._notify(key, "api")
        self._cond.notify_all()

    def _notify(self, key: str, cause: str) -> None:
        for listener in list(self.listeners):
            listener(key, cause)

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
        self.screen_acted[key] = time.monotonic()
        self._notify(key, "screen")
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
        elif function == b"park_call":
            exited = self._park_call(out=out, api_user=api_user, user=user, value=value,
                                     agent_user=agent_user, dry=dry)
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

    def _park_call(
        self, *, out: bytearray, api_user: ApiUser, user: bytes, value: bytes, agent_user: bytes, dry: bool
    ) -> bool:
        """api.php's ``park_call`` block (corpus K01-K09): the value is matched as a substring and
        written as sent into ``external_park``. Returns True where api.php calls ``exit``."""
        if not any(word in value for word in _PARK_CALL_WORDS) or len(agent_user) < 1:
            out += b"ERROR: park_call not valid - %s|%s\n" % (value, agent_user)
            return False
        allowed = api_user.api_allowed_functions
        if " park_call " not in allowed and "ALL_FUNCTIONS" not in allowed:
            line = b"ERROR: auth USER DOES NOT HAVE PERMISSION TO USE THIS FUNCTION - %s|%s|park_call|%s\n"
            out += line % (value, user, _b(api_user.user_group))
            return True
        rows = self.live_agents.get(_key(agent_user.decode("latin-1")))
        if not rows:
            out += b"ERROR: agent_user is not logged in - %s\n" % agent_user
            return False
        if rows[0].lead_id < 1:
            out += b"ERROR: agent_user does not have a lead on their screen - %s\n" % agent_user
            return False
        if not dry:
            for row in rows:
                row.external_park = value.decode("latin-1")
            self._cond.notify_all()
        out += b"SUCCESS: park_call function set - %s|%s\n" % (value, agent_user)
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


def _not_found_page(path: str) -> bytes:
    safe = path.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return (
        "<!doctype html><html><head><title>404 Not Found</title></head><body><h1>Not Found</h1>"
        f'<p>The requested resource <code class="url">{safe}</code> was not found on this server.</p>'
        "</body></html>"
    ).encode()
