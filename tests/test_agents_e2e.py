"""Every kind of call finds its agent, end to end: the real process AGI and the real FastAGI daemon
under the fake Asterisk, VICIdial's API simulated on 127.0.0.1, and for ``lookup = "mysql"`` a real
MariaDB seeded from the simulator's agents. Then the caller's attacks: a forged call id, injection
in CALLERID(name), a stale room.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from mariadb_server import MariaDb, ServerUnavailable, get_server
from sim_mirror import SimulatorMirror
from vicirec.config import load_config
from vicirec.testing.fake_asterisk import AgiRun, FakeAsterisk, FakeChannel
from vicirec.testing.simulator import VicidialSimulator

ASTERISK = FakeAsterisk()
PROCESS_AGI = [sys.executable, "-m", "vicirec.process_agi"]
SERVER_IP = "10.10.10.15"
CHAIN = ["argument", "channel_variable", "call_id", "lead_id", "session", "bridge_peer", "static_map"]
STATIC_MAP = "SIP/1002 = 1002\nIAX2/1003 = 1003\nLocal/1004 = 1004\nPJSIP/1001 = 1001\nSIP/1000 = 1000\n"
CALL_1000 = "V1123181500000000001"  # the corpus lab: agent 1000's call, parked into an IVR


# --- the world: simulator, database, config ---------------------------------------------------------


@pytest.fixture
def sim() -> Iterator[VicidialSimulator]:
    with VicidialSimulator(screen_delay=0.05) as simulator:
        # 1000 (lab): INCALL in room 8600051 on the customer leg SIP/trunk-0000002a.
        # 1001: INCALL in its ConfBridge room 8600052, phone PJSIP/1001.
        simulator.state.log_in_agent(
            "1001",
            conf_exten="8600052",
            extension="PJSIP/1001",
            status="INCALL",
            lead_id=7,
            callerid="M1123181600000000007",
            uniqueid="1795459431.22",
            channel="SIP/trunk-0000002b",
        )
        # 1002-1004: answering calls bridged by Dial(), on SIP, IAX2 and Local phones.
        simulator.state.log_in_agent("1002", conf_exten="8600053", extension="SIP/1002", status="INCALL")
        simulator.state.log_in_agent("1003", conf_exten="8600054", extension="IAX2/1003", status="INCALL")
        simulator.state.log_in_agent(
            "1004", conf_exten="8600055", extension="Local/1004@agents", status="INCALL"
        )
        yield simulator
        while _MIRRORS:
            _MIRRORS.pop().__exit__(None, None, None)


_MIRRORS: list[SimulatorMirror] = []


def seed_database(database: MariaDb, simulator: VicidialSimulator) -> None:
    """``vicidial_live_agents`` (and ``recording_log``) as the simulator's state holds it, kept so
    while the test runs (confirmation reads ``external_recording`` from the database)."""
    _MIRRORS.append(SimulatorMirror(database, simulator).__enter__())


def toml(sections: Mapping[str, Mapping[str, Any]]) -> str:
    def value(item: Any) -> str:
        if isinstance(item, bool):
            return "true" if item else "false"
        if isinstance(item, (int, float)):
            return repr(item)
        if isinstance(item, list):
            return "[" + ", ".join(value(x) for x in item) + "]"
        return '"' + str(item).replace("\\", "\\\\").replace('"', '\\"') + '"'

    return "".join(
        f"[{name}]\n" + "".join(f"{key} = {value(item)}\n" for key, item in body.items()) + "\n"
        for name, body in sections.items()
    )


@dataclass
class World:
    sim: VicidialSimulator
    backend: str
    config_path: Path
    database: Optional[MariaDb] = None


def make_world(tmp_path: Path, sim: VicidialSimulator, backend: str, **agents: Any) -> World:
    (tmp_path / "agents.map").write_text(STATIC_MAP)
    settings: dict[str, Any] = {"resolvers": CHAIN, "map_file": str(tmp_path / "agents.map"), **agents}
    database: Optional[MariaDb] = None
    if backend == "mysql":
        try:
            database = get_server()
        except ServerUnavailable as exc:
            pytest.skip(str(exc))
        seed_database(database, sim)
        conf = database.astguiclient_conf(tmp_path / "astguiclient.conf", server_ip=SERVER_IP)
        settings.update(lookup="mysql", astguiclient_conf=str(conf))
    path = tmp_path / "vicirec.toml"
    path.write_text(
        toml(
            {
                "vicidial": {"api_url": sim.api_url, "user": "6666", "password": "1234"},
                "call": {"deadline": 6.0},
                "agents": settings,
                "log": {"target": "file", "path": str(tmp_path / "vicirec.log")},
            }
        )
    )
    path.chmod(0o640)
    return World(sim, backend, path, database)


# --- transports -----------------------------------------------------------------------------


Runner = Callable[[list[str], FakeChannel], AgiRun]


@contextmanager
def transport(kind: str, world: World) -> Iterator[Runner]:
    if kind == "process":
        env = {**os.environ, "VICIREC_CONFIG": str(world.config_path)}
        yield lambda args, channel: ASTERISK.run_process(PROCESS_AGI, args, channel, env=env, timeout=20.0)
        return
    from vicirec.fastagi.daemon import build_runtime
    from vicirec.fastagi.server import FastAgiServer, bind_listener, listening_address
    from vicirec.vicidial.client import make_session

    config = load_config(str(world.config_path))
    listener = bind_listener("127.0.0.1", 0)
    runtime = build_runtime(config, make_session(pool_size=config.fastagi.max_sessions))
    server = FastAgiServer(listener, runtime, max_sessions=config.fastagi.max_sessions)
    port = listening_address(listener)[1]
    loop = threading.Thread(target=server.run, daemon=True)
    loop.start()
    try:
        yield lambda args, channel: ASTERISK.run_fastagi(
            "127.0.0.1", port, "vicirec", args, channel, timeout=10.0
        )
    finally:
        server.request_stop()
        loop.join(timeout=5.0)


def result(run: AgiRun) -> dict[str, str]:
    assert run.exit_code in (0, None) and not run.timed_out, run.stderr
    variables = run.channel.variables
    assert variables.get("VICIREC_RESULT") in ("OK", "ERROR"), (variables, run.stderr)
    return {name: value for name, value in variables.items() if name.startswith("VICIREC_")}


# --- the call kinds -------------------------------------------------------------------------------


def park_ivr_caller() -> FakeChannel:
    """The customer parked into VICIdial's park IVR: the call id in CALLERID(name)."""
    return FakeChannel(
        name="SIP/trunk-0000002a",
        uniqueid="1795459430.20",
        callerid_num="7275551212",
        callerid_name=CALL_1000,
        context="vicirec-park",
        extension="s",
    )


