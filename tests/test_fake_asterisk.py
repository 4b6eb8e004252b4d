"""The fake Asterisk against the recorded Asterisk 22.10.1 transcripts (tests/data/asterisk/transcripts).

The replay tests run tests/agi_scripts/replay_agi.py (process AGI) or a FastAGI server thread that
play the script side of a transcript byte for byte; every byte the fake sends back must equal the
transcript's RECV lines, in order.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vicirec.testing.fake_asterisk import (
    DEAD_REPLY,
    INVALID_REPLY,
    USAGE_HEAD,
    USAGE_TAIL,
    AgiInterpreter,
    AgiRun,
    FakeAsterisk,
    FakeChannel,
    HangupPlan,
    build_env_block,
    format_transcript,
    parse_args,
    parse_transcript,
)

SCRIPTS = Path(__file__).resolve().parent / "agi_scripts"
sys.path.insert(0, str(SCRIPTS))

from transcript_replay import (  # noqa: E402
    Endpoint,
    decode_report,
    load_events,
    replay,
    split_env,
    transcript_path,
)

REPLAYER = SCRIPTS / "replay_agi.py"
SIMPLE = SCRIPTS / "simple_agi.py"
SLEEP_SCALE = 0.1  # the recorded scripts slept 2.5 s; the replays sleep 0.25 s
WAIT_SCALE = 0.05  # EXEC Wait 1 -> 50 ms, WAIT FOR DIGIT 100 -> 5 ms



# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def transcript(name: str) -> tuple[list[bytes], list[bytes]]:
    """(environment block lines, RECV lines after the block) of a recorded transcript."""
    env, rest = split_env(load_events(transcript_path(name)))
    recv = [data for kind, data in rest if kind == "RECV"]
    return env, [r for r in recv if isinstance(r, bytes)]


def channel_from_env(env: list[bytes]) -> tuple[FakeChannel, str, list[str], Optional[str]]:
    """A FakeChannel seeded from a transcript's environment block, plus request, args, network script."""
    values: dict[str, str] = {}
    for line in env[:-1]:
        key, _, value = line.decode("utf-8").rstrip("\n").partition(": ")
        values[key] = value
    channel = FakeChannel(
        name=values["agi_channel"], uniqueid=values["agi_uniqueid"], callerid_num=values["agi_callerid"],
        callerid_name=values["agi_calleridname"], context=values["agi_context"],
        extension=values["agi_extension"], priority=values["agi_priority"], language=values["agi_language"],
        channel_type=values["agi_type"], accountcode=values["agi_accountcode"], dnid=values["agi_dnid"],
        rdnis=values["agi_rdnis"], threadid=values["agi_threadid"])
    assert channel.effective_callingpres() == values["agi_callingpres"]
    args = [values[f"agi_arg_{i}"] for i in range(1, 200) if f"agi_arg_{i}" in values]
    return channel, values["agi_request"], args, values.get("agi_network_script")


def replay_process(name: str, tmp_path: Path, *, seed: Optional[Callable[[FakeChannel], None]] = None,
                   fake: Optional[FakeAsterisk] = None, **kwargs: Any) -> tuple[AgiRun, dict[str, Any]]:
    env, _recv = transcript(name)
    channel, request, args, _script = channel_from_env(env)
    if seed:
        seed(channel)
    report_path = tmp_path / f"{name}.json"
    child_env = dict(os.environ, REPLAY_TRANSCRIPT=str(transcript_path(name)), REPLAY_REPORT=str(report_path),
                     REPLAY_SLEEP_SCALE=str(SLEEP_SCALE))
    fake = fake or FakeAsterisk(wait_scale=WAIT_SCALE)
    run = fake.run_process([sys.executable, str(REPLAYER)], args, channel, env=child_env, request=request,
                           timeout=15.0, **kwargs)
    assert not run.timed_out, run.dump()
    report = decode_report(json.loads(report_path.read_text(encoding="utf-8")))
    assert report["env"] == env  # the whole environment block, byte for byte
    assert report["argv"] == args  # argv[1..] == agi_arg_1..
    return run, report


class ReplayServer:
    """A one-connection FastAGI server thread that replays a transcript's script side."""

    def __init__(self, name: str) -> None:
        self.path = transcript_path(name)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.listener.settimeout(10.0)
        self.port = self.listener.getsockname()[1]
        self.report: dict[str, Any] = {}
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _addr = self.listener.accept()
        except OSError as exc:
            self.error = exc
            return
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                self.report = replay(self.path, Endpoint(conn.fileno(), conn.fileno(), conn),
                                     sleep_scale=SLEEP_SCALE)
            except (OSError, AssertionError, ValueError) as exc:  # reported by join()
                self.error = exc

    def join(self) -> dict[str, Any]:
        self.thread.join(timeout=15.0)
        self.listener.close()
        assert not self.thread.is_alive(), "replay server hung"
        if self.error:
            raise self.error
        return self.report


