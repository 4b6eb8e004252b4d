"""What api.php and non_agent_api.php answer, as typed values. Pure: bytes in, values out.

api.php answers every outcome with HTTP 200 and one line ``SUCCESS: …``, ``NOTICE: …`` or
``ERROR: …`` (PHP warnings may surround it), so the line is searched for, never assumed to be the
first. Recording lines carry 8 pipe fields; a stage holding pipes shifts them, so the fields are
read from both ends. Every error raised here carries the result line with the echoed password and
SQL already masked.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import NoReturn, Optional

from vicirec.errors import (
    AgentNotLoggedIn,
    AuthFailed,
    BadResponse,
    NoAgent,
    NothingToStop,
    PermissionDenied,
    RequestRejected,
    SourceRejected,
    VicidialError,
    VicirecError,
)
from vicirec.redaction import redact_shapes

_RESULT_LINE = re.compile(rb"^(SUCCESS|NOTICE|ERROR): ?(.*?)\r?$", re.MULTILINE)
_RECORDING_FIELD_COUNT = 8
_NO_AGENTS = "NO LOGGED IN AGENTS"


class Outcome(str, enum.Enum):
    SUCCESS = "SUCCESS"
    NOTICE = "NOTICE"
    ERROR = "ERROR"


class Action(str, enum.Enum):
    START = "START"
    STOP = "STOP"
    STATUS = "STATUS"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class ResultLine:
    """``<outcome>: <reason> - <detail>`` as found in the body."""

    outcome: Outcome
    reason: str
    detail: str
    raw: str  # redacted


@dataclass(frozen=True)
class RecordingFields:
    """The 8 pipe fields of a recording answer (``value`` is the recording id when numeric)."""

    agent: str
    value: str
    filename: str
    recording_server: str
    start_time: str
    agent_server: str
    session_id: str
    agent_status: str

    @property
    def recording_id(self) -> str:
        """The numeric recording id, or ``""`` while only a command (START…/STOP) is stored."""
        return self.value if self.value.isdigit() else ""


class RecordingState(str, enum.Enum):
    RECORDING = "RECORDING"          # STATUS shows a numeric recording id
    START_PENDING = "START_PENDING"  # a START is stored, the agent screen has not acted yet
    NOT_RECORDING = "NOT_RECORDING"  # VICIdial says nothing is recording
    COMMAND_SENT = "COMMAND_SENT"    # START or STOP accepted (SUCCESS)
    STOP_PENDING = "STOP_PENDING"    # a STOP is stored and not yet acted on
    IDLE = "IDLE"                    # a STOP found nothing to stop: the screen has acted


@dataclass(frozen=True)
class RecordingReply:
    """A recording answer that is not an error for the action that asked for it."""

    line: ResultLine
    fields: RecordingFields
    state: RecordingState


#: The values agent API ``park_call`` knows. api.php matches them as substrings (corpus K07) and
#: writes what it got into ``external_park``: vicirec sends exactly one of these.
PARK_CALL_VALUES = (
    "PARK_IVR_CUSTOMER", "GRAB_IVR_CUSTOMER", "PARK_CUSTOMER", "GRAB_CUSTOMER", "PARK_XFER", "GRAB_XFER",
)


@dataclass(frozen=True)
class ParkCallReply:
    """``SUCCESS: park_call function set - <value>|<agent>``: written for the agent screen to act on."""

    line: ResultLine
    value: str
    agent: str


@dataclass(frozen=True)
class LoggedInAgent:
    """One line of ``logged_in_agents``."""

    user: str
    campaign_id: str
    session_id: str
    status: str
    lead_id: str
    callerid: str
    calls_today: str
    full_name: str
    user_group: str
    user_level: str


@dataclass(frozen=True)
class AgentStatus:
    """The answer of ``agent_status`` for one agent."""

    status: str
    callerid: str
    lead_id: str
    campaign_id: str
    session_id: str


def find_result_line(body: bytes) -> ResultLine:
    """The first ``SUCCESS|NOTICE|ERROR:`` line anywhere in the body."""
    match = _RESULT_LINE.search(body)
    if match is None:
        raise BadResponse(_describe_unexpected(body), raw=redact_shapes(_preview(body)))
    outcome = Outcome(match.group(1).decode("ascii"))
    text = match.group(2).decode("utf-8", "replace")
    reason, sep, detail = text.partition(" - ")
    if not sep:
        reason, sep, detail = text.partition(": ")
    raw = redact_shapes(match.group(0).decode("utf-8", "replace"))
    return ResultLine(outcome=outcome, reason=reason.strip(), detail=detail, raw=raw)


def parse_recording_fields(detail: str) -> Optional[RecordingFields]:
    parts = detail.split("|")
    if len(parts) < _RECORDING_FIELD_COUNT:
        return None
    tail = parts[-6:]
    return RecordingFields(
        agent=parts[0],
        value="|".join(parts[1:-6]),
        filename=tail[0],
        recording_server=tail[1],
        start_time=tail[2],
        agent_server=tail[3],
        session_id=tail[4],
        agent_status=tail[5],
    )


def parse_recording_reply(body: bytes, action: Action) -> RecordingReply:
    """The answer to ``function=recording`` for ``action``; raises the matching error otherwise."""
    line = find_result_line(body)
    if line.outcome is Outcome.ERROR:
        if action is Action.STOP and line.reason == "stop recording error":
            return parse_stop_error(line)
        raise_for_error(line)
    fields = parse_recording_fields(line.detail)
    if fields is None:
        raise BadResponse(f"{line.outcome.value} line without the 8 recording fields", raw=line.raw)
    if action is Action.STATUS:
        if line.outcome is not Outcome.NOTICE:
            raise BadResponse("STATUS was answered with a write confirmation", raw=line.raw)
        if line.reason == "not recording":
            state = RecordingState.NOT_RECORDING
        elif line.reason == "recording active":
            state = RecordingState.RECORDING if fields.recording_id else RecordingState.START_PENDING
        else:
            raise BadResponse(f"unknown STATUS answer {line.reason!r}", raw=line.raw)
    else:
        if line.outcome is not Outcome.SUCCESS or line.reason != "recording function sent":
            raise BadResponse(f"{action.value} was not accepted: {line.reason!r}", raw=line.raw)
        state = RecordingState.COMMAND_SENT
    return RecordingReply(line=line, fields=fields, state=state)


def parse_park_call_reply(body: bytes) -> ParkCallReply:
    """The answer to ``function=park_call``; raises the matching error otherwise."""
    line = find_result_line(body)
    if line.outcome is Outcome.ERROR:
        raise_for_error(line)
    if line.outcome is not Outcome.SUCCESS or line.reason != "park_call function set":
        raise BadResponse(f"park_call was not accepted: {line.reason!r}", raw=line.raw)
    value, sep, agent = line.detail.rpartition("|")
    if not sep or not value:
        raise BadResponse("park_call answer without its value|agent fields", raw=line.raw)
    return ParkCallReply(line=line, value=value, agent=agent)


def parse_stop_error(line: ResultLine) -> RecordingReply:
    """``stop recording error``: nothing to stop, or a STOP already waiting for the agent screen."""
    fields = parse_recording_fields(line.detail)
    if fields is None:
        raise BadResponse("stop error without the 8 recording fields", raw=line.raw)
    if fields.value == "":
        return RecordingReply(line=line, fields=fields, state=RecordingState.IDLE)
    if fields.value == "STOP":
        return RecordingReply(line=line, fields=fields, state=RecordingState.STOP_PENDING)
    raise NothingToStop(f"VICIdial refused the stop (stored value {fields.value!r})", raw=line.raw)


def raise_for_error(line: ResultLine) -> NoReturn:
    """Map an ``ERROR:`` line of either API to the one exception (and code) it means."""
    reason = line.reason
    error: VicirecError
    if reason == "stop recording error":
        error = NothingToStop("nothing to stop: no recording or stop pending for this agent", raw=line.raw)
    elif reason == "agent_user is not logged in" or "AGENT NOT LOGGED IN" in reason:
        error = AgentNotLoggedIn("the agent is not logged in to VICIdial", raw=line.raw)
    elif reason == "Invalid Username/Password":
        error = _login_error(line)
    elif reason.startswith("auth USER DOES NOT HAVE PERMISSION") or "DOES NOT HAVE PERMISSION" in reason:
        error = PermissionDenied("the API user may not use this function", raw=line.raw)
    elif reason == "System API NOT ACTIVE":
        error = PermissionDenied("the agent API is switched off in VICIdial's system settings", raw=line.raw)
    elif reason == "Invalid Source":
        error = SourceRejected("VICIdial rejected the configured source", raw=line.raw)
    elif reason == "recording not valid":
        error = RequestRejected("VICIdial rejected the recording request as invalid", raw=line.raw)
    elif reason == "park_call not valid":
        error = RequestRejected("VICIdial rejected the park_call request as invalid", raw=line.raw)
    elif reason == "agent_user does not have a lead on their screen":
        error = NoAgent("the agent has no call on screen (VICIdial: no lead on their screen)", raw=line.raw)
    elif "CALL NOT FOUND" in reason:
        error = NoAgent("VICIdial knows no such call id", raw=line.raw)
    else:
        error = BadResponse(f"unknown VICIdial error {reason!r}", raw=line.raw)
    raise error


def _login_error(line: ResultLine) -> VicidialError:
    # |user|pass|n|n|MSG|...: MSG tells a wrong password from a lock-out or a user without API access.
    fields = line.detail.split("|")
    message_code = fields[5] if len(fields) > 5 else ""
    if message_code == "GOOD":
        return PermissionDenied("the API user has no agent API access (vdc_agent_api_access)", raw=line.raw)
    reasons = {
        "LOCK": "the API user is locked out after too many failed logins (15 minutes)",
        "ERRSERVERS": "VICIdial has no active Asterisk server, so it refuses API logins",
        "IPBLOCK": "VICIdial does not accept API logins from this address",
    }
    text = reasons.get(message_code, "VICIdial rejected the API user or password")
    return AuthFailed(text + "; not retried: ten failures lock the user", raw=line.raw)


# --- non_agent_api.php ------------------------------------------------------------------------


def parse_logged_in_agents(body: bytes) -> list[LoggedInAgent]:
    """``function=logged_in_agents`` in its default pipe format (no header)."""
    if _RESULT_LINE.search(body):
        result = find_result_line(body)
        if result.outcome is Outcome.ERROR and _NO_AGENTS in result.reason:
            return []  # an empty list comes as an error line, not as an empty body
        raise_for_error(result)
    agents: list[LoggedInAgent] = []
    for raw_line in body.split(b"\n"):
        line = raw_line.rstrip(b"\r").decode("utf-8", "replace")
        if not line:
            continue
        parts = line.split("|")
        if len(parts) < 10:
            raise BadResponse("logged_in_agents line with fewer than 10 fields", raw=redact_shapes(line))
        agents.append(LoggedInAgent(*parts[:10]))
    return agents


def parse_agent_status(body: bytes) -> AgentStatus:
    """``function=agent_status`` in its default pipe format (no header)."""
    if _RESULT_LINE.search(body):
        raise_for_error(find_result_line(body))
    lines = [line for line in body.decode("utf-8", "replace").splitlines() if line]
    if len(lines) != 1:
        raise BadResponse("agent_status answer is not one line", raw=redact_shapes(_preview(body)))
    parts = lines[0].split("|")
    if len(parts) < 13:
        raise BadResponse("agent_status line with fewer than 13 fields", raw=redact_shapes(lines[0]))
    return AgentStatus(status=parts[0], callerid=parts[1], lead_id=parts[2], campaign_id=parts[3],
                       session_id=parts[12])


def _describe_unexpected(body: bytes) -> str:
    if not body.strip():
        return "VICIdial sent an empty answer"
    if b"<html" in body[:2048].lower() or b"<!doctype" in body[:2048].lower():
        return "VICIdial sent an HTML page instead of a result line"
    return "VICIdial's answer holds no SUCCESS/NOTICE/ERROR line"


def _preview(body: bytes) -> str:
    # Not cut here: a cut made before the password is masked could leave a prefix of it behind.
    # The HTTP edge masks the literal password, then cuts.
    return body.decode("utf-8", "replace")

