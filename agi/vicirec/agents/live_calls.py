"""Where consented calls are now, from VICIdial's database: taken by an agent, still queued, or gone.

The FastAGI daemon's pending consents (:mod:`vicirec.fastagi.deferred`) ask this once per poll
for *all* their uniqueids together: one parameterised ``SELECT`` (a ``UNION ALL`` of two tables)
inside ``START TRANSACTION READ ONLY``, on a fresh connection of the ``mysql`` lookup
(:class:`vicirec.agents.mysql_directory.MysqlDirectory`, whose timeouts, watchdog and error
mapping it shares). Only this server's rows count (``server_ip = VARserver_ip``): a uniqueid is
unique per Asterisk server, not across a cluster.

* ``vicidial_live_agents``: an agent whose ``uniqueid`` is the call's and whose ``status`` is
  ``QUEUE`` or ``INCALL`` has taken it (VICIdial's own AGIs look agents up the same way).
* ``vicidial_auto_calls``: VICIdial's row for a call waiting in an in-group; VICIdial deletes it
  when the call ends, so a call seen there and then in neither table has ended without an agent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vicirec.agents.chain import LiveAgent
from vicirec.agents.mysql_directory import MysqlDirectory
from vicirec.deadline import Deadline
from vicirec.errors import ConfigError

#: More than this many uniqueids in one read is a caller's bug (the daemon caps its pending consents).
MAX_UNIQUEIDS = 10000
TAKEN_STATUSES = ("QUEUE", "INCALL")


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
    """Thread-safe (every read opens its own connection through the directory)."""

    def __init__(self, directory: MysqlDirectory) -> None:
        self.directory = directory

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
        directory = self.directory
        with directory.read_only_cursor(deadline) as cursor:
            directory._run(cursor.execute, deadline, select_call_places(len(ids)), params)
            rows = directory._run(cursor.fetchall, deadline)
        return _places(rows, set(ids))


def _places(rows: Sequence[Any], asked: set[str]) -> CallPlaces:
    taken: dict[str, list[LiveAgent]] = {}
    queued: set[str] = set()
    for kind, uniqueid, user, server_ip, conf_exten, extension, status, lead_id, callerid, channel in rows:
        key = _text(uniqueid)
        if key not in asked:  # the server compared with its own collation; only exact matches count
            continue
        if _text(kind) == "queue":
            queued.add(key)
            continue
        taken.setdefault(key, []).append(LiveAgent(
            user=_text(user), session_id=_text(conf_exten), status=_text(status), lead_id=_text(lead_id),
            callerid=_text(callerid), extension=_text(extension), uniqueid=key, channel=_text(channel),
            server_ip=_text(server_ip),
        ))
    return CallPlaces(taken={key: tuple(rows_) for key, rows_ in taken.items()}, queued=frozenset(queued))


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)
