"""What a run returns (:class:`AgiRun`), the :class:`HangupPlan` it follows, and its transcript
in the format of the transcripts recorded from the real Asterisk (``tests/data/asterisk/transcripts``).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Optional

from vicirec.testing.fake_asterisk.channel import FakeChannel, _b, _s


class TranscriptLine(NamedTuple):
    """One event, named like the shared transcripts: RECV = bytes Asterisk sent to the script,
    SEND = bytes the script sent, SIG = a signal Asterisk delivered, NOTE = the fake's remarks."""

    t: float
    kind: str
    data: bytes


@dataclass
class HangupPlan:
    """When the caller hangs up (the first trigger wins; a channel that starts dead never does).

    ``after``: seconds after the AGI started. ``on_command``: a predicate on each command line (without
    its ``\\n``); ``before_reply`` says whether the hangup happens before Asterisk answers that command
    (notification first, then the command runs in dead mode) or after the reply. ``after_env``: right
    after the environment block.
    """

    after: Optional[float] = None
    on_command: Optional[Callable[[bytes], bool]] = None
    before_reply: bool = True
    after_env: bool = False

    @classmethod
    def on_prefix(cls, prefix: bytes, *, before_reply: bool = True) -> HangupPlan:
        """Hang up on the first command line that starts with ``prefix`` (case-insensitive)."""
        low = prefix.lower()
        return cls(on_command=lambda line: line.lower().startswith(low), before_reply=before_reply)


@dataclass
class AgiRun:
    """What happened during one AGI() call."""

    transcript: list[TranscriptLine]
    channel: FakeChannel
    agistatus: str
    exit_code: Optional[int]
    signal: Optional[int]
    stderr: bytes
    elapsed: float
    timed_out: bool
    commands: list[bytes]
    verbose: list[tuple[int, str]] = field(default_factory=list)
    execs: list[tuple[str, str]] = field(default_factory=list)
    hangup_at: Optional[float] = None

    def sent_by_script(self) -> bytes:
        """All bytes Asterisk read from the script (stdout / socket), in order."""
        return b"".join(line.data for line in self.transcript if line.kind == "SEND")

    def received_by_script(self) -> bytes:
        """All bytes Asterisk wrote to the script (stdin / socket), env block included."""
        return b"".join(line.data for line in self.transcript if line.kind == "RECV")

    def replies(self) -> list[bytes]:
        """The RECV lines after the environment block (replies and HANGUP lines)."""
        lines = [line.data for line in self.transcript if line.kind == "RECV"]
        if b"\n" in lines:
            return lines[lines.index(b"\n") + 1:]
        return lines

    def notes(self) -> list[str]:
        return [_s(line.data) for line in self.transcript if line.kind == "NOTE"]

    def var(self, name: str) -> Optional[str]:
        return self.channel.variables.get(name)

    def dump(self) -> str:
        return format_transcript(self.transcript)


def format_transcript(lines: Sequence[TranscriptLine]) -> str:
    """Lines in the shared transcripts' format: ``+seconds KIND payload``."""
    out = []
    for line in lines:
        payload = _s(line.data) if line.kind in ("NOTE", "SIG") else repr(line.data)
        out.append(f"+{line.t:.6f} {line.kind:<4} {payload}")
    return "\n".join(out) + ("\n" if out else "")


_TRANSCRIPT_RE = re.compile(r"^\+(\d+(?:\.\d+)?) (RECV|SEND|SIG|NOTE)\s+(.*)$")


def parse_transcript(text: str) -> list[TranscriptLine]:
    """Parse the shared transcript format (``RECV``/``SEND`` payloads are Python byte literals)."""
    out: list[TranscriptLine] = []
    for raw in text.splitlines():
        m = _TRANSCRIPT_RE.match(raw)
        if not m:
            continue
        kind, payload = m.group(2), m.group(3)
        if kind in ("RECV", "SEND"):
            value = ast.literal_eval(payload)
            if not isinstance(value, bytes):
                raise ValueError(f"not a bytes literal: {payload[:60]!r}")
            data = value
        else:
            data = _b(payload)
        out.append(TranscriptLine(float(m.group(1)), kind, data))
    return out
