"""The VICIdial client's retry policy, proved over real HTTP on 127.0.0.1.

* START is retried only when the request provably never reached VICIdial (connection refused,
  name resolution failure, connect timeout): each START that arrives may start one more recording.
* STATUS and STOP (and the lookups) are retried on transient faults while the deadline allows.
* A failed login is never retried: ten failures lock the API user for 15 minutes.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any, Callable

import pytest

from test_retry_server import ScriptedServer, refused_port, saturated_listener
from vicirec.config import Config, config_from_mapping
from vicirec.deadline import Deadline
from vicirec.errors import AuthFailed, BadResponse, ErrorCode, PermissionDenied, Unreachable, VicidialTimeout
from vicirec.vicidial.client import VicidialClient
from vicirec.vicidial.responses import Action, RecordingState

PASSWORD = "s3cr3t-Pa55"
RECORDING = ("NOTICE: recording active - 1000|121242|20120810-012008__1000_|10.10.10.15|2012-08-10 01:20:10|"
             "10.10.10.15|8600051|INCALL\n")
SENT = "SUCCESS: recording function sent - 1000|START_MIDCALL||||10.10.10.15|8600051|INCALL\n"
STOP_SENT = "SUCCESS: recording function sent - 1000|STOP||||10.10.10.15|8600051|INCALL\n"
LOGIN_BAD = (
    f"ERROR: Invalid Username/Password: |6666|{PASSWORD}|0|1|BAD|0|api|SELECT count(*) from vicidial_users "
    f"where user='6666' and pass='{PASSWORD}' and user_level > 0 and active='Y';|\n"
)


def make_config(url: str, **vicidial: Any) -> Config:
    settings = {"api_url": url, "user": "6666", "password": PASSWORD, "connect_timeout": 0.5,
                "read_timeout": 0.5, **vicidial}
    return config_from_mapping({"vicidial": settings})


def client_for(url: str, **vicidial: Any) -> VicidialClient:
    return VicidialClient(make_config(url, **vicidial))


@pytest.fixture
def refused() -> Iterator[str]:
    holder, port = refused_port()
    try:
        yield f"http://127.0.0.1:{port}/agc/api.php"
    finally:
        holder.close()


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    began = time.monotonic()
    try:
        return call(), time.monotonic() - began
    except Exception as error:  # noqa: BLE001 - handed back for the test to assert on
        return error, time.monotonic() - began


# --- the request never left: START is retried too ----------------------------------------------


@pytest.mark.parametrize("action", [Action.START, Action.STOP, Action.STATUS])
def test_connection_refused_is_retried_for_every_action(refused: str, action: Action) -> None:
    client = client_for(refused)
    error, elapsed = timed(lambda: client.recording(action, "1000", Deadline(0.6)))
    assert isinstance(error, Unreachable) and "connection refused" in error.message
    assert client.requests_sent >= 2  # retried (attempts at ~0, 0.05 and 0.25 s when idle)
    assert elapsed < 1.2  # never much beyond the deadline


def test_name_resolution_failure_is_retried_for_start(monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.getaddrinfo
    lookups: list[str] = []

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "vicidial.invalid":  # answered here: no DNS query leaves the machine
            lookups.append(host)
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    client = client_for("http://vicidial.invalid/agc/api.php")
    error, _ = timed(lambda: client.recording(Action.START, "1000", Deadline(0.6)))
    assert isinstance(error, Unreachable) and "does not resolve" in error.message
    assert len(lookups) == client.requests_sent >= 2


def test_connect_timeout_is_retried_for_start() -> None:
    held, port = saturated_listener()
    try:
        client = client_for(f"http://127.0.0.1:{port}/agc/api.php", connect_timeout=0.2)
        error, elapsed = timed(lambda: client.recording(Action.START, "1000", Deadline(0.9)))
        assert isinstance(error, Unreachable) and "did not accept a connection" in error.message
        assert client.requests_sent >= 2
        assert elapsed < 1.6
    finally:
        for sock in held:
            sock.close()


def test_start_goes_through_once_the_port_opens() -> None:
    # Refused first, then a server appears on the same port: START arrives exactly once.
    holder, port = refused_port()
    holder.close()
    client = client_for(f"http://127.0.0.1:{port}/agc/api.php")
    server: list[ScriptedServer] = []

    def open_later(pause: float) -> None:
        time.sleep(pause)
        if not server:
            server.append(ScriptedServer(["ok:" + SENT], port=port))

    client._sleep = open_later  # the back-off pause is where the server comes up
    try:
        reply = client.recording(Action.START, "1000", Deadline(2.0), "_MIDCALL")
        assert reply.state is RecordingState.COMMAND_SENT
        assert server[0].count("START") == 1 and client.requests_sent == 2
    finally:
        for item in server:
            item.close()


# --- the request may have arrived: START is never sent twice -----------------------------------


@pytest.mark.parametrize(
    ("script", "error_type", "code"),
    [
        (["reset", "ok:" + SENT], BadResponse, ErrorCode.BAD_RESPONSE),      # RST after the request
        (["close", "ok:" + SENT], BadResponse, ErrorCode.BAD_RESPONSE),      # FIN, no answer
        (["hang", "ok:" + SENT], VicidialTimeout, ErrorCode.TIMEOUT),        # no answer in time
        (["500", "ok:" + SENT], BadResponse, ErrorCode.BAD_RESPONSE),        # PHP fatal error
    ],
)
def test_start_is_never_sent_twice_once_it_may_have_arrived(
    script: list[str], error_type: type[Exception], code: ErrorCode
) -> None:
    with ScriptedServer(script) as server:
        client = client_for(server.url)
        error, _ = timed(lambda: client.recording(Action.START, "1000", Deadline(3.0), "_CONSENT"))
        assert isinstance(error, error_type) and error.code is code  # type: ignore[attr-defined]
        time.sleep(0.1)  # a second START would have arrived by now
        assert server.count("START") == 1 == client.requests_sent


def test_start_after_broken_connection_says_so() -> None:
    with ScriptedServer(["reset"]) as server:
        error, _ = timed(lambda: client_for(server.url).recording(Action.START, "1000", Deadline(2.0)))
        assert isinstance(error, BadResponse) and "after the request was sent" in error.message


# --- STATUS and STOP: retried on transient faults within the deadline --------------------------


@pytest.mark.parametrize(
    ("action", "script", "answer"),
    [
        (Action.STATUS, ["500", "ok:" + RECORDING], RecordingState.RECORDING),
        (Action.STATUS, ["reset", "ok:" + RECORDING], RecordingState.RECORDING),
        (Action.STATUS, ["close", "close", "ok:" + RECORDING], RecordingState.RECORDING),
        (Action.STATUS, ["hang", "ok:" + RECORDING], RecordingState.RECORDING),
        (Action.STOP, ["reset", "ok:" + STOP_SENT], RecordingState.COMMAND_SENT),
        (Action.STOP, ["500", "ok:" + STOP_SENT], RecordingState.COMMAND_SENT),
    ],
)
def test_status_and_stop_are_retried_after_transient_faults(
    action: Action, script: list[str], answer: RecordingState
) -> None:
    with ScriptedServer(script) as server:
        client = client_for(server.url, read_timeout=0.3)
        reply = client.recording(action, "1000", Deadline(4.0))
        assert reply.state is answer
        assert server.count(action.value) == len(script) == client.requests_sent


def test_retries_stop_at_the_deadline() -> None:
    with ScriptedServer(["500"]) as server:
        client = client_for(server.url)
        error, elapsed = timed(lambda: client.recording(Action.STATUS, "1000", Deadline(1.0)))
        assert isinstance(error, BadResponse) and "HTTP 500" in error.message
        assert 2 <= server.count("STATUS") == client.requests_sent <= 5
        assert elapsed < 1.5


def test_client_errors_are_not_retried() -> None:
    with ScriptedServer(["404", "ok:" + RECORDING]) as server:
        client = client_for(server.url)
        error, _ = timed(lambda: client.recording(Action.STATUS, "1000", Deadline(2.0)))
        assert isinstance(error, BadResponse) and "HTTP 404" in error.message
        assert server.count() == 1


# --- a failed login is sent exactly once --------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.recording(Action.START, "1000", Deadline(3.0), "_CONSENT"),
        lambda c: c.recording(Action.STOP, "1000", Deadline(3.0)),
        lambda c: c.recording(Action.STATUS, "1000", Deadline(3.0)),
        lambda c: c.logged_in_agents(Deadline(3.0)),
        lambda c: c.agent_status("1000", Deadline(3.0)),
    ],
    ids=["start", "stop", "status", "logged_in_agents", "agent_status"],
)
def test_failed_login_is_sent_exactly_once(call: Callable[[VicidialClient], Any]) -> None:
    with ScriptedServer(["ok:" + LOGIN_BAD, "ok:" + RECORDING]) as server:
        client = VicidialClient(make_config(server.url, non_agent_api_url=server.url))
        error, _ = timed(lambda: call(client))
        assert isinstance(error, AuthFailed) and error.code is ErrorCode.AUTH
        time.sleep(0.1)
        assert server.count() == 1 == client.requests_sent
        assert PASSWORD not in error.message and PASSWORD not in (error.raw or "")
        assert server.requests[0]["pass"] == PASSWORD  # it was sent in the form body, not the URL


@pytest.mark.parametrize(("code", "error_type"), [("LOCK", AuthFailed), ("GOOD", PermissionDenied)])
def test_lockout_and_no_api_access_are_not_retried(code: str, error_type: type[Exception]) -> None:
    with ScriptedServer(["ok:" + LOGIN_BAD.replace("|BAD|", f"|{code}|")]) as server:
        client = client_for(server.url)
        error, _ = timed(lambda: client.recording(Action.STATUS, "1000", Deadline(2.0)))
        assert isinstance(error, error_type)
        assert server.count() == 1
