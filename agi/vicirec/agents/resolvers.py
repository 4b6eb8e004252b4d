"""The resolvers ``agents.resolvers`` can name, and the factory that builds them from config.

Explicit (the dialplan author says who; the first that answers wins):

* ``argument``: the ``agent=`` AGI argument.
* ``channel_variable``: the variable named by ``call.agent_variable`` (default ``VICIREC_AGENT``).

Discovered (all run; two different agents is ``NO_AGENT``, never a guess):

* ``call_id``: CALLERID(name) is exactly a VICIdial call id and one agent's ``callerid`` is that id.
  Caller-controlled, so the match must be corroborated (see :mod:`vicirec.agents.corroboration`).
* ``lead_id``: the lead id inside that call id is one agent's ``lead_id``. Corroborated likewise.
* ``session``: this channel is a party of the ConfBridge room named by ``agents.room_variable`` (or
  by the conference's announcer in ``BRIDGEPEER``) and one agent's ``conf_exten`` is that room (on
  this server, where the lookup tells servers apart). A MeetMe room (``MEETME_INFO`` counts its
  parties but cannot name them) counts only for an agent whose call is this channel's.
* ``bridge_peer``: a phone bridged with this channel (``BRIDGEPEER``, or this channel itself when
  the agent pressed the key) is one agent's ``extension``. Needs a lookup that reports phones (mysql).
* ``static_map``: the same phones, looked up in ``agents.map_file`` instead of VICIdial.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Callable

from vicirec.agents.call_facts import (
    bridge_parties,
    call_devices,
    caller_call_id,
    confirmed_room,
    lead_id_of,
    on_this_call,
)
from vicirec.agents.chain import LiveAgent, ResolveContext, Resolver, Verdict
from vicirec.agents.corroboration import Support, corroborate
from vicirec.agents.devices import device_of_extension
from vicirec.agents.static_map import StaticMap, load_static_map
from vicirec.config import Config
from vicirec.request import AGENT_USER


class ArgumentResolver:
    name = "argument"
    explicit = True

    def resolve(self, context: ResolveContext) -> Verdict:
        agent = context.invocation.agent
        if agent is None:
            return Verdict(self.name, None, "no agent= argument")
        return Verdict(self.name, agent, "agent= argument")


REPORTED_AGENT_VARIABLE = "VICIREC_AGENT"
DISCOVERED_AGENT_VARIABLE = "VICIREC_AGENT_DISCOVERED"


class ChannelVariableResolver:
    """The dialplan's own variable (``call.agent_variable``, default ``VICIREC_AGENT``)."""

    name = "channel_variable"
    explicit = True

    def resolve(self, context: ResolveContext) -> Verdict:
        variable = context.config.call.agent_variable
        value = context.variable(variable)
        if not value:
            return Verdict(self.name, None, f"{variable} is not set")
        if not AGENT_USER.fullmatch(value):
            return Verdict(self.name, None, f"{variable} does not hold a valid agent user")
        # vicirec writes the agent it acted on into VICIREC_AGENT too. When that is all the value
        # is (an earlier run's discovery), it is no choice of the dialplan's: after a transfer it
        # would name the previous agent. Find the agent again instead.
        if variable == REPORTED_AGENT_VARIABLE and value == context.variable(DISCOVERED_AGENT_VARIABLE):
            return Verdict(self.name, None, f"{variable} is an earlier run's finding; looking again")
        return Verdict(self.name, value, f"channel variable {variable}")


def _by_user(agents: Iterable[LiveAgent]) -> dict[str, list[LiveAgent]]:
    users: dict[str, list[LiveAgent]] = {}
    for agent in agents:
        users.setdefault(agent.user, []).append(agent)
    return users


def _corroborated(resolver: str, rows: Sequence[LiveAgent], context: ResolveContext, matched: str) -> Verdict:
    """Accept a caller-supplied match only as :mod:`vicirec.agents.corroboration` allows."""
    user = rows[0].user
    results = [corroborate(row, context) for row in rows]
    confirmed = [r for r in results if r.support is Support.CONFIRMED]
    if confirmed:
        return Verdict(resolver, user, f"{matched}; {confirmed[0].detail}")
    contradicted = [r for r in results if r.support is Support.CONTRADICTED]
    if contradicted:
        return Verdict(resolver, None, f"refused agent {user}: {matched}, but {contradicted[0].detail} "
                       "(CALLERID(name) is chosen by the caller)", refused=True)
    if context.config.agents.require_corroboration:
        return Verdict(resolver, None, f"refused agent {user} (agents.require_corroboration = true): "
                       f"{matched}, but {results[0].detail}", refused=True)
    return Verdict(resolver, user, f"{matched}; not corroborated, accepted because "
                   "agents.require_corroboration = false")


def _one_agent_matching(
    resolver: str, context: ResolveContext, keep: Callable[[LiveAgent], bool], *, what: str, noun: str,
    absent: str,
) -> Verdict:
    """The one agent whose rows ``keep`` picks, corroborated. ``what`` (``call V…``) and ``noun``
    (``call``) word the reasons; ``absent`` is the reason when no agent matches."""
    users = _by_user(agent for agent in context.live_agents() if keep(agent))
    if not users:
        return Verdict(resolver, None, absent)
    if len(users) > 1:
        return Verdict(resolver, None, f"{what} matches {len(users)} agents", refused=True)
    rows = next(iter(users.values()))
    return _corroborated(resolver, rows, context, f"{what} is agent {rows[0].user}'s {noun}")