def replay_fastagi(name: str, *, seed: Optional[Callable[[FakeChannel], None]] = None,
                   fake: Optional[FakeAsterisk] = None, **kwargs: Any) -> tuple[AgiRun, dict[str, Any]]:
    env, _recv = transcript(name)
    channel, request, args, script = channel_from_env(env)
    if seed:
        seed(channel)
    server = ReplayServer(name)
    fake = fake or FakeAsterisk(wait_scale=WAIT_SCALE)
    run = fake.run_fastagi("127.0.0.1", server.port, script or "", args, channel, request=request,
                           timeout=15.0, **kwargs)
    report = server.join()
    assert not run.timed_out, run.dump()
    assert report["env"] == env
    return run, report


def run_simple(mode: str, **kwargs: Any) -> AgiRun:
    channel = kwargs.pop("channel", None) or FakeChannel()
    return FakeAsterisk().run_process([sys.executable, str(SIMPLE)], [mode], channel,
                                      **{"timeout": 10.0, **kwargs})


# ------------------------------------------------------------------------------------------------
# parse_args: every quoting fact of transcripts/README.md
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("line", "words"), [
    (b'SET VARIABLE T "hello world"', [b"SET", b"VARIABLE", b"T", b"hello world"]),
    (b"SET VARIABLE T hello world", [b"SET", b"VARIABLE", b"T", b"hello", b"world"]),
    (b"SET VARIABLE T hello\\ world", [b"SET", b"VARIABLE", b"T", b"hello world"]),
    (b'SET VARIABLE T "say \\"hi\\" now"', [b"SET", b"VARIABLE", b"T", b'say "hi" now']),
    (b'SET VARIABLE T say\\"hi\\"', [b"SET", b"VARIABLE", b"T", b'say"hi"']),
    (b'SET VARIABLE T "back\\\\slash"', [b"SET", b"VARIABLE", b"T", b"back\\slash"]),
    (b'SET VARIABLE T "back\\slash"', [b"SET", b"VARIABLE", b"T", b"backslash"]),
    (b'SET VARIABLE T "line1\\nline2"', [b"SET", b"VARIABLE", b"T", b"line1nline2"]),
    (b'SET VARIABLE T "ends\\\\"', [b"SET", b"VARIABLE", b"T", b"ends\\"]),
    (b'SET VARIABLE T "a|b,c;d(e)=f\'g${CHANNEL}{}\th"',
     [b"SET", b"VARIABLE", b"T", b"a|b,c;d(e)=f'g${CHANNEL}{}\th"]),
    (b'SET VARIABLE T ""', [b"SET", b"VARIABLE", b"T", b""]),
    (b"SET VARIABLE T", [b"SET", b"VARIABLE", b"T"]),
    (b'SET VARIABLE T ab"c d"e', [b"SET", b"VARIABLE", b"T", b"abc de"]),
    (b'SET VARIABLE T "crlf value"\r\n', [b"SET", b"VARIABLE", b"T", b"crlf value\r"]),
    (b'SET VARIABLE T "a\x00b"\n', [b"SET", b"VARIABLE", b"T", b"a"]),
    (b'SET VARIABLE "T_QUOTED_NAME" value', [b"SET", b"VARIABLE", b"T_QUOTED_NAME", b"value"]),
    (b'SET VARIABLE T "h\xc3\xa9llo \xe2\x98\x8e"',
     [b"SET", b"VARIABLE", b"T", b"h\xc3\xa9llo \xe2\x98\x8e"]),
    (b"NOOP\tx  \t y ", [b"NOOP", b"x", b"y"]),
    (b"  NOOP", [b"NOOP"]),
    (b"", []),
    (b"\n", []),
    (b"trailing\\", [b"trailing"]),
])
def test_parse_args_quoting_facts(line: bytes, words: list[bytes]) -> None:
    assert parse_args(line) == words


def test_parse_args_caps_at_127_words() -> None:
    words = parse_args(b" ".join(b"w%d" % i for i in range(200)))
    assert len(words) == 127
    assert words[-1] == b"w126"


def _encode(value: bytes) -> bytes:
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80).filter(lambda v: not any(c in v for c in b"\r\n\0")))
def test_parse_args_round_trips_the_safe_encoder(value: bytes) -> None:
    assert parse_args(b"SET VARIABLE X " + _encode(value) + b"\n") == [b"SET", b"VARIABLE", b"X", value]


# ------------------------------------------------------------------------------------------------
# environment block and interpreter (pure)
# ------------------------------------------------------------------------------------------------


