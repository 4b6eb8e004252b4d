"""Waiting until the agent screen has carried out a START or STOP, at the screen's own pace.

The screen polls about once a second, so asking faster only adds PHP runs (and
``vicidial_api_log`` rows) on the web server. :class:`PollSchedule` takes one quick first look,
then one every ``call.confirm_poll_interval`` (0.5 s): about ten checks in 5 s, and the change is
seen at most one interval (plus one request) after the screen made it.

Where the checks go:

* ``lookup = "mysql"``: straight to ``vicidial_live_agents.external_recording`` (and
  ``recording_log``), read-only; api.php hears only the START or STOP itself;
* otherwise api.php: STATUS for a START (confirmed by an all-digit recording id); for a STOP
  another STOP, because STATUS cannot tell "STOP pending" from "stopped" while a second STOP can
  (refused with field 2 ``STOP`` while pending, empty once the screen has acted).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Callable, Generic, Optional, TypeVar, Union

from vicirec.agents.recording_db import AgentRecording, RecordingDatabase
from vicirec.deadline import Deadline
from vicirec.errors import VicirecError
from vicirec.vicidial.client import VicidialClient
from vicirec.vicidial.responses import Action, RecordingFields, RecordingReply, RecordingState

FIRST_LOOK_SECONDS = 0.3
#: Most one database look may take (a local read takes milliseconds): a database that hangs costs a
#: check, never the whole window, and leaves time to ask api.php instead.
LOOK_BUDGET_SECONDS = 0.5
T = TypeVar("T")


@dataclass(frozen=True)
class PollSchedule:
    """When to check, in seconds after the command: ``first``, then every ``interval``, and always at
    the window's end, so ``confirm=N`` means N seconds. A regular check less than half an interval
    before the end moves to the end instead of adding one (a 5 s window holds 10 checks, not 11)."""

    interval: float
    first: float = FIRST_LOOK_SECONDS

    def times(self, window: float) -> Iterator[float]:
        at = min(self.first, self.interval, window)
        regular = [at]
        while at + self.interval <= window:
            at += self.interval
            regular.append(at)
        if regular[-1] < window:
            if window - regular[-1] < self.interval / 2:
                regular[-1] = window
            else:
                regular.append(window)
        yield from regular


@dataclass(frozen=True)
class Polled(Generic[T]):
    """How a wait ended: the last answer (or error), whether it was the awaited one, how many
    checks it took, and when (seconds after the window opened) the awaited answer was seen."""

    last: Union[T, VicirecError, None]
    done: bool
    checks: int
    seen_after: Optional[float] = None

    @property
    def detail(self) -> str:
        return self.last.message if isinstance(self.last, VicirecError) else ""


def poll(
    ask: Callable[[], T],
    done: Callable[[T], bool],
    window: Deadline,
    schedule: PollSchedule,
    sleep: Callable[[float], None] = time.sleep,
) -> Polled[T]:
    """Ask on ``schedule`` (times counted from the window's start) until ``done`` or the window closes."""
    last: Union[T, VicirecError, None] = None
    checks = 0
    span = max(0.0, window.at - window.started)
    for at in schedule.times(span):
        pause = at - window.elapsed()
        if pause > 0:
            sleep(pause)
        checks += 1
        try:
            answer = ask()
        except VicirecError as error:
            last = error
            continue
        last = answer
        if done(answer):
            return Polled(last=answer, done=True, checks=checks, seen_after=round(window.elapsed(), 3))
    return Polled(last=last, done=False, checks=checks)


@dataclass(frozen=True)
class Confirmed:
    """A confirmation's outcome: the fields to report when ``done``."""

    done: bool
    fields: Optional[RecordingFields]
    checks: int
    after: Optional[float] = None
    detail: str = ""


Look = Union[AgentRecording, RecordingReply]


class Confirmer:
    """Confirms START and STOP through the database when there is one, else through api.php (and
    through api.php for any check the database cannot answer: an outage costs requests, not the
    confirmation)."""

    def __init__(
        self,
        client: VicidialClient,
        database: Optional[RecordingDatabase],
        schedule: PollSchedule,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.database = database
        self.schedule = schedule
        self._sleep = sleep

    def started(self, agent: str, deadline: Deadline, window: Deadline) -> Confirmed:
        def look() -> Look:
            seen = self._look(agent, deadline)
            return seen if seen is not None else self.client.recording(Action.STATUS, agent, deadline)

        return _confirmed(poll(look, lambda s: s.state is RecordingState.RECORDING, window, self.schedule,
                               self._sleep))

    def stopped(self, agent: str, deadline: Deadline, window: Deadline) -> Confirmed:
        def look() -> Look:
            seen = self._look(agent, deadline)
            if seen is None:
                return self.client.recording(Action.STOP, agent, deadline)
            if seen.state in (RecordingState.RECORDING, RecordingState.START_PENDING):
                # A START reached the column after our STOP: stop again, as a second STOP through
                # api.php would have.
                self.client.recording(Action.STOP, agent, deadline)
            return seen

        return _confirmed(poll(look, lambda s: s.state is RecordingState.IDLE, window, self.schedule,
                               self._sleep))

    def _look(self, agent: str, deadline: Deadline) -> Optional[AgentRecording]:
        if self.database is None:
            return None
        try:
            return self.database.look(agent, Deadline(deadline.cut(LOOK_BUDGET_SECONDS)))
        except VicirecError:
            return None


def _confirmed(polled: Polled[Look]) -> Confirmed:
    last = polled.last
    fields: Optional[RecordingFields] = None
    if isinstance(last, AgentRecording):
        fields = last.fields()
    elif isinstance(last, RecordingReply):
        fields = last.fields
    return Confirmed(done=polled.done, fields=fields, checks=polled.checks, after=polled.seen_after,
                     detail=polled.detail)
