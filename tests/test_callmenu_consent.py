"""The Call Menu recipe end to end: dialplan/examples/vicirec-example-callmenu.conf really records consent.

The shipped file runs in ``dialplan_lint.MiniPbx`` on an inbound call. Its custom dialplan entry's
``AGI(agi://127.0.0.1:4573/vicirec,CONSENT,_CONSENT)`` goes over FastAGI (the fake Asterisk) to the
real daemon classes on a free port (the handler below stands in for Asterisk's connect: the port is
the test's); ``AGI(vicirec.agi,ANSWER,...)`` runs the real process AGI. VICIdial is the simulator
(api.php) and a private MariaDB: the stand-in for ``agi-VDAD_ALL_inbound.agi`` queues the call in
vicidial_auto_calls, as VICIdial's in-group AGI does; the test then gives it to an agent.
"""

# ruff: noqa: F811

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import pytest

import dialplan_lint as lint
from deferred_world import (  # noqa: F401 - sim is a fixture
    ASTERISK,
    HOST,
    POLL,
    agent_takes,
    agents_ready,
    audit_lines,
    deferred_of,
    inbound,
    queue_call,
    recordings_mirrored,
    serving,
    sim,
    vicirec_vars,
    wait_for,
    write_config,
)
from mariadb_server import MariaDb, mariadb  # noqa: F401 - mariadb is a fixture
from real_asterisk import PYST2_WARNINGS
from vicidial_asterisk import MENU_CUSTOMER, vicidial_asterisk
from vicirec.config import load_config
from vicirec.fastagi.server import bind_listener, listening_address
from vicirec.testing.harness import agi_environment, process_agi_command
from vicirec.testing.simulator import VicidialSimulator

pytestmark = pytest.mark.mysql

EXAMPLE = Path(__file__).resolve().parent.parent / "dialplan" / "examples" / "vicirec-example-callmenu.conf"
MENU = "vicirec-example-callmenu"
DAEMON_URL = "agi://127.0.0.1:4573/vicirec"  # as the recipe writes it
CALL = "1795460000.201"
CONSENT_AGI = [DAEMON_URL, "CONSENT", "_CONSENT", "confirm=3"]


class MenuCall:
    """One inbound call through the shipped Call Menu, every AGI() in it a real one."""

    def __init__(self, tmp_path: Path, config: Path, daemon_port: int, database: MariaDb) -> None:
        self.config = config
        self.port = daemon_port
        self.database = database
        self.in_group: list[list[str]] = []
        files = lint.parse_files({str(EXAMPLE): EXAMPLE.read_text(encoding="utf-8")})
        self.pbx = lint.MiniPbx(files, agi=self.agi)
        self.pbx.vars["UNIQUEID"] = CALL

    def agi(self, argv: list[str], variables: dict[str, str]) -> Optional[dict[str, str]]:
        if argv[0] == "agi-VDAD_ALL_inbound.agi":
            self.in_group.append(argv[1:])
            queue_call(self.database, CALL)  # the call now waits in the in-group
            return {}
        if argv[0] == DAEMON_URL:
            run = ASTERISK.run_fastagi(HOST, self.port, "vicirec", argv[1:], inbound(CALL), timeout=10.0)
        else:
            assert argv[0] == "vicirec.agi", argv
            run = ASTERISK.run_process(process_agi_command(), argv[1:], inbound(CALL),
                                       env=agi_environment(self.config), timeout=20.0)
        return {"AGISTATUS": run.agistatus, **vicirec_vars(run)}

    def press(self, key: str) -> None:
        self.pbx.run(MENU, key, 1, base=0, routine=False)
        assert self.pbx.hung_up  # the custom entry's own Hangup(), after the in-group AGI returned
        assert len(self.in_group) == 1, self.in_group  # whatever the answer, on to the in-group
        assert self.in_group[0][0].startswith(f"CIDLOOKUP-----LB-----SALESLINE-----{MENU}--")

    @property
    def vicirec_agis(self) -> list[list[str]]:
        return [call for call in self.pbx.agi_calls if call[0] in (DAEMON_URL, "vicirec.agi")]


