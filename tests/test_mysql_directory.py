"""``lookup = "mysql"`` against a real MariaDB/MySQL server on 127.0.0.1 (see mariadb_server.py)."""

# The fixture is imported by name (no pytest_plugins), so test parameters named after it "redefine" it.
# ruff: noqa: F811

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mariadb_server import RO_USER, MariaDb, mariadb  # noqa: F401 - mariadb is a fixture
from vicirec.agents.astguiclient import load_astguiclient_conf
from vicirec.agents.mysql_directory import MysqlDirectory
from vicirec.config import Config, config_from_mapping
from vicirec.deadline import Deadline
from vicirec.errors import ErrorCode, VicirecError

pytestmark = pytest.mark.mysql

CONFIG: Config = config_from_mapping(
    {
        "vicidial": {
            "api_url": "http://127.0.0.1:9/agc/api.php",
            "user": "6666",
            "password": "1234",
            "connect_timeout": 1.0,
            "read_timeout": 1.0,
        }
    }
)
ROWS = [
    {
        "user": "1000",
        "server_ip": "10.10.10.15",
        "conf_exten": "8600051",
        "extension": "SIP/1000",
        "status": "INCALL",
        "lead_id": 1,
        "campaign_id": "TESTCAMP",
        "uniqueid": "1795459430.20",
        "callerid": "V1123181500000000001",
        "channel": "SIP/trunk-0000002a",
    },
    {
        "user": "1001",
        "server_ip": "10.10.10.15",
        "conf_exten": "8600052",
        "extension": "PJSIP/1001",
        "status": "PAUSED",
        "lead_id": 0,
        "campaign_id": "TESTCAMP",
    },
    {
        "user": "1002",
        "server_ip": "10.10.10.16",
        "conf_exten": "8600053",
        "extension": "SIP/1002",
        "status": "READY",
        "lead_id": 0,
        "campaign_id": "TESTCAMP",
    },
]


def directory_for(mariadb: MariaDb, tmp_path: Path, **conf: Any) -> MysqlDirectory:
    path = mariadb.astguiclient_conf(tmp_path / "astguiclient.conf", **conf)
    return MysqlDirectory(load_astguiclient_conf(str(path)), CONFIG)


def lookup_error(directory: MysqlDirectory, seconds: float = 3.0) -> VicirecError:
    with pytest.raises(VicirecError) as caught:
        directory.logged_in_agents(Deadline(seconds))
    return caught.value


def test_reads_every_column_vicirec_uses(mariadb: MariaDb, tmp_path: Path) -> None:
    mariadb.replace_agents(ROWS)
    directory = directory_for(mariadb, tmp_path)
    agents = {agent.user: agent for agent in directory.logged_in_agents(Deadline(5))}
    assert set(agents) == {"1000", "1001", "1002"}
    first = agents["1000"]
    assert (
        first.session_id,
        first.extension,
        first.status,
        first.lead_id,
        first.callerid,
        first.uniqueid,
        first.channel,
        first.server_ip,
    ) == (
        "8600051",
        "SIP/1000",
        "INCALL",
        "1",
        "V1123181500000000001",
        "1795459430.20",
        "SIP/trunk-0000002a",
        "10.10.10.15",
    )
    assert agents["1001"].callerid == "" and agents["1001"].lead_id == "0"
    assert directory.server_ip == "10.10.10.15"


def test_empty_table_is_an_empty_list(mariadb: MariaDb, tmp_path: Path) -> None:
    assert directory_for(mariadb, tmp_path).logged_in_agents(Deadline(5)) == []


def test_read_only_transaction_even_for_a_user_that_may_write(mariadb: MariaDb, tmp_path: Path) -> None:
    import pymysql

    mariadb.replace_agents(ROWS)
    directory = directory_for(mariadb, tmp_path, account="rw")  # like VICIdial's "cron": ALL PRIVILEGES
    assert len(directory.logged_in_agents(Deadline(5))) == 3
    with directory.read_only_cursor(Deadline(5)) as cursor:
        for statement in (
            "UPDATE vicidial_live_agents SET external_recording='START'",
            "DELETE FROM vicidial_live_agents",
            "INSERT INTO vicidial_live_agents (user, server_ip, lead_id) VALUES ('x', '1', 0)",
        ):
            with pytest.raises(pymysql.err.MySQLError) as caught:
                cursor.execute(statement)
            assert caught.value.args[0] == 1792  # ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION
    assert len(mariadb.agent_rows()) == 3
    assert all(row[-1] == "" for row in mariadb.agent_rows())  # external_recording untouched


