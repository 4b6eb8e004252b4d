"""Words that mislead (issue 9, point 7): what the template, --help, the demo, ``serve`` and the
variables say must be what the code does, and a refused connection must not hold the caller."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_retry_server import refused_port
from vicirec.config import config_from_mapping
from vicirec.deadline import Deadline
from vicirec.engine import MESSAGE_MAX_CHARS, Report
from vicirec.errors import ConfigError, ErrorCode, Unreachable
from vicirec.testing.fake_asterisk import FakeAsterisk
from vicirec.testing.harness import agi_environment, caller_channel, process_agi_command, write_config
from vicirec.vicidial.client import VicidialClient
from vicirec.vicidial.responses import Action

ROOT = Path(__file__).resolve().parent.parent


def vicirec(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vicirec", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_template_says_busy_connections_are_answered_not_queued() -> None:
    template = (ROOT / "deploy" / "vicirec.toml.example").read_text()
    comment = template.split("\nmax_sessions =")[0].rsplit("\n\n", 1)[-1]
    comment = "\n".join(line for line in comment.splitlines() if line.startswith("#")
                        and not line.startswith("# Address") and "port" not in line)
    assert "UNREACHABLE" in comment and "wait for a free slot" not in comment, comment


@pytest.mark.parametrize("command", ["demo", "check", "simulator", "status", "whois", "serve"])
def test_help_is_plain_text_under_the_command_s_own_name(command: str) -> None:
    shown = vicirec(command, "--help")
    assert shown.returncode == 0, shown
    assert shown.stdout.startswith(f"usage: vicirec {command} "), shown.stdout[:80]
    assert "``" not in shown.stdout and ":mod:" not in shown.stdout


def test_numeric_user_says_to_quote_it() -> None:
    quote = r'vicidial.user must be a string: put it in quotes \(user = "6666"\)'
    with pytest.raises(ConfigError, match=quote):
        config_from_mapping({"vicidial": {"api_url": "https://d/agc/api.php", "user": 6666,
                                          "password": "x1"}})


@pytest.mark.parametrize(("section", "key"), [("vicidial", "password"), ("audit", "hash_key")])
def test_a_numeric_secret_is_never_repeated_in_the_quote_hint(section: str, key: str) -> None:
    settings = {"vicidial": {"api_url": "https://d/agc/api.php", "user": "6666", "password": "x1"}}
    settings.setdefault(section, {})[key] = 98765432  # type: ignore[index]
    with pytest.raises(ConfigError) as raised:
        config_from_mapping(settings)
    assert "put it in quotes" in raised.value.message
    assert "98765432" not in str(raised.value) and "98765432" not in raised.value.message


def test_message_is_cut_at_a_word_with_an_ellipsis_and_logged_whole() -> None:
    reason = ("no agent found (session: VICIREC_ROOM is not set and no single ConfBridge announcer is in "
              "BRIDGEPEER; call_id: refused agent 1000 (agents.require_corroboration = true): call "
              "V1123181500000000001 is agent 1000's call, but the http lookup cannot corroborate it)")
    report = Report(ok=False, error=ErrorCode.NO_AGENT, message=reason)
    shown = dict(report.variables())["VICIREC_MESSAGE"]
    assert len(shown) <= MESSAGE_MAX_CHARS and shown.endswith("…")
    assert reason.startswith(shown[:-1]) and reason[len(shown) - 1] == " "  # cut between words
    assert report.log_fields()["message"] == reason
    short = Report(ok=True, message="recording")
    assert dict(short.variables())["VICIREC_MESSAGE"] == "recording"


def test_a_long_no_agent_reason_reaches_the_channel_cut_and_the_log_whole(tmp_path: Path) -> None:
    from vicirec.testing.simulator import VicidialSimulator

    with VicidialSimulator(screen_delay=None) as sim:
        config = write_config(tmp_path, sim.api_url)
        run = FakeAsterisk().run_process(process_agi_command(), ["STATUS"], caller_channel(),
                                         env=agi_environment(config), timeout=30)
    message = run.channel.variables["VICIREC_MESSAGE"]
    assert run.channel.variables["VICIREC_ERROR"] == "NO_AGENT"
    assert message.endswith("…") and len(message) <= MESSAGE_MAX_CHARS, message
    (event,) = [json.loads(line) for line in (tmp_path / "vicirec.log").read_text().splitlines()
                if '"invocation"' in line]
    assert len(event["message"]) > MESSAGE_MAX_CHARS and event["message"].startswith(message[:-1])


def test_a_refused_connection_is_tried_twice_not_until_the_deadline() -> None:
    holder, port = refused_port()
    try:
        config = config_from_mapping({"vicidial": {
            "api_url": f"http://127.0.0.1:{port}/agc/api.php", "user": "6666", "password": "x1"}})
        for action in (Action.START, Action.STATUS):
            client = VicidialClient(config)
            began = time.monotonic()
            with pytest.raises(Unreachable, match="connection refused"):
                client.recording(action, "1000", Deadline(6.0))
            assert client.requests_sent == 2, action
            assert time.monotonic() - began < 0.5, action
    finally:
        holder.close()


def test_a_start_against_a_closed_port_does_not_hold_the_caller(tmp_path: Path) -> None:
    """The defaults (deadline 6 s): the caller used to sit through ~5 s of retries."""
    holder, port = refused_port()
    try:
        config = write_config(tmp_path, f"http://127.0.0.1:{port}/agc/api.php")
        run = FakeAsterisk().run_process(process_agi_command(), ["START", "agent=1000"], caller_channel(),
                                         env=agi_environment(config), timeout=30)
    finally:
        holder.close()
    assert run.channel.variables["VICIREC_ERROR"] == "UNREACHABLE"
    assert run.elapsed < 2.0, run.elapsed  # Python's start-up, one retry 50 ms later, the report


def test_demo_says_its_config_is_temporary_or_keeps_it(tmp_path: Path) -> None:
    shown = vicirec("demo", "--screen-delay", "0.2")
    assert shown.returncode == 0, shown
    line = next(line for line in shown.stdout.splitlines() if line.startswith("config: "))
    path = Path(line.split()[1])
    assert not path.exists() and "temporary" in line, line
    kept = vicirec("demo", "--screen-delay", "0.2", "--keep", str(tmp_path / "demo"))
    assert kept.returncode == 0, kept
    line = next(line for line in kept.stdout.splitlines() if line.startswith("config: "))
    assert Path(line.split()[1]).is_file() and (tmp_path / "demo" / "audit.jsonl").is_file()


def test_serve_says_where_it_listens(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9/agc/api.php")
    command = [sys.executable, "-m", "vicirec", "serve", "--config", str(config), "--port", "0"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
    finally:
        process.terminate()
        process.wait(timeout=20)
    assert re.fullmatch(rf"vicirec serve: listening on 127\.0\.0\.1:\d+, config {re.escape(str(config))}, "
                        rf"pid {process.pid}\n", line), line
