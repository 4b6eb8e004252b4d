"""The consent / PCI audit trail: records, caller-number protection, safe appends, fail-closed
reporting, and the ``vicirec audit`` search."""

from __future__ import annotations

import fcntl
import gzip
import json
import os
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import pytest

from vicirec.asterisk.channel import AgiSession
from vicirec.asterisk.codec import parse_environment
from vicirec.audit import search as audit_search
from vicirec.audit import trail as audit
from vicirec.audit.search import AuditFilter
from vicirec.audit.trail import AuditError, AuditRecord, AuditTrail
from vicirec.commands import audit as audit_command
from vicirec.config import AuditSettings
from vicirec.deadline import Deadline
from vicirec.engine import Report
from vicirec.errors import ErrorCode
from vicirec.reporting import finish_invocation
from vicirec.testing.fake_asterisk import AgiInterpreter, FakeAsterisk, FakeChannel, build_env_block
from vicirec.testing.harness import (
    LAB_CUSTOMER_NUMBER,
    agi_environment,
    caller_channel,
    process_agi_command,
    write_config,
)
from vicirec.testing.simulator import VicidialSimulator
from vicirec.vicidial.responses import RecordingFields

KEY = "k" * 32
FIELDS = RecordingFields(
    agent="1000", value="121242", filename="20240501-120000_1000_CONSENT", recording_server="10.10.10.15",
    start_time="2024-05-01 12:00:00", agent_server="10.10.10.15", session_id="8600051", agent_status="INCALL",
)
CONSENT = Report(ok=True, message="recording 121242 confirmed", action="START", agent="1000",
                 agent_source="call_id", stage="_CONSENT", recording=True, fields=FIELDS,
                 confirmed_after=1.25)


def fixed_now(text: str = "2024-05-01T12:00:00.123+00:00") -> Any:
    moment = datetime.fromisoformat(text)
    return lambda: moment


def trail(path: Path, mode: str = "hash", key: str = KEY, **kw: Any) -> AuditTrail:
    return AuditTrail(AuditSettings(path=str(path), caller_number=mode, hash_key=key), host="pbx1", **kw)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- the record -------------------------------------------------------------------------------


