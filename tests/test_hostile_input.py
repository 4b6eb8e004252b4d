"""Hostile dialplan arguments and broken configs, through the real process AGI (``vicirec-agi``).

Arguments come from dialplan, and a careless dialplan pastes caller-controlled text into them. Each
case ends in a clear ``BAD_REQUEST`` (nothing sent to VICIdial) or a sanitised value (what VICIdial
received is checked in the simulator's request records): never the raw text. Configs: a missing,
unreadable or broken file still sets every variable (``CONFIG``); the unsafe-but-working ones
(a world-readable file with the password, plain http to another host) warn in the log, and
``vicirec check`` says so.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from faultlab import (
    SECRET,
    Endpoint,
    assert_contract,
    assert_no_secret,
    fresh_agent,
    fresh_channel,
    invocation_event,
    lab_config,
    log_events,
    secure,
)
from vicirec.testing.harness import toml_text, write_config
from vicirec.testing.simulator import RequestRecord, VicidialSimulator

#: What vicirec may ever send as a stage: api.php's own filters keep more, the agent screen less.
SAFE_STAGE = re.compile(r"^[A-Za-z0-9_-]{0,14}$")
#: What vicirec may ever send as agent_user.
SAFE_AGENT = re.compile(r"^[A-Za-z0-9_-]{1,20}$")


class Lab:
    def __init__(self, root: Path, sim: VicidialSimulator) -> None:
        self.sim = sim
        self.root = root
        self.endpoint = Endpoint("process", lab_config(root / "process", sim.api_url, deadline=6.0))

    def requests_for(self, agent: str) -> list[RequestRecord]:
        return [r for r in self.sim.requests if r.params.get("agent_user") == agent]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with VicidialSimulator(screen_delay=0.05) as sim:
        secure(sim)
        yield Lab(tmp_path_factory.mktemp("hostile"), sim)


def all_sent_values(sim: VicidialSimulator) -> str:
    with sim.state.lock:
        records = list(sim.requests)
    return "\n".join(value for record in records for value in record.params.values())


# --- the action and the options ---------------------------------------------------------------

BAD_ARGUMENTS = {
    "unknown action": ["PAUSE"],
    "empty action": [""],
    "two actions in one": ["START;STOP"],
    "unknown option": ["START", "bogus=1"],
    "credential override": ["STATUS", "pass=guess"],
    "user override": ["STATUS", "user=6666"],
    "option given twice": ["STATUS", "agent=1000", "agent=1001"],
    "confirm not a number": ["STOP", "confirm=1e9999"],
    "negative confirm": ["STOP", "confirm=-1"],
    "stage on STATUS": ["STATUS", "_CONSENT"],
    "comma in an unquoted stage (AGI() splits it)": ["START", "_PART", "ONE"],
    "stage of 500 characters": ["START", "S" * 500],
}


@pytest.mark.parametrize("args", list(BAD_ARGUMENTS.values()), ids=list(BAD_ARGUMENTS))
def test_bad_arguments_are_refused_before_vicidial(lab: Lab, args: list[str]) -> None:
    before = len(lab.sim.requests)
    channel = fresh_channel()
    run = lab.endpoint.run(args, channel)
    result = assert_contract(run, lab.endpoint)
    assert (result["VICIREC_RESULT"], result["VICIREC_ERROR"]) == ("ERROR", "BAD_REQUEST"), result
    assert len(lab.sim.requests) == before, "a refused request reached VICIdial"
    # The message names the problem without echoing the raw text.
    message = result["VICIREC_MESSAGE"]
    assert message and "\n" not in message and len(message) <= 200
    for raw in args[1:]:
        if len(raw) > 24:
            assert raw not in message
    event = invocation_event(lab.endpoint, channel.uniqueid)
    assert (event["result"], event["error"]) == ("ERROR", "BAD_REQUEST")
    assert_no_secret(run, lab.endpoint)


# --- line breaks inside an argument ------------------------------------------------------------

LINE_BREAKS = {
    "in the action": ["STATUS\nSTOP"],
    "in the stage": ["START", "_CON\nSENT"],
    "in agent=": ["START", "agent=1000\n1001"],
    "empty line, then a forged argument": ["START", "_X\n\nagi_arg_3: agent=1001", "agent=1000"],
}


@pytest.mark.parametrize("args", list(LINE_BREAKS.values()), ids=list(LINE_BREAKS))
def test_line_break_inside_an_argument(lab: Lab, args: list[str]) -> None:
    """Asterisk writes ``agi_arg_N: value`` raw, so a line break in an argument breaks the
    environment block itself. vicirec refuses the block: a clean exit 1 with nothing sent to
    VICIdial (the dialplan sees no VICIREC_RESULT, which is not OK) and an error in the log."""
    before = len(lab.sim.requests)
    logged_before = len(log_events(lab.endpoint.log))
    run = lab.endpoint.run(args, fresh_channel())
    assert not run.timed_out and run.signal is None
    assert b"Traceback" not in run.stderr, run.stderr.decode("utf-8", "replace")
    assert run.exit_code in (0, 1)
    assert len(lab.sim.requests) == before, "an argument with a line break reached VICIdial"
    assert "1001" not in all_sent_values(lab.sim)
    if run.exit_code == 1:
        assert run.channel.variables.get("VICIREC_RESULT") is None
        (event,) = log_events(lab.endpoint.log)[logged_before:]
        # The block was refused, or it ended early at the empty line and what followed was no reply.
        assert event["event"] == "agi_environment_unreadable" or (
            event["event"] == "invocation" and event["variables_set"] is False), event
    else:
        assert run.channel.variables.get("VICIREC_RESULT") == "ERROR"


# --- the stage label ----------------------------------------------------------------------------

STAGES = {
    "pipes": "|_CON|SENT|",
    "quotes": "_\"CON'SENT\\\"",
    "semicolons and SQL": "_X'; DELETE FROM recording_log;--",
    "unicode": "_ñandú_日本語_é",
    "command words": "_STSTOPOP_START_STATUS",
    "dialplan expression": "${CHANNEL}$[1+1]",
    "ampersand parameters": "_A&value=STOP&agent_user=1001",
    "199 characters": "_" + "C" * 198,
    "control characters": "_A\x07B\x1bC\rD\tE\x7fF",
    "only junk": "|||\"\"\"''';;;",
}


@pytest.mark.parametrize("stage", list(STAGES.values()), ids=list(STAGES))
def test_hostile_stage_is_sanitised(lab: Lab, stage: str) -> None:
    agent = fresh_agent(lab.sim)
    run = lab.endpoint.run(["START", stage, f"agent={agent}"], fresh_channel())
    result = assert_contract(run, lab.endpoint)
    assert (result["VICIREC_RESULT"], result["VICIREC_ERROR"]) == ("OK", ""), result
    (record,) = lab.requests_for(agent)
    sent = record.params.get("stage", "")
    assert record.params["value"] == "START"
    assert SAFE_STAGE.match(sent), sent
    assert not re.search("START|STOP|STATUS", sent, re.IGNORECASE), sent
    assert result["VICIREC_STAGE"] == sent
    assert lab.sim.starts_for(agent) == 1
    if sent != stage:  # logged, with what was asked and what was sent
        changes = [e for e in log_events(lab.endpoint.log)
                   if e.get("event") == "stage_sanitised" and e.get("sent") == sent]
        assert changes, "stage change not logged"
    assert_no_secret(run, lab.endpoint)


# --- agent= -------------------------------------------------------------------------------------

AGENTS = {
    "quotes (SQL)": "1000' OR '1'='1",
    "query parameter": "1000&pass=x&user=admin",
    "SQL statement": "1000; DROP TABLE vicidial_users;--",
    "pipes": "1000|1001",
    "path": "../../etc/passwd",
    "21 characters": "1" * 21,
    "unicode digits": "１０００",
    "spaces": "10 00",
    "percent-encoded": "1000%26pass%3Dx",
}


@pytest.mark.parametrize("agent", list(AGENTS.values()), ids=list(AGENTS))
def test_hostile_agent_argument_is_refused(lab: Lab, agent: str) -> None:
    before = len(lab.sim.requests)
    channel = fresh_channel()
    run = lab.endpoint.run(["START", f"agent={agent}"], channel)
    result = assert_contract(run, lab.endpoint)
    assert (result["VICIREC_RESULT"], result["VICIREC_ERROR"]) == ("ERROR", "BAD_REQUEST"), result
    assert len(lab.sim.requests) == before
    assert result["VICIREC_AGENT"] == ""
    if re.search(r"[^A-Za-z0-9_.-]", agent):
        assert agent not in result["VICIREC_MESSAGE"]
    assert all(ch.isascii() and (ch.isalnum() or ch in " _.-?'=:(),;+") for ch in result["VICIREC_MESSAGE"])
    assert invocation_event(lab.endpoint, channel.uniqueid)["error"] == "BAD_REQUEST"


@pytest.mark.parametrize("agent", list(AGENTS.values()), ids=list(AGENTS))
def test_hostile_agent_channel_variable_is_never_sent(lab: Lab, agent: str) -> None:
    """The same text in the agent channel variable: ignored as invalid (the next resolver may still
    find the real agent from the call id); it never reaches VICIdial."""
    channel = fresh_channel()
    channel.variables["VICIREC_AGENT"] = agent
    run = lab.endpoint.run(["STATUS"], channel)
    result = assert_contract(run, lab.endpoint)
    assert result["VICIREC_AGENT_SOURCE"] != "channel_variable"
    assert agent not in all_sent_values(lab.sim)
    for record in lab.sim.requests:
        if "agent_user" in record.params:
            assert SAFE_AGENT.match(record.params["agent_user"]), record


def test_hostile_caller_id_name_is_never_sent(lab: Lab) -> None:
    """A caller chooses their own CALLERID(name): a fake call id with SQL in it matches nothing."""
    for name in ("V1123181500000000001' OR '1'='1", "V1123181500000000001|1001", "V11231815000000000011"):
        run = lab.endpoint.run(["STATUS"], fresh_channel(callerid_name=name))
        result = assert_contract(run, lab.endpoint)
        assert (result["VICIREC_RESULT"], result["VICIREC_ERROR"]) == ("ERROR", "NO_AGENT"), result
        assert name not in all_sent_values(lab.sim)


# --- the config file ----------------------------------------------------------------------------


def check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vicirec", "check", "--offline", "--config", str(config)],
        capture_output=True, text=True, timeout=30, check=False,
    )


def config_endpoint(lab: Lab, name: str, text: str, mode: int = 0o640) -> Endpoint:
    directory = lab.root / name
    directory.mkdir()
    path = directory / "vicirec.toml"
    path.write_text(text)
    path.chmod(mode)
    return Endpoint("process", path)


def valid_sections(lab: Lab, name: str) -> dict[str, dict[str, object]]:
    return {
        "vicidial": {"api_url": lab.sim.api_url, "user": "6666", "password": SECRET, "source": "vicirec"},
        "log": {"target": "file", "path": str(lab.root / name / "vicirec.log")},
    }


BROKEN_CONFIGS = {
    "bad TOML": '[vicidial\napi_url = "http://127.0.0.1/agc/api.php"\npassword = "S3cr3t-Pa55\n',
    "not UTF-8": b"[vicidial]\npassword = \"\xff\xfe\"\n".decode("latin-1"),
    "no password": '[vicidial]\napi_url = "http://127.0.0.1:9/agc/api.php"\nuser = "6666"\n',
    "no api_url": '[vicidial]\nuser = "6666"\npassword = "S3cr3t-Pa55"\n',
    "unknown key": '[vicidial]\napi_url = "http://127.0.0.1:9/agc/api.php"\nuser = "6666"\n'
                   'password = "S3cr3t-Pa55"\npasword = "typo"\n',
    "wrong type": '[vicidial]\napi_url = "http://127.0.0.1:9/agc/api.php"\nuser = "6666"\n'
                  'password = "S3cr3t-Pa55"\n[call]\ndeadline = "six"\n',
    "deadline out of range": '[vicidial]\napi_url = "http://127.0.0.1:9/agc/api.php"\nuser = "6666"\n'
                             'password = "S3cr3t-Pa55"\n[call]\ndeadline = 3600\n',
}


@pytest.mark.parametrize("name", list(BROKEN_CONFIGS))
def test_broken_config_still_reports(lab: Lab, name: str) -> None:
    slug = re.sub(r"\W+", "-", name)
    endpoint = config_endpoint(lab, slug, BROKEN_CONFIGS[name])
    before = len(lab.sim.requests)
    run = endpoint.run(["START", "agent=1000"])
    result = assert_contract(run, endpoint)
    assert (result["VICIREC_RESULT"], result["VICIREC_ERROR"]) == ("ERROR", "CONFIG"), result
    assert len(lab.sim.requests) == before
    assert_no_secret(run, endpoint)
    # `vicirec check` fails on it, naming the file, without printing the password.
    checked = check(endpoint.config)
    assert checked.returncode == 1, checked
    assert "ERROR" in checked.stderr and str(endpoint.config) in checked.stderr
    assert SECRET not in checked.stdout + checked.stderr


def test_missing_config_file(lab: Lab, tmp_path: Path) -> None:
    endpoint = Endpoint("process", tmp_path / "absent.toml")
    run = endpoint.run(["START", "agent=1000"])
    result = assert_contract(run, endpoint)
    assert (result["VICIREC_RESULT"], result["VICIREC_ERROR"]) == ("ERROR", "CONFIG")
    assert "does not exist" in result["VICIREC_MESSAGE"]
    assert check(endpoint.config).returncode == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a mode-000 file anyway: cannot be tested as root")
def test_unreadable_config_file(lab: Lab) -> None:
    text = toml_text(valid_sections(lab, "unreadable"))  # type: ignore[arg-type]
    endpoint = config_endpoint(lab, "unreadable", text, mode=0o000)
    run = endpoint.run(["START", "agent=1000"])
    result = assert_contract(run, endpoint)
    assert (result["VICIREC_RESULT"], result["VICIREC_ERROR"]) == ("ERROR", "CONFIG")
    assert "not readable" in result["VICIREC_MESSAGE"]
    assert check(endpoint.config).returncode == 1


def test_world_readable_config_with_password(lab: Lab) -> None:
    """It works (the call is not punished for the admin's chmod) but warns in the log, and
    ``vicirec check`` fails so the install notices."""
    text = toml_text(valid_sections(lab, "world-readable"))  # type: ignore[arg-type]
    endpoint = config_endpoint(lab, "world-readable", text, mode=0o644)
    agent = fresh_agent(lab.sim)
    run = endpoint.run(["STATUS", f"agent={agent}"])
    assert assert_contract(run, endpoint)["VICIREC_RESULT"] == "OK"
    warnings = [e for e in log_events(endpoint.log) if e.get("event") == "config_warning"]
    assert any("readable by every user" in str(e.get("warning")) for e in warnings), warnings
    checked = check(endpoint.config)
    assert checked.returncode == 1
    assert "ERROR" in checked.stderr and "chmod 0640" in checked.stderr
    assert SECRET not in checked.stdout + checked.stderr
    assert_no_secret(run, endpoint)


def test_plain_http_to_another_host(lab: Lab) -> None:
    """http:// to a host that is not this machine sends the password in clear: a warning in the log
    and from ``vicirec check`` (exit 0: it works). The AGI run refuses its arguments, so nothing
    leaves 127.0.0.1."""
    sections = valid_sections(lab, "plain-http")
    sections["vicidial"]["api_url"] = "http://vicidial.invalid/agc/api.php"
    endpoint = config_endpoint(lab, "plain-http", toml_text(sections))  # type: ignore[arg-type]
    run = endpoint.run(["PAUSE"])
    assert assert_contract(run, endpoint)["VICIREC_ERROR"] == "BAD_REQUEST"
    warnings = [str(e.get("warning")) for e in log_events(endpoint.log) if e.get("event") == "config_warning"]
    assert any("plain http to vicidial.invalid" in w for w in warnings), warnings
    checked = check(endpoint.config)
    assert checked.returncode == 0, checked
    assert "WARNING" in checked.stderr and "plain http" in checked.stderr
    assert SECRET not in checked.stdout + checked.stderr


def test_plain_http_to_this_machine_is_fine(lab: Lab) -> None:
    endpoint = config_endpoint(lab, "local-http", toml_text(valid_sections(lab, "local-http")))  # type: ignore[arg-type]
    checked = check(endpoint.config)
    assert checked.returncode == 0, checked
    assert "WARNING" not in checked.stderr and "OK" in checked.stdout


@pytest.mark.parametrize(
    ("agents", "complaint"),
    [
        ({"resolvers": ["static_map"], "map_file": "{dir}/missing.map"}, "does not exist"),
        ({"resolvers": ["static_map"], "map_file": "{dir}/bad.map"}, "line 1"),
        ({"lookup": "mysql", "astguiclient_conf": "{dir}/missing.conf"}, "does not exist"),
    ],
)
def test_check_reads_the_files_the_config_names(
    tmp_path: Path, agents: dict[str, object], complaint: str
) -> None:
    """A map file or astguiclient.conf the AGI could not read fails ``vicirec check`` now, not the
    first call (CONFIG) or the daemon's start."""
    (tmp_path / "bad.map").write_text("SIP/1000 1000 no equals sign\n")
    filled = {key: value.format(dir=tmp_path) if isinstance(value, str) else value
              for key, value in agents.items()}
    config = write_config(tmp_path, "https://dialer.example.com/agc/api.php", overrides={"agents": filled})
    result = check(config)
    assert result.returncode == 1, result
    assert "ERROR" in result.stderr and complaint in result.stderr, result.stderr