def test_the_read_only_account_can_only_select(mariadb: MariaDb, tmp_path: Path) -> None:
    import pymysql

    mariadb.replace_agents(ROWS)
    directory = directory_for(mariadb, tmp_path, account="ro")
    with directory.read_only_cursor(Deadline(5)) as cursor:
        cursor.execute("SELECT CURRENT_USER()")
        assert cursor.fetchone()[0].startswith(RO_USER + "@")
        with pytest.raises(pymysql.err.MySQLError):
            cursor.execute("SELECT user FROM mysql.user")


def test_wrong_password_is_auth_and_never_shows_the_password(mariadb: MariaDb, tmp_path: Path) -> None:
    directory = directory_for(mariadb, tmp_path, password="Wr0ng.Secret-xyz")
    error = lookup_error(directory)
    assert error.code is ErrorCode.AUTH and RO_USER in error.message
    for text in (error.message, error.raw or "", str(error)):
        assert "Wr0ng.Secret-xyz" not in text and mariadb.ro_password not in text


def test_unknown_database_is_a_config_error(mariadb: MariaDb, tmp_path: Path) -> None:
    path = mariadb.astguiclient_conf(tmp_path / "astguiclient.conf")
    path.write_text(
        path.read_text().replace(f"VARDB_database => {mariadb.database}", "VARDB_database => nodb")
    )
    error = lookup_error(MysqlDirectory(load_astguiclient_conf(str(path)), CONFIG))
    # MariaDB answers 1044 (no rights) rather than 1049 (no such database) to a user without rights there.
    assert error.code in (ErrorCode.CONFIG, ErrorCode.PERMISSION)
    assert "'nodb'" in error.message


def test_nobody_listening_is_unreachable(mariadb: MariaDb, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    error = lookup_error(directory_for(mariadb, tmp_path, port=port))
    assert error.code is ErrorCode.UNREACHABLE and time.monotonic() - started < 2


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts TCP connections and never says a word (a hung database)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join(timeout=2)
    for conn in accepted:
        conn.close()
    listener.close()


def test_a_hung_server_is_a_timeout_within_the_deadline(
    mariadb: MariaDb,
    tmp_path: Path,
    silent_server: int,
) -> None:
    directory = directory_for(mariadb, tmp_path, port=silent_server)
    started = time.monotonic()
    error = lookup_error(directory, seconds=0.5)
    assert error.code is ErrorCode.TIMEOUT
    assert time.monotonic() - started < 1.0


@pytest.fixture
def dripping_proxy(mariadb: MariaDb) -> Iterator[int]:
    """A proxy to the real server that hands its answers back one byte every 5 ms: no single read
    ever waits long, so only the deadline's watchdog can end the lookup in time."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(0.1)
    stop = threading.Event()
    sockets: list[socket.socket] = []

    def pump(source: socket.socket, sink: socket.socket, drip: bool) -> None:
        source.settimeout(0.1)
        while not stop.is_set():
            try:
                data = source.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return
            try:
                if drip:
                    for index in range(len(data)):
                        if stop.is_set():
                            return
                        sink.sendall(data[index : index + 1])
                        time.sleep(0.005)
                else:
                    sink.sendall(data)
            except OSError:
                return

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                continue
            upstream = socket.create_connection((mariadb.host, mariadb.port), timeout=2)
            sockets.extend((client, upstream))
            threading.Thread(target=pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=pump, args=(upstream, client, True), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join(timeout=2)
    for sock in sockets:
        sock.close()
    listener.close()


def test_a_dripping_server_cannot_hold_the_call_past_the_deadline(
    mariadb: MariaDb,
    tmp_path: Path,
    dripping_proxy: int,
) -> None:
    mariadb.replace_agents(ROWS * 3)
    directory = directory_for(mariadb, tmp_path, port=dripping_proxy)
    started = time.monotonic()
    error = lookup_error(directory, seconds=1.5)
    elapsed = time.monotonic() - started
    assert error.code is ErrorCode.TIMEOUT, error.message
    assert elapsed < 2.0


def test_localhost_uses_the_servers_socket_like_vicidials_perl(
    mariadb: MariaDb,
    tmp_path: Path,
) -> None:
    if not mariadb.socket_path:
        pytest.skip("the server comes from VICIREC_TEST_MYSQL: its socket is unknown")
    mariadb.replace_agents(ROWS)
    path = mariadb.astguiclient_conf(tmp_path / "astguiclient.conf", host="localhost", port=1)
    settings = load_astguiclient_conf(str(path), socket_candidates=[mariadb.socket_path])
    assert settings.unix_socket == mariadb.socket_path
    assert len(MysqlDirectory(settings, CONFIG).logged_in_agents(Deadline(5))) == 3
