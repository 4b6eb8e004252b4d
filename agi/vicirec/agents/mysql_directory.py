"""``lookup = "mysql"``: read ``vicidial_live_agents`` from VICIdial's own database.

This is how VICIdial's own AGIs find the agent, with the credentials they use
(``/etc/astguiclient.conf``, see :mod:`vicirec.agents.astguiclient`). Unlike the non-agent API it sees the
customer leg's ``uniqueid`` and ``channel`` and the agent's phone (``extension``), which is what lets
a caller-supplied call id be corroborated.

Rules kept here:

* PyMySQL is imported on the first lookup, never when this backend is off;
* one statement is ever sent: a fixed ``SELECT`` on ``vicidial_live_agents`` whose only parameter is
  the row cap, inside ``START TRANSACTION READ ONLY`` (the server refuses any write in it, even if
  ``VARDB_user`` may write, as VICIdial's ``cron`` user usually may), and the connection is closed;
* no TLS to a server on this machine (socket or loopback); a remote one gets PyMySQL's default
  (TLS when the server offers it);
* the connect and read timeouts are cut from the invocation's deadline, and a watchdog shuts the
  socket when the deadline passes, so a server that drips bytes cannot hold the call;
* errors map onto the codes the dialplan already knows (UNREACHABLE, TIMEOUT, BAD_RESPONSE, AUTH,
  PERMISSION, CONFIG); the database password never appears in a message.
"""

from __future__ import annotations

import importlib
import importlib.util
import ipaddress
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Optional

from vicirec.agents.astguiclient import DatabaseSettings
from vicirec.agents.chain import LiveAgent
from vicirec.agents.sql_values import column_text
from vicirec.config import Config
from vicirec.deadline import Deadline
from vicirec.errors import (
    AuthFailed,
    BadResponse,
    ConfigError,
    PermissionDenied,
    Unreachable,
    VicidialTimeout,
    VicirecError,
)
from vicirec.redaction import Redactor

MAX_ROWS = 5000
_MIN_ATTEMPT_SECONDS = 0.05
SELECT_LIVE_AGENTS = (
    "SELECT user, server_ip, conf_exten, extension, status, lead_id, callerid, uniqueid, channel "
    "FROM vicidial_live_agents LIMIT %s"
)
_START_READ_ONLY = "START TRANSACTION READ ONLY"

# MySQL / MariaDB error numbers (server ER_* and client CR_*).
_ACCESS_DENIED = 1045
_DB_ACCESS_DENIED = 1044
_TABLE_ACCESS_DENIED = (1142, 1143)
_UNKNOWN_DATABASE = 1049
_SCHEMA_MISMATCH = (1146, 1054)  # no such table, no such column
_SYNTAX = 1064
_NEVER_CONNECTED = (2002, 2003, 2005)  # socket, TCP, unknown host
_CONNECTION_LOST = (2006, 2013, 2014)


