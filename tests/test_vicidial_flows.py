"""VICIdial's own call flows (tests/data/vicidial/FLOWS.md), end to end where they run vicirec:

* call ids as VICIdial writes them, ``extension_appended_cidname`` suffixes included (FLOWS §8);
* arguments that survive VICIdial's admin screens (FLOWS §7), through both filters and the parser;
* GRAB (agent API ``park_call`` GRAB_IVR_CUSTOMER) against the simulator's real bytes;
* the park IVR consent loop: park_CID.agi's nested ``EXEC AGI vicirec.agi,GOSUB,...`` runs the
  shipped example dialplan, which STARTs only on key 1 and hands the customer back whatever the
  answer, every step in the audit trail;
* the Call Menu recipe (FLOWS §6) as VICIdial generates it.

The AGI runs are the real process AGI (and FastAGI daemon) under the fake Asterisk; the dialplan
around them is the shipped example file, run by ``dialplan_lint.MiniPbx``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import pytest

import dialplan_lint as lint
from real_asterisk import PYST2_WARNINGS, free_port, serve_daemon
from test_agents_e2e import (  # noqa: F401 - sim is a fixture
    ASTERISK,
    PROCESS_AGI,
    make_world,
    park_ivr_caller,
    result,
    sim,
    transport,
)
from vicidial_asterisk import MENU_CUSTOMER, vicidial_asterisk
from vicirec.agents.call_facts import call_id_of_name, vicidial_engine_of
from vicirec.errors import BadRequest
from vicirec.request import Invocation, Step, parse_arguments
from vicirec.testing.fake_asterisk import FakeChannel
from vicirec.testing.simulator import VicidialSimulator
from vicirec.vicidial.responses import Action

CALL_1000 = "V1123181500000000001"
EXAMPLES = Path(__file__).resolve().parent.parent / "dialplan" / "examples"

# --- 1. call ids as VICIdial writes them ---------------------------------------------------------

SUFFIXED = [
    CALL_1000 + " 1000",                 # extension_appended_cidname Y / Y_USER
    CALL_1000 + " 1000 TESTCAMP",        # Y_WITH_CAMPAIGN / Y_USER_WITH_CAMPAIGN
    CALL_1000 + " 1001@default",         # a Local/ phone with the Local/ prefix removed
    "M1123181500000000001 PJ1001",       # PJSIP/1001 after VICIdial's s/SIP\///
    "Y1123181500000000001 1000 SALESLINE",
    "J1123181500000000001 agent_7",
]


@pytest.mark.parametrize("name", SUFFIXED)
def test_the_first_token_of_a_suffixed_name_is_the_call_id(name: str) -> None:
    assert call_id_of_name(name) == name.split(" ", maxsplit=1)[0]


@pytest.mark.parametrize(
    "name",
    [
        CALL_1000 + " ",                          # nothing after the space
        CALL_1000 + "  1000",                     # two spaces
        CALL_1000 + "\t1000",                     # a tab
        CALL_1000 + " 1000\n",                    # a newline
        CALL_1000 + " 1000 TESTCAMP extra",       # a third word
        CALL_1000 + " V1123181500000000002",      # a second call id
        CALL_1000 + " 1000|1001",                 # a pipe
        CALL_1000 + " 1000'",                     # a quote
        CALL_1000 + " " + "x" * 51,               # an overlong word
        "A1123181500000000001 1000",              # suffixed forms only for V, M, Y, J
        " " + CALL_1000 + " 1000",
        "v1123181500000000001 1000",
        "V112318150000000000 1000",
        "V" + "\uff11" * 19 + " 1000",
        CALL_1000 + " \u0661000",
    ],
)
def test_anything_else_in_a_suffixed_name_is_refused(name: str) -> None:
    assert call_id_of_name(name) is None


def test_a_bare_id_is_still_taken_whole() -> None:
    assert call_id_of_name(CALL_1000) == CALL_1000
    assert call_id_of_name("A1123181500000000001") == "A1123181500000000001"  # any letter when bare


@pytest.mark.parametrize("kind", ["process", "fastagi"])
@pytest.mark.parametrize("name", [CALL_1000 + " 1000", CALL_1000 + " 1000 TESTCAMP"])
def test_the_park_ivr_finds_the_agent_by_a_suffixed_call_id(
    tmp_path: Path, sim: VicidialSimulator, kind: str, name: str  # noqa: F811
) -> None:
    channel = park_ivr_caller()
    channel.callerid_name = name
    world = make_world(tmp_path, sim, "mysql")
    with transport(kind, world) as run:
        variables = result(run(["STATUS"], channel))
    assert (variables["VICIREC_RESULT"], variables["VICIREC_AGENT"], variables["VICIREC_AGENT_SOURCE"]) == (
        "OK", "1000", "call_id"), variables


def test_a_suffixed_name_is_corroborated_like_a_bare_one(
    tmp_path: Path, sim: VicidialSimulator  # noqa: F811
) -> None:
    # An intruder's own channel with another call's suffixed id: the database contradicts it.
    channel = FakeChannel(name="SIP/trunk-0000009f", uniqueid="1795459555.90", callerid_num="5550000",
                          callerid_name=CALL_1000 + " 1000 TESTCAMP")
    world = make_world(tmp_path, sim, "mysql")
    with transport("process", world) as run:
        variables = result(run(["START"], channel))
    assert (variables["VICIREC_RESULT"], variables["VICIREC_ERROR"]) == ("ERROR", "NO_AGENT")
    assert "refused agent 1000" in variables["VICIREC_MESSAGE"]
    assert sim.starts_for("1000") == 0


# --- 2. arguments that survive VICIdial's admin screens ---------------------------------------------

#: admin.php:18765, a Call Menu option's route value; admin.php:4334, a campaign's IVR Park Call AGI.
CALL_MENU_ROUTE_VALUE = re.compile(r"[^-/|_#*,.0-9A-Za-z]")
IVR_PARK_CALL_AGI = re.compile(r"[^- *#.,:/|@_0-9A-Za-z]")

#: The spellings dialplan/README.md documents.
ADMIN_FIELD_EXAMPLES: list[tuple[str, Invocation]] = [
    ("vicirec.agi,START,_CONSENT,confirm-3",
     Invocation(Action.START, stage="_CONSENT", confirm=3.0)),
    ("vicirec.agi,START,_CONSENT,confirm-1.5,agent-1000",
     Invocation(Action.START, stage="_CONSENT", confirm=1.5, agent="1000")),
    ("vicirec.agi,STOP,confirm-3", Invocation(Action.STOP, confirm=3.0)),
    ("vicirec.agi,STATUS,agent-agent_7", Invocation(Action.STATUS, agent="agent_7")),
    ("vicirec.agi,GRAB", Invocation(Step.GRAB)),
    ("vicirec.agi,GRAB,agent-1000", Invocation(Step.GRAB, agent="1000")),
    ("vicirec.agi,ANSWER,YES", Invocation(Step.ANSWER, stage="YES")),
    ("vicirec.agi,GOSUB,vicirec-example-park-consent",
     Invocation(Step.GOSUB, target=("vicirec-example-park-consent", "s", "1"))),
    ("vicirec.agi,GOSUB,CONSENT,8881,1", Invocation(Step.GOSUB, target=("CONSENT", "8881", "1"))),
]


ADMIN_FIELD_IDS = [value for value, _ in ADMIN_FIELD_EXAMPLES]


@pytest.mark.parametrize(("value", "expected"), ADMIN_FIELD_EXAMPLES, ids=ADMIN_FIELD_IDS)
@pytest.mark.parametrize("field", [CALL_MENU_ROUTE_VALUE, IVR_PARK_CALL_AGI], ids=["call-menu", "ivr-park"])
def test_each_documented_spelling_survives_the_admin_filter_and_parses(
    value: str, expected: Invocation, field: re.Pattern[str]
) -> None:
    stored = field.sub("", value)
    assert stored == value
    # Asterisk splits AGI()'s data (a Call Menu's AGI(<value>), park_CID.agi's EXEC AGI <value>)
    # on commas: the script, then the arguments.
    script, *args = stored.split(",")
    assert script == "vicirec.agi"
    assert parse_arguments(args) == expected


@pytest.mark.parametrize("old", ["confirm=3", "agent=1000"])
def test_the_equals_spelling_does_not_survive_the_admin_screens(old: str) -> None:
    for field in (CALL_MENU_ROUTE_VALUE, IVR_PARK_CALL_AGI):
        filtered = field.sub("", old)
        assert filtered != old
        # what VICIdial stores (confirm3, agent1000) would read as a stage label, silently
        assert parse_arguments(["START", filtered]).stage == filtered


def test_both_spellings_mean_the_same_and_an_option_word_is_never_a_stage() -> None:
    assert parse_arguments(["START", "_X", "confirm-2", "agent-1000"]) == parse_arguments(
        ["START", "_X", "confirm=2", "agent=1000"])
    assert parse_arguments(["START", "Confirm-2"]).confirm == 2.0  # any case, like key=value
    with pytest.raises(BadRequest):
        parse_arguments(["START", "confirm-order"])  # an option, and not a number: refused, not a stage
    with pytest.raises(BadRequest):
        parse_arguments(["STOP", "confirm-1", "confirm=2"])
    with pytest.raises(BadRequest):
        parse_arguments(["STATUS", "agent-10 00"])


@pytest.mark.parametrize(
    "args",
    [["GRAB", "_LABEL"], ["GRAB", "confirm-3"], ["ANSWER"], ["ANSWER", "YES", "NO"], ["ANSWER", "a b"],
     ["GOSUB"], ["GOSUB", "ctx,x"], ["GOSUB", "c", "s", "1", "x"], ["GOSUB", "c", "s", "0"],
     ["GOSUB", "c d"], ["ANSWER", "x" * 21], ["GOSUB", "c", "s;x"]],
)
def test_the_park_steps_refuse_anything_else(args: list[str]) -> None:
    with pytest.raises(BadRequest):
        parse_arguments(args)


# --- 3. GRAB: park_call GRAB_IVR_CUSTOMER -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["process", "fastagi"])
def test_grab_hands_the_parked_customer_back_to_the_agent(
    tmp_path: Path, sim: VicidialSimulator, kind: str  # noqa: F811
) -> None:
    sim.state.agent("1000").external_park = "PARK_IVR_CUSTOMER"  # type: ignore[union-attr]
    world = make_world(tmp_path, sim, "mysql")
    with transport(kind, world) as run:
        variables = result(run(["GRAB"], park_ivr_caller()))
    assert (variables["VICIREC_RESULT"], variables["VICIREC_ACTION"], variables["VICIREC_AGENT"]) == (
        "OK", "GRAB", "1000"), variables
    assert sim.state.agent("1000").external_park == "GRAB_IVR_CUSTOMER"  # type: ignore[union-attr]
    (request,) = [r for r in sim.requests if r.params.get("function") == "park_call"]
    assert (request.params["value"], request.params["agent_user"]) == ("GRAB_IVR_CUSTOMER", "1000")
    assert sim.count(function="recording") == 0


def test_grab_for_an_agent_without_a_call_is_no_agent(tmp_path: Path, sim: VicidialSimulator) -> None:  # noqa: F811
    world = make_world(tmp_path, sim, "http")
    with transport("process", world) as run:
        variables = result(run(["GRAB", "agent-1002"], park_ivr_caller()))  # 1002: READY, lead 0 (K03)
    assert (variables["VICIREC_RESULT"], variables["VICIREC_ERROR"]) == ("ERROR", "NO_AGENT")
    assert "no lead on their screen" in variables["VICIREC_MESSAGE"]


def test_grab_without_the_park_call_permission_says_so(tmp_path: Path, sim: VicidialSimulator) -> None:  # noqa: F811
    sim.state.user("6666").api_allowed_functions = " recording logged_in_agents "  # type: ignore[union-attr]
    world = make_world(tmp_path, sim, "http")
    with transport("process", world) as run:
        variables = result(run(["GRAB", "agent=1000"], park_ivr_caller()))
    assert (variables["VICIREC_RESULT"], variables["VICIREC_ERROR"]) == ("ERROR", "PERMISSION")
    assert sim.state.agent("1000").external_park == ""  # type: ignore[union-attr]


# --- 3. the park IVR consent loop, with the shipped example ------------------------------------------


def audit_world(tmp_path: Path, simulator: VicidialSimulator) -> tuple[Any, Path]:
    world = make_world(tmp_path, simulator, "mysql")
    trail = tmp_path / "audit.jsonl"
    with world.config_path.open("a") as config:
        config.write(f'[audit]\npath = "{trail}"\ncaller_number = "omit"\n')
    return world, trail


def audit_lines(trail: Path) -> list[tuple[str, str, str, str]]:
    records = [json.loads(line) for line in trail.read_text().splitlines()]
    return [(r["action"], r["stage"], r["outcome"], r["agent"]) for r in records]


def park_consent_pbx(world: Any, channel: FakeChannel, key: str) -> lint.MiniPbx:
    """The example's dialplan on ``channel``; each AGI() in it is a real nested process AGI run."""
    path = EXAMPLES / "vicirec-example-park-ivr.conf"
    files = lint.parse_files({str(path): path.read_text(encoding="utf-8")})
    env = {"VICIREC_CONFIG": str(world.config_path)}

    def agi(argv: list[str], variables: dict[str, str]) -> Optional[dict[str, str]]:
        assert argv[0] == "vicirec.agi", argv
        run = ASTERISK.run_process(PROCESS_AGI, argv[1:], channel, env={**os.environ, **env}, timeout=20.0)
        return result(run)

    return lint.MiniPbx(files, agi=agi, digits=[key] if key else [])