def test_env_block_matches_protocol_process() -> None:
    env, _recv = transcript("protocol-process")
    channel, request, args, _script = channel_from_env(env)
    assert request == "/var/lib/asterisk/agi-bin/logagi.py"
    assert args[5] == "" and args[7] == "  arg eight  "
    assert build_env_block(channel, request, args) == env


def test_env_block_fastagi_network_lines() -> None:
    env, _recv = transcript("protocol-fastagi")
    channel, request, args, script = channel_from_env(env)
    assert script == "some/script?x=1&y=two"
    assert build_env_block(channel, request, args, network=True, network_script=script) == env
    no_script = build_env_block(channel, "agi://127.0.0.1:4573", args, network=True, network_script="")
    assert no_script[:2] == [b"agi_network: yes\n", b"agi_request: agi://127.0.0.1:4573\n"]


def test_env_block_defaults_unknown_caller() -> None:
    block = b"".join(build_env_block(FakeChannel(), "x.py", []))
    assert b"agi_callerid: unknown\nagi_calleridname: unknown\nagi_callingpres: 67\n" in block
    assert block.endswith(b"agi_accountcode: \nagi_threadid: 139741756114624\n\n")


def test_interpreter_replies() -> None:
    chan = FakeChannel(name="PJSIP/a-1", callerid_num="100", callerid_name='A "B" C')
    chan.variables["BRIDGEPEER"] = "PJSIP/b-2"
    chan.others["PJSIP/b-2"] = {"AGENT_ID": "1001"}
    interp = AgiInterpreter(chan)
    h = interp.handle
    assert h(b'SET VARIABLE __INH "x y"').chunks == [b"200 result=1\n"]
    assert h(b"GET VARIABLE INH").chunks == [b"200 result=1 (x y)\n"]
    assert h(b"GET VARIABLE __INH").chunks == [b"200 result=0\n"]
    h(b'SET VARIABLE BIG "' + b"z" * 1500 + b'"')
    assert h(b"GET VARIABLE BIG").chunks == [b"200 result=1 (" + b"z" * 1023 + b")\n"]
    assert h(b"GET FULL VARIABLE ${BIG}").chunks == [b"200 result=1 (" + b"z" * 1500 + b")\n"]
    assert h(b"GET FULL VARIABLE ${LEN(${BIG})}").chunks == [b"200 result=1 (1500)\n"]
    assert h(b"GET VARIABLE CALLERID(all)").chunks == [b'200 result=1 ("A "B" C" <100>)\n']
    assert h(b"GET VARIABLE CHANNEL(peer)").chunks == [b"200 result=1 (PJSIP/b-2)\n"]
    assert h(b"GET FULL VARIABLE ${IMPORT(${BRIDGEPEER},AGENT_ID)}").chunks == [b"200 result=1 (1001)\n"]
    assert h(b"GET FULL VARIABLE ${AGENT_ID} PJSIP/b-2").chunks == [b"200 result=1 (1001)\n"]
    assert h(b"GET FULL VARIABLE ${AGENT_ID} PJSIP/nope-9").chunks == [b"200 result=0\n"]
    assert h(b"GET FULL VARIABLE ${CHANNEL:0:5}").chunks == [b"200 result=1 (PJSIP)\n"]
    assert h(b"GET VARIABLE NOSUCH(x)").chunks == [b"200 result=0\n"]
    assert h(b"CHANNEL STATUS PJSIP/b-2").chunks == [b"200 result=6\n"]
    assert h(b'EXEC Set "EV=foo bar"').chunks == [b"200 result=0\n"]
    assert chan.variables["EV"] == "foo bar"
    assert h(b"EXEC Set(X=1)").chunks == [b"200 result=-2\n"]
    assert h(b"exec noop").chunks == [b"200 result=0\n"]
    assert h(b"DATABASE PUT fam key \"v a l\"").chunks == [b"200 result=1\n"]
    assert h(b"GET VARIABLE DB(fam/key)").chunks == [b"200 result=1 (v a l)\n"]
    assert h(b"DATABASE DELTREE fam").chunks == [b"200 result=1\n"]
    assert h(b"DATABASE GET fam key").chunks == [b"200 result=0\n"]
    assert h(b"GET").chunks == [INVALID_REPLY]
    assert h(b"").chunks == [INVALID_REPLY]
    usage = h(b"SET VARIABLE ONLYNAME").chunks
    assert usage == [USAGE_HEAD, b"Sets a variable to the current channel.\n", USAGE_TAIL]
    assert h(b"WAIT FOR DIGIT 250").wait == pytest.approx(0.25)
    assert h(b"HANGUP").hangup_after
    assert interp.verbose == [] and ("Set", "EV=foo bar") in interp.execs
    chan.variables["CALLERID(name)"] = "seeded"
    assert h(b'SET VARIABLE CALLERID(name) "New Name"').chunks == [b"200 result=1\n"]
    assert chan.callerid_name == "New Name" and "CALLERID(name)" not in chan.variables
    assert h(b"GET FULL VARIABLE ${CALLERID(all)}").chunks == [b'200 result=1 ("New Name" <100>)\n']