def actions(tmp_path: Path) -> list[tuple[Any, ...]]:
    return [(r["action"], r["stage"], r["outcome"], r.get("deferred", False)) for r in audit_lines(tmp_path)]


def recording_requests(simulator: VicidialSimulator) -> list[tuple[str, str, str]]:
    return [(r.params.get("value", ""), r.params.get("agent_user", ""), r.params.get("stage", ""))
            for r in simulator.requests if r.params.get("function") == "recording"]


def starts(simulator: VicidialSimulator) -> list[tuple[str, str, str]]:
    return [request for request in recording_requests(simulator) if request[0] == "START"]


def test_key_1_holds_the_consent_and_the_recording_starts_once_when_an_agent_takes_the_call(
    tmp_path: Path, sim: VicidialSimulator, mariadb: MariaDb
) -> None:
    agents_ready(mariadb)
    config = write_config(tmp_path, sim, mariadb)
    with serving(load_config(str(config))) as (server, port):
        call = MenuCall(tmp_path, config, port, mariadb)
        call.press("1")
        assert call.vicirec_agis == [CONSENT_AGI]  # no ANSWER: CONSENT is the record
        assert (call.pbx.vars["VICIREC_RESULT"], call.pbx.vars["VICIREC_DEFERRED"]) == ("OK", "1")
        assert call.pbx.logs == []
        assert recording_requests(sim) == []  # queued, no agent yet: nothing recorded
        deferred = deferred_of(server)
        time.sleep(4 * POLL)
        assert deferred.pending() == 1
        agent_takes(mariadb, "2002", CALL)
        assert wait_for(lambda: deferred.stats.started == 1)
        time.sleep(6 * POLL)  # more polls: still one START
        assert starts(sim) == [("START", "2002", "_CONSENT")]
        # confirm=3 is read from VICIdial's database (mysql lookup): api.php hears only the START
        assert {value for value, _, _ in recording_requests(sim)} == {"START"}
        assert deferred.pending() == 0
    assert actions(tmp_path) == [("CONSENT", "_CONSENT", "OK", False), ("START", "_CONSENT", "OK", True)]
    held, started = audit_lines(tmp_path)
    assert held["consent_id"] == started["consent_id"] and held["uniqueid"] == started["uniqueid"] == CALL
    assert started["agent"] == "2002"
    assert started["recording"] is True and started["recording_id"].isdigit()  # VICIdial showed it


@pytest.mark.parametrize(("key", "answer"), [("2", "NO"), ("t", "NOANSWER")])
def test_declining_or_no_key_is_never_recorded_and_the_call_still_reaches_the_in_group(
    tmp_path: Path, sim: VicidialSimulator, mariadb: MariaDb, key: str, answer: str
) -> None:
    agents_ready(mariadb)
    config = write_config(tmp_path, sim, mariadb)
    with serving(load_config(str(config))) as (server, port):
        call = MenuCall(tmp_path, config, port, mariadb)
        call.press(key)
        assert call.vicirec_agis == [["vicirec.agi", "ANSWER", answer]]
        agent_takes(mariadb, "2001", CALL)
        time.sleep(8 * POLL)
        assert deferred_of(server).pending() == 0
    assert recording_requests(sim) == []
    assert actions(tmp_path) == [("ANSWER", answer, "OK", False)]


def test_a_consent_the_daemon_refuses_is_not_recorded_and_the_call_goes_on(
    tmp_path: Path, sim: VicidialSimulator, mariadb: MariaDb
) -> None:
    """The daemon runs with lookup = "http": it answers ERROR, audits the refusal, holds nothing."""
    config = write_config(tmp_path, sim, None)
    agents_ready(mariadb)
    with serving(load_config(str(config))) as (server, port):
        assert server.runtime.deferred is None
        call = MenuCall(tmp_path, config, port, mariadb)
        call.press("1")
        agent_takes(mariadb, "2001", CALL)
        time.sleep(4 * POLL)
    variables = call.pbx.vars
    assert (variables["VICIREC_RESULT"], variables["VICIREC_ERROR"], variables["VICIREC_DEFERRED"]) == (
        "ERROR", "BAD_REQUEST", "")
    assert call.vicirec_agis == [CONSENT_AGI]  # its refusal is the audit record
    [warning] = call.pbx.logs
    assert warning.startswith(f"WARNING,vicirec: consent of {CALL} not held - AGISTATUS SUCCESS BAD_REQUEST")
    assert warning.endswith("this call will not be recorded")
    assert recording_requests(sim) == []
    assert [(r["action"], r["outcome"], r["error"]) for r in audit_lines(tmp_path)] == [
        ("CONSENT", "ERROR", "BAD_REQUEST")]


