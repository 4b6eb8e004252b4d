"""Where consented calls are now, from VICIdial's database: taken by an agent, still queued, or gone.

The FastAGI daemon's pending consents (:mod:`vicirec.fastagi.deferred`) ask this once per poll
for *all* their uniqueids together: one parameterised ``SELECT`` (a ``UNION ALL`` of two tables),
a read-only transaction of its own, over a connection made as the ``mysql`` lookup makes them
(:class:`vicirec.agents.mysql_directory.MysqlDirectory`, whose credentials, timeouts and error
mapping it shares). Only this server's rows count (``server_ip = VARserver_ip``): a uniqueid is
unique per Asterisk server, not across a cluster.

* ``vicidial_live_agents``: an agent whose ``uniqueid`` is the call's and whose ``status`` is
  ``QUEUE`` or ``INCALL`` has taken it (VICIdial's own AGIs look agents up the same way).
* ``vicidial_auto_calls``: VICIdial's row for a call waiting in an in-group; VICIdial deletes it
  when the call ends, so a call seen there and then in neither table has ended without an agent.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vicirec.agents.chain import LiveAgent
from vicirec.agents.mysql_directory import MysqlDirectory, live_agent
from vicirec.agents.sql_values import column_text
from vicirec.deadline import Deadline
from vicirec.errors import ConfigError, Unreachable, VicirecError

#: More than this many uniqueids in one read is a caller's bug (the daemon caps its pending consents).
MAX_UNIQUEIDS = 10000
TAKEN_STATUSES = ("QUEUE", "INCALL")
_SESSION_READ_ONLY = "SET SESSION TRANSACTION READ ONLY"


_SELECT_CALL_PLACES = (
    "SELECT 'agent', uniqueid, user, server_ip, conf_exten, extension, status, lead_id, callerid, "
    "channel FROM vicidial_live_agents WHERE server_ip = %s AND status IN (%s, %s) AND uniqueid IN (@ids) "
    "UNION ALL "
    "SELECT 'queue', uniqueid, '', server_ip, '', '', status, lead_id, callerid, channel "
    "FROM vicidial_auto_calls WHERE server_ip = %s AND uniqueid IN (@ids)"
)


def select_call_places(count: int) -> str:
    """The one statement of a poll, for ``count`` uniqueids: only placeholders are put in, every
    value travels as a parameter."""
    return _SELECT_CALL_PLACES.replace("@ids", ", ".join(["%s"] * count))


@dataclass(frozen=True)
class CallPlaces:
    """One poll's answer for the uniqueids asked about."""

    taken: Mapping[str, tuple[LiveAgent, ...]] = field(default_factory=dict)  # uniqueid -> agent rows
    queued: frozenset[str] = frozenset()  # uniqueids with a vicidial_auto_calls row


class LiveCallReader:
    """Thread-safe. Keeps one connection between polls (a poll is then one round trip: the
    SELECT), in autocommit with ``SET SESSION TRANSACTION READ ONLY``, so every poll is its own
    read-only transaction (a fresh view, and the server refuses any write on it). A failed poll
    drops the connection; one that was reused is retried once on a fresh one."""

    def __init__(self, directory: MysqlDirectory) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._connection: Any = None
        self._closed = False

    @property
    def server_ip(self) -> str:
        return self.directory.server_ip

    def places(self, uniqueids: Sequence[str], deadline: Deadline) -> CallPlaces:
        if not uniqueids:
            return CallPlaces()
        if not self.server_ip:
            raise ConfigError("VARserver_ip is missing from astguiclient.conf: a uniqueid is only unique "
                              "on one Asterisk server")
        if len(uniqueids) > MAX_UNIQUEIDS:
            raise ValueError(f"at most {MAX_UNIQUEIDS} uniqueids per read")
        ids = list(uniqueids)
        server = self.server_ip
        params = [server, *TAKEN_STATUSES, *ids, server, *ids]
        statement = select_call_places(len(ids))
        with self._lock:
            reused = self._connection is not None
            try:
                rows = self._select(statement, params, deadline)
            except VicirecError:
                self._drop()
                if not reused or deadline.expired:
                    raise
                rows = self._select(statement, params, deadline)  # the server closed an idle connection
        return _places(rows, set(ids))

    def close(self) -> None:
        """Drop the connection; later reads are refused (a reload made a new reader)."""
        with self._lock:
            self._closed = True
            self._drop()

    def _select(self, statement: str, params: Sequence[Any], deadline: Deadline) -> Any:
        directory = self.directory
        if self._connection is None:
            if self._closed:
                raise Unreachable("this reader of VICIdial's database was closed (reload or stop)")
            connection = directory.connect(deadline)
            try:
                directory.run(connection.autocommit, deadline, True)
                directory.run(connection.cursor().execute, deadline, _SESSION_READ_ONLY)
            except VicirecError:
                directory.discard(connection)
                raise
            self._connection = connection
        cursor = self._connection.cursor()
        try:
            directory.run(cursor.execute, deadline, statement, params)
            return directory.run(cursor.fetchall, deadline)
        except VicirecError:
            self._drop()
            raise

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            self.directory.discard(connection)


def _places(rows: Sequence[Any], asked: set[str]) -> CallPlaces:
    taken: dict[str, list[LiveAgent]] = {}
    queued: set[str] = set()
    for kind, uniqueid, user, server_ip, conf_exten, extension, status, lead_id, callerid, channel in rows:
        key = column_text(uniqueid)
        if key not in asked:  # the server compared with its own collation; only exact matches count
            continue
        if column_text(kind) == "queue":
            queued.add(key)
            continue
        taken.setdefault(key, []).append(
            live_agent((user, server_ip, conf_exten, extension, status, lead_id, callerid, key, channel)))
    return CallPlaces(taken={key: tuple(rows_) for key, rows_ in taken.items()}, queued=frozenset(queued))

