"""The AGI codec against the bytes a real Asterisk 22 sent and accepted (tests/data/asterisk/transcripts)."""

from __future__ import annotations

import pytest

from vicirec.asterisk import codec
from vicirec.asterisk.codec import AgiReply, HangupNotice, ReplyReader
from vicirec.errors import AgiProtocolError

PROCESS_ENV = (
    b"agi_request: /var/lib/asterisk/agi-bin/logagi.py\n"
    b"agi_channel: Local/s@scenario-caller-00000000;1\n"
    b"agi_language: en\n"
    b"agi_type: Local\n"
    b"agi_uniqueid: 1795459408.0\n"
    b"agi_version: 22.10.1\n"
    b"agi_callerid: 5551234\n"
    b'agi_calleridname: Jane "JJ" Doe\n'
    b"agi_callingpres: 0\n"
    b"agi_dnid: unknown\n"
    b"agi_context: scenario-entry\n"
    b"agi_accountcode: \n"
    b"agi_arg_1: protocol-process\n"
    b"agi_arg_2: protocol\n"
    b"agi_arg_3: arg three\n"
    b"agi_arg_4: arg,four\n"
    b"agi_arg_5: arg|five\n"
    b"agi_arg_6: \n"
    b"agi_arg_7: argseven\n"
    b"agi_arg_8:   arg eight  \n"
    b"agi_arg_9: arg,nine\n"
    b"\n"
)


def test_environment_block_keeps_values_exactly() -> None:
    env = codec.parse_environment(PROCESS_ENV)
    assert env.channel == "Local/s@scenario-caller-00000000;1"
    assert env.get("agi_calleridname") == 'Jane "JJ" Doe'
    assert env.get("agi_accountcode") == ""
    assert env.known("agi_dnid") == ""  # Asterisk's placeholder "unknown" reads as empty
    assert env.args == ("protocol-process", "protocol", "arg three", "arg,four", "arg|five", "",
                        "argseven", "  arg eight  ", "arg,nine")
    assert not env.network


def test_environment_block_fed_byte_by_byte_and_leftover_kept() -> None:
    reader = codec.EnvironmentReader()
    data = b"agi_network: yes\nagi_network_script: vicirec?x=1\nagi_request: agi://h/vicirec\n\nHANGUP\n"
    result = None
    for i in range(len(data)):
        result = reader.feed(data[i : i + 1])
    assert result is not None
    assert result.network and result.network_script == "vicirec?x=1"
    assert reader.leftover == b"HANGUP\n"


@pytest.mark.parametrize(
    "block",
    [
        b"agi_request: x\n" + b"agi_x: " + b"y" * 9000 + b"\n\n",
        b"agi_request: x\nagi_bad\x00: y\n\n",
        b"agi_request: x\nnot a key value line\n\n",
        b"".join(b"agi_k%d: v\n" % i for i in range(300)) + b"\n",
    ],
    ids=["9000-byte line", "NUL byte", "no colon", "endless block"],
)
def test_environment_block_refuses_hostile_input(block: bytes) -> None:
    with pytest.raises(AgiProtocolError):
        codec.parse_environment(block)


def test_environment_line_without_end_is_bounded() -> None:
    reader = codec.EnvironmentReader(max_line_bytes=100)
    with pytest.raises(AgiProtocolError):
        reader.feed(b"agi_request: " + b"x" * 200)


# Quoting: every pair is (value, what the transcript shows on the wire for that stored value).
@pytest.mark.parametrize(
    ("value", "wire"),
    [
        ("hello world", b'"hello world"'),
        ('say "hi" now', b'"say \\"hi\\" now"'),
        ("back\\slash", b'"back\\\\slash"'),
        ("ends\\", b'"ends\\\\"'),
        ("a|b|c", b'"a|b|c"'),
        ("", b'""'),
        ("${CHANNEL}", b'"${CHANNEL}"'),
        ('{"agent":"1001","ok":true}', b'"{\\"agent\\":\\"1001\\",\\"ok\\":true}"'),
    ],
)
def test_set_variable_quotes_as_asterisk_parses(value: str, wire: bytes) -> None:
    assert codec.set_variable("T", value) == b"SET VARIABLE T " + wire + b"\n"