def test_interpreter_dead_mode() -> None:
    interp = AgiInterpreter(FakeChannel(hung_up=True))
    for cmd in (b"CHANNEL STATUS", b"CHANNEL STATUS a b c", b"ANSWER", b"WAIT FOR DIGIT 100",
                b'STREAM FILE beep ""', b"HANGUP", b"SAY DIGITS 1 #"):
        assert interp.handle(cmd).chunks == [DEAD_REPLY], cmd
    for cmd in (b"NOOP", b"SET VARIABLE A b", b"GET VARIABLE A", b"GET FULL VARIABLE ${A}", b"VERBOSE x 1",
                b"EXEC NoOp x", b"DATABASE PUT f k v"):
        assert interp.handle(cmd).chunks[0].startswith(b"200 "), cmd
    assert interp.handle(b"GET VARIABLE HANGUPCAUSE").chunks == [b"200 result=1 (16)\n"]
    assert interp.handle(b"EXEC Wait 1").interrupted is None  # dead: Wait really waits


def test_transcript_format_round_trip() -> None:
    text = transcript_path("hup-fast").read_text(encoding="utf-8")
    lines = parse_transcript(text)
    assert parse_transcript(format_transcript(lines)) == [
        line._replace(t=round(line.t, 6)) for line in lines]


# ------------------------------------------------------------------------------------------------
# process AGI replays
# ------------------------------------------------------------------------------------------------


def _protocol_seed(epoch: str) -> Callable[[FakeChannel], None]:
    def seed(channel: FakeChannel) -> None:
        channel.variables["EPOCH"] = epoch  # GET VARIABLE EPOCH is wall-clock time
    return seed


def test_replay_protocol_process(tmp_path: Path) -> None:
    run, report = replay_process("protocol-process", tmp_path, seed=_protocol_seed("1795459408"))
    _env, expected = transcript("protocol-process")
    assert report["received"] == expected
    assert run.agistatus == "SUCCESS" and run.exit_code == 0
    assert run.var("T_SPACE") == "hello world"
    assert run.var("T_JSON") == '{"agent":"1001","ok":true}'
    assert run.var("T_INHERIT") == "inherited value" and run.var("__T_INHERIT") is None
    assert run.var("T_CR") == "crlf value\r"
    assert run.var("T_UNICODE") == "h\u00e9llo \u260e \u65e5\u672c"
    assert run.var("EXECVAR") == "foo bar" and run.var("EXECVAR2") == "a,b" and run.var("X") is None
    assert run.var("T_DOLLAR") == "${CHANNEL}"
    assert (4, "hello from agi at level 4") in run.verbose
    assert b"200 result=1 (crlf value\r)\n" in run.replies()  # one RECV line despite the \r
    assert run.replies() == expected
    assert run.commands[0] == b"SET VARIABLE T_PLAIN hello"
    assert run.sent_by_script().startswith(b"SET VARIABLE T_PLAIN hello\n")


def test_replay_long_process(tmp_path: Path) -> None:
    run, report = replay_process("long-process", tmp_path)
    _env, expected = transcript("long-process")
    # The recorded logger missed the NOOP's reply (it was read into its buffer together with the
    # "(8170)" line); long-fastagi.txt shows it arriving. So the fake's stream has one more line.
    assert report["received"] == [*expected, b"200 result=0\n"]
    assert len(run.var("T_9000") or "") == 8170
    assert b"x" * 830 + b'"' in run.commands  # the cut-off rest of the 9000-byte line, answered 510


def test_replay_nul_process(tmp_path: Path) -> None:
    run, report = replay_process("nul-process", tmp_path)
    assert report["received"] == transcript("nul-process")[1]
    assert run.var("T_NUL") == "a"


def test_replay_st_stray(tmp_path: Path) -> None:
    run, report = replay_process("st-stray", tmp_path)
    assert report["received"] == transcript("st-stray")[1]
    assert run.var("RESULT") == "stray2"


def test_replay_feat_caller_self(tmp_path: Path) -> None:
    peer = "Local/1001@scenario-agent-0000000b;1"

    def seed(channel: FakeChannel) -> None:
        channel.variables.update({
            "BRIDGEPEER": peer, "DIALEDPEERNAME": peer, "DIALEDPEERNUMBER": "1001@scenario-agent/n",
            "DYNAMIC_FEATURES": "custself#custpeer#custfast", "CUSTOMER_ID": "cust-42",
        })
        channel.others[peer] = {"AGENT_ID": "1001", "CALLERID(all)": '"" <s>'}

    run, report = replay_process("feat-caller-self", tmp_path, seed=seed)
    assert report["received"] == transcript("feat-caller-self")[1]
    assert run.var("FEAT_RESULT") == "OK"


