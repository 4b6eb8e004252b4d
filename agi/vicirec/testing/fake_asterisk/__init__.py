"""A fake Asterisk 22 that runs an AGI the way ``res_agi`` does, byte for byte.

Ground truth: the transcripts recorded from a real Asterisk 22.10.1 (``tests/data/asterisk/transcripts``).
The module has two layers:

* a pure model -- :func:`parse_args` (res_agi's word splitter), :func:`build_env_block` and
  :class:`AgiInterpreter` (one channel plus the AGI command set: bytes in, :class:`Reply` out, no I/O);
* thin drivers in :class:`FakeAsterisk` that run a real process AGI over pipes
  (:meth:`FakeAsterisk.run_process`) or talk to a real FastAGI server over TCP
  (:meth:`FakeAsterisk.run_fastagi`), reading command lines exactly like res_agi's ``fgets`` loop
  (8191-byte cut, NUL handling, ``failure`` lines), delivering hangups (SIGHUP / ``HANGUP`` line,
  AGISIGHUP, AGIEXITONHANGUP) and computing AGISTATUS.

Every wait is bounded by the run's ``timeout``: a child that overruns it is killed (its whole process
group) and the result says ``timed_out=True``.

Modules, one seam each:

* ``channel``: :class:`FakeChannel` and the environment block (:func:`build_env_block`);
* ``args``: res_agi's :func:`parse_args` and the dialplan's argument splitting;
* ``commands``: res_agi's command table, usage texts and :class:`Reply`;
* ``apps``: the ``EXEC`` applications known by default;
* ``interpreter``: :class:`AgiInterpreter`, the pure model, with the dialplan functions;
* ``transcript``: :class:`AgiRun`, :class:`HangupPlan` and the transcript format;
* ``session``: one session over pipes or a socket (line reader, hangups, the loop);
* ``runner``: :class:`FakeAsterisk`, the process-AGI and FastAGI drivers;
* ``cli``: the command line (``main``).
"""

from __future__ import annotations

from vicirec.testing.fake_asterisk.apps import DEFAULT_APPLICATIONS, AppHandler
from vicirec.testing.fake_asterisk.args import parse_args
from vicirec.testing.fake_asterisk.channel import (
    AST_ENVIRONMENT,
    ASTERISK_VERSION,
    FakeChannel,
    build_env_block,
)
from vicirec.testing.fake_asterisk.cli import main
from vicirec.testing.fake_asterisk.commands import DEAD_REPLY, INVALID_REPLY, USAGE_HEAD, USAGE_TAIL, Reply
from vicirec.testing.fake_asterisk.interpreter import AgiInterpreter
from vicirec.testing.fake_asterisk.runner import FakeAsterisk
from vicirec.testing.fake_asterisk.transcript import (
    AgiRun,
    HangupPlan,
    TranscriptLine,
    format_transcript,
    parse_transcript,
)

__all__ = [
    "ASTERISK_VERSION",
    "AST_ENVIRONMENT",
    "DEAD_REPLY",
    "DEFAULT_APPLICATIONS",
    "INVALID_REPLY",
    "USAGE_HEAD",
    "USAGE_TAIL",
    "AgiInterpreter",
    "AgiRun",
    "AppHandler",
    "FakeAsterisk",
    "FakeChannel",
    "HangupPlan",
    "Reply",
    "TranscriptLine",
    "build_env_block",
    "format_transcript",
    "main",
    "parse_args",
    "parse_transcript",
]
