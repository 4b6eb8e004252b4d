"""The one code path behind both transports: arguments in, a :class:`Report` out.

It never touches a socket itself: the channel is read through a :class:`ChannelView`, VICIdial is
reached through a :class:`VicidialClient`, and the caller turns the report into channel variables.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Callable, Optional

from vicirec import park
from vicirec.agents.chain import AgentDirectory, ChannelView, ResolveContext, Resolver, resolve_agent
from vicirec.agents.recording_db import AgentRecording, RecordingDatabase
from vicirec.asterisk.codec import AgiEnvironment
from vicirec.config import Config
from vicirec.confirmation import Confirmer, PollSchedule
from vicirec.deadline import Deadline
from vicirec.errors import BadRequest, ErrorCode, VicirecError
from vicirec.redaction import Redactor
from vicirec.request import CONSENT, CONSENT_NEEDS_DAEMON, Invocation, Step, is_consent, parse_arguments
from vicirec.verification import StopVerifier, Verification
from vicirec.vicidial.client import VicidialClient
from vicirec.vicidial.responses import Action, RecordingFields, RecordingState
from vicirec.vicidial.stage import sanitize_stage

# Time kept back from the deadline to write the channel variables after the last HTTP call.
REPORT_RESERVE_SECONDS = 0.2
MESSAGE_MAX_CHARS = 200

VARIABLE_NAMES = (
    "VICIREC_RESULT", "VICIREC_ERROR", "VICIREC_MESSAGE", "VICIREC_ACTION", "VICIREC_AGENT",
    "VICIREC_AGENT_SOURCE", "VICIREC_STAGE", "VICIREC_RECORDING", "VICIREC_RECORDING_ID",
    "VICIREC_FILENAME", "VICIREC_RECORDING_SERVER", "VICIREC_START_TIME", "VICIREC_AGENT_SERVER",
    "VICIREC_SESSION_ID", "VICIREC_AGENT_STATUS", "VICIREC_AGENT_DISCOVERED", "VICIREC_VERIFIED",
)
# Resolvers whose answer the dialplan chose; any other source is a discovery of vicirec's own.
EXPLICIT_SOURCES = ("argument", "channel_variable")


@dataclass(frozen=True)
class Report:
    """What one invocation did; :meth:`variables` is the dialplan contract."""

    ok: bool
    error: Optional[ErrorCode] = None
    message: str = ""
    action: str = ""
    agent: str = ""
    agent_source: str = ""
    stage: str = ""
    recording: Optional[bool] = None
    fields: Optional[RecordingFields] = None
    confirmed_after: Optional[float] = None
    verified: Optional[bool] = None  # a STOP checked where it was carried out (verification.py)

    def variables(self) -> list[tuple[str, str]]:
        fields = self.fields
        recording_id = fields.recording_id if fields else ""
        values = {
            "VICIREC_RESULT": "OK" if self.ok else "ERROR",
            "VICIREC_ERROR": self.error.value if self.error else "",
            "VICIREC_MESSAGE": shorten_message(_printable(self.message)),
            "VICIREC_ACTION": self.action,
            "VICIREC_AGENT": self.agent,
            "VICIREC_AGENT_SOURCE": self.agent_source,
            "VICIREC_STAGE": self.stage,
            "VICIREC_RECORDING": "" if self.recording is None else ("1" if self.recording else "0"),
            "VICIREC_RECORDING_ID": recording_id,
            "VICIREC_FILENAME": fields.filename if fields and recording_id else "",
            "VICIREC_RECORDING_SERVER": fields.recording_server if fields and recording_id else "",
            "VICIREC_START_TIME": fields.start_time if fields and recording_id else "",
            "VICIREC_AGENT_SERVER": fields.agent_server if fields else "",
            "VICIREC_SESSION_ID": fields.session_id if fields else "",
            "VICIREC_AGENT_STATUS": fields.agent_status if fields else "",
            "VICIREC_AGENT_DISCOVERED": "" if self.agent_source in EXPLICIT_SOURCES else self.agent,
            "VICIREC_VERIFIED": "" if self.verified is None else ("1" if self.verified else "0"),
        }
        return [(name, _token_safe(name, values[name])) for name in VARIABLE_NAMES]

    def log_fields(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "agent": self.agent,
            "agent_source": self.agent_source,
            "stage": self.stage,
            "result": "OK" if self.ok else "ERROR",
            "error": self.error.value if self.error else "",
            "message": self.message,
            "recording": self.recording,
            "recording_id": self.fields.recording_id if self.fields else "",
            "filename": self.fields.filename if self.fields and self.fields.recording_id else "",
            "confirmed_after": self.confirmed_after,
            "verified": self.verified,
        }


def shorten_message(text: str, limit: int = MESSAGE_MAX_CHARS) -> str:
    """``text`` when it fits, else cut at the last word that fits and ended with "…" (the log keeps
    the whole reason)."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:(") + "…"


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() else " " for ch in text)


