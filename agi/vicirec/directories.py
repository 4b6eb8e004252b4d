"""Lookup backends that list the logged-in agents (see :class:`vicirec.agents.AgentDirectory`)."""

from __future__ import annotations

from vicirec.agents import LiveAgent
from vicirec.deadline import Deadline
from vicirec.vicidial.client import VicidialClient


class HttpDirectory:
    """The non-agent API's ``logged_in_agents``: user, session, status, lead id and call id.

    It cannot see the customer leg's uniqueid or channel, so a match on the caller-controlled
    call id cannot be corroborated through it (see README, "Finding the agent").
    """

    name = "http"

    def __init__(self, client: VicidialClient) -> None:
        self._client = client

    def logged_in_agents(self, deadline: Deadline) -> list[LiveAgent]:
        return [
            LiveAgent(
                user=row.user,
                session_id=row.session_id,
                status=row.status,
                lead_id=row.lead_id,
                callerid=row.callerid,
            )
            for row in self._client.logged_in_agents(deadline)
        ]