@pytest.mark.parametrize(
    ("key", "answer", "starts"),
    [("1", "YES", 1), ("2", "DECLINED", 0), ("9", "DECLINED", 0), ("", "NOANSWER", 0)],
)
def test_the_park_ivr_consent_loop_records_only_on_key_1_and_always_hands_back(
    tmp_path: Path, sim: VicidialSimulator, key: str, answer: str, starts: int  # noqa: F811
) -> None:
    world, trail = audit_world(tmp_path, sim)
    channel = park_ivr_caller()
    channel.callerid_name = CALL_1000 + " 1000 TESTCAMP"
    sim.state.agent("1000").external_park = "PARK_IVR_CUSTOMER"  # type: ignore[union-attr]
    pbx = park_consent_pbx(world, channel, key)

    def routine(chan: FakeChannel, extension: str, priority: str) -> None:
        pbx.gosub("vicirec-example-park-consent", extension, priority)

    channel.subroutines["vicirec-example-park-consent"] = routine
    # park_CID.agi: EXEC AGI <the campaign's IVR Park Call AGI> = vicirec.agi,GOSUB,...
    env = {**os.environ, "VICIREC_CONFIG": str(world.config_path)}
    outer = ASTERISK.run_process(PROCESS_AGI, ["GOSUB", "vicirec-example-park-consent"], channel, env=env,
                                 timeout=60.0)
    variables = result(outer)
    assert (variables["VICIREC_RESULT"], variables["VICIREC_ACTION"]) == ("OK", "GOSUB"), variables
    assert [call[1] for call in pbx.agi_calls] == (["START"] if starts else []) + ["ANSWER", "GRAB"]
    assert sim.starts_for("1000") == starts
    assert sim.state.agent("1000").external_park == "GRAB_IVR_CUSTOMER"  # type: ignore[union-attr]
    expected = ([("START", "_CONSENT", "OK", "1000")] if starts else []) + [
        ("ANSWER", answer, "OK", ""), ("GRAB", "", "OK", "1000"), ("GOSUB", "", "OK", "")]
    assert audit_lines(trail) == expected
    if starts:
        record = json.loads(trail.read_text().splitlines()[0])
        assert record["recording"] is True and record["recording_id"].isdigit()
    # and the administrator finds the caller's answer with `vicirec audit --action ANSWER`
    search = ["audit", "--file", str(trail), "--action", "answer", "--format", "json"]
    found = subprocess.run([sys.executable, "-m", "vicirec", *search], capture_output=True, text=True,
                           check=False, timeout=30)
    assert found.returncode == 0, found.stderr
    assert [json.loads(line)["stage"] for line in found.stdout.splitlines()] == [answer]


