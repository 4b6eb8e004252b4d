"""What the dialplan asked for: ``AGI(vicirec.agi,ACTION[,stage][,key=value...])``.

Arguments come from dialplan, and a careless dialplan can paste caller-controlled text into them
(an unquoted ``${CALLERID(name)}`` even splits into several arguments), so every value is checked
against a strict pattern and refused with ``BAD_REQUEST`` rather than passed on.

Every option also has a spelling without ``=`` (``agent-1000``, ``confirm-3``): VICIdial's admin
screens strip ``=``, spaces and parentheses from the AGI arguments they store (Call Menu route
values, a campaign's IVR Park Call AGI). An argument that starts with an option's name and ``-``
is always that option, never a stage label.

Besides START, STOP and STATUS (:class:`~vicirec.vicidial.responses.Action`, the values of
VICIdial's ``recording`` function) the park IVR needs three steps (:class:`Step`): ``GRAB`` hands
a parked customer back to the agent, ``ANSWER,<answer>`` writes the caller's answer into the audit
trail, ``GOSUB,<context>[,<exten>[,<priority>]]`` runs the administrator's dialplan from the AGI
that VICIdial's park_CID.agi nests.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional, Union

from vicirec.errors import BadRequest
from vicirec.vicidial.responses import Action

AGENT_USER = re.compile(r"^[A-Za-z0-9_-]{1,20}$")
MAX_CONFIRM_SECONDS = 60.0
MAX_STAGE_ARGUMENT = 200
_OPTION = re.compile(r"^([A-Za-z_]+)=(.*)$", re.DOTALL)
OPTIONS = ("agent", "confirm")
# The spelling that survives VICIdial's admin filters: the option's name, "-", the value.
_DASH_OPTION = re.compile(r"^(agent|confirm)-(.*)$", re.DOTALL | re.IGNORECASE)
ANSWER_WORD = re.compile(r"^[A-Za-z0-9_-]{1,20}$")
_CONTEXT = re.compile(r"^[A-Za-z0-9_-]{1,79}$")
_EXTENSION = re.compile(r"^[A-Za-z0-9_*#+-]{1,79}$")
_PRIORITY = re.compile(r"^(?:[1-9][0-9]{0,5}|[A-Za-z_][A-Za-z0-9_-]{0,39})$")


class Step(str, enum.Enum):
    """The park IVR's steps; none of them touches VICIdial's recording."""

    GRAB = "GRAB"        # agent API park_call GRAB_IVR_CUSTOMER: the customer back to the agent
    ANSWER = "ANSWER"  # the caller's answer, into the audit trail (no VICIdial request)
    GOSUB = "GOSUB"      # AGI GOSUB: run the administrator's dialplan now, then return

    def __str__(self) -> str:
        return self.value


ACTION_WORDS = "START, STOP, STATUS, GRAB, ANSWER or GOSUB"


@dataclass(frozen=True)
class Invocation:
    action: Union[Action, Step]
    stage: str = ""  # START: the stage label; ANSWER: the answer
    agent: Optional[str] = None
    confirm: Optional[float] = None
    target: tuple[str, str, str] = ("", "", "")  # GOSUB: context, extension, priority

    @property
    def needs_agent(self) -> bool:
        return self.action not in (Step.ANSWER, Step.GOSUB)


def parse_arguments(args: Sequence[str]) -> Invocation:
    if not args or not args[0].strip():
        raise BadRequest(f"no action given: use {ACTION_WORDS}")
    action_word = args[0].strip().upper()
    action: Union[Action, Step]
    try:
        action = Action(action_word)
    except ValueError:
        try:
            action = Step(action_word)
        except ValueError:
            raise BadRequest(f"unknown action {_shown(args[0])}: use {ACTION_WORDS}") from None
        return _parse_step(action, args[1:])
    stage = ""
    agent: Optional[str] = None
    confirm: Optional[float] = None
    seen: set[str] = set()
    for arg in args[1:]:
        if arg.strip() == "":
            continue  # empty Gosub arguments arrive as empty AGI arguments
        option = _option(arg)
        if option is None:
            if action is not Action.START:
                raise BadRequest(f"{action.value} takes no stage label (got {_shown(arg)})")
            if stage:
                raise BadRequest("more than one stage label given")
            if len(arg) > MAX_STAGE_ARGUMENT:
                raise BadRequest(f"stage label of {len(arg)} characters is too long")
            stage = arg
            continue
        key, value = option.group(1).lower(), option.group(2).strip()
        if key not in OPTIONS:
            raise BadRequest(f"unknown option {_shown(key)}; known: {', '.join(o + '=' for o in OPTIONS)}")
        if key in seen:
            raise BadRequest(f"option {key}= given twice")
        seen.add(key)
        if value == "":
            continue  # `confirm=` with an empty Gosub argument means: the configured default
        if key == "agent":
            agent = _agent(value)
        else:
            confirm = _seconds(value)
    return Invocation(action=action, stage=stage, agent=agent, confirm=confirm)


def _option(arg: str) -> Optional[re.Match[str]]:
    """``key=value`` or ``agent-…``/``confirm-…``; ``None`` for a positional argument."""
    return _OPTION.match(arg.strip()) or _DASH_OPTION.match(arg.strip())


def _agent(value: str) -> str:
    if not AGENT_USER.match(value):
        raise BadRequest(f"agent= must be letters, digits, _ or - (got {_shown(value)})")
    return value


def _parse_step(step: Step, rest: Sequence[str]) -> Invocation:
    words: list[str] = []
    agent: Optional[str] = None
    for arg in rest:
        if arg.strip() == "":
            continue
        option = _option(arg)
        if option is None:
            words.append(arg.strip())
            continue
        key, value = option.group(1).lower(), option.group(2).strip()
        if step is not Step.GRAB or key != "agent":
            raise BadRequest(f"{step.value} takes no option {_shown(key)}" +
                             ("; only agent=" if step is Step.GRAB else ""))
        if agent is not None:
            raise BadRequest("option agent= given twice")
        if value:
            agent = _agent(value)
    if step is Step.GRAB:
        if words:
            raise BadRequest(f"GRAB takes no label (got {_shown(words[0])})")
        return Invocation(action=step, agent=agent)
    if step is Step.ANSWER:
        if len(words) != 1 or not ANSWER_WORD.match(words[0]):
            raise BadRequest("ANSWER takes one answer: letters, digits, _ or -, at most 20 (e.g. YES, NO)")
        return Invocation(action=step, stage=words[0])
    if not 1 <= len(words) <= 3:
        raise BadRequest("GOSUB takes a context, then optionally an extension and a priority")
    context, extension, priority = (words + ["s", "1"][len(words) - 1 :])[:3]
    if not _CONTEXT.match(context):
        raise BadRequest(f"GOSUB context must be letters, digits, _ or - (got {_shown(context)})")
    if not _EXTENSION.match(extension):
        raise BadRequest(f"GOSUB extension must be letters, digits or _*#+- (got {_shown(extension)})")
    if not _PRIORITY.match(priority):
        raise BadRequest(f"GOSUB priority must be a number or a label (got {_shown(priority)})")
    return Invocation(action=step, target=(context, extension, priority))


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise BadRequest(f"confirm= must be a number of seconds (got {_shown(value)})") from None
    if not math.isfinite(seconds) or seconds < 0 or seconds > MAX_CONFIRM_SECONDS:
        raise BadRequest(f"confirm= must be between 0 and {MAX_CONFIRM_SECONDS:.0f} seconds")
    return seconds


def _shown(value: str, limit: int = 24) -> str:
    """A dialplan value, made safe to put in a message: letters, digits and ``_.-`` only, short."""
    cleaned = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "_.-") else "?" for ch in value[:limit])
    return f"'{cleaned}{'...' if len(value) > limit else ''}'"


# --- CONSENT: a START deferred until an agent takes the call (the FastAGI daemon's deferred module) ---

CONSENT = "CONSENT"
CONSENT_NEEDS_DAEMON = (
    "CONSENT (a START deferred until an agent takes the call) needs the FastAGI daemon with "
    'agents.lookup = "mysql"; nothing will be recorded'
)


def is_consent(args: Sequence[str]) -> bool:
    """``AGI(...,CONSENT[,stage][,confirm=N])``: the caller consented before any agent exists."""
    return bool(args) and args[0].strip().upper() == CONSENT


def parse_consent(args: Sequence[str]) -> Invocation:
    """A CONSENT's arguments are a START's: the START that runs once an agent takes the call."""
    return parse_arguments(["START", *args[1:]])
