"""The simulated VICIdial's state where a telephony server sees it: in a real MariaDB
(``vicidial_live_agents.external_recording``, ``recording_log``) and, for the agents on this
server, as ``Local/5<session>@default-…;1/;2`` channels in a fake Asterisk channel's ``others``
(the channel that records the agent's conference while a recording runs), or as real
``Local/5<session>@`` channels in a real Asterisk (``recordings``: tests/real_asterisk.py's
``AsteriskRecordings``).

Hooked on the simulator's listeners, so the database changes in the same instant as the simulated
api.php and agent screen change the column. Like VICIdial's StopMonitorConf, the recording channel
is hung up ``hangup_delay`` seconds after the database says stopped (``None``: never, a stop that
failed on the Asterisk side); ``close_rows=False`` leaves ``recording_log`` rows open (a StopMonitorConf
that failed half-way).
"""

from __future__ import annotations

import datetime
import threading
from typing import Any, Optional, Protocol

from mariadb_server import MariaDb
from vicirec.testing.fake_asterisk import FakeChannel
from vicirec.testing.simulator import VicidialSimulator

AGENT_FIELDS = ("user", "server_ip", "conf_exten", "extension", "status", "lead_id", "campaign_id",
                "uniqueid", "callerid", "channel", "external_recording")


class RecordingChannels(Protocol):
    """Where a recording's ``Local/5<session>@`` channel pair lives while the recording runs."""

    def is_up(self, session: str, recording_id: int) -> bool: ...

    def up(self, session: str, recording_id: int) -> None: ...

    def down(self, session: str, recording_id: int) -> None: ...


class FakeChannelRecordings:
    """The pair as ``Local/5<session>@default-<id>;1/;2`` in a fake channel's ``others``."""

    def __init__(self, channel: FakeChannel) -> None:
        self.channel = channel

    @staticmethod
    def names(session: str, recording_id: int) -> tuple[str, str]:
        base = f"Local/5{session}@default-{recording_id:08x}"
        return f"{base};1", f"{base};2"

    def is_up(self, session: str, recording_id: int) -> bool:
        return self.names(session, recording_id)[0] in self.channel.others

    def up(self, session: str, recording_id: int) -> None:
        added = {name: {} for name in self.names(session, recording_id)}
        self.channel.others = {**self.channel.others, **added}

    def down(self, session: str, recording_id: int) -> None:
        names = self.names(session, recording_id)
        self.channel.others = {k: v for k, v in self.channel.others.items() if k not in names}


class SimulatorMirror:
    def __init__(
        self,
        database: MariaDb,
        sim: VicidialSimulator,
        *,
        channel: Optional[FakeChannel] = None,
        recordings: Optional[RecordingChannels] = None,
        server_ip: str = "10.10.10.15",
        hangup_delay: Optional[float] = 0.2,
        close_rows: bool = True,
        seed_agents: bool = True,
    ) -> None:
        self.database = database
        self.sim = sim
        self.recordings = recordings or (FakeChannelRecordings(channel) if channel is not None else None)
        self.server_ip = server_ip
        self.hangup_delay = hangup_delay
        self.close_rows = close_rows
        self.seed_agents = seed_agents  # False: the test writes vicidial_live_agents' rows itself
        self._connection: Any = None
        self._timers: list[threading.Timer] = []

    def __enter__(self) -> SimulatorMirror:
        self._connection = self.database.admin()
        state = self.sim.state
        with state.lock:
            if self.seed_agents:
                agents = [agent for rows in state.live_agents.values() for agent in rows]
                self.database.replace_agents([{name: getattr(a, name) for name in AGENT_FIELDS}
                                              for a in agents])
            self.database.clear_recordings()
            for key in list(state.live_agents):
                self._changed(key, "sync")
            state.listeners.append(self._changed)
        return self

    def __exit__(self, *exc: object) -> None:
        with self.sim.state.lock:
            if self._changed in self.sim.state.listeners:
                self.sim.state.listeners.remove(self._changed)
        for timer in self._timers:
            timer.cancel()
        self._connection.close()

    # called with the simulator's lock held
    def _changed(self, key: str, cause: str) -> None:
        state = self.sim.state
        rows = state.live_agents.get(key, [])
        if not rows:
            return
        agent = rows[0]
        with self._connection.cursor() as cursor:
            cursor.execute("UPDATE vicidial_live_agents SET external_recording = %s WHERE user = %s",
                           (agent.external_recording, agent.user))
            for recording in state.recordings.values():
                if recording.user.lower() != key:
                    continue
                ended = recording.end_time is not None and self.close_rows
                cursor.execute(
                    "REPLACE INTO recording_log (recording_id, channel, server_ip, extension, start_time, "
                    "start_epoch, end_time, end_epoch, length_in_sec, filename, lead_id, user, vicidial_id) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (recording.recording_id, recording.channel, recording.server_ip, recording.extension,
                     _datetime(recording.start_time), int(recording.start_time),
                     _datetime(recording.end_time) if ended else None,
                     int(recording.end_time) if ended and recording.end_time is not None else None,
                     recording.length_in_sec if ended else None, recording.filename, recording.lead_id,
                     recording.user, recording.vicidial_id),
                )
                self._channels(recording.recording_id, agent.conf_exten, recording.server_ip,
                               running=recording.end_time is None)

    def _channels(self, recording_id: int, session: str, server_ip: str, *, running: bool) -> None:
        recordings = self.recordings
        if recordings is None or server_ip != self.server_ip:
            return
        if running:
            if not recordings.is_up(session, recording_id):
                recordings.up(session, recording_id)
            return
        if not recordings.is_up(session, recording_id) or self.hangup_delay is None:
            return
        timer = threading.Timer(self.hangup_delay, recordings.down, (session, recording_id))
        timer.daemon = True
        self._timers.append(timer)
        timer.start()


def _datetime(epoch: Optional[float]) -> Optional[datetime.datetime]:
    if epoch is None:
        return None
    return datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc).replace(tzinfo=None)
