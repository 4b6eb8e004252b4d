"""``vicirec status|start|stop --agent U`` and ``vicirec whois`` from a shell, against the simulator.

They run as an administrator would run them (``python -m vicirec ...`` in a subprocess) and go
through the same engine, sanitiser, audit trail and log as a call (transport ``cli``).
"""

# The fixture is imported by name (no pytest_plugins), so test parameters named after it "redefine" it.
# ruff: noqa: F811

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mariadb_server import MariaDb, mariadb  # noqa: F401 - mariadb is a fixture
from vicirec.testing.harness import LAB_API_PASSWORD, LAB_CALL_ID, write_config
from vicirec.testing.simulator import VicidialSimulator


@pytest.fixture(scope="module")
def sim() -> Iterator[VicidialSimulator]:
    with VicidialSimulator(screen_delay=0.2) as simulator:
        yield simulator


@pytest.fixture()
def config(sim: VicidialSimulator, tmp_path: Path) -> Path:
    sim.reset()
    return write_config(tmp_path, sim.api_url, overrides={"audit": {"path": str(tmp_path / "audit.jsonl")}})


def vicirec(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vicirec", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=60, check=False)


def variables(stdout: str) -> dict[str, str]:
    pairs = [line.split("=", 1) for line in stdout.splitlines()]
    assert all(len(pair) == 2 and pair[0].startswith("VICIREC_") for pair in pairs), stdout
    return {name: value for name, value in pairs}


def records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_status_prints_the_variables_and_exits_0(sim: VicidialSimulator, config: Path) -> None:
    run = vicirec(config, "status", "--agent", "1000")
    assert run.returncode == 0, run
    found = variables(run.stdout)
    assert (found["VICIREC_RESULT"], found["VICIREC_ACTION"]) == ("OK", "STATUS")
    assert found["VICIREC_AGENT"] == "1000"
    assert (found["VICIREC_AGENT_SOURCE"], found["VICIREC_RECORDING"]) == ("argument", "0")
    assert sim.count(function="recording", value="STATUS", agent_user="1000") == 1
    assert LAB_API_PASSWORD not in run.stdout + run.stderr


def test_start_goes_through_sanitiser_confirmation_audit_log(sim: VicidialSimulator, config: Path) -> None:
    run = vicirec(config, "start", "--agent", "1000", "--stage", "CONSENT-STOP!", "--confirm", "4")
    assert run.returncode == 0, run
    found = variables(run.stdout)
    assert (found["VICIREC_RESULT"], found["VICIREC_RECORDING"]) == ("OK", "1"), found
    assert found["VICIREC_RECORDING_ID"].isdigit()
    # The stage sanitiser of a call: the command word and the '!' never reach VICIdial.
    assert found["VICIREC_STAGE"] == "CONSENT-"
    assert sim.count(function="recording", value="START") == 1
    assert sim.starts_for("1000") == 1
    (record,) = records(config.parent / "audit.jsonl")
    assert (record["transport"], record["action"], record["outcome"]) == ("cli", "START", "OK")
    assert record["agent"] == "1000"
    assert str(record["channel"]).startswith("CLI/")
    events = [e for e in records(config.parent / "vicirec.log") if e.get("event") == "invocation"]
    assert [(e["transport"], e["action"], e["result"]) for e in events] == [("cli", "START", "OK")]
    assert any(e.get("event") == "stage_sanitised" for e in records(config.parent / "vicirec.log"))


def test_stop_with_nothing_to_stop_exits_1(config: Path) -> None:
    run = vicirec(config, "stop", "--agent", "1000", "--confirm", "0")
    assert run.returncode == 1, run
    found = variables(run.stdout)
    assert (found["VICIREC_RESULT"], found["VICIREC_ERROR"]) == ("ERROR", "NOTHING_TO_STOP")


def test_json_prints_one_object(config: Path) -> None:
    run = vicirec(config, "status", "--agent", "1003", "--json")
    assert run.returncode == 1
    (line,) = run.stdout.splitlines()
    found = json.loads(line)
    assert (found["VICIREC_RESULT"], found["VICIREC_ERROR"]) == ("ERROR", "NOT_LOGGED_IN")


def test_an_agent_a_call_would_refuse_is_refused_unsent(sim: VicidialSimulator, config: Path) -> None:
    run = vicirec(config, "start", "--agent", "1000;STOP")
    assert run.returncode == 1
    assert variables(run.stdout)["VICIREC_ERROR"] == "BAD_REQUEST"
    assert sim.count(function="recording") == 0
    assert records(config.parent / "audit.jsonl")[0]["error"] == "BAD_REQUEST"


def test_a_broken_config_still_prints_the_variables(tmp_path: Path) -> None:
    run = vicirec(tmp_path / "absent.toml", "status", "--agent", "1000")
    assert run.returncode == 1
    assert variables(run.stdout)["VICIREC_ERROR"] == "CONFIG"
    assert "does not exist" in run.stderr


def test_whois_shows_every_resolver_and_acts_on_nothing(sim: VicidialSimulator, config: Path) -> None:
    run = vicirec(config, "whois", "--call-id", LAB_CALL_ID)
    assert run.returncode == 1, run
    lines = run.stdout.splitlines()
    by_resolver = {line.split()[0]: line for line in lines if line.startswith("  ")}
    assert list(by_resolver) == ["argument", "channel_variable", "call_id", "session"]
    # The http lookup finds agent 1000 on the call but cannot corroborate a caller-chosen id.
    assert "refused" in by_resolver["call_id"] and "1000" in by_resolver["call_id"]
    assert "cannot corroborate" in by_resolver["call_id"]
    assert lines[-1].startswith("=> NO_AGENT")
    assert sim.count(function="recording") == 0
    assert sim.count(function="logged_in_agents") == 1


def test_whois_with_the_room_finds_the_agent(sim: VicidialSimulator, config: Path) -> None:
    run = vicirec(config, "whois", "--call-id", LAB_CALL_ID, "--room", "8600051",
                  "--channel", "SIP/trunk-0000002a")
    assert run.returncode == 0, run
    by_resolver = {line.split()[0]: line for line in run.stdout.splitlines() if line.startswith("  ")}
    assert "found 1000" in by_resolver["call_id"] and "found 1000" in by_resolver["session"]
    assert run.stdout.splitlines()[-1] == "=> agent 1000 (found by call_id)"
    assert sim.count(function="recording") == 0


def test_whois_reports_a_lookup_failure_per_resolver(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:1/agc/api.php")
    run = vicirec(config, "whois", "--call-id", LAB_CALL_ID)
    assert run.returncode == 1
    assert "UNREACHABLE" in run.stdout and run.stdout.splitlines()[-1].startswith("=> UNREACHABLE")


def test_whois_needs_a_fact(config: Path) -> None:
    assert vicirec(config, "whois").returncode == 2


@pytest.mark.mysql
def test_whois_with_the_mysql_lookup_corroborates_by_uniqueid(sim: VicidialSimulator, tmp_path: Path,
                                                             mariadb: MariaDb) -> None:
    """The uniqueid a CDR shows is what ties a caller-chosen call id to the agent's call."""
    sim.reset()
    mariadb.replace_agents([{
        "user": "1000", "server_ip": "10.10.10.15", "conf_exten": "8600051", "extension": "SIP/1000",
        "status": "INCALL", "lead_id": 1, "campaign_id": "TESTCAMP", "uniqueid": "1795459430.20",
        "callerid": LAB_CALL_ID, "channel": "SIP/trunk-0000002a"}])
    conf = mariadb.astguiclient_conf(tmp_path / "astguiclient.conf")
    config = write_config(tmp_path, sim.api_url, overrides={"agents": {
        "lookup": "mysql", "astguiclient_conf": str(conf),
        "resolvers": ["argument", "call_id", "bridge_peer"]}})
    right = vicirec(config, "whois", "--call-id", LAB_CALL_ID, "--uniqueid", "1795459430.20")
    assert right.returncode == 0, right
    assert "uniqueid" in right.stdout and right.stdout.splitlines()[-1] == "=> agent 1000 (found by call_id)"
    wrong = vicirec(config, "whois", "--call-id", LAB_CALL_ID, "--uniqueid", "1795459999.99")
    assert wrong.returncode == 1
    by_resolver = {line.split()[0]: line for line in wrong.stdout.splitlines() if line.startswith("  ")}
    refusal = by_resolver["call_id"]
    assert "refused" in refusal and "different uniqueid" in refusal, wrong.stdout
    assert "BRIDGEPEER is empty" in by_resolver["bridge_peer"]
    assert sim.requests == []
