"""The real process AGI (``vicirec-agi``) under the fake Asterisk, against the VICIdial simulator.

Everything runs for real: a child process speaking AGI over pipes, HTTP on 127.0.0.1.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pytest

import vicirec
from vicirec.engine import VARIABLE_NAMES
from vicirec.testing.fake_asterisk import AgiRun, FakeAsterisk, FakeChannel, HangupPlan, parse_args
from vicirec.testing.harness import agi_environment, caller_channel, process_agi_command, write_config
from vicirec.testing.simulator import VicidialSimulator

ASTERISK = FakeAsterisk()


@pytest.fixture
def simulator() -> Iterator[VicidialSimulator]:
    with VicidialSimulator(screen_delay=0.05) as sim:
        yield sim


def lab_config(directory: Path, api_url: str, **kw: object) -> Path:
    """The corpus lab over the HTTP lookup. A call id in CALLERID(name) cannot be corroborated over
    HTTP, so these tests take the admin's explicit trade-off (``require_corroboration = false``);
    the default refusal is tested in test_agents_e2e.py."""
    return write_config(directory, api_url, overrides={"agents": {"require_corroboration": False}},
                        **kw)  # type: ignore[arg-type]


def run_agi(config: Path, args: list[str], channel: Optional[FakeChannel] = None, **kw: object) -> AgiRun:
    return ASTERISK.run_process(
        process_agi_command(), args, channel or caller_channel(), env=agi_environment(config),
        timeout=20.0, **kw,  # type: ignore[arg-type]
    )


def assert_contract(run: AgiRun) -> dict[str, str]:
    """Every VICIREC_* variable set, exit 0, and nothing but well-formed AGI commands on stdout."""
    assert run.exit_code == 0, run.stderr
    assert run.agistatus in ("SUCCESS", "HANGUP")
    for line in run.sent_by_script().splitlines():
        words = parse_args(line)
        assert words[:2] in ([b"SET", b"VARIABLE"], [b"GET", b"VARIABLE"], [b"GET", b"FULL"]), line
    variables = {name: run.channel.variables.get(name) for name in VARIABLE_NAMES}
    missing = [name for name, value in variables.items() if value is None]
    assert not missing, missing
    assert variables["VICIREC_RESULT"] in ("OK", "ERROR")
    return {name: value or "" for name, value in variables.items()}


def test_start_confirm_status_stop_confirm(tmp_path: Path, simulator: VicidialSimulator) -> None:
    config = lab_config(tmp_path, simulator.api_url)
    channel = caller_channel()
    started = assert_contract(run_agi(config, ["START", "_CONSENT", "confirm=3"], channel))
    assert started["VICIREC_RESULT"] == "OK" and started["VICIREC_ERROR"] == ""
    assert started["VICIREC_AGENT"] == "1000" and started["VICIREC_AGENT_SOURCE"] == "call_id"
    assert started["VICIREC_RECORDING"] == "1" and started["VICIREC_RECORDING_ID"].isdigit()
    assert started["VICIREC_STAGE"] == "_CONSENT"
    assert started["VICIREC_FILENAME"].endswith("_1000_CONSENT")
    assert simulator.starts_for("1000") == 1

    status = assert_contract(run_agi(config, ["status"], channel))
    assert (status["VICIREC_RESULT"], status["VICIREC_RECORDING"]) == ("OK", "1")
    assert status["VICIREC_RECORDING_ID"] == started["VICIREC_RECORDING_ID"]

    stopped = assert_contract(run_agi(config, ["STOP", "confirm=3"], channel))
    assert (stopped["VICIREC_RESULT"], stopped["VICIREC_RECORDING"]) == ("OK", "0")

    again = assert_contract(run_agi(config, ["STOP"], channel))
    assert (again["VICIREC_RESULT"], again["VICIREC_ERROR"], again["VICIREC_RECORDING"]) == (
        "ERROR", "NOTHING_TO_STOP", "0")
    assert simulator.starts_for("1000") == 1


def test_start_without_confirm_reports_recording_unknown(
    tmp_path: Path, simulator: VicidialSimulator
) -> None:
    config = lab_config(tmp_path, simulator.api_url)
    result = assert_contract(run_agi(config, ["START", "agent=1001"]))
    assert (result["VICIREC_RESULT"], result["VICIREC_RECORDING"], result["VICIREC_AGENT_SOURCE"]) == (
        "OK", "", "argument")
    assert result["VICIREC_AGENT_STATUS"] == "PAUSED"


def test_not_confirmed_when_the_agent_screen_never_acts(tmp_path: Path) -> None:
    with VicidialSimulator(screen_delay=None) as frozen:
        config = lab_config(tmp_path, frozen.api_url)
        began = time.monotonic()
        result = assert_contract(run_agi(config, ["START", "confirm=1"]))
        elapsed = time.monotonic() - began
    assert (result["VICIREC_RESULT"], result["VICIREC_ERROR"]) == ("ERROR", "NOT_CONFIRMED")
    assert result["VICIREC_RECORDING"] == ""
    assert 1.0 <= elapsed < 5.0


def test_agent_not_logged_in_and_no_agent(tmp_path: Path, simulator: VicidialSimulator) -> None:
    config = lab_config(tmp_path, simulator.api_url)
    result = assert_contract(run_agi(config, ["STATUS", "agent=1003"]))
    assert (result["VICIREC_ERROR"], result["VICIREC_AGENT"]) == ("NOT_LOGGED_IN", "1003")
    stranger = caller_channel(call_id="V1123181500000000099")
    result = assert_contract(run_agi(config, ["START"], stranger))
    assert (result["VICIREC_RESULT"], result["VICIREC_ERROR"], result["VICIREC_AGENT"]) == (
        "ERROR", "NO_AGENT", "")
    assert simulator.count(function="recording") == 1  # only the STATUS for 1003


@pytest.mark.parametrize(
    "args",
    [["PAUSE"], ["START", "bogus=1"], ["STATUS", "agent=1000' OR '1'='1"], ["STOP", "confirm=x"]],
)
def test_bad_arguments(tmp_path: Path, simulator: VicidialSimulator, args: list[str]) -> None:
    config = lab_config(tmp_path, simulator.api_url)
    result = assert_contract(run_agi(config, args))
    assert (result["VICIREC_RESULT"], result["VICIREC_ERROR"]) == ("ERROR", "BAD_REQUEST")
    assert simulator.count() == 0


def test_hostile_stage_is_sanitised(tmp_path: Path, simulator: VicidialSimulator) -> None:
    config = lab_config(tmp_path, simulator.api_url)
    result = assert_contract(run_agi(config, ["START", '_a|b"c\\d;STOP ñ', "agent=1000"]))
    assert (result["VICIREC_RESULT"], result["VICIREC_STAGE"]) == ("OK", "_abcd")
    (record,) = [r for r in simulator.requests if r.params.get("value") == "START"]
    assert record.params["stage"] == "_abcd"
    log = (tmp_path / "vicirec.log").read_text()
    assert '"stage_sanitised"' in log


def test_wrong_password_is_auth_and_never_leaks(tmp_path: Path, simulator: VicidialSimulator) -> None:
    secret = "Wr0ngPassw0rd"
    config = write_config(tmp_path, simulator.api_url, password=secret)
    run = run_agi(config, ["START", "agent=1000"])
    result = assert_contract(run)
    assert (result["VICIREC_RESULT"], result["VICIREC_ERROR"]) == ("ERROR", "AUTH")
    assert simulator.count(function="recording") == 1  # a failed login is never retried
    everything = run.sent_by_script() + run.stderr + (tmp_path / "vicirec.log").read_bytes()
    assert secret.encode() not in everything
    assert b"SELECT" not in everything


def test_missing_config_still_reports(tmp_path: Path) -> None:
    run = run_agi(tmp_path / "absent.toml", ["START"])
    result = assert_contract(run)
    assert (result["VICIREC_RESULT"], result["VICIREC_ERROR"]) == ("ERROR", "CONFIG")


def test_unreachable_vicidial(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = write_config(tmp_path, f"http://127.0.0.1:{port}/agc/api.php")
    began = time.monotonic()
    result = assert_contract(run_agi(config, ["STATUS", "agent=1000"]))
    assert (result["VICIREC_RESULT"], result["VICIREC_ERROR"]) == ("ERROR", "UNREACHABLE")
    assert time.monotonic() - began < 8.0


def test_caller_hangs_up_during_the_agi(tmp_path: Path) -> None:
    # SIGHUP arrives while vicirec waits for confirmation: the run finishes and the variables are
    # set on the dead channel, where the h extension reads them.
    with VicidialSimulator(screen_delay=0.5) as sim:
        config = lab_config(tmp_path, sim.api_url)
        run = run_agi(config, ["START", "confirm=3", "agent=1000"], hangup=HangupPlan(after=0.6))
    result = assert_contract(run)
    assert run.agistatus == "HANGUP"
    assert run.hangup_at is not None
    assert result["VICIREC_RESULT"] == "OK" and result["VICIREC_RECORDING"] == "1"
    log = json.loads((tmp_path / "vicirec.log").read_text().splitlines()[-1])
    assert log["hung_up"] is True


def test_agi_in_the_h_extension(tmp_path: Path, simulator: VicidialSimulator) -> None:
    channel = caller_channel(extension="h", hung_up=True)
    config = lab_config(tmp_path, simulator.api_url)
    result = assert_contract(run_agi(config, ["STATUS"], channel))
    assert result["VICIREC_RESULT"] == "OK"


STRAY_PRINTER = """
import sys, vicirec.process_agi as agi
real_run = agi.run
def noisy_run(*args, **kwargs):
    print("DEBUG: looking up agent")          # what st-stray.txt shows breaking a real AGI
    sys.stdout.flush()
    return real_run(*args, **kwargs)