def test_the_loop_hands_back_and_says_so_when_the_start_is_not_confirmed(
    tmp_path: Path, sim: VicidialSimulator  # noqa: F811
) -> None:
    sim.state.screen_delay = None  # the agent screen is frozen: START is written but never carried out
    world, trail = audit_world(tmp_path, sim)
    channel = park_ivr_caller()
    pbx = park_consent_pbx(world, channel, "1")
    channel.subroutines["vicirec-example-park-consent"] = lambda chan, e, p: pbx.gosub(
        "vicirec-example-park-consent", e, p)
    env = {**os.environ, "VICIREC_CONFIG": str(world.config_path)}
    result(ASTERISK.run_process(PROCESS_AGI, ["GOSUB", "vicirec-example-park-consent"], channel, env=env,
                                timeout=60.0))
    assert [line[:3] for line in audit_lines(trail)] == [
        ("START", "_CONSENT", "ERROR"), ("ANSWER", "YES_NOT_RECORDING", "OK"), ("GRAB", "", "OK"),
        ("GOSUB", "", "OK")]


def test_gosub_to_a_missing_context_is_an_error_not_a_hang(tmp_path: Path, sim: VicidialSimulator) -> None:  # noqa: F811
    world = make_world(tmp_path, sim, "http")
    with transport("process", world) as run:
        variables = result(run(["GOSUB", "no-such-context"], park_ivr_caller()))
    assert (variables["VICIREC_RESULT"], variables["VICIREC_ERROR"]) == ("ERROR", "BAD_REQUEST")
    assert "no such dialplan location" in variables["VICIREC_MESSAGE"]
    assert sim.requests == []  # GOSUB and ANSWER never ask VICIdial anything


