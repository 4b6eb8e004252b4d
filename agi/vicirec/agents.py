"""Which logged-in VICIdial agent is on the call with this caller.

A chain of resolvers, in the configured order. The *explicit* ones (the ``agent=`` argument, the
channel variable) are written by the dialplan author and win at once. The *discovered* ones look at
what the channel knows (VICIdial's call id in CALLERID(name), the conference room, the bridge peer)
and every one of them runs: if two name different agents the answer is ``NO_AGENT`` (ambiguous),
never a guess. A caller chooses their own caller ID, so anything read from it is validated strictly
before it is matched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional, Protocol

from vicirec.asterisk.codec import AgiEnvironment
from vicirec.config import Config
from vicirec.deadline import Deadline
from vicirec.errors import NoAgent
from vicirec.request import AGENT_USER, Invocation
from vicirec.vicidial.responses import is_call_id


@dataclass(frozen=True)
class LiveAgent:
    """One logged-in agent, as any lookup backend reports it ("" where a backend cannot tell)."""

    user: str
    session_id: str = ""   # conf_exten: the agent's conference room
    status: str = ""
    lead_id: str = ""
    callerid: str = ""     # VICIdial call id of the agent's current call
    extension: str = ""    # the agent's phone, e.g. SIP/1000 (database backend only)
    uniqueid: str = ""     # the customer leg's uniqueid (database backend only)
    channel: str = ""      # the customer leg's channel (database backend only)
    server_ip: str = ""


class AgentDirectory(Protocol):
    """Where the logged-in agents come from (the non-agent API, or VICIdial's database)."""

    name: str

    def logged_in_agents(self, deadline: Deadline) -> Sequence[LiveAgent]: ...


class ChannelView(Protocol):
    """Read access to the caller's channel (and, by name, to other channels)."""

    def variable(self, name: str) -> Optional[str]: ...

    def expression(self, expression: str, channel: Optional[str] = None) -> str: ...


@dataclass
class ResolveContext:
    invocation: Invocation
    environment: AgiEnvironment
    channel: ChannelView
    directory: AgentDirectory
    deadline: Deadline
    config: Config
    _agents: Optional[Sequence[LiveAgent]] = field(default=None, repr=False)

    def live_agents(self) -> Sequence[LiveAgent]:
        """The logged-in agents, fetched once per invocation however many resolvers ask."""
        if self._agents is None:
            self._agents = self.directory.logged_in_agents(self.deadline)
        return self._agents


@dataclass(frozen=True)
class Verdict:
    resolver: str
    agent: Optional[str]
    reason: str


@dataclass(frozen=True)
class Resolution:
    agent: str
    source: str
    verdicts: tuple[Verdict, ...]


class Resolver(Protocol):
    name: str
    explicit: bool

    def resolve(self, context: ResolveContext) -> Verdict: ...


class ArgumentResolver:
    name = "argument"
    explicit = True

    def resolve(self, context: ResolveContext) -> Verdict:
        agent = context.invocation.agent
        if agent is None:
            return Verdict(self.name, None, "no agent= argument")
        return Verdict(self.name, agent, "agent= argument")


class ChannelVariableResolver:
    name = "channel_variable"
    explicit = True

    def resolve(self, context: ResolveContext) -> Verdict:
        variable = context.config.call.agent_variable
        value = context.channel.variable(variable)
        if not value:
            return Verdict(self.name, None, f"{variable} is not set")
        if not AGENT_USER.match(value):
            return Verdict(self.name, None, f"{variable} does not hold a valid agent user")
        return Verdict(self.name, value, f"channel variable {variable}")


class CallIdResolver:
    """VICIdial's call id in CALLERID(name), matched against the agents' current call ids."""

    name = "call_id"
    explicit = False

    def resolve(self, context: ResolveContext) -> Verdict:
        call_id = context.environment.known("agi_calleridname").strip()
        if not call_id:
            return Verdict(self.name, None, "no caller ID name")
        if not is_call_id(call_id):
            return Verdict(self.name, None, "caller ID name is not a VICIdial call id")
        matches = sorted({agent.user for agent in context.live_agents() if agent.callerid == call_id})
        if not matches:
            return Verdict(self.name, None, "no logged-in agent is on this call id")
        if len(matches) > 1:
            return Verdict(self.name, None, f"call id matches {len(matches)} agents")
        return Verdict(self.name, matches[0], "call id matches the agent's current call")


def standard_resolvers() -> dict[str, Resolver]:
    return {
        "argument": ArgumentResolver(),
        "channel_variable": ChannelVariableResolver(),
        "call_id": CallIdResolver(),
    }


def resolve_agent(resolvers: Sequence[Resolver], context: ResolveContext) -> Resolution:
    verdicts: list[Verdict] = []
    found: dict[str, str] = {}
    for resolver in resolvers:
        verdict = resolver.resolve(context)
        verdicts.append(verdict)
        if verdict.agent is None:
            continue
        if resolver.explicit:
            return Resolution(verdict.agent, resolver.name, tuple(verdicts))
        found.setdefault(verdict.agent, resolver.name)
    if len(found) == 1:
        agent, source = next(iter(found.items()))
        return Resolution(agent, source, tuple(verdicts))
    if len(found) > 1:
        names = ", ".join(f"{source}={agent}" for agent, source in sorted(found.items()))
        raise NoAgent(f"ambiguous: resolvers name different agents ({names})")
    reasons = "; ".join(f"{v.resolver}: {v.reason}" for v in verdicts) or "no resolvers configured"
    raise NoAgent(f"no agent found ({reasons})")