def test_replay_feat_agent_self(tmp_path: Path) -> None:
    peer = "Local/s@scenario-caller-0000000a;1"

    def seed(channel: FakeChannel) -> None:
        channel.variables.update({
            "BRIDGEPEER": peer, "CHANNEL(linkedid)": "1795459430.20",
            "CONNECTEDLINE(all)": '"Customer Carl" <5551234>', "DIALEDPEERNUMBER": "1001@scenario-agent/n",
            "DYNAMIC_FEATURES": "agentself", "AGENT_ID": "1001", "AGISTATUS": "SUCCESS",
        })
        channel.others[peer] = {"CUSTOMER_ID": "cust-42", "CALLERID(all)": '"Customer Carl" <5551234>'}

    _run, report = replay_process("feat-agent-self", tmp_path, seed=seed)
    assert report["received"] == transcript("feat-agent-self")[1]


def test_replay_conf_menu_agi(tmp_path: Path) -> None:
    agent = "Local/1001@scenario-confagent-0000000d;1"
    parties = f"{agent},Local/s@scenario-caller-0000000c;1"

    def seed(channel: FakeChannel) -> None:
        channel.variables.update({
            "BRIDGEPEER": f"CBAnn/room1-0000000e;2,{agent}",
            "CONFBRIDGE_INFO(parties,room1)": "2",
            "CONFBRIDGE_CHANNELS(parties,room1)": parties,
            "CONFBRIDGE_CHANNELS(active,room1)": parties,
        })
        channel.others[agent] = {"AGENT_ID": "1001", "CALLERID(all)": '"Agent Alice" <1001>',
                                 "CHANNEL(uniqueid)": "1795459445.26"}
        channel.others["CBAnn/room1-0000000e;2"] = {}

    run, report = replay_process("conf-menu-agi", tmp_path, seed=seed)
    assert report["received"] == transcript("conf-menu-agi")[1]
    # ${CUT(BRIDGEPEER,\\,,2)} works, ${CUT(BRIDGEPEER,\,,2)} does not
    assert b"GET FULL VARIABLE ${CUT(BRIDGEPEER,\\\\,,2)}" in run.commands


def test_replay_dead_process(tmp_path: Path) -> None:
    run, report = replay_process("dead-process", tmp_path,
                                 seed=lambda c: setattr(c, "hung_up", True))
    assert report["received"] == transcript("dead-process")[1]
    assert report["sighups"] == 0 and run.agistatus == "SUCCESS"
    assert run.var("AFTER_HUP") == "set-in-dead-agi"


def test_replay_hup_process_sighup_logged(tmp_path: Path) -> None:
    plan = HangupPlan.on_prefix(b"NOOP before hangup", before_reply=False)
    run, report = replay_process("hup-process-sighup-logged", tmp_path, hangup=plan)
    assert report["received"] == transcript("hup-process-sighup-logged")[1]
    assert report["sighups"] == 1
    kinds = [line.kind for line in run.transcript]
    assert kinds.count("SIG") == 1
    before_sig = [line.data for line in run.transcript[:kinds.index("SIG")] if line.kind == "RECV"]
    assert before_sig[-1] == b"200 result=0\n"  # right after the NOOP's reply
    assert run.agistatus == "HANGUP" and run.exit_code == 0
    assert run.var("AFTER_HUP") == "set-after-hangup"  # set after the hangup: kept


def test_replay_hup_process_block_timed(tmp_path: Path) -> None:
    fake = FakeAsterisk(wait_scale=0.2)  # WAIT FOR DIGIT 5000 -> 1 s, interrupted at 0.4 s
    run, report = replay_process("hup-process-block", tmp_path, fake=fake, hangup=HangupPlan(after=0.4))
    assert report["received"] == transcript("hup-process-block")[1]
    assert report["sighups"] == 1 and run.agistatus == "HANGUP"
    assert run.hangup_at is not None and 0.35 < run.hangup_at < 0.9


# ------------------------------------------------------------------------------------------------
# FastAGI replays (real TCP on 127.0.0.1)
# ------------------------------------------------------------------------------------------------


def test_replay_protocol_fastagi() -> None:
    run, report = replay_fastagi("protocol-fastagi", seed=_protocol_seed("1795459410"))
    assert report["received"] == transcript("protocol-fastagi")[1]
    assert run.agistatus == "SUCCESS"
    assert run.transcript[-1].data == b"HANGUP\n"  # sent when the server closed (after it had gone)


def test_replay_long_fastagi() -> None:
    run, report = replay_fastagi("long-fastagi")
    assert report["received"] == transcript("long-fastagi")[1]
    assert len(run.var("T_9000") or "") == 8170