# --- 4. the Call Menu recipe ---------------------------------------------------------------------------


CALL_MENU_RECIPE = EXAMPLES / "vicirec-example-callmenu.conf"
CUSTOM_DIALPLAN_ENTRY = re.compile(r"[\\'\r]")  # admin.php removes only these from the field
RECIPE_DAEMON = "agi://127.0.0.1:4573/vicirec"


def test_the_call_menu_recipe_survives_the_admin_screens() -> None:
    """The custom dialplan entry keeps the daemon's URL; a route value could not (no ``:``), and
    the routes the recipe uses keep their values. tests/test_callmenu_consent.py runs the recipe."""
    custom = CALL_MENU_RECIPE.read_text(encoding="utf-8").split("; custom dialplan entries\n", 1)[1]
    assert CUSTOM_DIALPLAN_ENTRY.sub("", custom) == custom
    assert f"AGI({RECIPE_DAEMON},CONSENT,_CONSENT,confirm=3)" in custom
    assert CALL_MENU_ROUTE_VALUE.sub("", RECIPE_DAEMON) == "agi//127.0.0.14573/vicirec"
    for value in ("8881", "8882", "8880", "vicirec-example-callmenu"):
        assert CALL_MENU_ROUTE_VALUE.sub("", value) == value


def test_the_readme_shows_the_call_menu_recipe_as_vicidial_writes_it() -> None:
    """dialplan/README.md's generated context is the shipped file's, but for the ``h`` line (the
    file has a NoOp where VICIdial writes its call_log DeadAGI, which Asterisk 22 warns about)."""
    readme = (EXAMPLES.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("### A Call Menu: consent before the in-group", 1)[1]
    shown = section.split("```\n", 2)[1].split("```", 1)[0]
    shipped = CALL_MENU_RECIPE.read_text(encoding="utf-8")
    shipped = shipped[shipped.index("; vicirec consent menu\n"):]
    deadagi = [line for line in shown.splitlines() if line.startswith("exten => h,1,")]
    assert deadagi == ["exten => h,1,DeadAGI(agi://127.0.0.1:4577/call_log--HVcauses--PRI-----NODEBUG-----"
                       "${HANGUPCAUSE}-----${DIALSTATUS}-----${DIALEDTIME}-----${ANSWEREDTIME})"]
    noop = "exten => h,1,NoOp(VICIdial writes its call_log DeadAGI here)"
    assert shown.replace(deadagi[0], noop) == shipped


# --- the park IVR loop and the Call Menu recipe on a real Asterisk 22 (tests/real_asterisk.py finds it) -

PARK_ENTRY = """[vicirec-test-entry]
exten => s,1,Answer()
 same => n,Set(CALLERID(name)=V1123181500000000001 1000 TESTCAMP)
 same => n,AGI(park_CID.sh)
 same => n,Hangup()
[vicirec-test-customer]
exten => s,1,Answer()
 same => n,Wait(2)
 same => n,SendDTMF(${KEYS})
 same => n,Wait(30)
"""


@PYST2_WARNINGS
@pytest.mark.parametrize(("transport", "keys", "answer"),
                         [("process", "1", "YES"), ("process", "2", "DECLINED"), ("fastagi", "1", "YES")])
def test_the_park_ivr_loop_on_a_real_asterisk(
    sim: VicidialSimulator, tmp_path: Path, transport: str, keys: str, answer: str  # noqa: F811
) -> None:
    """park_CID.agi hands the call to the campaign's IVR Park Call AGI: ``vicirec.agi,GOSUB,...``
    (process AGI, the recommended spelling) or ``agi://127.0.0.1:PORT/vicirec,GOSUB,...`` (a
    daemon session held for the whole Gosub); the routine's own START/ANSWER/GRAB are process AGIs."""
    port = free_port()
    target = "vicirec.agi" if transport == "process" else f"agi://127.0.0.1:{port}/vicirec"
    assert IVR_PARK_CALL_AGI.sub("", f"{target},GOSUB,vicirec-example-park-consent") == \
        f"{target},GOSUB,vicirec-example-park-consent"  # the admin screen keeps every character
    with contextlib.ExitStack() as stack:
        lab = stack.enter_context(vicidial_asterisk(tmp_path, sim, PARK_ENTRY.replace("${KEYS}", keys),
                                                    [EXAMPLES / "vicirec-example-park-ivr.conf"],
                                                    park_target=target))
        if transport == "fastagi":
            stack.enter_context(serve_daemon(lab.config, port))
        lab.originate("vicirec-test-customer", "vicirec-test-entry")
        assert lab.wait_for(lambda: lab.audited("GOSUB"))
        lines = audit_lines(lab.trail)
        assert lab.unexpected_warnings() == []
    starts = 1 if answer == "YES" else 0
    expected = ([("START", "_CONSENT", "OK", "1000")] if starts else []) + [
        ("ANSWER", answer, "OK", ""), ("GRAB", "", "OK", "1000"), ("GOSUB", "", "OK", "")]
    assert lines == expected
    assert sim.starts_for("1000") == starts
    assert sim.state.agent("1000").external_park == "GRAB_IVR_CUSTOMER"  # type: ignore[union-attr]
    transports = [json.loads(line).get("transport") for line in lab.trail.read_text().splitlines()]
    assert transports[-1] == transport, transports  # the GOSUB went where the campaign said


@PYST2_WARNINGS
@pytest.mark.parametrize(("keys", "answer"), [("1", "YES_NOT_HELD"), ("2", "NO")])
def test_the_call_menu_recipe_on_a_real_asterisk(
    sim: VicidialSimulator, tmp_path: Path, keys: str, answer: str  # noqa: F811
) -> None:
    """No daemon listens where the recipe points (a closed port stands in for 4573, which another
    daemon on this machine may hold): key 1 is not recorded, the yes is audited as YES_NOT_HELD and
    the call still goes on to the in-group."""
    closed = free_port()
    recipe = tmp_path / CALL_MENU_RECIPE.name
    recipe.write_text(CALL_MENU_RECIPE.read_text().replace(RECIPE_DAEMON, f"agi://127.0.0.1:{closed}/vicirec"))
    with vicidial_asterisk(tmp_path, sim, MENU_CUSTOMER.replace("${KEYS}", keys), [recipe]) as lab:
        lab.originate("vicirec-test-menu-customer", "vicirec-example-callmenu")
        assert lab.wait_for(lambda: lab.in_group_log.is_file()
                            and "agi-VDAD_ALL_inbound.agi" in lab.in_group_log.read_text())
        lines = audit_lines(lab.trail)
        called = lab.in_group_log.read_text().splitlines()
        refused = ["Connection refused", "FastAGI failed", "not held"] if keys == "1" else []
        assert lab.unexpected_warnings(refused) == []
    assert lines == [("ANSWER", answer, "OK", "")]
    assert [line.split(" ")[0] for line in called] == ["agi-VDAD_inbound_calltime_check.agi",
                                                       "agi-VDAD_ALL_inbound.agi"]
    assert called[1].split(" ")[1].startswith("CIDLOOKUP-----LB-----SALESLINE-----vicirec-example-callmenu--")
    assert sim.requests == []


@PYST2_WARNINGS
def test_consent_over_the_process_agi_is_refused_on_a_real_asterisk(
    sim: VicidialSimulator, tmp_path: Path  # noqa: F811
) -> None:
    """CONSENT is FastAGI only: a process AGI ends with its dialplan step, so nothing could wait for
    the agent. The recipe pointed at ``vicirec.agi`` instead: refused (audited), never recorded,
    the call goes on to the in-group. tests/test_callmenu_consent.py runs it over FastAGI."""
    recipe = tmp_path / CALL_MENU_RECIPE.name
    recipe.write_text(CALL_MENU_RECIPE.read_text().replace(RECIPE_DAEMON, "vicirec.agi"))
    with vicidial_asterisk(tmp_path, sim, MENU_CUSTOMER.replace("${KEYS}", "1"), [recipe]) as lab:
        lab.originate("vicirec-test-menu-customer", "vicirec-example-callmenu")
        assert lab.wait_for(lambda: lab.in_group_log.is_file()
                            and "agi-VDAD_ALL_inbound.agi" in lab.in_group_log.read_text())
        records = [json.loads(line) for line in lab.trail.read_text().splitlines()]
        assert lab.unexpected_warnings(["not held - AGISTATUS SUCCESS BAD_REQUEST"]) == []
    assert [(r["action"], r["outcome"], r["error"], r["transport"]) for r in records] == [
        ("CONSENT", "ERROR", "BAD_REQUEST", "process")]
    assert sim.requests == []


# --- 7. MeetMe as well as ConfBridge -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("room", "engine"),
    [("8600051", "MeetMe"), ("8600299", "MeetMe"), ("9600000", "ConfBridge"), ("9600299", "ConfBridge"),
     ("8600050", ""), ("8600300", ""), ("9600300", ""), ("room1", ""), ("", "")],
)
def test_vicidial_numbers_rooms_by_engine(room: str, engine: str) -> None:
    assert vicidial_engine_of(room) == engine


