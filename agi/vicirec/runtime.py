"""Wiring shared by the process AGI and the FastAGI daemon: config → service, channel → view."""

from __future__ import annotations

from typing import Any, Optional

import requests

from vicirec import logs
from vicirec.agents.chain import Resolver
from vicirec.agents.lookups import build_directory
from vicirec.agents.recording_db import RecordingDatabase, recording_database
from vicirec.agents.resolvers import standard_resolvers
from vicirec.asterisk.channel import AgiSession
from vicirec.config import Config
from vicirec.deadline import Deadline
from vicirec.engine import RecordingService
from vicirec.errors import ConfigError
from vicirec.redaction import Redactor
from vicirec.vicidial.breaker import BreakerState, CircuitBreaker
from vicirec.vicidial.client import VicidialClient


class SessionChannelView:
    """:class:`vicirec.agents.chain.ChannelView` over an AGI session."""

    def __init__(self, session: AgiSession, deadline: Deadline) -> None:
        self._session = session
        self._deadline = deadline

    def variable(self, name: str) -> Optional[str]:
        return self._session.get_variable(name, self._deadline)

    def expression(self, expression: str, channel: Optional[str] = None) -> str:
        return self._session.get_full_variable(expression, self._deadline, channel)

    def gosub(self, context: str, extension: str, priority: str, deadline: Deadline) -> Optional[int]:
        """AGI ``GOSUB``: the dialplan runs now; its own budget, not the invocation's deadline."""
        return self._session.gosub(context, extension, priority, deadline)


def build_resolvers(config: Config, *, server_ip: str = "") -> list[Resolver]:
    """The configured chain, in order. ``server_ip``: this Asterisk server, when the lookup tells
    servers apart (mysql: ``VARserver_ip``), so rooms and phones of other servers never match."""
    available = standard_resolvers(config, server_ip=server_ip)
    missing = [name for name in config.agents.resolvers if name not in available]
    if missing:
        raise ConfigError(f"resolver(s) not available in this build: {', '.join(missing)}")
    return [available[name] for name in config.agents.resolvers]


def build_service(
    config: Config,
    *,
    session: Optional[requests.Session] = None,
    logger: Any = None,
    daemon: bool = False,
) -> RecordingService:
    """``daemon=True`` (the FastAGI daemon: one service for every session) adds the short-lived
    shared cache of the agent lookup (``agents.cache_seconds``) and the circuit breaker
    (``vicidial.failure_threshold``, ``cool_down``) that every session's requests pass."""
    secrets = [config.vicidial.password]
    breaker = _daemon_breaker(config, logger) if daemon else None
    client = VicidialClient(config, session=session, redactor=Redactor(secrets), breaker=breaker)
    directory, server_ip = build_directory(config, client, secrets, daemon=daemon)
    logs.protect(secrets)  # the mysql lookup adds the database password to ``secrets``
    redactor = Redactor(secrets)

    def stage_changed(change: Any) -> None:
        if logger is not None:
            logger.warning("stage_sanitised", requested=change["requested"], sent=change["sent"])

    return RecordingService(
        config, client, directory, build_resolvers(config, server_ip=server_ip),
        redactor=redactor, on_stage_changed=stage_changed, recordings=_recordings(config, directory),
    )


def _recordings(config: Config, directory: object) -> Optional[RecordingDatabase]:
    """With ``lookup = "mysql"``: confirmation and verification read VICIdial's database too."""
    return recording_database(directory) if config.agents.lookup == "mysql" else None


def _daemon_breaker(config: Config, logger: Any) -> Optional[CircuitBreaker]:
    if config.vicidial.failure_threshold <= 0:
        return None

    def changed(old: BreakerState, new: BreakerState, why: str) -> None:
        if logger is not None:
            logger.warning("vicidial_breaker", state=str(new), previous=str(old), reason=why)

    return CircuitBreaker(config.vicidial.failure_threshold, config.vicidial.cool_down, on_change=changed)