def test_set_variable_strips_line_breaks_and_nul_and_bounds_length() -> None:
    line = codec.set_variable("T", "a\r\nb\x00c" + "x" * 5000)
    assert b"\r" not in line and b"\x00" not in line and line.count(b"\n") == 1
    assert len(line) < 1100
    # A multi-byte character is never cut in half.
    line = codec.set_variable("T", "é" * 800)
    line.decode("utf-8")


def test_bad_variable_names_are_refused() -> None:
    for name in ("A B", "A\nB", 'A"', ""):
        with pytest.raises(ValueError):
            codec.set_variable(name, "x")
    assert codec.get_variable("CALLERID(name)") == b"GET VARIABLE CALLERID(name)\n"


def test_get_full_variable_escapes_one_backslash_level() -> None:
    # The transcript: `${CUT(BRIDGEPEER,\\,,2)}` on the wire is `\,` for the dialplan parser.
    assert codec.get_full_variable("${CUT(BRIDGEPEER,\\,,2)}") == (
        b'GET FULL VARIABLE "${CUT(BRIDGEPEER,\\\\,,2)}"\n'
    )
    assert codec.get_full_variable("${AGENT_ID}", "Local/1001@x-0000000d;1").endswith(
        b'"${AGENT_ID}" "Local/1001@x-0000000d;1"\n'
    )


def _events(data: bytes) -> list[object]:
    reader = ReplyReader()
    reader.feed(data)
    return list(reader.events())


@pytest.mark.parametrize(
    ("line", "result", "data"),
    [
        (b"200 result=1\n", 1, None),
        (b"200 result=0\n", 0, None),
        (b"200 result=1 ()\n", 1, ""),
        (b"200 result=1 (a)b(c)\n", 1, "a)b(c"),
        (b'200 result=1 ("Jane "JJ" Doe" <5551234>)\n', 1, '"Jane "JJ" Doe" <5551234>'),
        (b"200 result=-1\n", -1, None),
        (b"200 result=1 (crlf value\r)\n", 1, "crlf value\r"),
    ],
)
def test_reply_data_runs_to_the_last_parenthesis(line: bytes, result: int, data: str) -> None:
    (reply,) = _events(line)
    assert isinstance(reply, AgiReply)
    assert (reply.code, reply.result, reply.data) == (200, result, data)


def test_multi_line_520_is_one_reply() -> None:
    data = (
        b"520-Invalid command syntax.  Proper usage follows:\n"
        b"Returns the status of the specified <replaceable>channelname</replaceable>.\n"
        b"    <enum>0</enum> - Channel is down and available.\n"
        b"520 End of proper usage.\n"
        b"200 result=1\n"
    )
    usage, after = _events(data)
    assert isinstance(usage, AgiReply) and usage.code == 520 and len(usage.lines) == 4
    assert isinstance(after, AgiReply) and after.code == 200


def test_hangup_line_before_and_after_a_reply() -> None:
    # hup-fast.txt: HANGUP arrives before the NOOP's reply; hup-fast-block.txt: after one.
    events = _events(b"HANGUP\n200 result=0\n200 result=-1\nHANGUP\n")
    assert [type(e).__name__ for e in events] == ["HangupNotice", "AgiReply", "AgiReply", "HangupNotice"]


def test_511_and_510_are_replies_with_their_code() -> None:
    dead, unknown = _events(
        b"511 Command Not Permitted on a dead channel or intercept routine\n510 Invalid or unknown command\n"
    )
    assert isinstance(dead, AgiReply) and dead.code == 511
    assert isinstance(unknown, AgiReply) and unknown.code == 510


def test_garbage_reply_is_a_protocol_error() -> None:
    with pytest.raises(AgiProtocolError):
        _events(b"hello there\n")
    reader = ReplyReader(max_line_bytes=64)
    reader.feed(b"2" * 100)
    with pytest.raises(AgiProtocolError):
        list(reader.events())


def test_hangup_notice_is_a_value() -> None:
    assert HangupNotice() == HangupNotice()
