"""Why vicirec does not talk AGI through pyst2's ``asterisk.agi.AGI`` (README, "Design notes").

Each test shows one defect of pyst2 0.5 against what a real Asterisk 22 does (the recorded
transcripts), and the line after it shows vicirec's own codec getting the same case right.
"""

from __future__ import annotations

import io
import sys
import threading
from pathlib import Path

import pytest

asterisk_agi = pytest.importorskip("asterisk.agi")

from vicirec.asterisk import codec  # noqa: E402
from vicirec.testing.fake_asterisk import FakeAsterisk, FakeChannel, parse_args  # noqa: E402

ENV_BLOCK = "agi_request: x.agi\nagi_channel: SIP/trunk-1\nagi_arg_1:   arg eight  \n\n"


def _pyst2(stdin_text: str) -> tuple[object, io.StringIO, io.StringIO]:
    stdin, stdout, stderr = io.StringIO(stdin_text), io.StringIO(), io.StringIO()
    agi = asterisk_agi.AGI(stdin=stdin, stdout=stdout, stderr=stderr)
    return agi, stdout, stderr


def test_values_with_quotes_are_not_escaped() -> None:
    agi, stdout, _ = _pyst2(ENV_BLOCK + "200 result=1\n")
    agi.set_variable("T", 'say "hi" now')  # type: ignore[attr-defined]
    line = stdout.getvalue().encode()
    stored = parse_args(line.rstrip(b"\n"))[3:]
    assert stored != [b'say "hi" now']  # Asterisk reads three words: the quotes are lost
    assert parse_args(codec.set_variable("T", 'say "hi" now').rstrip(b"\n"))[3] == b'say "hi" now'


def test_environment_values_are_stripped() -> None:
    agi, _, _ = _pyst2(ENV_BLOCK)
    assert agi.env["agi_arg_1"] == "arg eight"  # type: ignore[attr-defined]
    assert codec.parse_environment(ENV_BLOCK.encode()).args == ("  arg eight  ",)


def test_hangup_line_is_not_understood() -> None:
    # FastAGI: "HANGUP" may arrive before the reply to the next command (hup-fast.txt).
    agi, _, _ = _pyst2(ENV_BLOCK + "HANGUP\n200 result=0\n")
    with pytest.raises(ValueError):
        agi.execute("NOOP")  # type: ignore[attr-defined]
    reader = codec.ReplyReader()
    reader.feed(b"HANGUP\n200 result=0\n")
    assert [type(event).__name__ for event in reader.events()] == ["HangupNotice", "AgiReply"]


def test_dead_channel_511_is_an_unknown_error() -> None:
    agi, _, _ = _pyst2(ENV_BLOCK + "511 Command Not Permitted on a dead channel or intercept routine\n")
    with pytest.raises(asterisk_agi.AGIUnknownError):
        agi.execute("CHANNEL STATUS")  # type: ignore[attr-defined]


def test_constructor_installs_a_sighup_handler_so_threads_cannot_use_it() -> None:
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            _pyst2(ENV_BLOCK)
        except BaseException as exc:  # noqa: BLE001 - the error is the finding
            errors.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(5)
    assert errors and isinstance(errors[0], ValueError)  # "signal only works in main thread"


def test_debug_lines_with_caller_data_go_to_stderr(tmp_path: Path) -> None:
    script = tmp_path / "pyst2_agi.py"
    script.write_text(
        "import asterisk.agi\nagi = asterisk.agi.AGI()\nagi.set_variable('X', 'y')\n"
    )
    channel = FakeChannel(callerid_name="Jane Doe", callerid_num="5551234")
    run = FakeAsterisk().run_process([sys.executable, str(script)], [], channel, timeout=15.0)
    assert run.agistatus == "SUCCESS"
    assert b"Jane Doe" in run.stderr and b"ENV LINE" in run.stderr