def parked_from_meetme(callerid_name: str = CALL_1000, parties: str = "1") -> FakeChannel:
    """The customer redirected out of agent 1000's MeetMe room 8600051 into the park IVR; VICIdial's
    conference dialplan noted the room (Set(VICIREC_ROOM=${EXTEN}) before Meetme(${EXTEN},F))."""
    channel = park_ivr_caller()
    channel.callerid_name = callerid_name
    channel.variables["VICIREC_ROOM"] = "8600051"
    if parties:
        channel.variables["MEETME_INFO(parties,8600051)"] = parties
    return channel


@pytest.mark.parametrize("kind", ["process", "fastagi"])
def test_a_live_meetme_room_corroborates_the_call_id_over_http(
    tmp_path: Path, sim: VicidialSimulator, kind: str  # noqa: F811
) -> None:
    world = make_world(tmp_path, sim, "http")  # require_corroboration = true (the default)
    with transport(kind, world) as run:
        variables = result(run(["START", "_CONSENT", "confirm-3"], parked_from_meetme()))
    assert (variables["VICIREC_RESULT"], variables["VICIREC_AGENT"], variables["VICIREC_AGENT_SOURCE"],
            variables["VICIREC_RECORDING"]) == ("OK", "1000", "call_id", "1"), variables
    assert sim.starts_for("1000") == 1


