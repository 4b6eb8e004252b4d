"""The world of a deferred START (CONSENT): the VICIdial simulator, a private MariaDB playing
VICIdial's tables, the real FastAGI daemon classes on a free port, and an inbound call in a Call Menu.

Shared by tests/test_deferred.py (the daemon's CONSENT itself) and tests/test_callmenu_consent.py
(the shipped Call Menu recipe that sends it). The test plays VICIdial: it queues the call
(vicidial_auto_calls) and gives it to an agent (vicidial_live_agents.uniqueid).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from mariadb_server import MariaDb
from sim_mirror import SimulatorMirror
from vicirec.config import Config
from vicirec.fastagi.daemon import build_runtime
from vicirec.fastagi.deferred import DeferredStarts
from vicirec.fastagi.server import FastAgiServer, bind_listener, listening_address
from vicirec.testing.fake_asterisk import AgiRun, FakeAsterisk, FakeChannel
from vicirec.testing.harness import toml_text
from vicirec.testing.simulator import API_PASS, API_USER, VicidialSimulator
from vicirec.vicidial.client import make_session

HOST = "127.0.0.1"
SERVER_IP = "10.10.10.15"
OTHER_SERVER = "10.10.10.16"
ASTERISK = FakeAsterisk()
POLL = 0.05


@pytest.fixture
def sim() -> Iterator[VicidialSimulator]:
    with VicidialSimulator(screen_delay=0.05) as simulator:
        for user, room in (("2001", "8600061"), ("2002", "8600062")):
            simulator.state.log_in_agent(user, conf_exten=room, extension=f"SIP/{user}", status="READY")
        yield simulator


@pytest.fixture(autouse=True)
def recordings_mirrored(request: pytest.FixtureRequest) -> Iterator[None]:
    """With both a simulator and MariaDB, the simulated recordings reach the database as VICIdial's
    do (``external_recording``, ``recording_log``), which a mysql daemon's confirmation reads; the
    agents' rows stay the test's own."""
    if not {"sim", "mariadb"} <= set(request.fixturenames):
        yield
        return
    database, simulator = request.getfixturevalue("mariadb"), request.getfixturevalue("sim")
    with SimulatorMirror(database, simulator, seed_agents=False):
        yield


def agents_ready(database: MariaDb) -> None:
    database.replace_agents([
        {"user": user, "server_ip": SERVER_IP, "conf_exten": room, "extension": f"SIP/{user}",
         "status": "READY", "campaign_id": "TESTCAMP"}
        for user, room in (("2001", "8600061"), ("2002", "8600062"))
    ])
    execute(database, "DELETE FROM vicidial_auto_calls")


def execute(database: MariaDb, statement: str, params: Sequence[Any] = ()) -> None:
    connection = database.admin()
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement, list(params))
    finally:
        connection.close()


def queue_call(database: MariaDb, uniqueid: str, server_ip: str = SERVER_IP) -> None:
    """agi-VDAD_ALL_inbound.agi puts the call into an in-group: a vicidial_auto_calls row."""
    execute(database, "INSERT INTO vicidial_auto_calls (server_ip, campaign_id, status, lead_id, uniqueid, "
                      "callerid, channel, call_type) VALUES (%s, 'SALESLINE', 'LIVE', 7, %s, %s, %s, 'IN')",
            [server_ip, uniqueid, "Y1206120000000000007", f"SIP/trunk-{uniqueid[-3:]}"])


def hang_up_in_queue(database: MariaDb, uniqueid: str) -> None:
    execute(database, "DELETE FROM vicidial_auto_calls WHERE uniqueid = %s", [uniqueid])


def agent_takes(database: MariaDb, user: str, uniqueid: str, status: str = "QUEUE") -> float:
    """VICIdial gives the call to ``user``: the live row names its uniqueid. Returns time.time()."""
    taken = time.time()
    execute(database, "UPDATE vicidial_live_agents SET status = %s, uniqueid = %s, lead_id = 7, "
                      "callerid = 'Y1206120000000000007' WHERE user = %s", [status, uniqueid, user])
    return taken


def write_config(tmp_path: Path, sim: VicidialSimulator, database: Optional[MariaDb], *,
                 fastagi: Optional[Mapping[str, Any]] = None, name: str = "vicirec.toml",
                 server_ip: str = SERVER_IP) -> Path:
    agents: dict[str, Any] = {"require_corroboration": True}
    if database is not None:
        conf = database.astguiclient_conf(tmp_path / "astguiclient.conf", server_ip=server_ip)
        agents.update(lookup="mysql", astguiclient_conf=str(conf))
    sections: dict[str, dict[str, Any]] = {
        "vicidial": {"api_url": sim.api_url, "user": API_USER, "password": API_PASS, "source": "vicirec"},
        "call": {"deadline": 6.0},
        "agents": agents,
        "log": {"target": "file", "path": str(tmp_path / "vicirec.log"), "level": "info"},
        "audit": {"path": str(tmp_path / "audit.jsonl"), "caller_number": "mask"},
        "fastagi": {"consent_poll_interval": POLL, **(fastagi or {})},
    }
    path = tmp_path / name
    path.write_text(toml_text(sections))
    path.chmod(0o600)
    return path


@contextmanager
def serving(config: Config) -> Iterator[tuple[FastAgiServer, int]]:
    listener = bind_listener(HOST, 0)
    runtime = build_runtime(config, make_session(pool_size=config.fastagi.max_sessions))
    server = FastAgiServer(listener, runtime, max_sessions=config.fastagi.max_sessions)
    loop = threading.Thread(target=server.run, daemon=True)
    loop.start()
    try:
        yield server, listening_address(listener)[1]
    finally:
        server.request_stop()
        loop.join(timeout=5.0)
        if server.runtime.deferred is not None:
            server.runtime.deferred.stop()


def inbound(uniqueid: str) -> FakeChannel:
    """A fresh inbound call in a Call Menu: the carrier's caller ID, no VICIdial call id yet."""
    return FakeChannel(name=f"SIP/trunk-{uniqueid[-3:]}", uniqueid=uniqueid, callerid_num="7275551212",
                       callerid_name="WIRELESS CALLER", context="CONSENT", extension="1")


def vicirec_vars(run: AgiRun) -> dict[str, str]:
    return {k: v for k, v in run.channel.variables.items() if k.startswith("VICIREC_")}


def audit_lines(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def deferred_of(server: FastAgiServer) -> DeferredStarts:
    deferred = server.runtime.deferred
    assert deferred is not None
    return deferred
