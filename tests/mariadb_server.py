"""A real MariaDB/MySQL server for the ``lookup = "mysql"`` tests, on 127.0.0.1 only.

Where it comes from, first that works:

1. ``VICIREC_TEST_MYSQL=host:port:user:pass``: a server you run; the account must be able to
   create a database and users and grant (the tests own database ``vicirec_test`` on it);
2. a private ``mariadbd`` (or ``mysqld``) started here: ``mariadb-install-db`` into a temporary
   directory, then the server with real grants on a free port bound to 127.0.0.1 and a socket in
   that directory, stopped (by its own pid) when the test process exits.

With neither, the tests skip and say why; ``VICIREC_TEST_MYSQL_REQUIRED=1`` (for CI) turns that skip
into a failure. Use it as ``from mariadb_server import mariadb`` in a test module (no
``pytest_plugins``): the fixture is a thin wrapper around one server per test process.

The schema is ``tests/sql/*.sql`` (``vicidial_live_agents``, ``vicidial_auto_calls``,
``recording_log``). Accounts: ``vicirec_ro`` may only SELECT those tables; ``vicirec_rw`` may do
anything in the database, like VICIdial's ``cron`` user (to show that vicirec's read-only
transaction, not the grant, keeps it from writing).
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pytest

ENV_SERVER = "VICIREC_TEST_MYSQL"
ENV_REQUIRED = "VICIREC_TEST_MYSQL_REQUIRED"
DATABASE = "vicirec_test"
RO_USER = "vicirec_ro"
RW_USER = "vicirec_rw"
SCHEMA = Path(__file__).resolve().parent / "sql" / "vicidial_live_agents.sql"
#: Every table of the fixture (one ``CREATE TABLE`` a file); ``vicirec_ro`` may SELECT each.
SCHEMAS = sorted(SCHEMA.parent.glob("*.sql"))
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
AGENT_COLUMNS = (
    "user",
    "server_ip",
    "conf_exten",
    "extension",
    "status",
    "lead_id",
    "campaign_id",
    "uniqueid",
    "callerid",
    "channel",
    "external_recording",
)


class ServerUnavailable(Exception):
    """No server could be had; the message says why (it becomes the skip reason)."""


@dataclass
class MariaDb:
    host: str
    port: int
    admin_user: str
    admin_password: str = field(repr=False)
    admin_socket: str = ""
    database: str = DATABASE
    ro_password: str = field(default="", repr=False)
    rw_password: str = field(default="", repr=False)
    origin: str = "private"
    socket_path: str = ""  # the private server's socket (tests of VARDB_server = localhost)
    _process: Optional[subprocess.Popen[bytes]] = field(default=None, repr=False)
    _workdir: str = field(default="", repr=False)

    # --- access -----------------------------------------------------------------------------

    def admin(self, *, database: bool = True) -> Any:
        import pymysql

        place: dict[str, Any] = (
            {"unix_socket": self.admin_socket}
            if self.admin_socket
            else {"host": self.host, "port": self.port}
        )
        return pymysql.connect(
            user=self.admin_user,
            password=self.admin_password,
            database=self.database if database else None,
            autocommit=True,
            connect_timeout=5,
            read_timeout=10,
            write_timeout=10,
            charset="utf8mb4",
            **place,
        )

    def replace_agents(self, rows: Sequence[Mapping[str, object]]) -> None:
        """Make ``vicidial_live_agents`` hold exactly ``rows`` (missing columns take defaults)."""
        connection = self.admin()
        try:
            with connection.cursor() as cursor:
                cursor.execute("DELETE FROM vicidial_live_agents")
                for row in rows:
                    columns = [name for name in AGENT_COLUMNS if name in row]
                    placeholders = ", ".join(["%s"] * len(columns))
                    cursor.execute(
                        f"INSERT INTO vicidial_live_agents ({', '.join(columns)}) VALUES ({placeholders})",
                        [row[name] for name in columns],
                    )
        finally:
            connection.close()

    def clear_recordings(self) -> None:
        connection = self.admin()
        try:
            with connection.cursor() as cursor:
                cursor.execute("DELETE FROM recording_log")
        finally:
            connection.close()

    def agent_rows(self) -> list[tuple[Any, ...]]:
        connection = self.admin()
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT {', '.join(AGENT_COLUMNS)} FROM vicidial_live_agents ORDER BY user")
                return list(cursor.fetchall())
        finally:
            connection.close()

    def astguiclient_conf(
        self,
        path: Path,
        *,
        account: str = "ro",
        server_ip: str = "10.10.10.15",
        host: Optional[str] = None,
        port: Optional[int] = None,
        password: Optional[str] = None,
    ) -> Path:
        """Write an astguiclient.conf for ``account`` ("ro" or "rw") the way VICIdial lays it out."""
        user = RO_USER if account == "ro" else RW_USER
        secret = self.ro_password if account == "ro" else self.rw_password
        path.write_text(
            "# astguiclient.conf written by the vicirec tests\n"
            "PATHhome => /usr/share/astguiclient\n"
            f"VARserver_ip => {server_ip}\n"
            f"VARDB_server => {host if host is not None else self.host}\n"
            f"VARDB_database => {self.database}\n"
            f"VARDB_user => {user}\n"
            f"VARDB_pass => {password if password is not None else secret}\n"
            "VARDB_custom_user => custom\n"
            f"VARDB_port => {port if port is not None else self.port}\n",
            encoding="ascii",
        )
        return path

    # --- life cycle --------------------------------------------------------------------------

    def prepare(self) -> None:
        """(Re)create the database, the table and the two accounts."""
        connection = self.admin(database=False)
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS {self.database}")
                cursor.execute(f"CREATE DATABASE {self.database}")
                cursor.execute(f"USE {self.database}")
                for schema in SCHEMAS:
                    cursor.execute(schema.read_text(encoding="ascii"))
                for user, password in ((RO_USER, self.ro_password), (RW_USER, self.rw_password)):
                    for host in ("%", "localhost"):
                        cursor.execute(f"DROP USER IF EXISTS '{user}'@'{host}'")
                        cursor.execute(
                            f"CREATE USER '{user}'@'{host}' IDENTIFIED BY {connection.escape(password)}"
                        )
                for host in ("%", "localhost"):
                    for schema in SCHEMAS:
                        table = f"{self.database}.{schema.stem}"
                        cursor.execute(f"GRANT SELECT ON {table} TO '{RO_USER}'@'{host}'")
                    cursor.execute(f"GRANT ALL PRIVILEGES ON {self.database}.* TO '{RW_USER}'@'{host}'")
        finally:
            connection.close()

    def stop(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT)
        self._process = None
        if self._workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = ""


def _passwords() -> tuple[str, str]:
    # Characters astguiclient.conf can carry (VICIdial's reader drops spaces, '>', and cuts at '#', ';').
    return "Ro.Pw-" + secrets.token_hex(6), "Rw.Pw-" + secrets.token_hex(6)


def server_from_env(text: str) -> MariaDb:
    parts = text.split(":", 3)
    if len(parts) != 4 or not parts[1].isdigit():
        raise ServerUnavailable(f"{ENV_SERVER} must be host:port:user:pass")
    host, port, user, password = parts
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ServerUnavailable(f"{ENV_SERVER} must name a server on this machine (127.0.0.1)")
    ro, rw = _passwords()
    server = MariaDb(
        host="127.0.0.1" if host == "localhost" else host,
        port=int(port),
        admin_user=user,
        admin_password=password,
        ro_password=ro,
        rw_password=rw,
        origin="env",
    )
    try:
        server.prepare()
    except Exception as exc:  # noqa: BLE001 - any failure means: no usable server
        raise ServerUnavailable(f"{ENV_SERVER} server unusable: {exc}") from exc
    return server


def _binary(*names: str) -> Optional[str]:
    for name in names:
        for directory in (None, "/usr/sbin", "/usr/local/sbin", "/usr/libexec"):
            found = shutil.which(name) if directory is None else shutil.which(name, path=directory)
            if found:
                return found
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_private_server(timeout: float = START_TIMEOUT) -> MariaDb:
    """Install a data directory and start a server of our own; raises ServerUnavailable."""
    server_binary = _binary("mariadbd", "mysqld")
    install_binary = _binary("mariadb-install-db", "mysql_install_db")
    if server_binary is None or install_binary is None:
        raise ServerUnavailable(
            "no MariaDB/MySQL server binaries (apt-get install mariadb-server) and no "
            f"{ENV_SERVER}=host:port:user:pass"
        )
    try:
        import pymysql  # noqa: F401
    except ImportError as exc:
        raise ServerUnavailable("PyMySQL is not installed (pip install -e '.[test]')") from exc
    workdir = tempfile.mkdtemp(prefix="vicirec-mariadb-")
    datadir = os.path.join(workdir, "data")
    run_as = ["--user=root"] if os.geteuid() == 0 else []
    deadline = time.monotonic() + timeout
    try:
        installed = subprocess.run(
            [
                install_binary,
                "--no-defaults",
                f"--datadir={datadir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                *run_as,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        raise ServerUnavailable(f"{install_binary} failed: {exc}") from exc
    if installed.returncode != 0:
        shutil.rmtree(workdir, ignore_errors=True)
        tail = installed.stdout.decode("utf-8", "replace")[-400:]
        raise ServerUnavailable(f"{install_binary} exited {installed.returncode}: {tail}")
    last_error = "not started"
    for _attempt in range(3):  # a free port can be taken between probe and bind: try another
        port = _free_port()
        sock = os.path.join(workdir, "mysqld.sock")
        log = os.path.join(workdir, "error.log")
        process = subprocess.Popen(
            [
                server_binary,
                "--no-defaults",
                f"--datadir={datadir}",
                f"--socket={sock}",
                f"--port={port}",
                "--bind-address=127.0.0.1",
                f"--pid-file={os.path.join(workdir, 'mysqld.pid')}",
                f"--log-error={log}",
                "--skip-name-resolve",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=16M",
                "--max-connections=300",
                *run_as,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        server = MariaDb(
            host="127.0.0.1",
            port=port,
            admin_user="root",
            admin_password="",
            admin_socket=sock,
            socket_path=sock,
            _process=process,
            _workdir=workdir,
        )
        server.ro_password, server.rw_password = _passwords()
        while time.monotonic() < deadline and process.poll() is None:
            try:
                server.admin(database=False).close()
            except Exception as exc:  # noqa: BLE001 - not up yet
                last_error = str(exc)
                time.sleep(0.2)
                continue
            try:
                server.prepare()
            except Exception as exc:  # noqa: BLE001 - up, but unusable: report, do not wait
                server.stop()
                raise ServerUnavailable(
                    f"the private server started but could not be prepared: {exc}"
                ) from exc
            return server
        error_log = (
            Path(log).read_text(encoding="utf-8", errors="replace")[-600:] if Path(log).exists() else ""
        )
        last_error = f"{last_error}; server log: {error_log}"
        server._workdir = ""
        server.stop()
        if time.monotonic() >= deadline:
            break
    shutil.rmtree(workdir, ignore_errors=True)
    raise ServerUnavailable(f"a private {os.path.basename(server_binary)} did not start: {last_error}")


_lock = threading.Lock()
_server: Optional[MariaDb] = None
_failure: Optional[str] = None


def get_server() -> MariaDb:
    """The one server of this test process (started on first use)."""
    global _server, _failure
    with _lock:
        if _server is not None:
            return _server
        if _failure is not None:
            raise ServerUnavailable(_failure)
        try:
            env = os.environ.get(ENV_SERVER, "")
            _server = server_from_env(env) if env else start_private_server()
        except ServerUnavailable as exc:
            _failure = str(exc)
            raise
        atexit.register(_server.stop)
        return _server


@pytest.fixture
def mariadb() -> Iterator[MariaDb]:
    """A live server with an empty ``vicidial_live_agents``; skips when none can be had."""
    try:
        server = get_server()
    except ServerUnavailable as exc:
        if os.environ.get(ENV_REQUIRED) == "1":
            pytest.fail(f"MySQL tests required but: {exc}")
        pytest.skip(str(exc))
    server.replace_agents([])
    server.clear_recordings()
    yield server