def test_an_empty_meetme_room_corroborates_nothing(tmp_path: Path, sim: VicidialSimulator) -> None:  # noqa: F811
    world = make_world(tmp_path, sim, "http")
    with transport("process", world) as run:
        variables = result(run(["STATUS"], parked_from_meetme(parties="0")))
    assert (variables["VICIREC_RESULT"], variables["VICIREC_ERROR"]) == ("ERROR", "NO_AGENT")
    assert variables["VICIREC_MESSAGE"].startswith("no agent found (call_id: refused agent 1000 "
                                                   "(agents.require_corroboration = true)")
    log = (tmp_path / "vicirec.log").read_text()
    assert "neither ConfBridge nor MeetMe lists parties in room 8600051 (VICIdial numbers MeetMe rooms so)" \
        in log


def test_a_meetme_room_names_only_an_agent_on_this_very_call(
    tmp_path: Path, sim: VicidialSimulator  # noqa: F811
) -> None:
    # The room variable stayed on a channel that is no longer agent 1000's call (no call id of his
    # in CALLERID(name)): MeetMe cannot say who is in the room, so the session resolver refuses.
    world = make_world(tmp_path, sim, "http")
    with transport("process", world) as run:
        variables = result(run(["START"], parked_from_meetme(callerid_name="Customer Carl", parties="2")))
    assert (variables["VICIREC_RESULT"], variables["VICIREC_ERROR"], variables["VICIREC_AGENT"]) == (
        "ERROR", "NO_AGENT", "")
    assert "session: MeetMe room 8600051 has 2 parties" in variables["VICIREC_MESSAGE"]
    assert sim.count(function="recording") == 0


