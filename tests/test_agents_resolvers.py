"""The resolver chain on its own: every resolver's rules, corroboration, and the chain's verdict.

The channel and the lookup backend are test doubles of the two interfaces (ChannelView,
AgentDirectory): the code under test is everything between them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import pytest

from vicirec.agents.call_facts import lead_id_of, strict_call_id
from vicirec.agents.chain import LiveAgent, ResolveContext, Resolver, Verdict, resolve_agent
from vicirec.agents.resolvers import StaticMapResolver, standard_resolvers
from vicirec.agents.static_map import parse_static_map
from vicirec.asterisk.codec import AgiEnvironment
from vicirec.config import Config, config_from_mapping
from vicirec.deadline import Deadline
from vicirec.errors import ConfigError, ErrorCode, NoAgent
from vicirec.request import parse_arguments

CALL_1000 = "V1123181500000000001"
CALL_1001 = "M1123181600000000007"
BASE = {"vicidial": {"api_url": "https://dialer.example.com/agc/api.php", "user": "6666", "password": "1234"}}

# What the MySQL backend reports: uniqueid/channel of the customer leg, and the agent's phone.
DB_AGENTS = (
    LiveAgent(
        user="1000",
        session_id="8600051",
        status="INCALL",
        lead_id="1",
        callerid=CALL_1000,
        extension="SIP/1000",
        uniqueid="1795459430.20",
        channel="SIP/trunk-0000002a",
        server_ip="10.10.10.15",
    ),
    LiveAgent(
        user="1001",
        session_id="8600052",
        status="INCALL",
        lead_id="7",
        callerid=CALL_1001,
        extension="PJSIP/1001",
        uniqueid="1795459431.22",
        channel="SIP/trunk-0000002b",
        server_ip="10.10.10.15",
    ),
    LiveAgent(
        user="1002",
        session_id="8600053",
        status="READY",
        lead_id="0",
        callerid="",
        extension="IAX2/1002",
        server_ip="10.10.10.15",
    ),
    LiveAgent(
        user="1003",
        session_id="8600054",
        status="READY",
        lead_id="0",
        callerid="",
        extension="Local/1003@agents",
        server_ip="10.10.10.15",
    ),
)


def http_view(agent: LiveAgent) -> LiveAgent:
    """The same agent as the non-agent API reports it: no phone, uniqueid, channel or server."""
    return LiveAgent(
        user=agent.user,
        session_id=agent.session_id,
        status=agent.status,
        lead_id=agent.lead_id,
        callerid=agent.callerid,
    )


HTTP_AGENTS = tuple(http_view(agent) for agent in DB_AGENTS)


class FakeChannel:
    """ChannelView double: GET VARIABLE by name, GET FULL VARIABLE of ``${NAME}`` / ``${F(args)}``."""

    def __init__(self, variables: Mapping[str, str]) -> None:
        self.values = dict(variables)
        self.reads: list[str] = []

    def variable(self, name: str) -> Optional[str]:
        self.reads.append(name)
        return self.values.get(name)

    def expression(self, expression: str, channel: Optional[str] = None) -> str:
        self.reads.append(expression)
        match = re.fullmatch(r"\$\{(.+)\}", expression)
        assert match is not None and channel is None, expression
        return self.values.get(match.group(1), "")


class FakeDirectory:
    """AgentDirectory double that counts how often it is asked."""

    def __init__(self, agents: Sequence[LiveAgent], name: str = "mysql") -> None:
        self.agents = list(agents)
        self.name = name
        self.calls = 0

    def logged_in_agents(self, deadline: Deadline) -> Sequence[LiveAgent]:
        self.calls += 1
        return self.agents


def make_config(**agents: Any) -> Config:
    mapping: dict[str, Any] = dict(BASE)
    mapping["agents"] = {"resolvers": list(agents.pop("resolvers", ["call_id"])), **agents}
    return config_from_mapping(mapping)


def make_context(
    *,
    calleridname: str = "unknown",
    channel: str = "SIP/trunk-0000002a",
    uniqueid: str = "1795459430.20",
    variables: Optional[Mapping[str, str]] = None,
    agents: Sequence[LiveAgent] = DB_AGENTS,
    backend: str = "mysql",
    args: Sequence[str] = ("STATUS",),
    config: Optional[Config] = None,
) -> ResolveContext:
    environment = AgiEnvironment(
        values={"agi_channel": channel, "agi_uniqueid": uniqueid, "agi_calleridname": calleridname},
        args=tuple(args),
    )
    return ResolveContext(
        invocation=parse_arguments(list(args)),
        environment=environment,
        channel=FakeChannel(variables or {}),
        directory=FakeDirectory(agents, backend),
        deadline=Deadline(5.0),
        config=config or make_config(),
    )


def resolver(name: str, config: Optional[Config] = None, server_ip: str = "") -> Resolver:
    return standard_resolvers(config or make_config(), server_ip=server_ip)[name]


def verdict(name: str, context: ResolveContext, server_ip: str = "") -> Verdict:
    return resolver(name, context.config, server_ip).resolve(context)


# --- call ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [CALL_1000, CALL_1001, "Y0101000000000000042", "J9999999999999999999"])
def test_strict_call_id_accepts_vicidial_ids(value: str) -> None:
    assert strict_call_id(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "unknown",
        "Customer Carl",
        CALL_1000 + "\n",
        " " + CALL_1000,
        CALL_1000 + " ",
        "v1123181500000000001",
        CALL_1000[:-1],
        CALL_1000 + "1",
        CALL_1000 + "&agent_user=1001",
        CALL_1000 + "' OR '1'='1",
        '"' + CALL_1000 + '"',
        CALL_1000 + "|1001",
        CALL_1000 + ";DROP TABLE vicidial_live_agents",
        "V" + "\uff11" * 19,  # full-width digits are digits to str.isdigit, not to VICIdial
        "V" + "\u0661" * 19,  # Arabic-Indic digits likewise
        "\u0412" + CALL_1000[1:],  # Cyrillic capital VE looks like a V
        CALL_1000 + "\x00",
        CALL_1000.replace("0", "O"),
    ],
)
def test_strict_call_id_refuses_everything_else(value: str) -> None:
    assert strict_call_id(value) is None


def test_lead_id_is_the_last_ten_digits() -> None:
    assert lead_id_of(CALL_1000) == 1 and lead_id_of(CALL_1001) == 7


# --- call_id and its corroboration ---------------------------------------------------------------


def test_call_id_confirmed_by_the_uniqueid_of_the_customer_leg() -> None:
    result = verdict("call_id", make_context(calleridname=CALL_1000))
    assert result.agent == "1000" and "uniqueid" in result.reason


def test_call_id_confirmed_by_the_linkedid_on_another_leg_of_the_call() -> None:
    context = make_context(
        calleridname=CALL_1000,
        channel="Local/park@vicidial-00000001;2",
        uniqueid="1795459499.77",
        variables={"CHANNEL(linkedid)": "1795459430.20"},
    )
    result = verdict("call_id", context)
    assert result.agent == "1000" and "linkedid" in result.reason


def test_call_id_confirmed_by_the_channel_either_local_half() -> None:
    agents = [replace(DB_AGENTS[0], uniqueid="", channel="Local/58600051@default-0000000a;1")]
    context = make_context(
        calleridname=CALL_1000,
        channel="Local/58600051@default-0000000a;2",
        uniqueid="1795459499.77",
        agents=agents,
    )
    result = verdict("call_id", context)
    assert result.agent == "1000" and "on this channel" in result.reason


def test_call_id_confirmed_by_the_agents_conference_room() -> None:
    agents = [replace(DB_AGENTS[0], uniqueid="", channel="")]
    context = make_context(
        calleridname=CALL_1000,
        channel="SIP/trunk-0000009f",
        uniqueid="1.1",
        agents=agents,
        variables={
            "VICIREC_ROOM": "8600051",
            "CONFBRIDGE_CHANNELS(parties,8600051)": "SIP/1000-00000003,SIP/trunk-0000009f",
        },
    )
    result = verdict("call_id", context)
    assert result.agent == "1000" and "room 8600051" in result.reason


def test_call_id_confirmed_by_the_agents_phone_on_the_bridge() -> None:
    agents = [replace(DB_AGENTS[0], uniqueid="", channel="")]
    context = make_context(
        calleridname=CALL_1000,
        channel="SIP/trunk-0000009f",
        uniqueid="1.1",
        agents=agents,
        variables={"BRIDGEPEER": "SIP/1000-0000002c"},
    )
    result = verdict("call_id", context)
    assert result.agent == "1000" and "phone SIP/1000" in result.reason


@pytest.mark.parametrize("require", [True, False])
def test_a_spoofed_call_id_is_contradicted_and_always_refused(require: bool) -> None:
    # The caller (another channel, another uniqueid) typed agent 1000's live call id into CALLERID(name).
    config = make_config(require_corroboration=require)
    context = make_context(
        calleridname=CALL_1000, channel="SIP/trunk-0000009f", uniqueid="1795459555.90", config=config
    )
    result = verdict("call_id", context)
    assert result.agent is None and result.refused
    assert "refused agent 1000" in result.reason and "different uniqueid, channel" in result.reason


def test_http_lookup_cannot_corroborate_so_require_corroboration_refuses() -> None:
    context = make_context(calleridname=CALL_1000, agents=HTTP_AGENTS, backend="http")
    result = verdict("call_id", context)
    assert result.agent is None and result.refused
    assert "agents.require_corroboration = true" in result.reason and "http lookup" in result.reason
    with pytest.raises(NoAgent) as caught:
        resolve_agent([resolver("call_id")], context)
    assert caught.value.code is ErrorCode.NO_AGENT
    assert caught.value.message.startswith("no agent found (call_id: refused agent 1000")


def test_http_lookup_uncorroborated_match_accepted_when_the_admin_says_so() -> None:
    config = make_config(require_corroboration=False)
    context = make_context(calleridname=CALL_1000, agents=HTTP_AGENTS, backend="http", config=config)
    result = verdict("call_id", context)
    assert result.agent == "1000" and "require_corroboration = false" in result.reason


def test_http_lookup_corroborated_by_the_room_even_with_require_corroboration() -> None:
    context = make_context(
        calleridname=CALL_1000,
        agents=HTTP_AGENTS,
        backend="http",
        variables={"VICIREC_ROOM": "8600051", "CONFBRIDGE_CHANNELS(parties,8600051)": "SIP/trunk-0000002a"},
    )
    assert verdict("call_id", context).agent == "1000"


def test_http_lookup_in_another_agents_room_contradicts_the_call_id() -> None:
    config = make_config(require_corroboration=False)
    context = make_context(
        calleridname=CALL_1000,
        agents=HTTP_AGENTS,
        backend="http",
        config=config,
        variables={"VICIREC_ROOM": "8600052", "CONFBRIDGE_CHANNELS(parties,8600052)": "SIP/trunk-0000002a"},
    )
    result = verdict("call_id", context)
    assert result.agent is None and "different room" in result.reason


def test_call_id_not_a_call_id_never_asks_the_backend() -> None:
    context = make_context(calleridname="Customer Carl")
    assert verdict("call_id", context) == Verdict("call_id", None, "caller ID name is not a VICIdial call id")
    assert isinstance(context.directory, FakeDirectory) and context.directory.calls == 0


def test_call_id_nobody_on_it_and_two_agents_on_it() -> None:
    assert verdict("call_id", make_context(calleridname="V1123181500000000099")).reason == (
        "no logged-in agent is on call V1123181500000000099"
    )
    twice = [DB_AGENTS[0], replace(DB_AGENTS[1], callerid=CALL_1000)]
    result = verdict("call_id", make_context(calleridname=CALL_1000, agents=twice))
    assert result.agent is None and result.reason == f"call {CALL_1000} matches 2 agents"


def test_call_id_stale_duplicate_row_of_the_same_agent_still_resolves() -> None:
    stale = replace(DB_AGENTS[0], uniqueid="1795000000.1", channel="SIP/trunk-00000001")
    result = verdict("call_id", make_context(calleridname=CALL_1000, agents=[stale, DB_AGENTS[0]]))
    assert result.agent == "1000"


# --- lead_id ------------------------------------------------------------------------------------


def test_lead_id_matches_the_agents_lead_and_is_corroborated() -> None:
    # The agent's current call id differs (a transfer made a new one); the lead is the same.
    agents = [replace(DB_AGENTS[1], callerid="J1123181700000000007")]
    context = make_context(
        calleridname=CALL_1001, channel="SIP/trunk-0000002b", uniqueid="1795459431.22", agents=agents
    )
    assert verdict("call_id", context).agent is None
    result = verdict("lead_id", context)
    assert result.agent == "1001" and "lead 7" in result.reason


def test_lead_id_refused_over_http_and_zero_lead_ignored() -> None:
    result = verdict("lead_id", make_context(calleridname=CALL_1001, agents=HTTP_AGENTS, backend="http"))
    assert result.agent is None and result.refused
    zero = verdict("lead_id", make_context(calleridname="V1123181500000000000"))
    assert zero.reason == "the call id carries no lead id"


# --- session (conference room) ------------------------------------------------------------------

ROOM_VARIABLES = {
    "VICIREC_ROOM": "8600052",
    "CONFBRIDGE_CHANNELS(parties,8600052)": "PJSIP/1001-00000007,SIP/trunk-0000002b",
    "BRIDGEPEER": "CBAnn/8600052-0000000e;2,PJSIP/1001-00000007",
}


@pytest.mark.parametrize("agents", [DB_AGENTS, HTTP_AGENTS])
def test_session_finds_the_agent_whose_room_the_caller_is_in(agents: Sequence[LiveAgent]) -> None:
    context = make_context(channel="SIP/trunk-0000002b", variables=ROOM_VARIABLES, agents=agents)
    result = verdict("session", context)
    assert result.agent == "1001" and result.reason == "this channel is in agent 1001's room 8600052"


@pytest.mark.parametrize(
    ("variables", "reason"),
    [
        ({}, "VICIREC_ROOM is not set and no single ConfBridge announcer is in BRIDGEPEER"),
        (
            {"BRIDGEPEER": "CBAnn/8600052-0000000e;2,CBAnn/8600053-0000000f;2,PJSIP/1001-00000007"},
            "VICIREC_ROOM is not set and no single ConfBridge announcer is in BRIDGEPEER",
        ),
        ({"BRIDGEPEER": "CBAnn/room1-0000000e;2"},
         "VICIREC_ROOM is not set and no single ConfBridge announcer is in BRIDGEPEER"),
        (
            {"BRIDGEPEER": "CBAnn/8600052-0000000e;2,PJSIP/1001-00000007",
             "CONFBRIDGE_CHANNELS(parties,8600052)": "PJSIP/1001-00000007,SIP/x-1"},
            "this channel is not a party of ConfBridge room 8600052",
        ),
        ({"VICIREC_ROOM": "8600052,x"}, "VICIREC_ROOM is not a conference number (digits only)"),
        ({"VICIREC_ROOM": "8600052)}"}, "VICIREC_ROOM is not a conference number (digits only)"),
        ({"VICIREC_ROOM": "room1"}, "VICIREC_ROOM is not a conference number (digits only)"),
        ({"VICIREC_ROOM": "8600052"},
         "neither ConfBridge nor MeetMe lists parties in room 8600052 (VICIdial numbers MeetMe rooms so)"),
        (
            {
                "VICIREC_ROOM": "8600052",
                "CONFBRIDGE_CHANNELS(parties,8600052)": "PJSIP/1001-00000007,SIP/x-1",
            },
            "this channel is not a party of ConfBridge room 8600052",
        ),
    ],
)
def test_session_needs_a_verified_room(variables: Mapping[str, str], reason: str) -> None:
    result = verdict("session", make_context(channel="SIP/trunk-0000002b", variables=variables))
    assert result == Verdict("session", None, reason, refused=reason.startswith("this channel is not"))


@pytest.mark.parametrize("agents", [DB_AGENTS, HTTP_AGENTS])
def test_session_takes_the_room_from_the_conference_announcer_when_no_variable_names_it(
    agents: Sequence[LiveAgent],
) -> None:
    # Asterisk names the announcer after the room; the caller cannot choose BRIDGEPEER.
    variables = {name: value for name, value in ROOM_VARIABLES.items() if name != "VICIREC_ROOM"}
    context = make_context(channel="SIP/trunk-0000002b", variables=variables, agents=agents)
    result = verdict("session", context)
    assert result.agent == "1001" and result.reason == "this channel is in agent 1001's room 8600052"


def test_session_room_variable_name_is_configurable() -> None:
    config = make_config(resolvers=["session"], room_variable="CONFNUM")
    variables = {"CONFNUM": "8600052", "CONFBRIDGE_CHANNELS(parties,8600052)": "SIP/trunk-0000002b"}
    context = make_context(channel="SIP/trunk-0000002b", variables=variables, config=config)
    assert verdict("session", context).agent == "1001"


def test_session_rooms_are_per_server() -> None:
    other_server = replace(DB_AGENTS[0], user="2000", session_id="8600052", server_ip="10.10.10.16")
    agents = [*DB_AGENTS, other_server]
    context = make_context(channel="SIP/trunk-0000002b", variables=ROOM_VARIABLES, agents=agents)
    assert verdict("session", context, server_ip="10.10.10.15").agent == "1001"
    # Without a server address (or over HTTP) the same room on two servers is ambiguous: refused.
    context = make_context(
        channel="SIP/trunk-0000002b",
        variables=ROOM_VARIABLES,
        agents=[*HTTP_AGENTS, http_view(other_server)],
        backend="http",
    )
    assert verdict("session", context).reason == "session 8600052 matches 2 agents (on different servers?)"


# --- bridge_peer ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "agent"),
    [
        ("SIP/1000-0000002a", "1000"),
        ("PJSIP/1001-00000007", "1001"),
        ("IAX2/1002-123", "1002"),
        ("Local/1003@agents-0000000b;1", "1003"),
        ("Local/1003@other-context-0000000b;1", "1003"),
        ("pjsip/1001-00000007", "1001"),
    ],
)
def test_bridge_peer_names_the_agents_phone(peer: str, agent: str) -> None:
    context = make_context(channel="SIP/trunk-0000009f", variables={"BRIDGEPEER": peer})
    result = verdict("bridge_peer", context)
    assert result.agent == agent, result.reason


def test_bridge_peer_in_a_conference_skips_the_announcer() -> None:
    context = make_context(channel="SIP/trunk-0000002b", variables=ROOM_VARIABLES)
    assert verdict("bridge_peer", context).agent == "1001"


def test_bridge_peer_when_the_agent_pressed_the_key() -> None:
    # feat-agent-self: the AGI runs on the agent's leg and BRIDGEPEER is the customer.
    context = make_context(channel="PJSIP/1001-00000007", variables={"BRIDGEPEER": "SIP/trunk-0000002b"})
    assert verdict("bridge_peer", context).agent == "1001"


def test_bridge_peer_refuses_two_agents_and_needs_phones_and_a_bridge() -> None:
    both = make_context(
        channel="SIP/trunk-0000009f",
        variables={"BRIDGEPEER": "CBAnn/x-1;2,SIP/1000-0000002a,PJSIP/1001-00000007"},
    )
    assert verdict("bridge_peer", both).reason.startswith("phones of 2 agents are on this call")
    http = make_context(variables={"BRIDGEPEER": "SIP/1000-0000002a"}, agents=HTTP_AGENTS, backend="http")
    assert "does not report agents' phones" in verdict("bridge_peer", http).reason
    unbridged = make_context()
    assert verdict("bridge_peer", unbridged).reason == "not bridged (BRIDGEPEER is empty)"
    assert isinstance(unbridged.directory, FakeDirectory) and unbridged.directory.calls == 0
    nobody = make_context(variables={"BRIDGEPEER": "SIP/9999-00000001"})
    assert verdict("bridge_peer", nobody).reason.startswith("no logged-in agent's phone is on this call")


def test_bridge_peer_phones_are_per_server() -> None:
    context = make_context(variables={"BRIDGEPEER": "SIP/1000-0000002a"})
    assert verdict("bridge_peer", context, server_ip="10.10.10.99").agent is None
    assert verdict("bridge_peer", context, server_ip="10.10.10.15").agent == "1000"


# --- static_map -------------------------------------------------------------------------------

MAP_TEXT = """\
# device or extension = agent user
SIP/1000    = 1000
PJSIP/1001  = 1001   # trailing comment
Local/1003@agents = 1003
2004 = agent_2004
"""


@pytest.mark.parametrize(
    ("peer", "agent"),
    [
        ("SIP/1000-0000002a", "1000"),
        ("PJSIP/1001-00000007", "1001"),
        ("Local/1003@x-0000000b;1", "1003"),
        ("IAX2/2004-77", "agent_2004"),
        ("sip/1000-0000002a", "1000"),
    ],
)
def test_static_map_resolves_without_asking_vicidial(peer: str, agent: str) -> None:
    context = make_context(variables={"BRIDGEPEER": peer}, channel="SIP/trunk-0000009f")
    result = StaticMapResolver(parse_static_map(MAP_TEXT, "map.txt")).resolve(context)
    assert result.agent == agent and "map.txt line" in result.reason
    assert isinstance(context.directory, FakeDirectory) and context.directory.calls == 0


def test_static_map_misses_and_ambiguity() -> None:
    resolver_ = StaticMapResolver(parse_static_map(MAP_TEXT))
    miss = make_context(variables={"BRIDGEPEER": "SIP/9999-00000001"}, channel="SIP/trunk-0000009f")
    assert resolver_.resolve(miss).reason == "no phone on this call is in the map (SIP/9999, SIP/trunk)"
    two = make_context(variables={"BRIDGEPEER": "SIP/1000-1,PJSIP/1001-2"}, channel="SIP/trunk-0000009f")
    assert resolver_.resolve(two).reason == "the map names 2 agents for the phones on this call"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("SIP/1000 1000\n", "line 1: expected 'device = agent user'"),
        ("SIP/1000 = 1000 = 1001\n", "line 1: expected 'device = agent user'"),
        ("\nSIP/1000 = 10 00\n", "line 2: '10 00' is not an agent user"),
        ("SIP/1000 = 1000' OR '1\n", "is not an agent user"),
        ("SIP/ = 1000\n", "line 1: 'SIP/' is not a device"),
        ("SIP/1000 = 1000\nsip/1000 = 1001\n", "line 2: sip/1000 is already mapped on line 1"),
        ("1000 = a\n1000 = b\n", "line 2: 1000 is already mapped on line 1"),
        ("SIP/10\u00e900 = 1000\n", "line 1: only printable ASCII"),
        ("SIP/1000 = 1000\x0b\n", "line 1: only printable ASCII"),
        ("a b = 1000\n", "neither a device"),
        ("= 1000\n", "neither a device"),
        ("SIP/1000 = " + "1" * 21 + "\n", "is not an agent user"),
    ],
)
def test_static_map_is_validated_strictly(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_static_map(text, "map.txt")
    assert message in caught.value.message and caught.value.message.startswith("map.txt")


def test_static_map_file_loaded_only_when_configured(tmp_path: Path) -> None:
    assert "static_map" not in standard_resolvers(make_config())
    path = tmp_path / "agents.map"
    path.write_text(MAP_TEXT)
    config = make_config(resolvers=["static_map"], map_file=str(path))
    built = standard_resolvers(config)["static_map"]
    assert isinstance(built, StaticMapResolver) and len(built.static_map) == 4
    with pytest.raises(ConfigError, match="does not exist"):
        standard_resolvers(make_config(resolvers=["static_map"], map_file=str(tmp_path / "missing")))
    path.write_bytes(b"SIP/1000 = 1000\n\xff\n")
    with pytest.raises(ConfigError, match="line 2: only printable ASCII"):
        standard_resolvers(config)


# --- the chain ------------------------------------------------------------------------------------


def chain(config: Config, server_ip: str = "") -> list[Resolver]:
    available = standard_resolvers(config, server_ip=server_ip)
    return [available[name] for name in config.agents.resolvers]


ALL = ["argument", "channel_variable", "call_id", "lead_id", "session", "bridge_peer"]


def test_chain_explicit_argument_wins_without_asking_the_backend() -> None:
    config = make_config(resolvers=ALL)
    context = make_context(args=("STATUS", "agent=1002"), calleridname=CALL_1000, config=config)
    resolution = resolve_agent(chain(config), context)
    assert (resolution.agent, resolution.source) == ("1002", "argument")
    assert isinstance(context.directory, FakeDirectory) and context.directory.calls == 0


def test_chain_discovered_resolvers_agree_and_the_backend_is_asked_once() -> None:
    config = make_config(resolvers=ALL)
    variables = {**ROOM_VARIABLES}
    context = make_context(
        calleridname=CALL_1001,
        channel="SIP/trunk-0000002b",
        uniqueid="1795459431.22",
        variables=variables,
        config=config,
    )
    resolution = resolve_agent(chain(config), context)
    assert (resolution.agent, resolution.source) == ("1001", "call_id")
    assert [v.agent for v in resolution.verdicts] == [None, None, "1001", "1001", "1001", "1001"]
    assert isinstance(context.directory, FakeDirectory) and context.directory.calls == 1
    # Each channel read happened once however many resolvers needed it.
    assert isinstance(context.channel, FakeChannel)
    assert len(context.channel.reads) == len(set(context.channel.reads))


def test_chain_disagreement_is_ambiguous_never_a_guess() -> None:
    config = make_config(resolvers=["call_id", "bridge_peer"])
    # Corroborated call id says 1000, but the bridge holds agent 1001's phone.
    context = make_context(
        calleridname=CALL_1000, variables={"BRIDGEPEER": "PJSIP/1001-00000007"}, config=config
    )
    with pytest.raises(
        NoAgent,
        match=r"ambiguous: resolvers name different agents \(call_id=1000, "
        r"bridge_peer=1001\)",
    ):
        resolve_agent(chain(config), context)


def test_chain_refused_spoof_does_not_hide_the_real_agent_on_the_bridge() -> None:
    config = make_config(resolvers=["call_id", "bridge_peer"])
    context = make_context(
        calleridname=CALL_1000,
        channel="SIP/trunk-0000009f",
        uniqueid="1.1",
        variables={"BRIDGEPEER": "PJSIP/1001-00000007"},
        config=config,
    )
    resolution = resolve_agent(chain(config), context)
    assert (resolution.agent, resolution.source) == ("1001", "bridge_peer")
    assert resolution.verdicts[0].refused


def test_chain_nothing_found_lists_refusals_first() -> None:
    config = make_config(resolvers=["argument", "channel_variable", "session", "call_id"])
    context = make_context(
        calleridname=CALL_1000, channel="SIP/trunk-0000009f", uniqueid="1.1", config=config
    )
    with pytest.raises(NoAgent) as caught:
        resolve_agent(chain(config), context)
    assert caught.value.message.startswith(
        "no agent found (call_id: refused agent 1000: call "
        f"{CALL_1000} is agent 1000's call, but the agent's call has a "
        "different uniqueid, channel"
    )


def test_channel_variable_is_strict() -> None:
    config = make_config(resolvers=["channel_variable"])
    for value, agent in (("1001", "1001"), ("1001\n", None), ("1001&x=1", None), ("", None)):
        context = make_context(variables={"VICIREC_AGENT": value}, config=config)
        assert verdict("channel_variable", context).agent == agent


# --- config ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("agents", "message"),
    [
        ({"resolvers": ["call_id", "bogus"]}, "unknown resolver(s) bogus"),
        ({"resolvers": ["call_id", "call_id"]}, "names call_id more than once"),
        ({"room_variable": "ROOM}"}, "agents.room_variable must be a channel variable name"),
        ({"lookup": "ldap"}, 'agents.lookup must be "http" or "mysql"'),
        ({"resolvers": ["static_map"]}, "agents.map_file is empty"),
        ({"cache_seconds": 60}, "agents.cache_seconds must be at most 10"),
        ({"require_corroboration": "yes"}, "agents.require_corroboration must be true or false"),
    ],
)
def test_agent_settings_are_checked(agents: Mapping[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_mapping({**BASE, "agents": dict(agents)})
    assert message in caught.value.message


def test_agent_settings_defaults() -> None:
    agents = config_from_mapping(BASE).agents
    assert (agents.require_corroboration, agents.room_variable, agents.lookup) == (
        True,
        "VICIREC_ROOM",
        "http",
    )
