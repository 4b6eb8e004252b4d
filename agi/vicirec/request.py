"""What the dialplan asked for: ``AGI(vicirec.agi,ACTION[,stage][,key=value...])``.

Arguments come from dialplan, and a careless dialplan can paste caller-controlled text into them
(an unquoted ``${CALLERID(name)}`` even splits into several arguments), so every value is checked
against a strict pattern and refused with ``BAD_REQUEST`` rather than passed on.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from vicirec.errors import BadRequest
from vicirec.vicidial.responses import Action

AGENT_USER = re.compile(r"^[A-Za-z0-9_-]{1,20}$")
MAX_CONFIRM_SECONDS = 60.0
MAX_STAGE_ARGUMENT = 200
_OPTION = re.compile(r"^([A-Za-z_]+)=(.*)$", re.DOTALL)
OPTIONS = ("agent", "confirm")


@dataclass(frozen=True)
class Invocation:
    action: Action
    stage: str = ""
    agent: Optional[str] = None
    confirm: Optional[float] = None


def parse_arguments(args: Sequence[str]) -> Invocation:
    if not args or not args[0].strip():
        raise BadRequest("no action given: use START, STOP or STATUS")
    action_word = args[0].strip().upper()
    try:
        action = Action(action_word)
    except ValueError:
        raise BadRequest(f"unknown action {_shown(args[0])}: use START, STOP or STATUS") from None
    stage = ""
    agent: Optional[str] = None
    confirm: Optional[float] = None
    seen: set[str] = set()
    for arg in args[1:]:
        if arg.strip() == "":
            continue  # empty Gosub arguments arrive as empty AGI arguments
        option = _OPTION.match(arg.strip())
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
            if not AGENT_USER.match(value):
                raise BadRequest(f"agent= must be letters, digits, _ or - (got {_shown(value)})")
            agent = value
        else:
            confirm = _seconds(value)
    return Invocation(action=action, stage=stage, agent=agent, confirm=confirm)


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