def test_record_schema(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    writer = trail(path, now=fixed_now())
    writer.write(writer.build(CONSENT, uniqueid="1714564800.7", channel="SIP/trunk-0000002a",
                              caller_number="7275551212", transport="process"))
    [record] = lines(path)
    assert list(record) == [
        "v", "time", "host", "transport", "uniqueid", "channel", "caller", "agent", "agent_source",
        "action", "stage", "outcome", "error", "message", "recording", "recording_id", "filename",
        "confirmed_after",
    ]
    assert record == {
        "v": 1, "time": "2024-05-01T12:00:00.123Z", "host": "pbx1", "transport": "process",
        "uniqueid": "1714564800.7", "channel": "SIP/trunk-0000002a",
        "caller": audit.hash_number("7275551212", KEY.encode()), "agent": "1000", "agent_source": "call_id",
        "action": "START", "stage": "_CONSENT", "outcome": "OK", "error": "",
        "message": "recording 121242 confirmed",
        "recording": True, "recording_id": "121242", "filename": "20240501-120000_1000_CONSENT",
        "confirmed_after": 1.25,
    }
    assert AuditRecord.from_json(path.read_text()).to_json() == path.read_text().strip()


def test_error_record_and_pending_start_have_no_recording(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    writer = trail(path, mode="omit", now=fixed_now())
    pending = replace(FIELDS, value="START_CONSENT")
    failed = Report(ok=False, error=ErrorCode.NOT_CONFIRMED, message="START sent but...\nno", action="START",
                    agent="1000", fields=pending)
    writer.write(writer.build(failed, uniqueid="u", channel="c", caller_number="7275551212",
                              transport="fastagi"))
    [record] = lines(path)
    assert (record["outcome"], record["error"], record["recording_id"], record["filename"]) == (
        "ERROR", "NOT_CONFIRMED", "", "")
    assert record["caller"] == "" and record["confirmed_after"] is None and record["recording"] is None
    assert "\n" not in record["message"]


def test_from_json_tolerates_missing_and_odd_fields() -> None:
    record = AuditRecord.from_json('{"time": "2024-05-01T00:00:00Z", "agent": 1000, "confirmed_after": "x"}')
    assert (record.agent, record.confirmed_after, record.action, record.v) == ("1000", None, "", 0)
    for bad in ("[]", '{"agent": "1000"}', "not json"):
        with pytest.raises(ValueError):
            AuditRecord.from_json(bad)


# --- the caller's number ----------------------------------------------------------------------


def test_hash_is_keyed_normalised_and_prefixed() -> None:
    key = KEY.encode()
    digest = audit.hash_number("7275551212", key)
    assert digest.startswith("sha256:") and len(digest) == len("sha256:") + 64
    assert audit.hash_number("727-555-1212", key) == audit.hash_number(" (727) 555 1212 ", key) == digest
    assert audit.hash_number("7275551212", b"another key of 16+ chars") != digest
    import hashlib

    assert digest[7:] != hashlib.sha256(b"7275551212").hexdigest()  # not a plain, brute-forceable hash
    assert audit.hash_number("unknown", key) == audit.hash_number("", key) == ""
    assert audit.hash_number("anonymous", key).startswith("sha256:")


@pytest.mark.parametrize(
    ("mode", "number", "stored"),
    [
        ("mask", "7275551212", "******1212"),
        ("mask", "+1 727 555 1212", "*******1212"),
        ("mask", "1212", "****"),
        ("mask", "unknown", ""),
        ("clear", "+1 727 555 1212", "+1 727 555 1212"),
        ("clear", "unknown", ""),
        ("omit", "7275551212", ""),
    ],
)
def test_mask_clear_omit(mode: str, number: str, stored: str) -> None:
    assert audit.protect_number(number, mode, None) == stored


def test_caller_matches_each_mode() -> None:
    key = KEY.encode()
    assert audit.caller_matches(audit.hash_number("7275551212", key), "727 555 1212", key)
    assert not audit.caller_matches(audit.hash_number("7275551212", key), "7275551213", key)
    assert not audit.caller_matches(audit.hash_number("7275551212", key), "7275551212", None)
    assert audit.caller_matches("******1212", "7275551212", None)
    assert not audit.caller_matches("******1212", "7275551213", None)
    assert audit.caller_matches("+1 727-555-1212", "17275551212", None)
    assert not audit.caller_matches("", "7275551212", key)


def test_key_file_made_0640_once_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "log" / "audit.jsonl"
    first = trail(path, key="")
    caller = first.caller("7275551212")
    key_file = tmp_path / "log" / "audit.jsonl.key"
    # the group (the other transport's user) reads it; nobody else
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o640
    assert len(key_file.read_text().strip()) == 64
    assert trail(path, key="").caller("7275551212") == caller  # a second process reads the same key
    assert caller == audit.hash_number("7275551212", key_file.read_text().strip().encode())
    assert [p.name for p in key_file.parent.iterdir()] == ["audit.jsonl.key"]  # no temporary left


def test_hash_key_from_config_wins_and_no_key_file_is_made(tmp_path: Path) -> None:
    writer = trail(tmp_path / "audit.jsonl")
    assert writer.caller("7275551212") == audit.hash_number("7275551212", KEY.encode())
    assert not (tmp_path / "audit.jsonl.key").exists()


def test_key_file_race_between_processes_yields_one_key(tmp_path: Path) -> None:
    key_file = tmp_path / "audit.jsonl.key"
    code = textwrap.dedent(f"""
        import sys, time
        from vicirec.audit.trail import load_or_create_key
        while time.time() < {time.time() + 0.3!r}:
            pass
        sys.stdout.write(load_or_create_key({str(key_file)!r}).decode())
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE) for _ in range(6)]
    keys = {proc.communicate(timeout=20)[0] for proc in procs}
    assert len(keys) == 1 and len(keys.pop()) == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.jsonl.key"]


def test_damaged_or_unreadable_key_fails(tmp_path: Path) -> None:
    (tmp_path / "audit.jsonl.key").write_text("short\n")
    with pytest.raises(AuditError, match="damaged"):
        trail(tmp_path / "audit.jsonl", key="").caller("7275551212")
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(AuditError, match="key file"):
        trail(blocked / "audit.jsonl", key="").caller("7275551212")
    # omit / mask / clear never need the key
    assert trail(blocked / "audit.jsonl", mode="mask", key="").caller("7275551212") == "******1212"


# --- appending --------------------------------------------------------------------------------

WRITER = """
import sys, threading
from vicirec.audit.trail import AuditTrail
from vicirec.config import AuditSettings
from vicirec.engine import Report

path, proc, per_thread = sys.argv[1], sys.argv[2], int(sys.argv[3])
trail = AuditTrail(AuditSettings(path=path, caller_number="hash", hash_key="k" * 32))
go = threading.Barrier(4)

def work(thread):
    go.wait()
    for i in range(per_thread):
        report = Report(ok=True, action="START", agent="1000", message="x" * 300)
        trail.write(trail.build(report, uniqueid=f"{proc}.{thread}.{i}", channel="SIP/x",
                                caller_number="7275551212", transport="fastagi"))

threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
for t in threads: t.start()
for t in threads: t.join()
"""


def test_many_processes_and_threads_never_tear_or_interleave_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    procs = [subprocess.Popen([sys.executable, str(script), str(path), str(p), "40"]) for p in range(4)]
    assert [proc.wait(timeout=60) for proc in procs] == [0, 0, 0, 0]
    records = lines(path)  # every line is whole JSON
    ids = [record["uniqueid"] for record in records]
    assert len(ids) == 4 * 4 * 40 == len(set(ids))
    assert path.read_bytes().endswith(b"\n")


def test_each_record_is_fsynced_before_write_returns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "audit.jsonl"
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    writer = trail(path)
    record = writer.build(CONSENT, uniqueid="u", channel="c", caller_number="", transport="process")
    writer.write(record)
    writer.write(record)
    assert synced.count(path.stat().st_ino) == 2


def test_rotation_and_deletion_are_followed(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    writer = trail(path)

    def write(uniqueid: str) -> None:
        writer.write(writer.build(CONSENT, uniqueid=uniqueid, channel="c", caller_number="",
                                  transport="fastagi"))

    write("one")
    path.rename(tmp_path / "audit.jsonl.1")  # logrotate's default: rename, then the writer reopens
    write("two")
    path.unlink()
    write("three")
    assert [r["uniqueid"] for r in lines(tmp_path / "audit.jsonl.1")] == ["one"]
    assert [r["uniqueid"] for r in lines(path)] == ["three"]
    assert stat.S_IMODE(path.stat().st_mode) & 0o007 == 0


def test_torn_last_line_is_not_joined_to_the_next_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b'{"v":1,"time":"2024-05-01T00:00:00Z","agent":"10')  # a writer died mid-line
    writer = trail(path)
    writer.write(writer.build(CONSENT, uniqueid="u", channel="c", caller_number="", transport="process"))
    stats = audit_search.ReadStats()
    assert [r.uniqueid for r in audit_search.read_records([str(path)], stats)] == ["u"]
    assert stats.skipped == 1


def test_lock_held_elsewhere_fails_within_the_bound(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"")
    with open(path, "rb") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        writer = trail(path, lock_wait=0.2)
        began = time.monotonic()
        with pytest.raises(AuditError, match="locked"):
            writer.write(writer.build(CONSENT, uniqueid="u", channel="c", caller_number="",
                                      transport="process"))
        assert time.monotonic() - began < 2.0
    writer.write(writer.build(CONSENT, uniqueid="u", channel="c", caller_number="", transport="process"))
    assert len(lines(path)) == 1


def test_unwritable_path_raises_audit_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    writer = trail(tmp_path / "file" / "audit.jsonl")
    with pytest.raises(AuditError, match="cannot write the audit file"):
        writer.write(writer.build(CONSENT, uniqueid="u", channel="c", caller_number="", transport="process"))


def test_audit_trail_needs_a_path() -> None:
    with pytest.raises(ValueError):
        AuditTrail(AuditSettings())


# --- finish_invocation: audit first, fail closed ---------------------------------------------


class InterpreterTransport:
    """An in-process AGI transport: every command goes to the fake Asterisk's interpreter."""

    def __init__(self, interpreter: AgiInterpreter, events: list[str]) -> None:
        self.interpreter = interpreter
        self.events = events
        self._pending = b""

    def send(self, data: bytes, deadline: Deadline) -> None:
        self.events.append("set" if data.startswith(b"SET VARIABLE") else "command")
        self._pending += b"".join(self.interpreter.handle(data.rstrip(b"\n")).chunks)

    def receive(self, deadline: Deadline) -> bytes:
        data, self._pending = self._pending, b""
        return data

    def close(self) -> None:
        pass


class RecordingLog:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.events.append(("info", event, fields))

    def exception(self, event: str, **fields: Any) -> None:
        self.events.append(("exception", event, fields))

    error = exception


def fake_session(events: list[str], channel: Optional[FakeChannel] = None) -> tuple[AgiSession, FakeChannel]:
    channel = channel or caller_channel()
    environment = parse_environment(b"".join(build_env_block(channel, "vicirec.agi", ["START", "_CONSENT"])))
    return AgiSession(InterpreterTransport(AgiInterpreter(channel), events), environment), channel


class SpyTrail(AuditTrail):
    def __init__(self, path: Path, events: list[str]) -> None:
        super().__init__(AuditSettings(path=str(path), caller_number="mask"))
        self.events = events

    def write(self, record: AuditRecord) -> None:
        self.events.append("audit")
        super().write(record)


def test_audit_record_is_written_before_any_variable(tmp_path: Path) -> None:
    events: list[str] = []
    session, channel = fake_session(events)
    log = RecordingLog()
    spy = SpyTrail(tmp_path / "audit.jsonl", events)
    assert finish_invocation(session, CONSENT, log, transport="process", started=time.monotonic(), audit=spy)
    assert events[0] == "audit" and set(events[1:]) == {"set"}
    assert channel.variables["VICIREC_RESULT"] == "OK"
    [record] = lines(tmp_path / "audit.jsonl")
    assert (record["uniqueid"], record["channel"], record["caller"]) == (
        channel.uniqueid, channel.name, "******" + LAB_CUSTOMER_NUMBER[-4:])
    [summary] = [fields for level, event, fields in log.events if event == "invocation"]
    assert summary["audited"] is True and summary["result"] == "OK"


def test_audit_failure_downgrades_ok_to_internal_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    events: list[str] = []
    session, channel = fake_session(events)
    log = RecordingLog()
    broken = trail(tmp_path / "file" / "audit.jsonl")
    assert finish_invocation(session, CONSENT, log, transport="process", started=time.monotonic(),
                             audit=broken)
    variables = channel.variables
    assert (variables["VICIREC_RESULT"], variables["VICIREC_ERROR"]) == ("ERROR", "INTERNAL")
    assert variables["VICIREC_MESSAGE"].startswith("the audit trail could not be written")
    assert "ended OK" in variables["VICIREC_MESSAGE"]
    assert variables["VICIREC_RECORDING_ID"] == "121242"  # what happened is still told
    failures = [fields for level, event, fields in log.events if event == "audit_write_failed"]
    assert failures and failures[0]["original_result"] == "OK"
    [summary] = [fields for level, event, fields in log.events if event == "invocation"]
    assert (summary["result"], summary["error"], summary["audited"]) == ("ERROR", "INTERNAL", False)


def test_any_exception_in_the_audit_fails_closed(tmp_path: Path) -> None:
    class Exploding(AuditTrail):
        def write(self, record: AuditRecord) -> None:
            raise RuntimeError("boom")

    session, channel = fake_session([])
    failed = Report(ok=False, error=ErrorCode.UNREACHABLE, message="down", action="START")
    finish_invocation(session, failed, RecordingLog(), transport="fastagi", started=time.monotonic(),
                      audit=Exploding(AuditSettings(path=str(tmp_path / "a"), caller_number="omit")))
    assert (channel.variables["VICIREC_RESULT"], channel.variables["VICIREC_ERROR"]) == ("ERROR", "INTERNAL")
    assert "ended ERROR UNREACHABLE" in channel.variables["VICIREC_MESSAGE"]


def test_without_an_audit_trail_nothing_changes() -> None:
    session, channel = fake_session([])
    log = RecordingLog()
    finish_invocation(session, CONSENT, log, transport="process", started=time.monotonic())
    assert channel.variables["VICIREC_RESULT"] == "OK"
    assert [fields["audited"] for _level, event, fields in log.events if event == "invocation"] == [None]


# --- the process AGI, for real ----------------------------------------------------------------


@pytest.fixture
def simulator() -> Iterator[VicidialSimulator]:
    with VicidialSimulator(screen_delay=0.05) as sim:
        yield sim


def run_agi(config: Path, args: list[str]) -> dict[str, str]:
    run = FakeAsterisk().run_process(process_agi_command(), args, caller_channel(),
                                     env=agi_environment(config), timeout=20.0)
    assert run.exit_code == 0, run.stderr
    return {name: value for name, value in run.channel.variables.items() if name.startswith("VICIREC_")}


def test_process_agi_audits_the_consent_and_the_cli_finds_it(
    tmp_path: Path, simulator: VicidialSimulator, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "audit" / "audit.jsonl"
    config = write_config(tmp_path, simulator.api_url, overrides={"audit": {"path": str(path)}})
    started = run_agi(config, ["START", "_CONSENT", "confirm=3", "agent=1000"])
    assert started["VICIREC_RESULT"] == "OK"
    run_agi(config, ["STOP", "confirm=3", "agent=1000"])
    start, stop = lines(path)
    assert (start["action"], start["outcome"], start["recording_id"], start["filename"]) == (
        "START", "OK", started["VICIREC_RECORDING_ID"], started["VICIREC_FILENAME"])
    assert start["transport"] == "process" and start["agent_source"] == "argument"
    assert isinstance(start["confirmed_after"], float)
    assert start["caller"].startswith("sha256:") and LAB_CUSTOMER_NUMBER not in path.read_text()
    assert stop["action"] == "STOP" and stop["recording"] is False

    capsys.readouterr()
    assert audit_command.main(["--config", str(config), "--consent", "--caller", LAB_CUSTOMER_NUMBER,
                       "--format", "json"]) == 0
    [found] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert found["recording_id"] == started["VICIREC_RECORDING_ID"]


def test_process_agi_reports_internal_error_when_the_audit_cannot_be_written(
    tmp_path: Path, simulator: VicidialSimulator
) -> None:
    (tmp_path / "file").write_text("")
    config = write_config(tmp_path, simulator.api_url,
                          overrides={"audit": {"path": str(tmp_path / "file" / "audit.jsonl"),
                                               "caller_number": "omit"}})
    result = run_agi(config, ["START", "_CONSENT", "confirm=3", "agent=1000"])
    assert (result["VICIREC_RESULT"], result["VICIREC_ERROR"]) == ("ERROR", "INTERNAL")
    assert "audit trail could not be written" in result["VICIREC_MESSAGE"]
    assert "the action itself ended OK" in result["VICIREC_MESSAGE"]
    assert simulator.starts_for("1000") == 1  # VICIdial did start it: the channel still reads ERROR
    log = (tmp_path / "vicirec.log").read_text()
    assert '"audit_write_failed"' in log


# --- vicirec audit ----------------------------------------------------------------------------


def sample(agent: str, action: str, ok: bool) -> Report:
    return Report(ok=ok, error=None if ok else ErrorCode.UNREACHABLE, action=action, agent=agent,
                  fields=FIELDS if action == "START" and ok else None,
                  confirmed_after=0.5 if action == "START" and ok else None)


ROWS = [
    # agent, action, ok, time, uniqueid, caller
    ("1000", "START", True, "2024-05-01T09:00:00+00:00", "100.1", "7275551212"),
    ("1000", "STOP", True, "2024-05-01T09:05:00+00:00", "100.1", "7275551212"),
    ("1001", "START", False, "2024-05-01T23:59:59.500+00:00", "100.2", "8135550000"),
    ("1001", "START", True, "2024-05-02T00:00:00+00:00", "100.3", "8135550000"),
    ("1002", "STATUS", True, "2024-05-03T10:00:00+00:00", "100.4", ""),
]


@pytest.fixture
def audit_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VICIREC_CONFIG", str(tmp_path / "no-config.toml"))
    path = tmp_path / "audit.jsonl"
    for agent, action, ok, when, uniqueid, caller in ROWS:
        writer = AuditTrail(AuditSettings(path=str(path)), now=fixed_now(when), host="pbx1")
        report = sample(agent, action, ok)
        writer.write(writer.build(report, uniqueid=uniqueid, channel="SIP/x", caller_number=caller,
                                  transport="fastagi"))
    with open(path, "a") as file:
        file.write("not a record\n")
    return path


def search(capsys: pytest.CaptureFixture[str], path: Path, *args: str) -> tuple[int, list[str], str]:
    capsys.readouterr()
    code = audit_command.main(["--file", str(path), "--format", "json", *args])
    out, err = capsys.readouterr()
    found = [json.loads(line) for line in out.splitlines()]
    return code, [record["uniqueid"] + ":" + record["action"] for record in found], err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), ["100.1:START", "100.1:STOP", "100.2:START", "100.3:START", "100.4:STATUS"]),
        (("--uniqueid", "100.1"), ["100.1:START", "100.1:STOP"]),
        (("--agent", "1001"), ["100.2:START", "100.3:START"]),
        (("--action", "stop"), ["100.1:STOP"]),
        (("--outcome", "ERROR"), ["100.2:START"]),
        (("--outcome", "ok", "--action", "START"), ["100.1:START", "100.3:START"]),
        (("--since", "2024-05-02"), ["100.3:START", "100.4:STATUS"]),
        (("--until", "2024-05-01"), ["100.1:START", "100.1:STOP", "100.2:START"]),  # that whole day
        (("--since", "2024-05-01T09:05:00Z", "--until", "2024-05-01T23:59:59"), ["100.1:STOP"]),
        (("--since", "2024-05-01 11:05+02:00", "--until", "2024-05-02"), ["100.1:STOP", "100.2:START",
                                                                          "100.3:START"]),
        (("--consent",), ["100.1:START", "100.3:START"]),
        (("--consent", "--agent", "1001"), ["100.3:START"]),
        (("--caller", "(727) 555-1212"), ["100.1:START", "100.1:STOP"]),
        (("--caller", "8135550000", "--consent"), ["100.3:START"]),
    ],
)
def test_filters(audit_file: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...],
                 expected: list[str]) -> None:
    code, found, err = search(capsys, audit_file, *args)
    assert (code, found) == (0, expected)
    assert "skipped 1 line(s)" in err


