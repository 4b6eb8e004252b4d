"""``/etc/astguiclient.conf``: where VICIdial's own scripts find their database.

The file holds ``KEY => value`` lines. VICIdial's Perl AGIs read a value as everything after the
last ``=``, then drop spaces, tabs, ``>`` and anything from a ``#`` or ``;`` on; vicirec reads it
the same way, so it connects with exactly the credentials VICIdial's own AGIs use. Lines that are not
``KEY => value`` are ignored (as VICIdial ignores them); a later line wins over an earlier one.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vicirec.config import read_named_file
from vicirec.errors import ConfigError

MAX_CONF_BYTES = 1 << 20
DEFAULT_PORT = 3306
#: Where MariaDB/MySQL put their socket on Debian/Ubuntu, openSUSE (ViciBox) and RHEL/CentOS.
SOCKET_CANDIDATES = (
    "/run/mysqld/mysqld.sock",
    "/var/run/mysqld/mysqld.sock",
    "/var/run/mysql/mysql.sock",
    "/run/mysql/mysql.sock",
    "/var/lib/mysql/mysql.sock",
)
_KEY = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_]*)\s*=>")
_DROPPED = re.compile(r"[ \t>\r]|[#;].*")
_REQUIRED = ("VARDB_server", "VARDB_database", "VARDB_user", "VARDB_pass")


@dataclass(frozen=True)
class DatabaseSettings:
    """VICIdial's database as astguiclient.conf names it, and this telephony server's address."""

    host: str
    database: str
    user: str
    password: str = field(repr=False)
    port: int = DEFAULT_PORT
    server_ip: str = ""        # VARserver_ip: this Asterisk server, as vicidial_live_agents names it
    unix_socket: str = ""      # set when host is "localhost" and a server socket exists
    source: str = ""


def parse_astguiclient_conf(text: str, source: str = "astguiclient.conf") -> DatabaseSettings:
    """The database settings in the file's text (no I/O)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        match = _KEY.match(line)
        if match is None:
            continue
        value = line.rpartition("=")[2]
        values[match.group(1)] = _DROPPED.sub("", value)
    missing = [key for key in _REQUIRED if not values.get(key)]
    if missing:
        raise ConfigError(f"{source} does not set {', '.join(missing)}")
    port_text = values.get("VARDB_port", "") or str(DEFAULT_PORT)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"{source}: VARDB_port must be a port number (1-65535)")
    return DatabaseSettings(
        host=values["VARDB_server"],
        database=values["VARDB_database"],
        user=values["VARDB_user"],
        password=values["VARDB_pass"],
        port=int(port_text),
        server_ip=values.get("VARserver_ip", ""),
        source=source,
    )


def load_astguiclient_conf(
    path: str, socket_candidates: Sequence[str] = SOCKET_CANDIDATES
) -> DatabaseSettings:
    """Read and parse the file; for ``localhost``, use the local server socket as Perl DBI does."""
    data = read_named_file(path, "agents.astguiclient_conf", limit=MAX_CONF_BYTES,
                           missing_hint=" (needed by lookup = mysql)")
    settings = parse_astguiclient_conf(data.decode("utf-8", "replace"), source=path)
    if settings.host == "localhost":
        for candidate in socket_candidates:
            if Path(candidate).is_socket():
                return dataclasses.replace(settings, unix_socket=candidate)
    return settings
