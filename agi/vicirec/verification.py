"""Checking a STOP where it is carried out, not only on the agent's screen (``lookup = "mysql"``).

A confirmed STOP proves only that the screen cleared ``external_recording``. VICIdial's
StopMonitorConf then closes the ``recording_log`` row and hangs up the ``Local/5<session>@``
channel that records the agent's conference (asynchronously, through AMI). A stop that really
happened leaves both: ``end_epoch`` set on the row of the recording that was running (and on the
agent's newest row), and no ``Local/5<session>@`` channel on the Asterisk server that records.

The channels can be seen only on this server (``CHANNELS()`` through the AGI), so a recording on
another server is never verified. Not visible at all: a stereo ``MixMonitor`` or ``Monitor`` on the
customer channel, ``agi-NVA_recording.agi`` (see dialplan/README.md).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Callable, Optional

from vicirec.agents.recording_db import AgentRecording, RecordingDatabase, RecordingLogRow
from vicirec.confirmation import LOOK_BUDGET_SECONDS, PollSchedule, poll
from vicirec.deadline import Deadline
from vicirec.errors import VicirecError
from vicirec.vicidial.responses import RecordingState

SESSION = re.compile(r"^[0-9]{1,20}$")

#: Reads the channels whose names match a regular expression (``CHANNELS(regex)``); the
#: space-separated names, or None when they could not be read.
ChannelLister = Callable[[str], Optional[str]]


@dataclass(frozen=True)
class Verification:
    verified: bool
    reason: str


@dataclass(frozen=True)
class _Check:
    problem: str = ""     # "" = everything is as a real stop leaves it
    final: bool = False   # waiting cannot change the answer
    summary: str = ""


class StopVerifier:
    def __init__(
        self,
        database: RecordingDatabase,
        schedule: PollSchedule,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.database = database
        self.schedule = PollSchedule(interval=schedule.interval, first=0.0)
        self._sleep = sleep

    def before(self, agent: str, deadline: Deadline) -> Optional[AgentRecording]:
        """The look just before the STOP: which recording is running (None if it cannot be read)."""
        try:
            return self.database.look(agent, Deadline(deadline.cut(LOOK_BUDGET_SECONDS)))
        except VicirecError:
            return None

    def verify(
        self,
        agent: str,
        before: Optional[AgentRecording],
        channels: ChannelLister,
        deadline: Deadline,
        window: Deadline,
    ) -> Verification:
        running = before.recording_id if before is not None else ""

        def check() -> _Check:
            budget = Deadline(deadline.cut(LOOK_BUDGET_SECONDS))
            seen = self.database.look(agent, budget, (running,) if running else (), newest=True)
            return self._check(seen, running, channels)

        polled = poll(check, lambda c: c.final or not c.problem, window, self.schedule, self._sleep)
        last = polled.last
        if isinstance(last, _Check):
            if last.problem:
                return Verification(False, last.problem)
            return Verification(True, last.summary)
        if isinstance(last, VicirecError):
            return Verification(False, f"could not read {self.database.target}: {last.message}")
        return Verification(False, "no time left to verify")

    def _check(self, seen: AgentRecording, running: str, channels: ChannelLister) -> _Check:
        if seen.state is not RecordingState.IDLE:
            value = seen.live.external_recording
            return _Check(f"external_recording shows {value!r} again",
                          final=seen.state is RecordingState.RECORDING)
        rows: list[RecordingLogRow] = []
        if running:
            row = seen.recording(running)
            if row is None:
                return _Check(f"recording_log has no row {running}", final=True)
            rows.append(row)
        if seen.newest is not None and seen.newest not in rows:
            rows.append(seen.newest)
        still_open = [row.recording_id for row in rows if not row.ended]
        if still_open:
            return _Check(f"recording_log {', '.join(still_open)} has no end_epoch")
        here = self.database.server_ip
        if not here:
            return _Check("VARserver_ip is not set in astguiclient.conf: cannot tell where it records",
                          final=True)
        # The recording channel sits where the agent's conference is; the row of the recording seen
        # running names the server that recorded it. An older, closed row's server does not matter.
        servers = {seen.live.server_ip} | {row.server_ip for row in rows[:1] if running and row.server_ip}
        elsewhere = sorted(server for server in servers if server != here)
        if elsewhere:
            return _Check(f"it records on {', '.join(elsewhere)}, not this server ({here}): its channels "
                          "cannot be seen from here", final=True)
        session = seen.live.session_id
        if not SESSION.match(session):
            return _Check(f"the agent's session {session[:20]!r} is not a conference number", final=True)
        prefix = f"Local/5{session}@"
        listed = channels(f"^{prefix}")
        if listed is None:
            return _Check(f"could not list the {prefix} channels through the AGI")
        left = [name for name in listed.split() if name.startswith(prefix)]
        if left:
            return _Check(f"{len(left)} {prefix} channel(s) still up ({left[0]})")
        closed = ", ".join(row.recording_id for row in rows) or "none open"
        return _Check(summary=f"recording_log {closed} closed, no {prefix} channel left on {here}")