class CallIdResolver:
    """VICIdial's call id in CALLERID(name), matched against the agents' current call ids."""

    name = "call_id"
    explicit = False

    def resolve(self, context: ResolveContext) -> Verdict:
        call_id, why = caller_call_id(context)
        if call_id is None:
            return Verdict(self.name, None, why)
        return _one_agent_matching(self.name, context, lambda agent: agent.callerid == call_id,
                                   what=f"call {call_id}", noun="call",
                                   absent=f"no logged-in agent is on call {call_id}")


class LeadIdResolver:
    """The lead id inside the call id in CALLERID(name), matched against the agents' current leads."""

    name = "lead_id"
    explicit = False

    def resolve(self, context: ResolveContext) -> Verdict:
        call_id, why = caller_call_id(context)
        if call_id is None:
            return Verdict(self.name, None, why)
        lead = lead_id_of(call_id)
        if lead <= 0:
            return Verdict(self.name, None, "the call id carries no lead id")
        return _one_agent_matching(self.name, context, lambda agent: _lead_number(agent.lead_id) == lead,
                                   what=f"lead {lead}", noun="lead",
                                   absent=f"no logged-in agent has lead {lead}")


def _lead_number(value: str) -> int:
    return int(value) if value.isascii() and value.isdigit() else 0


def _on_server(agent: LiveAgent, server_ip: str) -> bool:
    """Rooms and phones are per Asterisk server: compare where both sides know the server."""
    return not server_ip or not agent.server_ip or agent.server_ip == server_ip


class SessionResolver:
    """The agent whose conference room (``conf_exten``) this channel is a party of."""

    name = "session"
    explicit = False

    def __init__(self, server_ip: str = "") -> None:
        self.server_ip = server_ip

    def resolve(self, context: ResolveContext) -> Verdict:
        room = confirmed_room(context)
        if room.number is None:
            return Verdict(self.name, None, room.reason, refused=room.turned_down)
        users = _by_user(
            agent for agent in context.live_agents()
            if agent.session_id == room.number and _on_server(agent, self.server_ip)
        )
        if not users:
            return Verdict(self.name, None, f"no logged-in agent has session {room.number}")
        if len(users) > 1:
            return Verdict(self.name, None, f"session {room.number} matches {len(users)} agents "
                           "(on different servers?)", refused=True)
        user, rows = next(iter(users.items()))
        if not room.listed:
            if not any(on_this_call(row, context) for row in rows):
                return Verdict(self.name, None, f"{room.reason}; agent {user}'s call there is not this "
                               "channel's", refused=True)
            return Verdict(self.name, user, f"agent {user}'s {room.engine} room {room.number} and this "
                           "channel share the call")
        return Verdict(self.name, user, f"this channel is in agent {user}'s room {room.number}")


class BridgePeerResolver:
    """The agent whose phone (``extension``) is on this call."""

    name = "bridge_peer"
    explicit = False

    def __init__(self, server_ip: str = "") -> None:
        self.server_ip = server_ip

    def resolve(self, context: ResolveContext) -> Verdict:
        if not bridge_parties(context):
            return Verdict(self.name, None, "not bridged (BRIDGEPEER is empty)")
        devices = {device.key: device for device in call_devices(context)}
        agents = context.live_agents()
        if agents and not any(agent.extension for agent in agents):
            return Verdict(self.name, None, f"the {context.directory.name} lookup does not report agents' "
                           'phones (use lookup = "mysql" or static_map)')
        users: dict[str, str] = {}
        for agent in agents:
            phone = device_of_extension(agent.extension)
            if phone is not None and phone.key in devices and _on_server(agent, self.server_ip):
                users.setdefault(agent.user, str(phone))
        shown = ", ".join(str(device) for device in devices.values())
        if not users:
            return Verdict(self.name, None, f"no logged-in agent's phone is on this call ({shown})")
        if len(users) > 1:
            return Verdict(self.name, None, f"phones of {len(users)} agents are on this call ({shown})",
                           refused=True)
        user, phone_name = next(iter(users.items()))
        return Verdict(self.name, user, f"agent {user}'s phone {phone_name} is on this call")


class StaticMapResolver:
    """The phones on this call, looked up in ``agents.map_file``."""

    name = "static_map"
    explicit = False

    def __init__(self, static_map: StaticMap) -> None:
        self.static_map = static_map

    def resolve(self, context: ResolveContext) -> Verdict:
        if not bridge_parties(context):
            return Verdict(self.name, None, "not bridged (BRIDGEPEER is empty)")
        devices = call_devices(context)
        matches = self.static_map.matches(devices)
        agents = {entry.agent: (device, entry) for device, entry in reversed(matches)}
        if not agents:
            shown = ", ".join(str(device) for device in devices)
            return Verdict(self.name, None, f"no phone on this call is in the map ({shown})")
        if len(agents) > 1:
            return Verdict(self.name, None, f"the map names {len(agents)} agents for the phones on this call",
                           refused=True)
        agent, (device, entry) = next(iter(agents.items()))
        return Verdict(self.name, agent, f"{device} is mapped to {agent} ({self.static_map.source} line "
                       f"{entry.line})")


def standard_resolvers(config: Config, *, server_ip: str = "") -> dict[str, Resolver]:
    """Every resolver by name. ``server_ip``: this Asterisk server, when the lookup can tell
    servers apart. The map file is read only when ``static_map`` is configured."""
    resolvers: dict[str, Resolver] = {
        "argument": ArgumentResolver(),
        "channel_variable": ChannelVariableResolver(),
        "call_id": CallIdResolver(),
        "lead_id": LeadIdResolver(),
        "session": SessionResolver(server_ip),
        "bridge_peer": BridgePeerResolver(server_ip),
    }
    if "static_map" in config.agents.resolvers:
        resolvers["static_map"] = StaticMapResolver(load_static_map(config.agents.map_file))
    return resolvers
