"""Lookup backends that list the logged-in agents (see :class:`vicirec.agents.chain.AgentDirectory`).

``http`` lives here; ``mysql`` in :mod:`vicirec.agents.mysql_directory` (imported only when configured).
"""

from __future__ import annotations

from vicirec.agents.chain import LiveAgent
from vicirec.deadline import Deadline
from vicirec.vicidial.client import VicidialClient


class HttpDirectory:
    """The non-agent API's ``logged_in_agents``: user, session, status, lead id and call id.

    It goes through the same :class:`VicidialClient` as the recording commands (same session, TLS
    settings, timeouts cut from the deadline, password redaction). It cannot see the customer leg's
    uniqueid or channel, nor the agent's phone, so a match on the caller-controlled call id can be
    corroborated only by the conference room (see README, "Finding the agent").
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
