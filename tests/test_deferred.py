"""CONSENT: a START deferred until an agent takes the call (fastagi/deferred.py, agents/live_calls.py).

The real daemon classes (FastAgiServer, build_runtime) on a free port, the fake Asterisk over
FastAGI, the VICIdial simulator for api.php and a private MariaDB for vicidial_live_agents and
vicidial_auto_calls. An inbound call consents in a Call Menu (no agent yet, no call id in
CALLERID(name)); later the test plays VICIdial: it queues the call and gives it to an agent.
"""

# ruff: noqa: F811

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from deferred_world import (  # noqa: F401 - sim is a fixture
    ASTERISK,
    HOST,
    OTHER_SERVER,
    POLL,
    SERVER_IP,
    agent_takes,
    agents_ready,
    audit_lines,
    deferred_of,
    execute,
    hang_up_in_queue,
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
from vicirec.agents.astguiclient import load_astguiclient_conf
from vicirec.agents.live_calls import LiveCallReader, select_call_places
from vicirec.agents.mysql_directory import MysqlDirectory
from vicirec.config import Config, load_config
from vicirec.deadline import Deadline
from vicirec.errors import VicirecError
from vicirec.fastagi.daemon import build_runtime
from vicirec.fastagi.deferred import CONSENT_SOURCE
from vicirec.fastagi.server import FastAgiServer, bind_listener, listening_address
from vicirec.testing.harness import agi_environment, process_agi_command
from vicirec.testing.simulator import VicidialSimulator
from vicirec.vicidial.client import make_session

pytestmark = pytest.mark.mysql

CALL_A = "1795460000.101"  # consents
CALL_B = "1795460000.102"  # does not


def consent(port: int, uniqueid: str, args: Sequence[str] = ("CONSENT", "_CONSENT")) -> dict[str, str]:
    run = ASTERISK.run_fastagi(HOST, port, "vicirec", list(args), inbound(uniqueid), timeout=10.0)
    return vicirec_vars(run)


# --- the consent and the START -----------------------------------------------------------------------


def test_two_calls_one_consented_starts_once_for_the_agent_that_took_it(
    tmp_path: Path, sim: VicidialSimulator, mariadb: MariaDb
) -> None:
    agents_ready(mariadb)
    config = load_config(str(write_config(tmp_path, sim, mariadb)))
    with serving(config) as (server, port):
        answer = consent(port, CALL_A)
        assert (answer["VICIREC_RESULT"], answer["VICIREC_ACTION"], answer["VICIREC_DEFERRED"],
                answer["VICIREC_STAGE"], answer["VICIREC_AGENT"]) == ("OK", "CONSENT", "1", "_CONSENT", "")
        assert sim.starts_for("2001") == 0 and sim.starts_for("2002") == 0  # nothing recorded yet
        deferred = deferred_of(server)
        assert set(deferred.pending_ids()) == {CALL_A}
        queue_call(mariadb, CALL_A)
        queue_call(mariadb, CALL_B)
        # The call that did not consent reaches an agent first: nothing happens for it.
        agent_takes(mariadb, "2001", CALL_B, status="INCALL")
        time.sleep(6 * POLL)
        assert sim.starts_for("2001") == 0 and deferred.pending() == 1
        agent_takes(mariadb, "2002", CALL_A)
        assert wait_for(lambda: deferred.stats.started == 1)
        time.sleep(6 * POLL)  # more polls: still exactly one START, and only for 2002
        assert (sim.starts_for("2002"), sim.starts_for("2001"), deferred.pending()) == (1, 0, 0)
        start = [r for r in sim.requests if r.params.get("function") == "recording"
                 and r.params.get("value") == "START"]
        assert [(r.params["agent_user"], r.params.get("stage")) for r in start] == [("2002", "_CONSENT")]
    records = audit_lines(tmp_path)
    assert [(r["action"], r["outcome"], r.get("deferred", False)) for r in records] == [
        ("CONSENT", "OK", False), ("START", "OK", True)]
    held, started = records
    assert held["uniqueid"] == started["uniqueid"] == CALL_A
    assert held["consent_id"] == started["consent_id"] and held["consent_id"].startswith("c-")
    assert (started["agent"], started["agent_source"], started["stage"]) == (
        "2002", CONSENT_SOURCE, "_CONSENT")
    assert held["caller"] == started["caller"] == "******1212"
    # vicirec audit --consent lists both; --action CONSENT the consent alone.
    audit = [sys.executable, "-m", "vicirec", "audit", "--file", str(tmp_path / "audit.jsonl"),
             "--format", "json"]
    found = subprocess.run([*audit, "--consent"], capture_output=True, text=True, check=True)
    assert [json.loads(line)["action"] for line in found.stdout.splitlines()] == ["CONSENT", "START"]
    found = subprocess.run([*audit, "--action", "consent"], capture_output=True, text=True, check=True)
    assert [json.loads(line)["consent_id"] for line in found.stdout.splitlines()] == [held["consent_id"]]


def test_a_confirmed_deferred_start_records_the_recording_id(
    tmp_path: Path, sim: VicidialSimulator, mariadb: MariaDb
) -> None:
    agents_ready(mariadb)
    config = load_config(str(write_config(tmp_path, sim, mariadb)))
    with serving(config) as (server, port):
        consent(port, CALL_A, ("CONSENT", "_CONSENT", "confirm=3"))
        agent_takes(mariadb, "2002", CALL_A, status="INCALL")
        assert wait_for(lambda: deferred_of(server).stats.started == 1)
    started = audit_lines(tmp_path)[-1]
    assert (started["action"], started["recording"], started["deferred"]) == ("START", True, True)
    assert started["recording_id"].isdigit() and started["filename"].endswith("_CONSENT")
    assert started["confirmed_after"] is not None


def test_the_same_call_consenting_twice_is_held_once(
    tmp_path: Path, sim: VicidialSimulator, mariadb: MariaDb
) -> None:
    agents_ready(mariadb)
    config = load_config(str(write_config(tmp_path, sim, mariadb)))
    with serving(config) as (server, port):
        first, second = consent(port, CALL_A), consent(port, CALL_A)
        assert first["VICIREC_DEFERRED"] == second["VICIREC_DEFERRED"] == "1"
        assert "already held" in second["VICIREC_MESSAGE"]
        agent_takes(mariadb, "2001", CALL_A)
        assert wait_for(lambda: deferred_of(server).stats.started == 1)
        time.sleep(4 * POLL)
        assert sim.starts_for("2001") == 1
    ids = {r["consent_id"] for r in audit_lines(tmp_path)}
    assert len(ids) == 1


def test_agents_of_another_server_or_not_on_the_call_do_not_count(
    tmp_path: Path, sim: VicidialSimulator, mariadb: MariaDb
) -> None:
    agents_ready(mariadb)
    config = load_config(str(write_config(tmp_path, sim, mariadb)))
    with serving(config) as (server, port):
        consent(port, CALL_A)
        # The same uniqueid on another Asterisk server, and a paused agent still naming it.
        execute(mariadb, "UPDATE vicidial_live_agents SET server_ip = %s, uniqueid = %s, status = 'INCALL' "
                         "WHERE user = '2001'", [OTHER_SERVER, CALL_A])
        execute(mariadb, "UPDATE vicidial_live_agents SET uniqueid = %s, status = 'PAUSED' "
                         "WHERE user = '2002'", [CALL_A])
        time.sleep(8 * POLL)
        assert deferred_of(server).pending() == 1
        assert sim.starts_for("2001") == sim.starts_for("2002") == 0


def test_two_agents_on_one_call_start_nobody_until_one_is_left(
    tmp_path: Path, sim: VicidialSimulator, mariadb: MariaDb
) -> None:
    agents_ready(mariadb)
    config = load_config(str(write_config(tmp_path, sim, mariadb)))
    with serving(config) as (server, port):
        consent(port, CALL_A)
        execute(mariadb, "UPDATE vicidial_live_agents SET status = 'INCALL', uniqueid = %s "
                         "WHERE user IN ('2001', '2002')", [CALL_A])  # one statement: no poll between
        time.sleep(8 * POLL)
        assert sim.starts_for("2001") == sim.starts_for("2002") == 0
        assert deferred_of(server).pending() == 1  # never a guess
        execute(mariadb, "UPDATE vicidial_live_agents SET status = 'PAUSED', uniqueid = '' "
                         "WHERE user = '2001'")
        assert wait_for(lambda: deferred_of(server).stats.started == 1)
        assert (sim.starts_for("2001"), sim.starts_for("2002")) == (0, 1)


# --- forgetting ------------------------------------------------------------------------------------


def test_a_call_that_ends_in_the_queue_is_forgotten(
    tmp_path: Path, sim: VicidialSimulator, mariadb: MariaDb
) -> None:
    agents_ready(mariadb)
    config = load_config(str(write_config(tmp_path, sim, mariadb)))
    with serving(config) as (server, port):
        deferred = deferred_of(server)
        consent(port, CALL_A)
        time.sleep(4 * POLL)
        assert deferred.pending() == 1  # not queued yet (the in-group AGI has not run): kept
        queue_call(mariadb, CALL_A)
        time.sleep(4 * POLL)
        assert deferred.pending() == 1
        hang_up_in_queue(mariadb, CALL_A)
        assert wait_for(lambda: deferred.pending() == 0)
        agent_takes(mariadb, "2001", CALL_A)  # a stale row naming the ended call never STARTs
        time.sleep(6 * POLL)
        assert sim.starts_for("2001") == 0 and deferred.stats.ended == 1
    held, forgotten = audit_lines(tmp_path)
    assert (forgotten["action"], forgotten["outcome"], forgotten["error"]) == ("CONSENT", "ERROR", "NO_AGENT")
    assert forgotten["consent_id"] == held["consent_id"]
    assert "call ended before an agent took it" in forgotten["message"]


def test_a_consent_no_agent_takes_in_time_is_forgotten(
    tmp_path: Path, sim: VicidialSimulator, mariadb: MariaDb
) -> None:
    agents_ready(mariadb)
    config = load_config(str(write_config(tmp_path, sim, mariadb, fastagi={"consent_timeout": 0.3})))
    with serving(config) as (server, port):
        deferred = deferred_of(server)
        consent(port, CALL_A)
        queue_call(mariadb, CALL_A)
        assert wait_for(lambda: deferred.pending() == 0, timeout=3.0)
        agent_takes(mariadb, "2001", CALL_A)
        time.sleep(6 * POLL)
        assert sim.starts_for("2001") == 0 and deferred.stats.expired == 1
    assert "within 0.3 s" in audit_lines(tmp_path)[-1]["message"]


def test_stopping_the_daemon_forgets_what_it_holds(
    tmp_path: Path, sim: VicidialSimulator, mariadb: MariaDb
) -> None:
    agents_ready(mariadb)
    config = load_config(str(write_config(tmp_path, sim, mariadb)))
    with serving(config) as (server, port):
        deferred = deferred_of(server)
        consent(port, CALL_A)
    assert deferred.pending() == 0 and deferred.stats.dropped == 1
    assert "the daemon stopped" in audit_lines(tmp_path)[-1]["message"]


def test_a_restart_of_vicirec_serve_loses_pending_consents(
    tmp_path: Path, sim: VicidialSimulator, mariadb: MariaDb
) -> None:
    """The real ``vicirec serve``: SIGTERM with a consent held, start again, the agent takes the
    call: no START (fail closed), and the audit trail says the consent was forgotten."""
    agents_ready(mariadb)
    config = write_config(tmp_path, sim, mariadb)

    def serve() -> tuple[subprocess.Popen[bytes], int]:
        process = subprocess.Popen(
            [sys.executable, "-m", "vicirec", "serve", "--config", str(config), "--port", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        log = tmp_path / "vicirec.log"
        port: list[int] = []

        def listening() -> bool:
            if log.exists():
                for line in log.read_text().splitlines():
                    event = json.loads(line)
                    if event.get("event") == "fastagi_listening" and event.get("pid") == process.pid:
                        port.append(int(event["port"]))
                        return True
            return False

        assert wait_for(listening, timeout=15.0), process.stderr
        return process, port[0]

    first, port = serve()
    try:
        assert consent(port, CALL_A)["VICIREC_DEFERRED"] == "1"
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=15) == 0
    second, port = serve()
    try:
        agent_takes(mariadb, "2001", CALL_A)
        time.sleep(10 * POLL)
        assert sim.starts_for("2001") == 0
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=15) == 0
    held, forgotten = audit_lines(tmp_path)
    assert forgotten["consent_id"] == held["consent_id"] and forgotten["outcome"] == "ERROR"


def test_a_reload_keeps_held_consents_and_a_switch_to_http_forgets_them(
    tmp_path: Path, sim: VicidialSimulator, mariadb: MariaDb
) -> None:
    agents_ready(mariadb)
    config = load_config(str(write_config(tmp_path, sim, mariadb)))
    http = make_session(pool_size=4)
    listener = bind_listener(HOST, 0)
    runtime = build_runtime(config, http)
    configs = [config, load_config(str(write_config(tmp_path, sim, None, name="http.toml")))]
    server = FastAgiServer(listener, runtime, max_sessions=4,
                           reloader=lambda current: build_runtime(configs.pop(0), http, current))
    loop = threading.Thread(target=server.run, daemon=True)
    loop.start()
    port = listening_address(listener)[1]
    try:
        consent(port, CALL_A)
        consent(port, CALL_B)
        deferred = deferred_of(server)
        first_reader = deferred.binding.reader
        server.request_reload()
        assert wait_for(lambda: server.runtime is not runtime)
        assert server.runtime.deferred is deferred and deferred.binding.reader is not first_reader
        agent_takes(mariadb, "2001", CALL_A)
        assert wait_for(lambda: deferred.stats.started == 1)
        assert sim.starts_for("2001") == 1 and set(deferred.pending_ids()) == {CALL_B}
        reloaded = server.runtime
        server.request_reload()  # now lookup = "http": nothing can follow the calls any more
        assert wait_for(lambda: server.runtime is not reloaded)
        assert server.runtime.deferred is None and deferred.pending() == 0
        agent_takes(mariadb, "2002", CALL_B)
        time.sleep(6 * POLL)
        assert sim.starts_for("2002") == 0
    finally:
        server.request_stop()
        loop.join(timeout=5.0)
    assert 'no longer "mysql"' in audit_lines(tmp_path)[-1]["message"]


# --- refusals (fail closed) -----------------------------------------------------------------------


def test_the_cap_on_pending_consents_refuses_closed(
    tmp_path: Path, sim: VicidialSimulator, mariadb: MariaDb
) -> None:
    agents_ready(mariadb)
    config = load_config(str(write_config(tmp_path, sim, mariadb, fastagi={"consent_max_pending": 1})))
    with serving(config) as (server, port):
        consent(port, CALL_A)
        refused = consent(port, CALL_B)
        assert (refused["VICIREC_RESULT"], refused["VICIREC_ERROR"], refused["VICIREC_DEFERRED"]) == (
            "ERROR", "UNREACHABLE", "0")
        assert "consent_max_pending" in refused["VICIREC_MESSAGE"]
        agent_takes(mariadb, "2001", CALL_B)
        time.sleep(6 * POLL)
        assert sim.starts_for("2001") == 0 and deferred_of(server).pending() == 1


@pytest.mark.parametrize(("args", "uniqueid"), [
    (["CONSENT", "agent=2001"], CALL_A),
    (["CONSENT", "bogus=1"], CALL_A),
    (["CONSENT", "_CONSENT"], "1795460000.1' OR 1=1"),  # not a uniqueid Asterisk makes
    (["CONSENT", "_CONSENT"], ""),
])
def test_bad_consent_arguments_are_refused(
    tmp_path: Path, sim: VicidialSimulator, mariadb: MariaDb, args: list[str], uniqueid: str
) -> None:
    agents_ready(mariadb)
    config = load_config(str(write_config(tmp_path, sim, mariadb)))
    with serving(config) as (server, port):
        answer = consent(port, uniqueid, args)
        assert (answer["VICIREC_RESULT"], answer["VICIREC_ERROR"], answer["VICIREC_DEFERRED"]) == (
            "ERROR", "BAD_REQUEST", "0")
        assert deferred_of(server).pending() == 0
    assert [r["outcome"] for r in audit_lines(tmp_path)] == ["ERROR"]


def test_a_consent_whose_audit_record_fails_is_not_held(
    tmp_path: Path, sim: VicidialSimulator, mariadb: MariaDb
) -> None:
    agents_ready(mariadb)
    config = load_config(str(write_config(tmp_path, sim, mariadb)))
    (tmp_path / "audit.jsonl").mkdir()  # the audit path cannot be opened as a file
    with serving(config) as (server, port):
        answer = consent(port, CALL_A)
        assert (answer["VICIREC_RESULT"], answer["VICIREC_ERROR"], answer["VICIREC_DEFERRED"]) == (
            "ERROR", "INTERNAL", "0")
        assert deferred_of(server).pending() == 0
        agent_takes(mariadb, "2001", CALL_A)
        time.sleep(6 * POLL)
        assert sim.starts_for("2001") == 0


def test_the_http_lookup_daemon_refuses_consent(tmp_path: Path, sim: VicidialSimulator) -> None:
    config = load_config(str(write_config(tmp_path, sim, None)))
    with serving(config) as (server, port):
        assert server.runtime.deferred is None
        answer = consent(port, CALL_A)
    assert (answer["VICIREC_RESULT"], answer["VICIREC_ERROR"]) == ("ERROR", "BAD_REQUEST")
    assert "needs the FastAGI daemon" in answer["VICIREC_MESSAGE"]
    assert sim.count(function="recording") == 0


def test_the_process_agi_refuses_consent(tmp_path: Path, sim: VicidialSimulator) -> None:
    config = write_config(tmp_path, sim, None)
    run = ASTERISK.run_process(process_agi_command(), ["CONSENT", "_CONSENT"], inbound(CALL_A),
                               env=agi_environment(config), timeout=20.0)
    answer = vicirec_vars(run)
    assert run.exit_code == 0
    assert (answer["VICIREC_RESULT"], answer["VICIREC_ERROR"]) == ("ERROR", "BAD_REQUEST")
    assert "nothing will be recorded" in answer["VICIREC_MESSAGE"]
    assert sim.count(function="recording") == 0
    assert [(r["action"], r["error"]) for r in audit_lines(tmp_path)] == [("CONSENT", "BAD_REQUEST")]


# --- the reader -------------------------------------------------------------------------------------


def reader_for(database: MariaDb, tmp_path: Path, config: Config, account: str = "ro") -> LiveCallReader:
    path = database.astguiclient_conf(tmp_path / "astguiclient.conf", server_ip=SERVER_IP, account=account)
    return LiveCallReader(MysqlDirectory(load_astguiclient_conf(str(path)), config))


def com_select(database: MariaDb) -> int:
    connection = database.admin()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SHOW GLOBAL STATUS LIKE 'Com_select'")
            return int(cursor.fetchone()[1])
    finally:
        connection.close()


def test_one_select_reads_every_pending_call(
    tmp_path: Path, sim: VicidialSimulator, mariadb: MariaDb
) -> None:
    agents_ready(mariadb)
    config = load_config(str(write_config(tmp_path, sim, mariadb)))
    reader = reader_for(mariadb, tmp_path, config)
    ids = [f"1795460000.{n}" for n in range(200)]
    for uniqueid in ids[:3]:
        queue_call(mariadb, uniqueid)
    queue_call(mariadb, ids[3], server_ip=OTHER_SERVER)
    agent_takes(mariadb, "2002", ids[1], status="INCALL")
    first, second = com_select(mariadb), com_select(mariadb)
    places = reader.places(ids, Deadline(5))
    third = com_select(mariadb)
    assert (third - second) - (second - first) == 1  # the counter's own reads aside: one SELECT
    assert set(places.taken) == {ids[1]} and places.taken[ids[1]][0].user == "2002"
    assert places.queued == frozenset(ids[:3])
    assert select_call_places(2).count("%s") == 3 + 2 + 1 + 2
    assert "'" not in select_call_places(200).replace("'agent'", "").replace("'queue'", "").replace("''", "")


def test_the_kept_connection_is_read_only_and_survives_a_server_side_close(
    tmp_path: Path, sim: VicidialSimulator, mariadb: MariaDb
) -> None:
    import pymysql

    agents_ready(mariadb)
    queue_call(mariadb, CALL_A)
    config = load_config(str(write_config(tmp_path, sim, mariadb)))
    reader = reader_for(mariadb, tmp_path, config, account="rw")  # may write, like VICIdial's cron user
    assert reader.places([CALL_A], Deadline(5)).queued == {CALL_A}
    kept = reader._connection
    with pytest.raises(pymysql.err.MySQLError) as refused, kept.cursor() as cursor:
        cursor.execute("DELETE FROM vicidial_auto_calls")
    assert refused.value.args[0] == 1792  # ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION
    execute(mariadb, "KILL %s", [kept.thread_id()])  # the server drops the idle connection
    assert reader.places([CALL_A], Deadline(5)).queued == {CALL_A}  # one retry on a fresh one
    assert reader._connection is not kept
    reader.close()
    with pytest.raises(VicirecError):
        reader.places([CALL_A], Deadline(5))
