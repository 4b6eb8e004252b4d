"""What the agent screen did, read from VICIdial's database (``lookup = "mysql"``).

``vicidial_live_agents.external_recording`` is the column api.php writes and the agent screen
answers in (``START…`` → recording id → ``STOP`` → ``''``), and ``recording_log`` is where the
screen opens and closes the recording (``end_epoch``). Reading both directly confirms a START or
STOP without asking api.php again and again (each ask is a PHP run and a ``vicidial_api_log`` row),
and shows what STATUS cannot: a pending STOP, and whether the recording was really closed.

It reuses the mysql directory's connection (astguiclient.conf, read-only transaction, deadline
watchdog, error mapping); every statement is a fixed, parameterised ``SELECT``. Turning rows into
a state (:func:`column_state`) is pure.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from vicirec.agents.sql_values import column_text
from vicirec.deadline import Deadline
from vicirec.errors import AgentNotLoggedIn
from vicirec.vicidial.responses import RecordingFields, RecordingState

if TYPE_CHECKING:  # imported for real only with lookup = "mysql" (PyMySQL stays unloaded otherwise)
    from vicirec.agents.mysql_directory import MysqlDirectory

MAX_AGENT_ROWS = 5
SELECT_AGENT_RECORDING = (
    "SELECT external_recording, server_ip, conf_exten, status FROM vicidial_live_agents "
    "WHERE user = %s ORDER BY live_agent_id LIMIT %s"
)
SELECT_RECORDING_BY_ID = (
    "SELECT recording_id, server_ip, start_time, end_epoch, filename, channel FROM recording_log "
    "WHERE recording_id = %s"
)
SELECT_NEWEST_RECORDING = (
    "SELECT recording_id, server_ip, start_time, end_epoch, filename, channel FROM recording_log "
    "WHERE user = %s ORDER BY recording_id DESC LIMIT 1"
)


@dataclass(frozen=True)
class LiveRecordingRow:
    """The agent's ``vicidial_live_agents`` row, as far as recording goes."""

    external_recording: str
    server_ip: str
    session_id: str  # conf_exten
    status: str


@dataclass(frozen=True)
class RecordingLogRow:
    recording_id: str
    server_ip: str
    start_time: str
    end_epoch: Optional[int]
    filename: str
    channel: str

    @property
    def ended(self) -> bool:
        return self.end_epoch is not None and self.end_epoch > 0


@dataclass(frozen=True)
class AgentRecording:
    """One look at the database: the agent's row and the ``recording_log`` rows asked for."""

    agent: str
    live: LiveRecordingRow
    recordings: tuple[RecordingLogRow, ...] = ()
    newest: Optional[RecordingLogRow] = None

    @property
    def state(self) -> RecordingState:
        return column_state(self.live.external_recording)

    @property
    def recording_id(self) -> str:
        value = self.live.external_recording
        return value if value.isdigit() else ""

    def recording(self, recording_id: str) -> Optional[RecordingLogRow]:
        return next((row for row in self.recordings if row.recording_id == recording_id), None)

    def fields(self) -> RecordingFields:
        """The eight fields api.php's STATUS would report for this state."""
        live = self.live
        row = self.recording(self.recording_id) if self.recording_id else None
        return RecordingFields(
            agent=self.agent, value=live.external_recording,
            filename=row.filename if row else "", recording_server=row.server_ip if row else "",
            start_time=row.start_time if row else "", agent_server=live.server_ip,
            session_id=live.session_id, agent_status=live.status,
        )


def column_state(value: str) -> RecordingState:
    """``external_recording`` → state: a recording id, a START or STOP the screen has not carried
    out yet, or (empty or anything else) nothing for the screen to do."""
    if value.isdigit() and int(value) > 0:
        return RecordingState.RECORDING
    if "START" in value:
        return RecordingState.START_PENDING
    if value == "STOP":
        return RecordingState.STOP_PENDING
    return RecordingState.IDLE


class RecordingDatabase:
    """Read-only views of ``external_recording`` and ``recording_log`` (thread-safe: every look
    opens its own connection through the mysql directory)."""

    def __init__(self, directory: MysqlDirectory) -> None:
        self._directory = directory

    @property
    def server_ip(self) -> str:
        """This Asterisk server, as VICIdial names it (``VARserver_ip``)."""
        return self._directory.server_ip

    @property
    def target(self) -> str:
        return self._directory.target

    def look(self, agent: str, deadline: Deadline, recording_ids: tuple[str, ...] = (),
             *, newest: bool = False) -> AgentRecording:
        """The agent's column, the ``recording_log`` rows of the column's id and of
        ``recording_ids``, and (``newest``) the agent's newest ``recording_log`` row."""
        directory = self._directory
        with directory.read_only_cursor(deadline) as cursor:
            directory.run(cursor.execute, deadline, SELECT_AGENT_RECORDING, (agent, MAX_AGENT_ROWS))
            rows = directory.run(cursor.fetchall, deadline)
            if not rows:
                raise AgentNotLoggedIn(f"agent {agent} is not logged in ({self.target})")
            live = _live_row(rows[0])
            wanted = [i for i in dict.fromkeys((*recording_ids, _digits(live.external_recording))) if i]
            found: list[RecordingLogRow] = []
            for recording_id in wanted:
                directory.run(cursor.execute, deadline, SELECT_RECORDING_BY_ID, (int(recording_id),))
                found += [_log_row(row) for row in directory.run(cursor.fetchall, deadline)]
            latest: Optional[RecordingLogRow] = None
            if newest:
                directory.run(cursor.execute, deadline, SELECT_NEWEST_RECORDING, (agent,))
                latest_rows = directory.run(cursor.fetchall, deadline)
                latest = _log_row(latest_rows[0]) if latest_rows else None
        return AgentRecording(agent=agent, live=live, recordings=tuple(found), newest=latest)


def recording_database(directory: object) -> Optional[RecordingDatabase]:
    """The reader over the configured directory when it is the mysql one (cached or not)."""
    from vicirec.agents.mysql_directory import MysqlDirectory

    inner = getattr(directory, "inner", directory)
    return RecordingDatabase(inner) if isinstance(inner, MysqlDirectory) else None


def _digits(value: str) -> str:
    return value if value.isdigit() and int(value) > 0 else ""


def _live_row(row: Any) -> LiveRecordingRow:
    external_recording, server_ip, conf_exten, status = row
    return LiveRecordingRow(external_recording=column_text(external_recording),
                            server_ip=column_text(server_ip), session_id=column_text(conf_exten),
                            status=column_text(status))


def _log_row(row: Any) -> RecordingLogRow:
    recording_id, server_ip, start_time, end_epoch, filename, channel = row
    return RecordingLogRow(
        recording_id=column_text(recording_id), server_ip=column_text(server_ip),
        start_time=_time(start_time),
        end_epoch=int(end_epoch) if end_epoch is not None else None, filename=column_text(filename),
        channel=column_text(channel),
    )


def _time(value: Any) -> str:
    if isinstance(value, datetime.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return column_text(value)