def test_no_match_exits_1(audit_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert search(capsys, audit_file, "--agent", "9999")[:2] == (1, [])
    assert search(capsys, audit_file, "--caller", "7275551213")[:2] == (1, [])


def test_caller_search_in_mask_and_clear_files(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VICIREC_CONFIG", str(tmp_path / "no-config.toml"))
    for mode in ("mask", "clear"):
        path = tmp_path / f"{mode}.jsonl"
        writer = trail(path, mode=mode)
        writer.write(writer.build(CONSENT, uniqueid=mode, channel="c", caller_number="727-555-1212",
                                  transport="process"))
        assert search(capsys, path, "--caller", "7275551212")[:2] == (0, [f"{mode}:START"])
        assert search(capsys, path, "--caller", "7275559999")[:2] == (1, [])


def test_hashed_caller_needs_the_key(
    audit_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "elsewhere.jsonl"
    other.write_bytes(audit_file.read_bytes())  # no key file next to the copy
    code, found, err = search(capsys, other, "--caller", "7275551212")
    assert (code, found) == (1, [])
    assert "hashed caller numbers cannot be matched" in err
    key_file = tmp_path / "audit.jsonl.key"
    assert search(capsys, other, "--caller", "7275551212", "--key-file", str(key_file))[:2] == (
        0, ["100.1:START", "100.1:STOP"])


def test_consent_table(audit_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert audit_command.main(["--file", str(audit_file), "--consent", "--uniqueid", "100.1"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["TIME", "(UTC)", "UNIQUEID", "AGENT", "ACTION", "STAGE", "RESULT", "RECORDING",
                              "FILENAME", "CONFIRMED", "CALLER"]
    assert row.split()[:8] == ["2024-05-01T09:00:00.000Z", "100.1", "1000", "START", "OK", "121242",
                               "20240501-120000_1000_CONSENT", "0.5s"]
    assert row.split()[8].startswith("sha256:") and row.index("121242") == header.index("RECORDING")


def test_config_gives_the_file_and_gz_rotations_are_read(
    audit_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rotated = tmp_path / "audit.jsonl.1.gz"
    with gzip.open(rotated, "wb") as file:
        file.write(audit_file.read_bytes())
    capsys.readouterr()
    assert audit_command.main(["--file", str(rotated), "--consent", "--format", "json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2

    config = write_config(tmp_path, "http://127.0.0.1:9/agc/api.php",
                          overrides={"audit": {"path": str(audit_file)}})
    monkeypatch.setenv("VICIREC_CONFIG", str(config))
    assert audit_command.main(["--agent", "1002", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["action"] == "STATUS"


def test_usage_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VICIREC_CONFIG", str(tmp_path / "no-config.toml"))
    assert audit_command.main([]) == 2
    assert "no audit file" in capsys.readouterr().err
    assert audit_command.main(["--file", str(tmp_path / "missing.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert audit_command.main(["--file", str(tmp_path / "x"), "--since", "yesterday"]) == 2
    assert "bad date" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        audit_command.main(["--outcome", "MAYBE"])


def test_filter_object_is_pure() -> None:
    record = AuditRecord.from_json(json.dumps({"time": "2024-05-01T12:00:00Z", "action": "START",
                                               "outcome": "OK", "agent": "1000", "uniqueid": "1"}))
    moment = datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
    assert AuditFilter(since=moment).matches(record)
    assert not AuditFilter(until=moment).matches(record)  # until is exclusive
    assert AuditFilter(consent=True, agent="1000").matches(record)
    assert not AuditFilter(consent=True, outcome="ERROR").matches(record)
    broken = replace(record, time="garbage")
    assert not AuditFilter(since=moment).matches(broken) and AuditFilter().matches(broken)


def test_cli_dispatches_audit(audit_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vicirec.commands import cli

    capsys.readouterr()
    assert cli.main(["audit", "--file", str(audit_file), "--uniqueid", "100.4", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["agent"] == "1002"


def test_threads_share_one_trail(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    writer = trail(path)
    barrier = threading.Barrier(8)

    def work(n: int) -> None:
        barrier.wait()
        for i in range(25):
            if i == 10 and n == 0:
                os.rename(path, tmp_path / "audit.jsonl.1")  # rotation while others write
            writer.write(writer.build(CONSENT, uniqueid=f"{n}.{i}", channel="c", caller_number="1",
                                      transport="fastagi"))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    ids = [r["uniqueid"] for r in lines(path) + lines(tmp_path / "audit.jsonl.1")]
    assert len(ids) == 200 == len(set(ids))


def test_files_either_transport_creates_are_group_writable_whatever_the_umask(tmp_path: Path) -> None:
    """The process AGI (user asterisk) and the daemon (user vicirec, group asterisk) share the trail,
    the key and the log: what one creates under Asterisk's usual umask 022 the other must write."""
    from vicirec import logs
    from vicirec.config import LogSettings
    from vicirec.redaction import Redactor

    previous = os.umask(0o022)
    try:
        writer = trail(tmp_path / "audit.jsonl", key="")
        writer.caller("7275551212")  # makes the key
        writer.write(writer.record(CONSENT, parse_environment(b"agi_uniqueid: 1.1\n\n"), transport="process"))
        logs.configure(LogSettings(target="file", path=str(tmp_path / "vicirec.log")), Redactor())
        logs.get_logger().info("hello")
    finally:
        os.umask(previous)
        logs.configure_fallback()
    modes = {name: stat.S_IMODE((tmp_path / name).stat().st_mode)
             for name in ("audit.jsonl", "audit.jsonl.key", "vicirec.log")}
    assert modes == {"audit.jsonl": 0o660, "audit.jsonl.key": 0o640, "vicirec.log": 0o660}