def test_the_session_resolver_takes_a_meetme_room_for_the_agent_on_this_call(
    tmp_path: Path, sim: VicidialSimulator  # noqa: F811
) -> None:
    world = make_world(tmp_path, sim, "http", resolvers=["session"])
    with transport("process", world) as run:
        variables = result(run(["STATUS"], parked_from_meetme(CALL_1000 + " 1000 TESTCAMP")))
    assert (variables["VICIREC_RESULT"], variables["VICIREC_AGENT"], variables["VICIREC_AGENT_SOURCE"]) == (
        "OK", "1000", "session"), variables


def test_a_confbridge_room_in_vicidials_confbridge_range_is_listed_as_before(
    tmp_path: Path, sim: VicidialSimulator  # noqa: F811
) -> None:
    sim.state.log_in_agent("1005", conf_exten="9600005", extension="PJSIP/1005", status="INCALL")
    parties = "PJSIP/1005-00000012,SIP/trunk-00000040"
    channel = FakeChannel(name="SIP/trunk-00000040", uniqueid="1795459700.50", callerid_name="Customer Fay",
                          variables={"BRIDGEPEER": "CBAnn/9600005-00000011;2,PJSIP/1005-00000012",
                                     "CONFBRIDGE_CHANNELS(parties,9600005)": parties})
    world = make_world(tmp_path, sim, "http")
    with transport("process", world) as run:
        variables = result(run(["STATUS"], channel))
    assert (variables["VICIREC_AGENT"], variables["VICIREC_AGENT_SOURCE"]) == ("1005", "session"), variables


# --- the lint knows the new spellings (and still catches what is wrong with them) ----------------------