@contextmanager
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 nobody listens on (bound, never listened: a connect is refused)."""
    sock = bind_listener(HOST, 0)
    port = listening_address(sock)[1]
    sock.close()
    yield port


def test_a_daemon_that_is_not_running_means_no_recording_and_the_answer_is_still_audited(
    tmp_path: Path, sim: VicidialSimulator, mariadb: MariaDb
) -> None:
    agents_ready(mariadb)
    config = write_config(tmp_path, sim, mariadb)
    with closed_port() as port:
        call = MenuCall(tmp_path, config, port, mariadb)
        call.press("1")
    assert call.pbx.vars["AGISTATUS"] == "SUCCESS"  # the last AGI: the in-group's
    assert call.vicirec_agis == [CONSENT_AGI,
                                 ["vicirec.agi", "ANSWER", "YES_NOT_HELD"]]
    [warning] = call.pbx.logs
    assert "not held - AGISTATUS FAILURE" in warning
    assert recording_requests(sim) == []
    assert actions(tmp_path) == [("ANSWER", "YES_NOT_HELD", "OK", False)]


@PYST2_WARNINGS
def test_the_recipe_on_a_real_asterisk_records_once_an_agent_takes_the_call(
    tmp_path: Path, sim: VicidialSimulator, mariadb: MariaDb
) -> None:
    """Asterisk 22 runs the recipe (VICIdial's AGIs are stand-ins) and connects over FastAGI to the
    daemon, which holds the consent against Asterisk's own uniqueid; the test then plays VICIdial
    giving that call to an agent. CONSENT is FastAGI only: the process AGI ends with the call's
    dialplan step, so nothing would be left to wait for the agent. Where tests/real_asterisk.py
    finds no Asterisk this is skipped (a failure under VICIREC_TEST_REQUIRE_ASTERISK)."""
    agents_ready(mariadb)
    config = write_config(tmp_path, sim, mariadb)
    with serving(load_config(str(config))) as (server, port):
        recipe = tmp_path / EXAMPLE.name
        recipe.write_text(EXAMPLE.read_text().replace(DAEMON_URL, f"agi://127.0.0.1:{port}/vicirec"))
        with vicidial_asterisk(tmp_path / "ast", sim, MENU_CUSTOMER.replace("${KEYS}", "1"), [recipe]) as lab:
            lab.originate("vicirec-test-menu-customer", MENU)
            assert lab.wait_for(lambda: lab.in_group_log.is_file()
                                and "agi-VDAD_ALL_inbound.agi" in lab.in_group_log.read_text())
            in_group = [line.split(" ")[0] for line in lab.in_group_log.read_text().splitlines()]
            answers = lab.trail.is_file()  # the process AGI's trail: no ANSWER on a held consent
            assert lab.unexpected_warnings() == []
        assert in_group == ["agi-VDAD_inbound_calltime_check.agi", "agi-VDAD_ALL_inbound.agi"]
        assert not answers
        deferred = deferred_of(server)
        [uniqueid] = deferred.pending_ids()  # Asterisk's uniqueid of the menu's channel
        assert recording_requests(sim) == []
        queue_call(mariadb, uniqueid)
        agent_takes(mariadb, "2001", uniqueid)
        assert wait_for(lambda: deferred.stats.started == 1)
        time.sleep(6 * POLL)
        assert starts(sim) == [("START", "2001", "_CONSENT")]
    assert actions(tmp_path) == [("CONSENT", "_CONSENT", "OK", False), ("START", "_CONSENT", "OK", True)]