def conference_caller() -> FakeChannel:
    """The customer in agent 1001's ConfBridge room, pressing a menu key (dialplan_exec)."""
    return FakeChannel(
        name="SIP/trunk-0000002b",
        uniqueid="1795459431.22",
        callerid_num="7275551213",
        callerid_name="Customer Carl",
        context="vicirec-conf-menu",
        extension="s",
        variables={
            "VICIREC_ROOM": "8600052",
            "CONFBRIDGE_CHANNELS(parties,8600052)": "PJSIP/1001-00000007,SIP/trunk-0000002b",
            "BRIDGEPEER": "CBAnn/8600052-0000000e;2,PJSIP/1001-00000007",
        },
    )


def conference_caller_without_room_variable() -> FakeChannel:
    """The same key press where VICIdial's conference dialplan sets no VICIREC_ROOM: the room
    comes from the announcer channel Asterisk puts in BRIDGEPEER."""
    channel = conference_caller()
    del channel.variables["VICIREC_ROOM"]
    return channel


def bridged_caller(peer: str) -> FakeChannel:
    """The customer in a Dial() bridge with the agent's phone, pressing an applicationmap feature."""
    return FakeChannel(
        name="SIP/trunk-0000002c",
        uniqueid="1795459440.30",
        callerid_num="7275551214",
        callerid_name="Customer Dee",
        context="vicirec-entry",
        extension="s",
        priority="6",
        variables={"BRIDGEPEER": peer},
    )


CASES = [
    pytest.param(conference_caller, "1001", {"http": "session", "mysql": "session"}, id="confbridge-menu"),
    pytest.param(conference_caller_without_room_variable, "1001", {"http": "session", "mysql": "session"},
                 id="confbridge-menu-announcer"),
    pytest.param(
        lambda: bridged_caller("SIP/1002-0000002d"),
        "1002",
        {"http": "static_map", "mysql": "bridge_peer"},
        id="dial-sip",
    ),
    pytest.param(
        lambda: bridged_caller("IAX2/1003-123"),
        "1003",
        {"http": "static_map", "mysql": "bridge_peer"},
        id="dial-iax2",
    ),
    pytest.param(
        lambda: bridged_caller("Local/1004@agents-0000000b;1"),
        "1004",
        {"http": "static_map", "mysql": "bridge_peer"},
        id="dial-local",
    ),
    pytest.param(
        lambda: bridged_caller("PJSIP/1001-00000007"),
        "1001",
        {"http": "static_map", "mysql": "bridge_peer"},
        id="dial-pjsip",
    ),
]