LINT_OK = [
    "[a]\nexten => s,1,AGI(vicirec.agi,START,_CONSENT,confirm-3,agent-1000)\n",
    "[a]\nexten => s,1,AGI(vicirec.agi,GRAB)\n same => n,AGI(vicirec.agi,GRAB,agent-1000)\n",
    "[a]\nexten => s,1,AGI(vicirec.agi,ANSWER,YES)\n",
    "[a]\nexten => s,1,AGI(agi://127.0.0.1:4573/vicirec,CONSENT,_CONSENT,confirm=3)\n",
    "[a]\nexten => s,1,AGI(agi://127.0.0.1/vicirec,CONSENT,_CONSENT,confirm-3)\n",
    "[a]\nexten => s,1,AGI(vicirec.agi,GOSUB,a,s,2)\n same => n,Hangup()\n",
    "; lint: vicidial-generated\n; lint: vicidial-agi agi-VDAD_ALL_inbound.agi\n"
    "[a]\nexten => s,1,Answer\nexten => s,n,AGI(agi-VDAD_ALL_inbound.agi,X-----Y)\nexten => 1,1,Goto(a,s,1)\n"
    "exten => 1,2,Hangup()\n",
]
LINT_BROKEN = {
    "AGI_OPTION-grab-label": "[a]\nexten => s,1,AGI(vicirec.agi,GRAB,_LABEL)\n",
    "AGI_OPTION-consent-missing": "[a]\nexten => s,1,AGI(vicirec.agi,ANSWER)\n",
    "AGI_OPTION-consent-chars": "[a]\nexten => s,1,AGI(vicirec.agi,ANSWER,a.b)\n",
    "AGI_ACTION-consent-process-agi": "[a]\nexten => s,1,AGI(vicirec.agi,CONSENT,_CONSENT)\n",
    "AGI_OPTION-consent-agent": "[a]\nexten => s,1,AGI(agi://127.0.0.1/vicirec,CONSENT,_CONSENT,agent-1000)\n",
    "AGI_STAGE-consent-label": "[a]\nexten => s,1,AGI(agi://127.0.0.1/vicirec,CONSENT,a.b)\n",
    "AGI_OPTION-dash": "[a]\nexten => s,1,AGI(vicirec.agi,STOP,confirm-soon)\n",
    "AGI_OPTION-dash-twice": "[a]\nexten => s,1,AGI(vicirec.agi,STOP,confirm-1,confirm=2)\n",
    "BAD_TARGET-gosub-step": "[a]\nexten => s,1,AGI(vicirec.agi,GOSUB,nowhere)\n",
    "AGI_TARGET-undeclared": "[a]\nexten => s,1,AGI(agi-VDAD_ALL_inbound.agi,X)\n",
    "EXTEN_CONTINUATION-not-generated": (
        "; lint: vicidial-agi x.agi\n[a]\nexten => s,1,NoOp()\nexten => s,n,Hangup()\n"),
}


@pytest.mark.parametrize("snippet", LINT_OK)
def test_the_lint_accepts_the_new_spellings(snippet: str) -> None:
    assert [str(i) for i in lint.lint_texts({"snippet.conf": snippet})] == []


@pytest.mark.parametrize("case", sorted(LINT_BROKEN))
def test_the_lint_catches_misuse_of_the_new_spellings(case: str) -> None:
    issues = lint.lint_texts({"snippet.conf": LINT_BROKEN[case]})
    assert case.split("-", maxsplit=1)[0] in {i.code for i in issues}, [str(i) for i in issues]


def test_the_codec_reads_gosubs_interim_line_as_part_of_its_reply() -> None:
    from vicirec.asterisk.codec import AgiReply, ReplyReader

    reader = ReplyReader()
    reader.feed(b"100 result=0 Trying...\n200 result=0 Gosub complete\n200 result=-1 Gosub label not found\n")
    replies = list(reader.events())
    done = AgiReply(code=200, result=0, rest="Gosub complete", lines=("200 result=0 Gosub complete",))
    missing = AgiReply(code=200, result=-1, rest="Gosub label not found",
                       lines=("200 result=-1 Gosub label not found",))
    assert replies == [done, missing]


def test_the_fake_asterisk_answers_gosub_as_asterisk_22_does() -> None:
    from vicirec.testing.fake_asterisk import AgiInterpreter

    ran: list[tuple[str, str]] = []
    channel = FakeChannel(subroutines={"consent": lambda chan, exten, prio: ran.append((exten, prio))})
    interpreter = AgiInterpreter(channel)
    assert interpreter.handle(b"GOSUB consent s 1").chunks == [
        b"100 result=0 Trying...\n", b"200 result=0 Gosub complete\n"]
    assert ran == [("s", "1")] and interpreter.gosubs == [("consent", "s", "1")]
    assert interpreter.handle(b"GOSUB nosuch s 1").chunks == [b"200 result=-1 Gosub label not found\n"]
    assert interpreter.handle(b"GOSUB consent").chunks[0].startswith(b"520-")
    interpreter.hang_up()
    assert interpreter.handle(b"GOSUB consent s 1").chunks[0].startswith(b"511 ")
    assert ran == [("s", "1")]
