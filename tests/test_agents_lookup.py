"""Lookup plumbing without a database: the daemon's cache, astguiclient.conf, channel names, wiring."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import pytest

from vicirec.agents.astguiclient import load_astguiclient_conf, parse_astguiclient_conf
from vicirec.agents.cache import CachedDirectory
from vicirec.agents.chain import LiveAgent
from vicirec.agents.devices import Device, device_of_channel, device_of_extension, same_call_leg
from vicirec.agents.http_directory import HttpDirectory
from vicirec.config import config_from_mapping
from vicirec.deadline import Deadline
from vicirec.errors import ConfigError, ErrorCode, Unreachable, VicidialTimeout, VicirecError
from vicirec.runtime import build_service

AGENTS = (LiveAgent(user="1000", session_id="8600051", callerid="V1123181500000000001"),)
BASE = {"vicidial": {"api_url": "http://127.0.0.1:9/agc/api.php", "user": "6666", "password": "1234"}}


class SlowDirectory:
    """AgentDirectory double: each fetch blocks until released, and may fail."""

    name = "mysql"

    def __init__(self, *, delay: float = 0.0, error: Optional[VicirecError] = None) -> None:
        self.delay = delay
        self.error = error
        self.calls = 0
        self.concurrent = 0
        self.max_concurrent = 0
        self._lock = threading.Lock()

    def logged_in_agents(self, deadline: Deadline) -> Sequence[LiveAgent]:
        with self._lock:
            self.calls += 1
            self.concurrent += 1
            self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            time.sleep(self.delay)
            if self.error is not None:
                raise self.error
            return list(AGENTS)
        finally:
            with self._lock:
                self.concurrent -= 1


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# --- cache --------------------------------------------------------------------------------------


def test_cache_serves_one_answer_until_it_is_too_old() -> None:
    inner = SlowDirectory()
    clock = Clock()
    cache = CachedDirectory(inner, 1.0, clock=clock)
    assert cache.name == "mysql"
    assert list(cache.logged_in_agents(Deadline(1))) == list(AGENTS)
    clock.now += 0.99
    cache.logged_in_agents(Deadline(1))
    assert inner.calls == 1
    clock.now += 0.02
    cache.logged_in_agents(Deadline(1))
    assert inner.calls == 2


def test_cache_burst_makes_one_fetch_and_everyone_gets_its_answer() -> None:
    inner = SlowDirectory(delay=0.2)
    cache = CachedDirectory(inner, 1.0)
    results: list[Sequence[LiveAgent]] = []
    lock = threading.Lock()

    def caller() -> None:
        answer = cache.logged_in_agents(Deadline(3))
        with lock:
            results.append(answer)

    threads = [threading.Thread(target=caller) for _ in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    assert len(results) == 30 and all(list(r) == list(AGENTS) for r in results)
    assert inner.calls == 1 and inner.max_concurrent == 1 and cache.fetches == 1


def test_cache_never_keeps_an_error_but_shares_it_with_who_waited() -> None:
    inner = SlowDirectory(delay=0.2, error=Unreachable("cannot connect to VICIdial's database"))
    cache = CachedDirectory(inner, 5.0)
    errors: list[BaseException] = []
    lock = threading.Lock()

    def caller() -> None:
        try:
            cache.logged_in_agents(Deadline(3))
        except VicirecError as error:
            with lock:
                errors.append(error)

    threads = [threading.Thread(target=caller) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    assert inner.calls == 1 and len(errors) == 10
    assert all(isinstance(e, Unreachable) and e.code is ErrorCode.UNREACHABLE for e in errors)
    assert len({id(e) for e in errors}) == 10  # a private copy each: handlers rewrite messages
    # The next caller asks again (an error is not an answer), and a success is then cached.
    inner.error = None
    inner.delay = 0.0
    assert list(cache.logged_in_agents(Deadline(1))) == list(AGENTS)
    cache.logged_in_agents(Deadline(1))
    assert inner.calls == 2


def test_cache_waiter_gives_up_at_its_own_deadline() -> None:
    inner = SlowDirectory(delay=1.0)
    cache = CachedDirectory(inner, 1.0)
    leader = threading.Thread(target=cache.logged_in_agents, args=(Deadline(5),))
    leader.start()
    time.sleep(0.05)
    started = time.monotonic()
    with pytest.raises(VicidialTimeout, match="waiting for another caller's lookup"):
        cache.logged_in_agents(Deadline(0.2))
    assert time.monotonic() - started < 0.6
    leader.join(timeout=5)
    assert inner.calls == 1


# --- astguiclient.conf ----------------------------------------------------------------------------

VICIBOX_CONF = """\
# astguiclient.conf as ViciBox's installer writes it
PATHhome => /usr/share/astguiclient
PATHlogs => /var/log/astguiclient
VARserver_ip => 10.10.10.15
VARDB_server => 10.10.10.20
VARDB_database => asterisk
VARDB_user => cron
VARDB_pass => 1234
VARDB_custom_user => custom
VARDB_custom_pass => custom1234
VARDB_port => 3306
VARactive_keepalives => 123456789EC
"""


def test_astguiclient_conf_parsed_like_vicidials_perl() -> None:
    settings = parse_astguiclient_conf(VICIBOX_CONF)
    assert (
        settings.host,
        settings.port,
        settings.database,
        settings.user,
        settings.password,
        settings.server_ip,
    ) == ("10.10.10.20", 3306, "asterisk", "cron", "1234", "10.10.10.15")
    assert "1234" not in repr(settings)
    # VICIdial keeps what follows the last '=', drops blanks and '>', and cuts at '#' or ';'.
    odd = parse_astguiclient_conf(
        "VARDB_server=>db1\nVARDB_database =>  ast erisk \nVARDB_user => cron # the user\n"
        "VARDB_pass => se=cr;et\nVARDB_pass => final\t\nVARDB_port =>\n"
    )
    assert (odd.host, odd.database, odd.user, odd.password, odd.port) == (
        "db1",
        "asterisk",
        "cron",
        "final",
        3306,
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("VARDB_server => db\n", "does not set VARDB_database, VARDB_user, VARDB_pass"),
        (
            "VARDB_server => db\nVARDB_database => a\nVARDB_user => u\nVARDB_pass => # none\n",
            "does not set VARDB_pass",
        ),
        (
            "VARDB_server => db\nVARDB_database => a\nVARDB_user => u\nVARDB_pass => p\n"
            "VARDB_port => 99999\n",
            "VARDB_port must be a port number",
        ),
        (
            "VARDB_server => db\nVARDB_database => a\nVARDB_user => u\nVARDB_pass => p\nVARDB_port => x1\n",
            "VARDB_port must be a port number",
        ),
    ],
)
def test_astguiclient_conf_missing_or_bad_values(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_astguiclient_conf(text)


def test_astguiclient_localhost_means_the_local_socket_like_perl_dbi(tmp_path: Path) -> None:
    conf = tmp_path / "astguiclient.conf"
    conf.write_text(VICIBOX_CONF.replace("10.10.10.20", "localhost"))
    sock_path = tmp_path / "mysql.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(sock_path))
        chosen = load_astguiclient_conf(str(conf), socket_candidates=[str(tmp_path / "none"), str(sock_path)])
    assert chosen.unix_socket == str(sock_path)
    assert load_astguiclient_conf(str(conf), socket_candidates=[str(tmp_path / "none")]).unix_socket == ""
    with pytest.raises(ConfigError, match="does not exist"):
        load_astguiclient_conf(str(tmp_path / "missing.conf"))


# --- channel names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("channel", "device"),
    [
        ("SIP/1000-0000002a", Device("SIP", "1000")),
        ("PJSIP/1001-00000007", Device("PJSIP", "1001")),
        ("IAX2/1002-123", Device("IAX2", "1002")),
        ("Local/1001@agents-0000000b;1", Device("Local", "1001")),
        ("Local/1001@agents-0000000b;2", Device("Local", "1001")),
        ("PJSIP/agent-01-0000002a", Device("PJSIP", "agent-01")),
        ("DAHDI/1-1", Device("DAHDI", "1")),
        ("CBAnn/8600051-0000000e;2", Device("CBAnn", "8600051")),
        ("not a channel", None),
        ("SIP/1000-0000002a,PJSIP/1", None),
        ("SIP/", None),
    ],
)
def test_device_of_channel(channel: str, device: Optional[Device]) -> None:
    assert device_of_channel(channel) == device


def test_device_of_extension_and_local_halves() -> None:
    assert device_of_extension("SIP/1000") == Device("SIP", "1000")
    assert device_of_extension("Local/1001@default") == Device("Local", "1001")
    assert device_of_extension("SIP/agent-01") == Device("SIP", "agent-01")  # no sequence to strip
    assert device_of_extension("") is None and device_of_extension("1000") is None
    assert same_call_leg("Local/x@y-0000000a;1", "Local/x@y-0000000a;2")
    assert not same_call_leg("SIP/a-1", "SIP/a-2") and not same_call_leg("", "")


# --- wiring -------------------------------------------------------------------------------------


def test_build_service_caches_the_lookup_only_in_the_daemon() -> None:
    config = config_from_mapping(BASE)
    assert isinstance(build_service(config).directory, HttpDirectory)
    cached = build_service(config, daemon=True).directory
    assert isinstance(cached, CachedDirectory) and isinstance(cached.inner, HttpDirectory)
    no_cache = config_from_mapping({**BASE, "agents": {"cache_seconds": 0}})
    assert isinstance(build_service(no_cache, daemon=True).directory, HttpDirectory)


def test_build_service_mysql_reads_astguiclient_and_redacts_the_db_password(tmp_path: Path) -> None:
    conf = tmp_path / "astguiclient.conf"
    conf.write_text(VICIBOX_CONF.replace("VARDB_pass => 1234", "VARDB_pass => Db-S3cret.x"))
    config = config_from_mapping(
        {
            **BASE,
            "agents": {
                "lookup": "mysql",
                "astguiclient_conf": str(conf),
                "resolvers": ["call_id", "session", "bridge_peer"],
            },
        }
    )
    service = build_service(config)
    assert service.directory.name == "mysql"
    assert all(getattr(r, "server_ip", "10.10.10.15") == "10.10.10.15" for r in service.resolvers)
    assert "Db-S3cret.x" not in service._redactor.text("login failed for Db-S3cret.x")
    with pytest.raises(ConfigError, match="does not exist"):
        build_service(
            config_from_mapping(
                {**BASE, "agents": {"lookup": "mysql", "astguiclient_conf": str(tmp_path / "no")}}
            )
        )


def test_pymysql_is_not_imported_unless_the_mysql_backend_is_used() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from vicirec.config import config_from_mapping\n"
        "from vicirec.runtime import build_service\n"
        f"build_service(config_from_mapping({BASE!r}), daemon=True)\n"
        "print('pymysql' in sys.modules, 'vicirec.agents.mysql_directory' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["False", "False"]