def test_replay_nul_fastagi() -> None:
    run, report = replay_fastagi("nul-fastagi")
    assert report["received"] == transcript("nul-fastagi")[1]
    assert run.var("T_NUL") == "aGET VARIABLE T_NUL"  # joined with the next line
    assert b'SET VARIABLE T_NUL "aGET VARIABLE T_NUL' in run.commands


def test_replay_dead_fastagi() -> None:
    run, report = replay_fastagi("dead-fastagi", seed=lambda c: setattr(c, "hung_up", True))
    assert report["received"] == transcript("dead-fastagi")[1]
    assert run.agistatus == "SUCCESS" and run.var("AFTER_HUP") == "set-in-dead-agi"


def test_replay_hup_fast() -> None:
    plan = HangupPlan.on_prefix(b"NOOP before hangup", before_reply=False)
    run, report = replay_fastagi("hup-fast", hangup=plan)
    expected = transcript("hup-fast")[1]
    assert expected[:3] == [b"200 result=0\n", b"HANGUP\n", b"200 result=0\n"]
    assert report["received"] == expected
    assert run.agistatus == "HANGUP" and run.var("AFTER_HUP") == "set-after-hangup"


def test_replay_hup_fast_block_timed() -> None:
    fake = FakeAsterisk(wait_scale=0.2)  # WAIT FOR DIGIT 5000 -> 1 s, interrupted at 0.3 s
    run, report = replay_fastagi("hup-fast-block", fake=fake, hangup=HangupPlan(after=0.3))
    expected = transcript("hup-fast-block")[1]
    assert expected[1:4] == [b"200 result=-1\n", b"HANGUP\n", b"200 result=1\n"]
    assert report["received"] == expected
    assert run.agistatus == "HANGUP"


def test_replay_hup_fast_exitonhangup() -> None:
    plan = HangupPlan.on_prefix(b"NOOP before hangup", before_reply=False)
    run, report = replay_fastagi("hup-fast-exitonhangup", hangup=plan, exit_on_hangup=True)
    assert report["received"] == transcript("hup-fast-exitonhangup")[1]  # 200, HANGUP, HANGUP, EOF
    assert report["eof"] and report["write_errors"]  # "NOOP x" failed
    assert run.agistatus == "HANGUP" and run.var("AFTER_HUP") is None
    assert run.elapsed < 0.2


def test_replay_fast_halfclose() -> None:
    run, report = replay_fastagi("fast-halfclose")
    assert report["received"] == transcript("fast-halfclose")[1] == [b"200 result=1\n", b"HANGUP\n"]
    assert run.agistatus == "SUCCESS" and run.var("RESULT") == "fast-ok"


def test_replay_fast_halfclose_nosighup() -> None:
    run, report = replay_fastagi("fast-halfclose-nosighup", agi_sighup=False)
    assert report["received"] == transcript("fast-halfclose-nosighup")[1] == [b"200 result=1\n"]
    assert run.agistatus == "SUCCESS"


def test_fastagi_hangup_before_reply_and_agisighup_variable() -> None:
    fake = FakeAsterisk(wait_scale=WAIT_SCALE)
    plan = HangupPlan.on_prefix(b"NOOP after hangup", before_reply=True)
    run, report = replay_fastagi("hup-fast-nosighup", hangup=plan, fake=fake,
                                 seed=lambda c: c.variables.__setitem__("AGISIGHUP", "no"))
    assert report["received"] == transcript("hup-fast-nosighup")[1]  # no HANGUP line anywhere
    assert run.agistatus == "HANGUP"
    assert fake.database == {"/lab/afterhup": "yes"}  # DATABASE PUT works on a dead channel


# ------------------------------------------------------------------------------------------------
# AGISTATUS, process plumbing, timeouts
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "status", "code", "sig"), [
    ("exit:0", "SUCCESS", 0, None),
    ("exit:1", "FAILURE", 1, None),
    ("exit:3", "FAILURE", 3, None),
    ("raise", "FAILURE", 1, None),
    ("abort", "FAILURE", None, signal.SIGABRT),
])
def test_agistatus_by_exit(mode: str, status: str, code: Optional[int], sig: Optional[int]) -> None:
    run = run_simple(mode)
    assert (run.agistatus, run.exit_code, run.signal) == (status, code, sig)
    assert run.channel.variables["AGISTATUS"] == status
    assert run.var("RESULT") == "before-" + mode.split(":", 1)[0]
    if mode == "raise":
        assert b"deliberate crash" in run.stderr


