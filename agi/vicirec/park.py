"""The park IVR's steps (:class:`~vicirec.request.Step`): GRAB, ANSWER and GOSUB.

VICIdial's park_CID.agi runs a campaign's "IVR Park Call AGI" as a nested ``EXEC AGI`` on the
parked customer's channel, and goes on playing music on hold for six minutes when it returns.
``SET CONTEXT``/``EXTENSION``/``PRIORITY`` from the nested AGI would take effect only after that, so
``GOSUB`` uses AGI's own ``GOSUB`` command instead: Asterisk runs the administrator's dialplan
there and then (``Read()`` the answer, ``AGI(vicirec.agi,START,...)``, ``AGI(vicirec.agi,GRAB)``),
and the AGI ends when it returns. ``GRAB`` is the agent API's
``function=park_call&value=GRAB_IVR_CUSTOMER``: the agent screen takes the customer back into the
conference at its next poll. ``ANSWER`` asks nothing of VICIdial: its report, with the answer in
the stage field, is the audit trail's record of what the caller chose.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Optional, Protocol

from vicirec.deadline import Deadline
from vicirec.errors import BadRequest, ErrorCode, VicirecError
from vicirec.request import Invocation, Step

if TYPE_CHECKING:  # pragma: no cover - typing only (engine imports this module)
    from vicirec.engine import Report
    from vicirec.vicidial.client import VicidialClient

#: How long a GOSUB may run (the administrator's dialplan: a prompt, a key, a START with confirm).
GOSUB_SECONDS = 300.0
GRAB_VALUE = "GRAB_IVR_CUSTOMER"


class Dialplan(Protocol):
    """A channel that can run dialplan for the AGI (``AGI GOSUB``); the AGI transports have it."""

    def gosub(self, context: str, extension: str, priority: str, deadline: Deadline) -> Optional[int]: ...


def grab(client: VicidialClient, report: Report, deadline: Deadline) -> Report:
    reply = client.park_call(GRAB_VALUE, report.agent, deadline)
    return replace(report, ok=True, message=f"{reply.value} sent: the agent screen takes the customer back")


def answer(invocation: Invocation, report: Report) -> Report:
    return replace(report, ok=True, stage=invocation.stage,
                   message=f"answer {invocation.stage} noted")


def gosub(invocation: Invocation, report: Report, channel: Any) -> Report:
    if invocation.action is not Step.GOSUB:
        raise BadRequest(f"{invocation.action.value} is not GOSUB")
    dialplan: Optional[Dialplan] = channel if hasattr(channel, "gosub") else None
    if dialplan is None:
        raise VicirecError("this AGI transport cannot run GOSUB")
    context, extension, priority = invocation.target
    where = f"{context},{extension},{priority}"
    result = dialplan.gosub(context, extension, priority, Deadline(GOSUB_SECONDS))
    if result is None or result < 0:
        return replace(report, ok=False, error=ErrorCode.BAD_REQUEST,
                       message=f"GOSUB {where}: Asterisk found no such dialplan location")
    return replace(report, ok=True, message=f"GOSUB {where} returned")
