"""The shipped dialplan on a real Asterisk (22.10.1 runtime, or VICIREC_TEST_ASTERISK), both transports.

One Asterisk per transport (module-scoped ``lab``): the process AGI ``vicirec.agi`` as
deploy/install.sh installed it, and ``vicirec serve`` from the same install named by the
``VICIREC_AGI`` global. Each scenario originates a Local call, lets the caller's own leg press keys
(SendDTMF), and checks the channel variables Asterisk holds (AMI Getvar, VarSet events) and the
requests the VICIdial simulator received. See tests/real_asterisk.py; skips without an Asterisk.

``mysql_lab``: the same with ``lookup = "mysql"`` against a private MariaDB kept equal to the
simulator (tests/sim_mirror.py), and VICIdial's recording channel ``Local/5<session>@`` really up in
the Asterisk while a recording runs: the verified STOP (``VICIREC_VERIFIED``) that the PCI example
needs before it takes card data.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from real_asterisk import (
    PROMPTS,
    PYST2_WARNINGS,
    SCREEN_DELAY,
    AsteriskRecordings,
    AsteriskSource,
    Call,
    Lab,
    StagedInstall,
    asterisk_or_skip,
    free_port,
    mysql_lookup,
    mysql_or_skip,
    open_lab,
    stage_install_once,
    warnings_in,
)
from sim_mirror import SimulatorMirror
from vicirec.testing.harness import LAB_CALL_ID, LAB_CUSTOMER_NUMBER
from vicirec.testing.simulator import VicidialSimulator

pytestmark = [pytest.mark.slow, PYST2_WARNINGS]

AGENT = "1000"  # the simulator lab's agent on call LAB_CALL_ID, session (ConfBridge room) 8600051
ROOM = "8600051"
CALL_ID_CALLER = f'"{LAB_CALL_ID}" <{LAB_CUSTOMER_NUMBER}>'
PLAIN_CALLER = f'"Customer" <{LAB_CUSTOMER_NUMBER}>'
RESULT_VARS = ("VICIREC_RESULT", "VICIREC_ERROR", "VICIREC_RECORDING", "VICIREC_AGENT",
               "VICIREC_AGENT_SOURCE",
               "VICIREC_ACTION", "VICIREC_STAGE", "VICIREC_MESSAGE")


@pytest.fixture(scope="session")
def asterisk_source() -> AsteriskSource:
    return asterisk_or_skip()


@pytest.fixture(scope="session")
def staged(asterisk_source: AsteriskSource, tmp_path_factory: pytest.TempPathFactory) -> StagedInstall:
    return stage_install_once(tmp_path_factory)


@pytest.fixture(scope="module")
def sim() -> Iterator[VicidialSimulator]:
    with VicidialSimulator(screen_delay=SCREEN_DELAY) as simulator:
        yield simulator


@pytest.fixture(scope="module", params=["process", "fastagi"])
def lab(request: pytest.FixtureRequest, asterisk_source: AsteriskSource, staged: StagedInstall,
        sim: VicidialSimulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    transport = str(request.param)
    work = tmp_path_factory.mktemp(f"ast-{transport}")
    with open_lab(transport, asterisk_source, staged, sim, work) as opened:
        yield opened


@pytest.fixture(scope="module", params=["process", "fastagi"])
def mysql_lab(request: pytest.FixtureRequest, asterisk_source: AsteriskSource, staged: StagedInstall,
              sim: VicidialSimulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    database = mysql_or_skip()
    transport = str(request.param)
    work = tmp_path_factory.mktemp(f"ast-mysql-{transport}")
    config = {"agents": mysql_lookup(database, work)}
    with open_lab(transport, asterisk_source, staged, sim, work, config) as opened:
        opened.database = database
        yield opened


@pytest.fixture(autouse=True)
def fresh(request: pytest.FixtureRequest) -> Iterator[None]:
    name = next((name for name in ("lab", "mysql_lab") if name in request.fixturenames), None)
    if name is None:
        yield
        return
    lab: Lab = request.getfixturevalue(name)
    lab.sim.reset()
    lab.sim.state.screen_delay = SCREEN_DELAY
    lab.expected_warnings.clear()
    log_size = lab.asterisk.full_log.stat().st_size
    with contextlib.ExitStack() as mirrored:
        if lab.database is not None:
            # the database and the recording channel follow the simulator, as on a VICIdial server
            lab.mirror = mirrored.enter_context(SimulatorMirror(lab.database, lab.sim,
                                                                recordings=AsteriskRecordings(lab.asterisk)))
        yield
    lab.asterisk.hang_up_all()
    # shown by pytest only when the test failed
    tail = lab.asterisk.full_log.read_bytes()[log_size:].decode("utf-8", errors="replace")
    request.node.add_report_section("teardown", "asterisk log/full", tail[-30000:])
    # the dialplan ran cleanly: no WARNING/ERROR (a bad expression, a missing prompt, an abnormal
    # Gosub exit, ...) but those the test said it expects
    unexpected = [line for line in warnings_in(lab.asterisk.full_log, log_size)
                  if not any(text in line for text in lab.expected_warnings)]
    assert unexpected == [], "Asterisk logged:\n" + "\n".join(unexpected)


def recording(lab: Lab) -> int:
    """Agent 1000 is being recorded (the screen carried out a START): the recording id."""
    lab.sim.state.set_external_recording(AGENT, "START_AUTO")
    assert lab.sim.run_screen(AGENT) == 1
    agent = lab.sim.state.agent(AGENT)
    assert agent is not None
    lab.sim.reset_counters()
    return int(agent.external_recording)


def consent(lab: Lab, key: str, **originate: object) -> Call:
    call = lab.asterisk.run("vicirec-example-consent", **originate)  # type: ignore[arg-type]
    call.wait_app("Read")
    call.press(key)
    call.wait_done()
    return call


# ---------------------------------------------------------------------------------------------


def test_everything_installed_loads_without_warnings(lab: Lab, staged: StagedInstall) -> None:
    # start(strict=True) already failed on any WARNING/ERROR while loading; check what is there
    shown = lab.asterisk.cli("dialplan show vicirec")
    for exten in ("'start'", "'stop'", "'status'", "'run'"):
        assert exten in shown
    examples = sorted(staged.asterisk_etc.glob("vicirec-examples/vicirec-example-*.conf"))
    contexts = {name for path in examples
                for name in re.findall(r"^\[([^\]]+)\]", path.read_text(encoding="utf-8"), re.MULTILINE)}
    assert len(examples) >= 5 and len(contexts) >= len(examples)
    for context in sorted(contexts):
        assert f"Context '{context}'" in lab.asterisk.cli(f"dialplan show {context}"), context
    features = lab.asterisk.cli("features show")
    for name in ("vicirec_consent", "vicirec_pause", "vicirec_resume", "vicirec_status"):
        assert name in features
    menu = lab.asterisk.cli("confbridge show menu vicirec_example_menu")
    assert "*81" in menu and "*84" in menu


def test_transport_is_the_one_configured(lab: Lab) -> None:
    call = lab.asterisk.run("vicirec", "status", ["1000"], callerid=PLAIN_CALLER)
    call.wait_done()
    agi = [e["AppData"] for e in call.events("Newexten", call.channel) if e.get("Application") == "AGI"]
    expected = f"agi://127.0.0.1:{lab.daemon_port}/vicirec," if lab.transport == "fastagi" else "vicirec.agi,"
    assert agi and agi[0].startswith(expected), agi
    assert call.getvar("VICIREC_RESULT") == "OK"
    assert call.getvar("VICIREC_RECORDING") == "0"
    assert lab.recording_requests() == ["STATUS"]


def test_consent_by_call_id(lab: Lab) -> None:
    call = consent(lab, "1", callerid=CALL_ID_CALLER)
    got = call.getvars(("VICIREC_CONSENT", *RESULT_VARS))
    assert got["VICIREC_CONSENT"] == "YES", got
    assert got["VICIREC_RESULT"] == "OK" and got["VICIREC_RECORDING"] == "1", got
    assert got["VICIREC_AGENT"] == AGENT and got["VICIREC_AGENT_SOURCE"] == "call_id", got
    assert [(s.get("agent_user"), s.get("stage")) for s in lab.starts()] == [(AGENT, "_CONSENT")]
    assert len(lab.sim.state.open_recordings(AGENT)) == 1


def test_consent_by_agent(lab: Lab) -> None:
    call = consent(lab, "1", callerid=PLAIN_CALLER, variables={"VICIREC_AGENT": AGENT})
    got = call.getvars(("VICIREC_CONSENT", *RESULT_VARS))
    assert got["VICIREC_CONSENT"] == "YES", got
    assert got["VICIREC_AGENT_SOURCE"] == "channel_variable", got
    assert [s.get("agent_user") for s in lab.starts()] == [AGENT]


def test_consent_declined_records_nothing(lab: Lab) -> None:
    call = consent(lab, "2", callerid=CALL_ID_CALLER)
    assert call.getvar("VICIREC_CONSENT") == "NO"
    assert call.getvar("VICIREC_CONSENT_READSTATUS") == "OK"
    assert lab.sim.requests == []
    assert lab.sim.state.open_recordings(AGENT) == []


def test_consent_with_a_missing_prompt_is_not_asked_not_declined(lab: Lab) -> None:
    """issue 11.3: Read() returns at once (READSTATUS ERROR) when a prompt file is missing."""
    lab.asterisk.remove_sound("press-1")
    lab.expected_warnings += ["press-1", "vicirec consent: could not ask the caller"]
    offset = lab.asterisk.full_log.stat().st_size
    try:
        call = lab.asterisk.run("vicirec-example-consent", callerid=CALL_ID_CALLER)
        call.wait_done()
    finally:
        lab.asterisk.sound("press-1", PROMPTS["press-1"])
    assert call.getvar("VICIREC_CONSENT") == "NOT_ASKED"
    assert call.getvar("VICIREC_CONSENT_READSTATUS") == "ERROR"
    assert lab.sim.requests == []
    warnings = warnings_in(lab.asterisk.full_log, offset)
    assert any("vicirec consent: could not ask the caller" in line for line in warnings), warnings


def recording_channels(lab: Lab) -> list[str]:
    return lab.asterisk.channels(AsteriskRecordings.prefix(ROOM))


def test_pci_on_a_recording_call_stops_captures_and_resumes(mysql_lab: Lab) -> None:
    lab = mysql_lab
    rec_id = recording(lab)
    assert len(recording_channels(lab)) == 2  # VICIdial's recording channel pair is up
    # the mysql lookup corroborates a call id against the agent's live call (uniqueid, channel),
    # which this originated call is not: the dialplan names the agent
    call = lab.asterisk.run("vicirec-example-pci", callerid=CALL_ID_CALLER,
                            variables={"VICIREC_AGENT": AGENT})
    call.wait_context("vicirec-example-pci-capture", timeout=30)
    # card capture runs only once the recording has really ended: its row closed, its channel gone
    assert lab.sim.state.recordings[rec_id].end_time is not None
    assert lab.sim.state.open_recordings(AGENT) == []
    assert recording_channels(lab) == []
    assert call.last_values().get("VICIREC_VERIFIED") == "1"
    call.wait_done(timeout=30)
    assert call.getvar("VICIREC_PCI") == "DONE"
    assert lab.recording_requests()[:1] == ["STOP"]
    assert [s.get("stage") for s in lab.starts()] == ["_PCIRESUME"]
    assert len(lab.sim.state.open_recordings(AGENT)) == 1  # resumed, and recording for real again
    assert len(recording_channels(lab)) == 2


def test_pci_over_the_http_lookup_refuses_the_capture_and_resumes(lab: Lab) -> None:
    """api.php alone cannot show the recording stopped where it runs: no card capture."""
    recording(lab)
    lab.expected_warnings.append("vicirec PCI: recording not verified stopped")
    call = lab.asterisk.run("vicirec-example-pci", callerid=CALL_ID_CALLER)
    call.wait_done(timeout=30)
    assert call.getvar("VICIREC_PCI") == "REFUSED"
    assert call.getvar("VICIREC_VERIFIED") != "1"
    assert not [e for e in call.events("Newexten", call.channel)
                if e.get("Context") == "vicirec-example-pci-capture"]
    assert lab.recording_requests()[:1] == ["STOP"]
    assert [s.get("stage") for s in lab.starts()] == ["_PCIRESUME"]  # what it stopped, put back
    assert len(lab.sim.state.open_recordings(AGENT)) == 1


def test_pci_on_an_idle_call_never_starts_a_recording(lab: Lab) -> None:
    """issue 11.1: whether the capture runs (nothing to stop) or is refused (the stop cannot be
    verified), a call nobody recorded must not be recorded afterwards."""
    lab.expected_warnings.append("vicirec PCI: recording not verified stopped")
    call = lab.asterisk.run("vicirec-example-pci", callerid=CALL_ID_CALLER)
    call.wait_done(timeout=30)
    assert lab.starts() == []
    assert lab.sim.state.open_recordings(AGENT) == []


def verified_stop(lab: Lab) -> dict[str, str]:
    """Gosub(vicirec,stop,1(4,1000)) on a recording call: what it left on the channel."""
    recording(lab)
    assert len(recording_channels(lab)) == 2
    call = lab.asterisk.run("vicirec", "stop", ["4", AGENT], callerid=PLAIN_CALLER)
    call.wait_done(timeout=30)
    return call.getvars(("VICIREC_VERIFIED", *RESULT_VARS))


def test_a_stop_whose_recording_channel_is_hung_up_is_verified(mysql_lab: Lab) -> None:
    # StopMonitorConf queues the Hangup after the database says stopped (AST_manager_send.pl)
    mysql_lab.mirror.hangup_delay = 0.3
    got = verified_stop(mysql_lab)
    assert got["VICIREC_VERIFIED"] == "1", got
    assert f"no Local/5{ROOM}@ channel left on 10.10.10.15" in got["VICIREC_MESSAGE"], got
    assert recording_channels(mysql_lab) == []


def test_a_recording_channel_still_up_on_asterisk_is_not_verified(mysql_lab: Lab) -> None:
    mysql_lab.mirror.hangup_delay = None  # the Hangup never happened on the Asterisk side
    mysql_lab.expected_warnings.append("not verified")
    got = verified_stop(mysql_lab)
    assert got["VICIREC_VERIFIED"] == "0", got
    assert f"Local/5{ROOM}@ channel(s) still up" in got["VICIREC_MESSAGE"], got
    time.sleep(0.5)
    assert len(recording_channels(mysql_lab)) == 2


@pytest.mark.parametrize("state", ["RECORDING", "NOT_RECORDING", "UNKNOWN"])
def test_status_branches_three_ways(lab: Lab, state: str) -> None:
    if state == "RECORDING":
        recording(lab)
    elif state == "UNKNOWN":
        lab.sim.state.log_out_agent(AGENT)
    call = lab.asterisk.run("vicirec-example-status", callerid=PLAIN_CALLER,
                            variables={"VICIREC_AGENT": AGENT})
    call.wait_done()
    got = call.getvars(("VICIREC_EXAMPLE_STATE", *RESULT_VARS))
    assert got["VICIREC_EXAMPLE_STATE"] == state, got
    assert got["VICIREC_RECORDING"] == {"RECORDING": "1", "NOT_RECORDING": "0", "UNKNOWN": ""}[state], got
    assert lab.recording_requests() == ["STATUS"]


def test_applicationmap_keys_in_a_dial_bridge(lab: Lab) -> None:
    call = lab.asterisk.run("vicirec-example-bridge", "s", ["Local/s@vrtest-agent", AGENT],
                            callerid=PLAIN_CALLER)
    bridged = call.wait(lambda e: e.get("Event") == "BridgeEnter" and e.get("Channel") == call.channel,
                        what="the customer in the Dial() bridge")
    agent_leg = call.wait(lambda e: e.get("Event") == "BridgeEnter" and e.get("Channel") != call.channel
                          and e.get("BridgeUniqueid") == bridged["BridgeUniqueid"],
                          what="the agent leg")["Channel"]
    agent_phone = agent_leg[:-1] + "2"
    # the customer presses *81 (consent): the routine runs on the customer's channel (self)
    call.press("*81")
    call.wait_app("Return", channel=call.channel, context="vicirec-example-feature-keys", timeout=30)
    got = call.getvars(RESULT_VARS)
    assert got["VICIREC_RESULT"] == "OK" and got["VICIREC_RECORDING"] == "1", got
    assert got["VICIREC_ACTION"] == "START" and got["VICIREC_STAGE"] == "_CONSENT", got
    assert [s.get("agent_user") for s in lab.starts()] == [AGENT]
    # the agent presses *84 (status): it runs on the agent leg, whose pre-dial handler named the agent
    call.press("*84", phone=agent_phone)
    call.wait_app("Return", channel=agent_leg, context="vicirec-example-feature-keys", timeout=30)
    assert call.getvar("VICIREC_ACTION", agent_leg) == "STATUS"
    assert call.getvar("VICIREC_RECORDING", agent_leg) == "1"
    assert call.getvar("VICIREC_AGENT_SOURCE", agent_leg) == "channel_variable"
    assert call.getvar("VICIREC_ACTION") == "START"  # the customer's own result is untouched
    call.hangup()


def test_confbridge_menu_key(lab: Lab) -> None:
    agent = lab.asterisk.conference(ROOM, callerid='"Agent" <1000>')
    agent.wait(lambda e: e.get("Event") == "ConfbridgeJoin" and e.get("Channel") == agent.channel,
               what="the agent in the room")
    call = lab.asterisk.conference(ROOM, "vicirec_example_menu", callerid=PLAIN_CALLER)
    call.wait(lambda e: e.get("Event") == "ConfbridgeJoin" and e.get("Channel") == call.channel,
              what="the customer in the room")
    call.press("*81")
    call.wait_app("NoOp", "vicirec consent in conference", timeout=30)
    got = call.getvars(RESULT_VARS)
    assert got["VICIREC_RESULT"] == "OK" and got["VICIREC_RECORDING"] == "1", got
    assert got["VICIREC_AGENT"] == AGENT and got["VICIREC_AGENT_SOURCE"] == "session", got
    assert [(s.get("agent_user"), s.get("stage")) for s in lab.starts()] == [(AGENT, "_CONSENT")]
    # the presser went back into the conference: still one of its two members, never hung up
    assert call.getvar(f"CONFBRIDGE_INFO(parties,{ROOM})") == "2"
    assert call.channel in lab.asterisk.cli(f"confbridge list {ROOM}")
    assert not call.events("Hangup", call.channel)
    call.hangup()
    agent.hangup()


def test_caller_hangs_up_while_the_start_is_being_confirmed(lab: Lab) -> None:
    lab.sim.state.screen_delay = None  # the agent's screen never acts: START stays pending
    call = lab.asterisk.run("vicirec-example-consent", callerid=CALL_ID_CALLER)
    call.wait_app("Read")
    call.press("1")
    assert lab.sim.state.wait_until(lambda: bool(lab.sim.state.live_agents[AGENT][0].external_recording), 15)
    call.hangup()
    call.wait_hangup(timeout=30)
    values = call.last_values()
    assert values.get("VICIREC_CONSENT") != "YES"
    assert values.get("VICIREC_ACTION") == "START"
    assert (values.get("VICIREC_RESULT"), values.get("VICIREC_ERROR")) == ("ERROR", "NOT_CONFIRMED"), values
    # the AGI still reported, after the caller had gone: h and hangup handlers can read the result
    events = call.events()
    gone = next(i for i, e in enumerate(events)
                if e.get("Event") == "Hangup" and e.get("Channel") == call.phone)
    reported = next(i for i, e in enumerate(events) if e.get("Event") == "VarSet"
                    and e.get("Channel") == call.channel and e.get("Variable") == "VICIREC_RESULT"
                    and e.get("Value") == "ERROR")
    assert gone < reported
    assert len(lab.starts()) == 1
    assert lab.sim.state.open_recordings(AGENT) == []


def test_daemon_down(lab: Lab) -> None:
    # VICIREC_AGI names a FastAGI daemon that is not running (the channel variable overrides the
    # global, so both labs play it)
    lab.expected_warnings += ["Connection refused", "FastAGI failed", "did not report - AGISTATUS FAILURE",
                              "not reachable"]
    call = lab.asterisk.run("vicirec-example-status", callerid=PLAIN_CALLER, variables={
        "VICIREC_AGENT": AGENT, "VICIREC_AGI": f"agi://127.0.0.1:{free_port()}/vicirec"})
    call.wait_done(timeout=30)
    got = call.getvars(("VICIREC_EXAMPLE_STATE", *RESULT_VARS))
    assert got["VICIREC_EXAMPLE_STATE"] == "UNKNOWN", got
    assert got["VICIREC_RESULT"] == "ERROR", got
    assert got["VICIREC_ERROR"] == "UNREACHABLE", got
    assert lab.sim.requests == []


def test_shipped_files_are_what_was_loaded(staged: StagedInstall) -> None:
    repo = Path(__file__).resolve().parent.parent / "dialplan"
    assert (staged.asterisk_etc / "extensions_vicirec.conf").read_bytes() == \
        (repo / "extensions_vicirec.conf").read_bytes()
    for path in (repo / "examples").iterdir():
        assert (staged.asterisk_etc / "vicirec-examples" / path.name).read_bytes() == path.read_bytes()


def consent_never_confirmed(lab: Lab) -> Call:
    lab.sim.state.screen_delay = None  # the agent's screen never acts: START stays pending
    return consent(lab, "1", callerid=CALL_ID_CALLER)


def test_consent_that_vicidial_never_confirms_is_failed(lab: Lab) -> None:
    call = consent_never_confirmed(lab)
    got = call.getvars(("VICIREC_CONSENT", *RESULT_VARS))
    assert got["VICIREC_CONSENT"] == "FAILED", got
    assert (got["VICIREC_RESULT"], got["VICIREC_ERROR"]) == ("ERROR", "NOT_CONFIRMED"), got
    assert len(lab.starts()) == 1
    played = [e["AppData"] for e in call.events("Newexten", call.channel)
              if e.get("Application") == "Playback"]
    assert played[-1:] == ["vm-sorry"]  # an apology, never the "recorded" beep


def test_a_3_second_confirm_asks_vicidial_at_most_7_times(lab: Lab) -> None:
    """issue 11.4: the first look at 0.3 s, then one every 0.5 s (it was a STATUS every 0.25 s: 12)."""
    consent_never_confirmed(lab)
    requests = lab.recording_requests()
    assert requests[0] == "START"
    assert set(requests[1:]) == {"STATUS"}
    assert len(requests) - 1 <= 7, requests


def test_a_3_second_confirm_over_the_database_asks_api_php_only_to_start(mysql_lab: Lab) -> None:
    """With ``lookup = "mysql"`` the confirmation reads external_recording from the database (first
    look at 0.3 s, then every 0.5 s) instead of asking api.php's STATUS."""
    mysql_lab.sim.state.screen_delay = None  # the agent's screen never acts: START stays pending
    call = consent(mysql_lab, "1", callerid=CALL_ID_CALLER, variables={"VICIREC_AGENT": AGENT})
    assert call.getvar("VICIREC_CONSENT") == "FAILED"
    assert mysql_lab.recording_requests() == ["START"]