def test_agistatus_notfound_and_not_executable(tmp_path: Path) -> None:
    fake = FakeAsterisk(agi_dir=str(tmp_path))
    run = fake.run_process(["does-not-exist.py"], [], FakeChannel())
    assert run.agistatus == "NOTFOUND" and run.exit_code is None and not run.transcript[1:]
    assert "File does not exist" in run.notes()[0] and str(tmp_path) in run.notes()[0]
    script = tmp_path / "notexec.py"
    script.write_text("print('x')\n")
    script.chmod(0o644)
    run = fake.run_process([str(script)], [], FakeChannel())
    assert run.agistatus == "FAILURE"
    assert run.channel.variables["AGISTATUS"] == "FAILURE"


def test_agistatus_hangup_whatever_the_exit_code() -> None:
    # (hang up once the script runs its SIGHUP handler: one right after the env block may come
    # before Python installed it, and then SIGHUP's default action kills the script)
    run = run_simple("exit:3", hangup=HangupPlan.on_prefix(b"SET VARIABLE RESULT", before_reply=True))
    assert run.agistatus == "HANGUP" and run.exit_code == 3
    assert [line.kind for line in run.transcript].count("SIG") == 1
    run = run_simple("nosighup", hangup=HangupPlan(after_env=True), agi_sighup=False)
    assert run.agistatus == "HANGUP" and run.exit_code == 0 and "SIG" not in [x.kind for x in run.transcript]


def test_sighup_default_kills_python_script() -> None:
    run = run_simple("nosighup", hangup=HangupPlan(after_env=True))
    assert run.agistatus == "HANGUP"
    assert run.signal == signal.SIGHUP or run.exit_code == 0  # killed unless it finished first


def test_failure_line_ends_the_agi() -> None:
    run = run_simple("failure")
    assert run.agistatus == "FAILURE"
    assert run.elapsed < 1.0  # Asterisk left at once; the script was then sent SIGHUP
    assert run.transcript[-1].kind == "NOTE"


def test_partial_last_line_is_still_executed() -> None:
    run = run_simple("partial")
    assert run.commands == [b"SET VARIABLE PARTIAL yes"] and run.var("PARTIAL") == "yes"


def test_exit_on_hangup_process_closes_pipes() -> None:
    plan = HangupPlan.on_prefix(b"NOOP before hangup", before_reply=False)
    run = run_simple("hupwait", hangup=plan, exit_on_hangup=True)
    assert run.agistatus == "HANGUP"
    assert run.elapsed < 0.5
    assert b"EPIPE after 1 writes" in run.stderr
    assert run.var("AFTER_HUP") is None
    assert [x.kind for x in run.transcript].count("SIG") == 2  # at the hangup and when leaving
    run = run_simple("hupwait", hangup=plan, channel=FakeChannel(variables={"AGIEXITONHANGUP": "yes"}))
    assert run.agistatus == "HANGUP" and b"EPIPE" in run.stderr


def test_timeout_kills_the_child() -> None:
    start = time.monotonic()
    run = run_simple("sleep:30", timeout=0.5)
    assert time.monotonic() - start < 3.0
    assert run.timed_out and run.signal == signal.SIGKILL and run.agistatus == "FAILURE"
    assert any("timeout" in note for note in run.notes())


def test_close_after_env_and_override() -> None:
    run = run_simple("exit:0", env_block_override=b"agi_request: x\n\n", close_after_env=True)
    assert run.received_by_script() == b"agi_request: x\n\n"
    assert run.commands == [] and not run.timed_out


def test_fastagi_connection_refused_is_failure_at_once() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    run = FakeAsterisk().run_fastagi("127.0.0.1", port, "x", [], FakeChannel())
    assert run.agistatus == "FAILURE" and run.elapsed < 1.0 and "failed" in run.notes()[0]


def test_fastagi_server_that_never_closes_times_out() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    try:
        run = FakeAsterisk().run_fastagi("127.0.0.1", listener.getsockname()[1], "", [], FakeChannel(),
                                         timeout=0.3)
        assert run.timed_out and run.agistatus == "FAILURE"
        assert run.received_by_script().startswith(b"agi_network: yes\nagi_request: agi://127.0.0.1:")
    finally:
        listener.close()


# ------------------------------------------------------------------------------------------------
# knobs: reply delay, TCP_NODELAY, env overrides, pipelining, HANGUP command, CLI
# ------------------------------------------------------------------------------------------------


class ScriptedServer:
    """A FastAGI server thread: reads the block, writes ``payload`` in one go, then reads
    ``replies`` lines (time-stamped) and closes."""

    def __init__(self, payload: bytes, replies: int) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.listener.settimeout(10.0)
        self.port = self.listener.getsockname()[1]
        self.payload = payload
        self.replies = replies
        self.env: list[bytes] = []
        self.got: list[tuple[float, bytes]] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _addr = self.listener.accept()
        with conn:
            ep = Endpoint(conn.fileno(), conn.fileno(), conn)
            while True:
                line = ep.read_line(3.0)
                if line is None:
                    return
                self.env.append(line)
                if line == b"\n":
                    break
            sent = time.monotonic()
            ep.write(self.payload)
            for _ in range(self.replies):
                line = ep.read_line(3.0)
                if line is None:
                    return
                self.got.append((time.monotonic() - sent, line))

    def join(self) -> None:
        self.thread.join(timeout=10.0)
        self.listener.close()
        assert not self.thread.is_alive()