@pytest.mark.parametrize("kind", ["process", "fastagi"])
@pytest.mark.parametrize("backend", ["http", "mysql"])
@pytest.mark.parametrize(("channel", "agent", "sources"), CASES)
def test_every_call_kind_resolves_to_its_agent(
    tmp_path: Path,
    sim: VicidialSimulator,
    kind: str,
    backend: str,
    channel: Callable[[], FakeChannel],
    agent: str,
    sources: Mapping[str, str],
) -> None:
    world = make_world(tmp_path, sim, backend)
    with transport(kind, world) as run:
        variables = result(run(["STATUS"], channel()))
    assert (variables["VICIREC_RESULT"], variables["VICIREC_AGENT"], variables["VICIREC_AGENT_SOURCE"]) == (
        "OK",
        agent,
        sources[backend],
    ), variables
    assert sim.count(function="recording", agent_user=agent) == 1


@pytest.mark.parametrize("kind", ["process", "fastagi"])
def test_park_ivr_call_id_is_corroborated_by_the_database(
    tmp_path: Path, sim: VicidialSimulator, kind: str
) -> None:
    world = make_world(tmp_path, sim, "mysql")
    with transport(kind, world) as run:
        variables = result(run(["START", "_CONSENT", "confirm=3"], park_ivr_caller()))
    assert (variables["VICIREC_RESULT"], variables["VICIREC_AGENT"], variables["VICIREC_AGENT_SOURCE"]) == (
        "OK",
        "1000",
        "call_id",
    ), variables
    assert variables["VICIREC_RECORDING"] == "1" and sim.starts_for("1000") == 1


def test_park_ivr_over_http_refuses_by_default_and_says_why(tmp_path: Path, sim: VicidialSimulator) -> None:
    world = make_world(tmp_path, sim, "http")
    with transport("process", world) as run:
        variables = result(run(["START"], park_ivr_caller()))
    assert (variables["VICIREC_RESULT"], variables["VICIREC_ERROR"]) == ("ERROR", "NO_AGENT")
    assert variables["VICIREC_MESSAGE"].startswith("no agent found (call_id: refused agent 1000")
    assert "require_corroboration" in variables["VICIREC_MESSAGE"]
    assert sim.count(function="recording") == 0


def test_park_ivr_over_http_when_the_admin_accepts_uncorroborated_ids(
    tmp_path: Path, sim: VicidialSimulator
) -> None:
    world = make_world(tmp_path, sim, "http", require_corroboration=False)
    with transport("fastagi", world) as run:
        variables = result(run(["STATUS"], park_ivr_caller()))
    assert (variables["VICIREC_RESULT"], variables["VICIREC_AGENT"], variables["VICIREC_AGENT_SOURCE"]) == (
        "OK",
        "1000",
        "call_id",
    )


# --- what a caller can try --------------------------------------------------------------------------


def intruder(callerid_name: str) -> FakeChannel:
    """An inbound caller on their own channel, choosing their own caller ID name."""
    return FakeChannel(
        name="SIP/trunk-0000009f",
        uniqueid="1795459555.90",
        callerid_num="5550000",
        callerid_name=callerid_name,
        context="vicirec-park",
        extension="s",
    )


@pytest.mark.parametrize(("backend", "require"), [("http", True), ("mysql", True), ("mysql", False)])
def test_a_forged_call_id_cannot_reach_another_callers_agent(
    tmp_path: Path, sim: VicidialSimulator, backend: str, require: bool
) -> None:
    world = make_world(tmp_path, sim, backend, require_corroboration=require)
    with transport("process", world) as run:
        variables = result(run(["START", "_X"], intruder(CALL_1000)))
    assert (variables["VICIREC_RESULT"], variables["VICIREC_ERROR"], variables["VICIREC_AGENT"]) == (
        "ERROR",
        "NO_AGENT",
        "",
    )
    assert "refused agent 1000" in variables["VICIREC_MESSAGE"]
    assert sim.count(function="recording") == 0 and sim.starts_for("1000") == 0


