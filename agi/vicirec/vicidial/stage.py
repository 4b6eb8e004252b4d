"""Make a stage label safe before it reaches api.php.

The server strips only ``' " \\ ;`` and cuts to 14 bytes: a pipe shifts the response fields and
breaks the agent screen's polling, a newline splits the response, non-ASCII is cut mid-character,
and START/STOP/STATUS inside the label changes what the command means (``START_STOP`` is a STOP).
So only ``[A-Za-z0-9_-]`` is sent, at most 14 characters, with those words taken out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_STAGE_CHARS = 14
_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9_-]")
_COMMAND_WORDS = re.compile(r"STATUS|START|STOP", re.IGNORECASE)


@dataclass(frozen=True)
class Stage:
    requested: str
    sent: str

    @property
    def changed(self) -> bool:
        return self.requested != self.sent


def sanitize_stage(requested: str) -> Stage:
    label = _NOT_ALLOWED.sub("", requested)
    # Removing one word can join two halves into another ("STSTOPOP"): repeat until stable.
    while True:
        shorter = _COMMAND_WORDS.sub("", label)
        if shorter == label:
            break
        label = shorter
    return Stage(requested=requested, sent=label[:MAX_STAGE_CHARS])