agi.run = noisy_run
raise SystemExit(agi.main())
"""


def test_stray_stdout_cannot_reach_asterisk(tmp_path: Path, simulator: VicidialSimulator) -> None:
    # fd 1 points at /dev/null once the AGI starts; the protocol writes to a private copy of it.
    config = lab_config(tmp_path, simulator.api_url)
    run = ASTERISK.run_process([sys.executable, "-c", STRAY_PRINTER], ["STATUS", "agent=1000"],
                               caller_channel(), env=agi_environment(config), timeout=20.0)
    result = assert_contract(run)
    assert result["VICIREC_RESULT"] == "OK"
    assert b"DEBUG" not in run.sent_by_script()
    assert not any(reply.startswith(b"510") for reply in run.replies())


def test_an_earlier_discovery_is_not_taken_for_the_dialplan_s_choice(
    tmp_path: Path, simulator: VicidialSimulator
) -> None:
    # Run 1 finds agent 1000 by call id and writes VICIREC_AGENT=1000. The call is then
    # transferred: VICIdial gives agent 1002 the call id. Run 2 must find 1002, not reuse 1000.
    config = lab_config(tmp_path, simulator.api_url)
    channel = caller_channel()
    first = assert_contract(run_agi(config, ["STATUS"], channel))
    assert (first["VICIREC_AGENT"], first["VICIREC_AGENT_DISCOVERED"]) == ("1000", "1000")
    old, new = simulator.state.agent("1000"), simulator.state.agent("1002")
    assert old is not None and new is not None
    with simulator.state.lock:
        new.callerid, old.callerid = old.callerid, ""
        new.status = "INCALL"
    second = assert_contract(run_agi(config, ["STATUS"], channel))
    assert (second["VICIREC_AGENT"], second["VICIREC_AGENT_SOURCE"]) == ("1002", "call_id")
    # A value the dialplan sets itself is still its choice.
    channel.variables["VICIREC_AGENT"] = "1001"
    third = assert_contract(run_agi(config, ["STATUS"], channel))
    assert (third["VICIREC_AGENT"], third["VICIREC_AGENT_SOURCE"], third["VICIREC_AGENT_DISCOVERED"]) == (
        "1001", "channel_variable", "")


# In an AGI, stdout is the protocol channel: only the command-line front ends may print, and no
# module on a call's path imports them.
COMMAND_LINE_MODULES = {"commands/cli.py", "commands/check.py", "commands/demo.py", "commands/audit.py",
                        "commands/act.py", "commands/whois.py",
                        "testing/simulator/cli.py"}


def test_only_command_line_modules_print() -> None:
    package = Path(vicirec.__file__).parent
    printing = {str(path.relative_to(package)) for path in package.rglob("*.py")
                if "print(" in path.read_text(encoding="utf-8")}
    assert printing <= COMMAND_LINE_MODULES, printing - COMMAND_LINE_MODULES


def test_the_call_paths_never_import_a_command_line_module() -> None:
    names = ", ".join(repr("vicirec." + m[:-3].replace("/", ".")) for m in sorted(COMMAND_LINE_MODULES))
    code = (
        "import sys, vicirec.process_agi, vicirec.fastagi.daemon, vicirec.runtime, vicirec.reporting\n"
        "import vicirec.audit.trail, vicirec.fastagi.server\n"
        f"print(sorted(m for m in ({names},) if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            timeout=30)
    assert result.stdout.strip() == "[]"