def test_reply_delay_and_nodelay_with_pipelined_commands() -> None:
    server = ScriptedServer(b"NOOP one\nSET VARIABLE A 1\nGET VARIABLE A\n", replies=3)
    run = FakeAsterisk(reply_delay=0.05, tcp_nodelay=True).run_fastagi(
        "127.0.0.1", server.port, "", [], FakeChannel(), timeout=5.0)
    server.join()
    assert [line for _t, line in server.got] == [b"200 result=0\n", b"200 result=1\n", b"200 result=1 (1)\n"]
    assert server.got[0][0] >= 0.05 and server.got[2][0] >= 0.15
    assert server.env[:2] == [b"agi_network: yes\n", b"agi_request: agi://127.0.0.1:%d\n" % server.port]
    assert run.commands == [b"NOOP one", b"SET VARIABLE A 1", b"GET VARIABLE A"]


def test_env_block_override_with_long_line_and_nul() -> None:
    block = b"agi_request: " + b"r" * 9000 + b"\nagi_x: a\x00b\n\n"
    server = ScriptedServer(b"NOOP\n", replies=1)
    run = FakeAsterisk().run_fastagi("127.0.0.1", server.port, "x", [], FakeChannel(),
                                     env_block_override=block, timeout=5.0)
    server.join()
    assert b"".join(server.env) == block
    assert [line for _t, line in server.got] == [b"200 result=0\n"]
    assert run.received_by_script().startswith(block)


def test_hangup_command_hangs_up_the_channel() -> None:
    server = ScriptedServer(b"HANGUP\n", replies=2)
    run = FakeAsterisk().run_fastagi("127.0.0.1", server.port, "x", [], FakeChannel(), timeout=5.0)
    server.join()
    assert [line for _t, line in server.got] == [b"200 result=1\n", b"HANGUP\n"]
    assert run.agistatus == "HANGUP" and run.channel.hung_up


def test_close_after_env_fastagi() -> None:
    server = ScriptedServer(b"NOOP\n", replies=1)
    run = FakeAsterisk(close_after_env=True).run_fastagi("127.0.0.1", server.port, "x", [], FakeChannel(),
                                                         timeout=5.0)
    server.join()
    assert server.env[-1] == b"\n" and server.got == []
    assert run.agistatus == "SUCCESS" and run.commands == []


def test_second_run_on_a_hung_up_channel_is_dead_mode() -> None:
    channel = FakeChannel()
    first = run_simple("exit:0", channel=channel,
                       hangup=HangupPlan.on_prefix(b"SET VARIABLE", before_reply=False))
    assert first.agistatus == "HANGUP" and channel.hung_up
    second = run_simple("exit:0", channel=channel, hangup=HangupPlan(after_env=True))
    assert second.agistatus == "SUCCESS"
    assert "SIG" not in [line.kind for line in second.transcript]


def test_cli_main_runs_a_process_agi(capsys: pytest.CaptureFixture[str]) -> None:
    from vicirec.testing.fake_asterisk import main

    assert main(["--var", "X=1", "--timeout", "10", "--", sys.executable, str(SIMPLE), "exit:0"]) == 0
    out = capsys.readouterr().out
    assert "SEND b'SET VARIABLE RESULT before-exit\\n'" in out and "AGISTATUS=SUCCESS" in out


def test_channels_lists_this_channel_and_the_others_matching_a_regex() -> None:
    chan = FakeChannel(name="SIP/trunk-0000002a")
    chan.others["Local/58600051@default-00000012;1"] = {}
    chan.others["Local/58600051@default-00000012;2"] = {}
    chan.others["Local/58600052@default-00000013;1"] = {}
    h = AgiInterpreter(chan).handle
    assert h(b"GET FULL VARIABLE ${CHANNELS(^Local/58600051@)}").chunks == [
        b"200 result=1 (Local/58600051@default-00000012;1 Local/58600051@default-00000012;2)\n"]
    assert h(b"GET FULL VARIABLE x${CHANNELS(^Local/59600051@)}").chunks == [b"200 result=1 (x)\n"]
    assert h(b"GET FULL VARIABLE ${CHANNELS(trunk)}").chunks == [b"200 result=1 (SIP/trunk-0000002a)\n"]
    assert h(b"GET FULL VARIABLE ${CHANNELS()}").chunks[0].count(b" Local/5") == 3