def _token_safe(name: str, value: str) -> str:
    # Everything but the message is a code, id or name that dialplan compares in $[...]: keep those
    # to characters that can never break an expression or a later AGI argument.
    if name == "VICIREC_MESSAGE":
        return value
    return "".join(ch for ch in value if ch.isalnum() or ch in "_-.:/ @;")[:120]


def error_report(error: VicirecError, base: Optional[Report] = None) -> Report:
    report = base or Report(ok=False)
    return replace(report, ok=False, error=error.code, message=error.message)


class RecordingService:
    """Runs invocations; one per process AGI, one shared by all FastAGI sessions."""

    def __init__(
        self,
        config: Config,
        client: VicidialClient,
        directory: AgentDirectory,
        resolvers: Sequence[Resolver],
        *,
        redactor: Optional[Redactor] = None,
        sleep: Callable[[float], None] = time.sleep,
        on_stage_changed: Optional[Callable[[Mapping[str, str]], None]] = None,
        recordings: Optional[RecordingDatabase] = None,
    ) -> None:
        self.config = config
        self.client = client
        self.directory = directory
        self.resolvers = list(resolvers)
        self._redactor = redactor or Redactor([config.vicidial.password])
        self._sleep = sleep
        self._on_stage_changed = on_stage_changed
        schedule = PollSchedule(interval=config.call.confirm_poll_interval)
        self._confirmer = Confirmer(client, recordings, schedule, sleep)
        self._verifier = StopVerifier(recordings, schedule, sleep) if recordings is not None else None

    def with_resolvers(self, resolvers: Sequence[Resolver]) -> RecordingService:
        """The same service (client, directory, database, redactor, hooks) finding the agent with
        ``resolvers`` instead: for callers that already know the agent (a deferred START, the shell)."""
        twin = copy.copy(self)
        twin.resolvers = list(resolvers)
        return twin

    def handle(
        self,
        args: Sequence[str],
        environment: AgiEnvironment,
        channel: ChannelView,
        deadline: Deadline,
    ) -> Report:
        report = Report(ok=False)
        try:
            if is_consent(args):  # only the daemon can hold a pending consent: fail closed here
                report = replace(report, action=CONSENT)  # the audit's --action CONSENT finds the refusal
                raise BadRequest(CONSENT_NEEDS_DAEMON)
            invocation = parse_arguments(args)
            report = replace(report, action=invocation.action.value)
            if not invocation.needs_agent:
                return self._agentless(invocation, report, channel)
            context = ResolveContext(
                invocation=invocation, environment=environment, channel=channel,
                directory=self.directory, deadline=deadline, config=self.config,
            )
            resolution = resolve_agent(self.resolvers, context)
            report = replace(report, agent=resolution.agent, agent_source=resolution.source)
            return self._act(invocation, report, deadline, channel)
        except VicirecError as error:
            error.message = self._redactor.text(error.message)
            return error_report(error, report)

    # --- actions ------------------------------------------------------------------------------

    def _agentless(self, invocation: Invocation, report: Report, channel: ChannelView) -> Report:
        if invocation.action is Step.ANSWER:
            return park.answer(invocation, report)
        return park.gosub(invocation, report, channel)

    def _act(
        self, invocation: Invocation, report: Report, deadline: Deadline, channel: ChannelView
    ) -> Report:
        confirm = self.config.call.confirm if invocation.confirm is None else invocation.confirm
        work = Deadline(max(0.0, deadline.remaining() - REPORT_RESERVE_SECONDS))
        if invocation.action is Step.GRAB:
            return park.grab(self.client, report, work)
        if invocation.action is Action.STATUS:
            return self._status(report, work)
        if invocation.action is Action.START:
            return self._start(invocation, report, confirm, work)
        return self._stop(report, confirm, work, channel)

    def _status(self, report: Report, deadline: Deadline) -> Report:
        reply = self.client.recording(Action.STATUS, report.agent, deadline)
        recording = {
            RecordingState.RECORDING: True,
            RecordingState.NOT_RECORDING: False,
        }.get(reply.state)
        messages = {
            RecordingState.RECORDING: "recording",
            RecordingState.NOT_RECORDING: "not recording",
            RecordingState.START_PENDING: "a START is waiting for the agent screen",
        }
        return replace(report, ok=True, recording=recording, fields=reply.fields,
                       message=messages.get(reply.state, reply.line.reason))

    def _start(self, invocation: Invocation, report: Report, confirm: float, deadline: Deadline) -> Report:
        stage = sanitize_stage(invocation.stage)
        if stage.changed and self._on_stage_changed is not None:
            self._on_stage_changed({"requested": stage.requested, "sent": stage.sent})
        report = replace(report, stage=stage.sent)
        reply = self.client.recording(Action.START, report.agent, deadline, stage.sent)
        report = replace(report, fields=reply.fields, message="START sent")
        if confirm <= 0:
            return replace(report, ok=True, message="START sent; not waiting for confirmation")
        outcome = self._confirmer.started(report.agent, deadline, Deadline(deadline.cut(confirm)))
        if outcome.done and outcome.fields is not None:
            return replace(report, ok=True, recording=True, fields=outcome.fields,
                           confirmed_after=outcome.after,
                           message=f"recording {outcome.fields.recording_id} confirmed")
        detail = f" (last check: {outcome.detail})" if outcome.detail else ""
        return replace(report, ok=False, error=ErrorCode.NOT_CONFIRMED,
                       message=f"START sent but VICIdial showed no recording within {confirm:g} s{detail}")

    def _stop(self, report: Report, confirm: float, deadline: Deadline, channel: ChannelView) -> Report:
        verifier = self._verifier if confirm > 0 else None
        before = verifier.before(report.agent, deadline) if verifier is not None else None
        reply = self.client.recording(Action.STOP, report.agent, deadline)
        window = Deadline(deadline.cut(confirm))
        report = replace(report, fields=reply.fields)
        if reply.state is RecordingState.IDLE:
            report = replace(report, ok=False, error=ErrorCode.NOTHING_TO_STOP, recording=False,
                             message="nothing to stop: no recording is running for this agent")
            return self._verified(report, verifier=verifier, before=before, channel=channel,
                                  deadline=deadline, window=window)
        pending = reply.state is RecordingState.STOP_PENDING
        sent = "a STOP was already waiting for the agent screen" if pending else "STOP sent"
        if confirm <= 0:
            return replace(report, ok=True, message=f"{sent}; not waiting for confirmation")
        outcome = self._confirmer.stopped(report.agent, deadline, window)
        if outcome.done:
            report = replace(report, ok=True, recording=False, fields=outcome.fields or report.fields,
                             confirmed_after=outcome.after, message="recording stopped (confirmed)")
            return self._verified(report, verifier=verifier, before=before, channel=channel,
                                  deadline=deadline, window=window)
        detail = f" (last check: {outcome.detail})" if outcome.detail else ""
        return replace(report, ok=False, error=ErrorCode.NOT_CONFIRMED,
                       message=f"{sent} but VICIdial did not confirm within {confirm:g} s{detail}")

    def _verified(
        self,
        report: Report,
        *,
        verifier: Optional[StopVerifier],
        before: Optional[AgentRecording],
        channel: ChannelView,
        deadline: Deadline,
        window: Deadline,
    ) -> Report:
        """The STOP (or "nothing to stop") checked where it is carried out, when it can be."""
        if verifier is None:
            return report
        check: Verification = verifier.verify(
            report.agent, before, lambda regex: _channels(channel, regex), deadline,
            Deadline(max(window.remaining(), 0.0)),
        )
        outcome = "verified" if check.verified else "NOT verified"
        return replace(report, verified=check.verified,
                       message=f"{report.message}; {outcome}: {check.reason}")


_CHANNELS_MARK = "VR:"


def _channels(channel: ChannelView, regex: str) -> Optional[str]:
    """``CHANNELS(regex)`` on this server; None when the AGI could not read it (a failed GET FULL
    VARIABLE reads as empty, which must not pass for "no channel")."""
    try:
        text = channel.expression(f"{_CHANNELS_MARK}${{CHANNELS({regex})}}")
    except VicirecError:
        return None
    return text[len(_CHANNELS_MARK):] if text.startswith(_CHANNELS_MARK) else None