def test_the_http_only_trade_off_a_forged_call_id_is_trusted(tmp_path: Path, sim: VicidialSimulator) -> None:
    """Why require_corroboration defaults to true: over HTTP alone, with it off, a caller who learns
    another live call's id reaches that call's agent. This test pins the documented risk."""
    world = make_world(tmp_path, sim, "http", require_corroboration=False)
    with transport("process", world) as run:
        variables = result(run(["STATUS"], intruder(CALL_1000)))
    assert (variables["VICIREC_RESULT"], variables["VICIREC_AGENT"], variables["VICIREC_AGENT_SOURCE"]) == (
        "OK",
        "1000",
        "call_id",
    )


INJECTIONS = [
    CALL_1000 + "&agent_user=1001",
    CALL_1000 + "' OR '1'='1",
    "' OR 1=1; UPDATE vicidial_live_agents SET external_recording='START' -- ",
    '"' + CALL_1000 + '"',
    CALL_1000 + "|1001|START",
    CALL_1000 + ";DROP TABLE vicidial_live_agents",
    "V1123181500000000001\\",
    "${SHELL(id)}",
    "V112318150000000000%",
]


@pytest.mark.parametrize("backend", ["http", "mysql"])
def test_injection_in_the_caller_id_name_goes_nowhere(
    tmp_path: Path, sim: VicidialSimulator, backend: str
) -> None:
    world = make_world(tmp_path, sim, backend, require_corroboration=False)
    before = world.database.agent_rows() if world.database else None
    with transport("fastagi", world) as run:
        for name in INJECTIONS:
            variables = result(run(["START"], intruder(name)))
            assert (variables["VICIREC_RESULT"], variables["VICIREC_ERROR"]) == ("ERROR", "NO_AGENT"), name
            assert "call_id: caller ID name is not a VICIdial call id" in variables["VICIREC_MESSAGE"]
    assert sim.count(function="recording") == 0
    # Nothing the caller typed was ever sent to VICIdial, and the database is as it was.
    for record in sim.requests:
        for value in record.params.values():
            for fragment in ("agent_user=1001", "'1'='1", "DROP", "SHELL", "UPDATE", CALL_1000):
                assert fragment not in value
    if world.database is not None:
        assert world.database.agent_rows() == before


def test_a_caller_who_left_the_room_is_not_in_it(tmp_path: Path, sim: VicidialSimulator) -> None:
    # VICIREC_ROOM stays on the channel after the caller leaves the conference; ConfBridge no longer
    # lists them, so the agent's next call in that room is not theirs to record.
    channel = conference_caller()
    channel.variables["CONFBRIDGE_CHANNELS(parties,8600052)"] = "PJSIP/1001-00000007,SIP/trunk-00000077"
    channel.variables.pop("BRIDGEPEER")
    world = make_world(tmp_path, sim, "http")
    with transport("process", world) as run:
        variables = result(run(["START"], channel))
    assert (variables["VICIREC_RESULT"], variables["VICIREC_ERROR"]) == ("ERROR", "NO_AGENT")
    assert "not a party of ConfBridge room 8600052" in variables["VICIREC_MESSAGE"]
    assert sim.count(function="recording") == 0


def test_same_room_number_on_another_server_is_ambiguous_over_http_not_over_mysql(
    tmp_path: Path, sim: VicidialSimulator
) -> None:
    # 2001 sits in room 8600052 on 10.10.10.16; the non-agent API cannot tell the servers apart.
    sim.state.log_in_agent(
        "2001", conf_exten="8600052", extension="SIP/2001", status="INCALL", server_ip="10.10.10.16"
    )

    def in_room_only() -> FakeChannel:
        channel = conference_caller()
        channel.variables.pop("BRIDGEPEER")
        return channel

    for backend in ("http", "mysql"):
        (tmp_path / backend).mkdir()
        world = make_world(tmp_path / backend, sim, backend)
        with transport("process", world) as run:
            variables = result(run(["STATUS"], in_room_only()))
        if backend == "http":
            assert variables["VICIREC_ERROR"] == "NO_AGENT", variables
            assert "session 8600052 matches 2 agents" in variables["VICIREC_MESSAGE"]
        else:
            assert (variables["VICIREC_RESULT"], variables["VICIREC_AGENT"]) == ("OK", "1001"), variables