class MysqlDirectory:
    """An :class:`vicirec.agents.chain.AgentDirectory` over ``vicidial_live_agents``; thread-safe
    (every lookup opens its own connection)."""

    name = "mysql"

    def __init__(
        self, settings: DatabaseSettings, config: Config, *, redactor: Optional[Redactor] = None
    ) -> None:
        if importlib.util.find_spec("pymysql") is None:
            raise ConfigError('agents.lookup = "mysql" needs PyMySQL: pip install "vicirec[mysql]"')
        self.settings = settings
        self._connect_timeout = config.vicidial.connect_timeout
        self._read_timeout = config.vicidial.read_timeout
        self._redactor = redactor or Redactor([settings.password])
        self._pymysql: Any = None

    @property
    def server_ip(self) -> str:
        """This Asterisk server's address as VICIdial names it (``VARserver_ip``)."""
        return self.settings.server_ip

    @property
    def target(self) -> str:
        where = self.settings.unix_socket or f"{self.settings.host}:{self.settings.port}"
        return f"VICIdial's database ({where})"

    def logged_in_agents(self, deadline: Deadline) -> list[LiveAgent]:
        with self.read_only_cursor(deadline) as cursor:
            self.run(cursor.execute, deadline, SELECT_LIVE_AGENTS, (MAX_ROWS,))
            rows = self.run(cursor.fetchall, deadline)
        return [live_agent(row) for row in rows]

    @contextmanager
    def read_only_cursor(self, deadline: Deadline) -> Iterator[Any]:
        """A cursor inside a read-only transaction on a fresh connection, closed afterwards."""
        connection = self.connect(deadline)
        watchdog = threading.Timer(deadline.remaining(), _shut_socket, args=(connection,))
        watchdog.daemon = True
        watchdog.start()
        try:
            cursor = connection.cursor()
            self.run(cursor.execute, deadline, _START_READ_ONLY)
            yield cursor
        finally:
            watchdog.cancel()
            self.discard(connection)

    # --- internals ----------------------------------------------------------------------------

    def _module(self) -> Any:
        if self._pymysql is None:
            self._pymysql = importlib.import_module("pymysql")
        return self._pymysql

    def connect(self, deadline: Deadline) -> Any:
        """A new connection within ``deadline``, errors mapped to vicirec's codes (readers that keep
        their own connection use it; everyone else :meth:`read_only_cursor`)."""
        pymysql = self._module()
        connect = deadline.cut(self._connect_timeout)
        read = deadline.cut(self._read_timeout)
        if connect < _MIN_ATTEMPT_SECONDS or read < _MIN_ATTEMPT_SECONDS:
            raise VicidialTimeout(f"no time left to ask {self.target}")
        settings = self.settings
        place: dict[str, Any] = (
            {"unix_socket": settings.unix_socket} if settings.unix_socket
            else {"host": settings.host, "port": settings.port}
        )
        if _is_local(settings):
            # PyMySQL otherwise builds a TLS context on every connect (tens of ms of CA loading) to
            # offer TLS to a server on this very machine; a remote server still gets TLS if it offers it.
            place["ssl_disabled"] = True
        try:
            return pymysql.connect(
                user=settings.user, password=settings.password, database=settings.database,
                connect_timeout=connect, read_timeout=read, write_timeout=read,
                charset="utf8mb4", autocommit=False, local_infile=False, program_name="vicirec",
                **place,
            )
        except pymysql.err.MySQLError as error:
            raise self._mapped(error, deadline, connecting=True) from None
        except OSError as error:
            raise Unreachable(f"cannot connect to {self.target}: {error.__class__.__name__}") from None

    def discard(self, connection: Any) -> None:
        """Close ``connection`` whatever state it is in."""
        _close_quietly(connection, self._pymysql)

    def run(self, call: Any, deadline: Deadline, *args: Any) -> Any:
        """``call(*args)`` (a cursor's or connection's method), errors mapped to vicirec's codes."""
        pymysql = self._module()
        try:
            return call(*args)
        except pymysql.err.MySQLError as error:
            raise self._mapped(error, deadline, connecting=False) from None
        except OSError as error:
            if deadline.expired:
                raise VicidialTimeout(f"{self.target} did not answer in time") from None
            raise BadResponse(f"the connection to {self.target} broke ({error.__class__.__name__})") from None

    def _mapped(self, error: Any, deadline: Deadline, *, connecting: bool) -> VicirecError:
        code = error.args[0] if error.args and isinstance(error.args[0], int) else 0
        text = str(error.args[1]) if len(error.args) > 1 else str(error)
        raw = self._redactor.text(f"({code}) {text}")[:300]
        timed_out = "timed out" in text or deadline.expired
        target = self.target
        if code in _NEVER_CONNECTED:
            if timed_out:
                return Unreachable(f"{target} did not accept a connection in time", raw=raw)
            return Unreachable(f"cannot connect to {target}", raw=raw)
        if code in _CONNECTION_LOST:
            if timed_out:
                return VicidialTimeout(f"{target} did not answer in time", raw=raw)
            if connecting:
                return Unreachable(f"{target} dropped the connection during login", raw=raw)
            return BadResponse(f"the connection to {target} was lost", raw=raw)
        if code == _ACCESS_DENIED:
            return AuthFailed(f"{target} refused user {self.settings.user!r} (VARDB_user / VARDB_pass in "
                              f"{self.settings.source or 'astguiclient.conf'})", raw=raw)
        if code == _DB_ACCESS_DENIED:
            return PermissionDenied(f"user {self.settings.user!r} may not use database "
                                    f"{self.settings.database!r} (VARDB_database, or the grants)", raw=raw)
        if code in _TABLE_ACCESS_DENIED:
            return PermissionDenied(f"user {self.settings.user!r} may not read vicidial_live_agents "
                                    "(or recording_log)", raw=raw)
        if code == _UNKNOWN_DATABASE:
            return ConfigError(f"{target} has no database {self.settings.database!r} (VARDB_database)",
                               raw=raw)
        if code in _SCHEMA_MISMATCH:
            return BadResponse(f"{target} lacks vicidial_live_agents (or recording_log) or one of "
                               "their columns", raw=raw)
        if code == _SYNTAX:
            return BadResponse(f"{target} does not support read-only transactions (MariaDB 10.0 or "
                               "MySQL 5.6.5 needed)", raw=raw)
        return BadResponse(f"{target} failed with MySQL error {code}", raw=raw)


def _is_local(settings: DatabaseSettings) -> bool:
    if settings.unix_socket or settings.host == "localhost":
        return True
    try:
        return ipaddress.ip_address(settings.host).is_loopback
    except ValueError:
        return False


def live_agent(row: Any) -> LiveAgent:
    """A ``vicidial_live_agents`` row in :data:`SELECT_LIVE_AGENTS`' column order."""
    values = [column_text(value) for value in row]
    user, server_ip, conf_exten, extension, status, lead_id, callerid, uniqueid, channel = values
    return LiveAgent(
        user=user, session_id=conf_exten, status=status, lead_id=lead_id, callerid=callerid,
        extension=extension, uniqueid=uniqueid, channel=channel, server_ip=server_ip,
    )



def _shut_socket(connection: Any) -> None:
    """The deadline passed mid-query: make the blocked read return at once."""
    sock = getattr(connection, "_sock", None)
    if isinstance(sock, socket.socket):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _close_quietly(connection: Any, pymysql: Any) -> None:
    errors: tuple[type[BaseException], ...] = (OSError,)
    if pymysql is not None:
        errors = (OSError, pymysql.err.Error)
    try:
        connection.close()
    except errors:
        pass
