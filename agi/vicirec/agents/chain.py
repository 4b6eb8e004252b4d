"""Which logged-in VICIdial agent is on the call with this caller.

A chain of resolvers, in the configured order. The *explicit* ones (the ``agent=`` argument, the
channel variable) are written by the dialplan author and win at once. The *discovered* ones look at
what the channel knows (VICIdial's call id in CALLERID(name), the conference room, the bridge peer)
and every one of them runs: if two name different agents the answer is ``NO_AGENT`` (ambiguous),
never a guess. A caller chooses their own caller ID, so anything read from it is validated strictly
before it is matched, and a match on it must be corroborated (:mod:`vicirec.agents.corroboration`).

This module holds the types and the chain; the resolvers themselves are in :mod:`vicirec.agents.resolvers`,
the lookup backends in :mod:`vicirec.agents.http_directory` (http), :mod:`vicirec.agents.mysql_directory` and
:mod:`vicirec.agents.cache` (the daemon's shared cache).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional, Protocol, Union

from vicirec.asterisk.codec import AgiEnvironment
from vicirec.config import Config
from vicirec.deadline import Deadline
from vicirec.errors import NoAgent, VicirecError
from vicirec.request import Invocation


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
    """One invocation's view for the resolvers: every read is done at most once, and only if asked."""

    invocation: Invocation
    environment: AgiEnvironment
    channel: ChannelView
    directory: AgentDirectory
    deadline: Deadline
    config: Config
    _agents: Optional[Sequence[LiveAgent]] = field(default=None, repr=False)
    _reads: dict[tuple[str, str], str] = field(default_factory=dict, repr=False)

    def live_agents(self) -> Sequence[LiveAgent]:
        """The logged-in agents, fetched once per invocation however many resolvers ask."""
        if self._agents is None:
            self._agents = self.directory.logged_in_agents(self.deadline)
        return self._agents

    def variable(self, name: str) -> str:
        """A channel variable or function (``GET VARIABLE``), ``""`` when unset; read once."""
        key = ("variable", name)
        if key not in self._reads:
            self._reads[key] = self.channel.variable(name) or ""
        return self._reads[key]

    def expression(self, expression: str) -> str:
        """A dialplan expression on this channel (``GET FULL VARIABLE``, no 1023-byte cut); read once."""
        key = ("expression", expression)
        if key not in self._reads:
            self._reads[key] = self.channel.expression(expression)
        return self._reads[key]


@dataclass(frozen=True)
class Verdict:
    """What one resolver concluded. ``refused``: it found a candidate (or several) and turned it
    down; those reasons lead the ``NO_AGENT`` message."""

    resolver: str
    agent: Optional[str]
    reason: str
    refused: bool = False


@dataclass(frozen=True)
class Resolution:
    agent: str
    source: str
    verdicts: tuple[Verdict, ...]


class Resolver(Protocol):
    name: str
    explicit: bool

    def resolve(self, context: ResolveContext) -> Verdict: ...


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
    # Refusals first: VICIREC_MESSAGE is cut at 200 characters and they are what an admin must see.
    ordered = sorted(verdicts, key=lambda v: not v.refused)
    reasons = "; ".join(f"{v.resolver}: {v.reason}" for v in ordered) or "no resolvers configured"
    raise NoAgent(f"no agent found ({reasons})")


@dataclass(frozen=True)
class Explanation:
    """Every resolver's verdict (the chain stops at an explicit answer; this does not), and what
    the chain concludes from them: a :class:`Resolution`, or the error a call would get."""

    verdicts: tuple[Verdict, ...]
    resolution: Optional[Resolution]
    error: Optional[VicirecError]


class _Replay:
    """A resolver whose verdict (or error) is already known: lets the chain conclude again."""

    def __init__(self, resolver: Resolver, outcome: Union[Verdict, VicirecError]) -> None:
        self.name = resolver.name
        self.explicit = resolver.explicit
        self._outcome = outcome

    def resolve(self, context: ResolveContext) -> Verdict:
        if isinstance(self._outcome, VicirecError):
            raise self._outcome
        return self._outcome


def explain_agent(resolvers: Sequence[Resolver], context: ResolveContext) -> Explanation:
    """Run every resolver, even past an explicit answer or a failed lookup, and conclude as
    :func:`resolve_agent` does (``vicirec whois``: the admin's view of a ``NO_AGENT``)."""
    outcomes: list[Union[Verdict, VicirecError]] = []
    verdicts: list[Verdict] = []
    for resolver in resolvers:
        try:
            outcome: Union[Verdict, VicirecError] = resolver.resolve(context)
        except VicirecError as error:
            outcome = error
        outcomes.append(outcome)
        if isinstance(outcome, VicirecError):
            verdicts.append(Verdict(resolver.name, None, f"{outcome.code.value}: {outcome.message}",
                                    refused=True))
        else:
            verdicts.append(outcome)
    replay = [_Replay(resolver, outcome) for resolver, outcome in zip(resolvers, outcomes)]
    try:
        resolution = resolve_agent(replay, context)
    except VicirecError as error:
        return Explanation(tuple(verdicts), None, error)
    return Explanation(tuple(verdicts), resolution, None)
