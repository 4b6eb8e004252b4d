"""The VICIdial simulator over real sockets: life cycle, screen emulation, counters, faults, CLI."""

from __future__ import annotations

import http.client
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Callable, Optional

import pytest

from vicirec.testing.simulator import (
    AGENT_API_PATH,
    FAULT_KINDS,
    NON_AGENT_API_PATH,
    Fault,
    VicidialSimulator,
    cut_stage,
    php_compare_int,
)

RESULT_LINE = re.compile(rb"^(SUCCESS|NOTICE|ERROR): ", re.MULTILINE)
AUTH = {"source": "test", "user": "6666", "pass": "1234"}


class FakeClock:
    def __init__(self, now: float = 1_795_458_798.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[VicidialSimulator]:
    with VicidialSimulator(screen_delay=None) as sim:
        yield sim


@pytest.fixture
def sim(shared_sim: VicidialSimulator) -> VicidialSimulator:
    shared_sim.reset()
    return shared_sim


def query(**params: str) -> str:
    return urllib.parse.urlencode({**AUTH, **params})


def request(
    sim: VicidialSimulator,
    method: str = "GET",
    path: str = AGENT_API_PATH,
    params: Optional[str] = None,
    body: Optional[str] = None,
    timeout: float = 5.0,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if body is not None else {}
        target = path + ("?" + params if params is not None else "")
        conn.request(method, target, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def recording(sim: VicidialSimulator, value: str, agent_user: str = "1000", **extra: str) -> bytes:
    status, _headers, body = request(
        sim, params=query(function="recording", value=value, agent_user=agent_user, **extra)
    )
    assert status == 200
    return body


def external_recording(sim: VicidialSimulator, user: str) -> str:
    """external_recording of the agent's first row; call it with the state lock held (wait_until)."""
    return sim.state.live_agents[user][0].external_recording


def confirmed(sim: VicidialSimulator, user: str) -> Callable[[], bool]:
    """Predicate for wait_until: the screen turned the pending START into a recording id."""
    return lambda: external_recording(sim, user).isdigit() is True


def raw_exchange(
    sim: VicidialSimulator, params: str, timeout: float
) -> tuple[bytes, Optional[BaseException]]:
    """Send one GET on a raw socket; return what arrived and the error that ended reading (None: EOF)."""
    data = bytearray()
    with socket.create_connection(("127.0.0.1", sim.port), timeout=timeout) as sock:
        sock.sendall(f"GET {AGENT_API_PATH}?{params} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except OSError as exc:  # socket.timeout is an OSError too
                return bytes(data), exc
            if not chunk:
                return bytes(data), None
            data += chunk
    raise AssertionError("raw_exchange did not finish")


def split_response(raw: bytes) -> tuple[dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return headers, body


# --- pure helpers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "expected"),
    [
        (b"_MIDCALL", b"_MIDCALL"),
        (b"_ABCDEFGHIJKLMN", b"_ABCDEFGHIJKLM"),
        (b"_ABCDEFGHIJKLMNOPQRST\n", b"_ABCDEFGHIJKL\n"),
        (b"AAAAAAAAAAAAAAA\nB", b"AAAAAAAAAAAAA\n"),
        (b"_ABCDEFGHIJKLMNOP\n\n", None),
        (b"\xe2\x9c\x93" * 5, b"\xe2\x9c\x93" * 4 + b"\xe2\x9c"),
    ],
)
def test_cut_stage_is_bytewise_like_php(stage: bytes, expected: Optional[bytes]) -> None:
    assert cut_stage(stage) == expected


@pytest.mark.parametrize(
    ("text", "number", "expected"),
    [
        (b"121242", 0, 1),
        (b"", 0, -1),
        (b"", 1, -1),
        (b"START_MIDCALL", 0, 1),
        (b"START", 1, 1),
        (b"STOP", 1, 1),
        (b"0", 1, -1),
        (b" 12 ", 0, 1),
        (b"-abc", 0, -1),
    ],
)
def test_php8_string_number_comparison(text: bytes, number: int, expected: int) -> None:
    assert php_compare_int(text, number) == expected


def test_fault_validation() -> None:
    with pytest.raises(ValueError):
        Fault("nope")
    with pytest.raises(ValueError):
        Fault("hang", count=0)
    with pytest.raises(ValueError):
        Fault("slow", delay=-1)


# --- life cycle --------------------------------------------------------------------------------------


def test_life_cycle_over_http() -> None:
    with VicidialSimulator(screen_delay=0.3) as sim:
        assert recording(sim, "START", stage="_MIDCALL") == (
            b"SUCCESS: recording function sent - 1000|START_MIDCALL||||10.10.10.15|8600051|INCALL\n"
        )
        # pending: PHP 8 reports the command itself as the "recording id"
        assert recording(sim, "STATUS") == (
            b"NOTICE: recording active - 1000|START_MIDCALL||||10.10.10.15|8600051|INCALL\n"
        )
        assert sim.state.wait_until(confirmed(sim, "1000"), 3)
        status = recording(sim, "STATUS")
        match = re.fullmatch(
            rb"NOTICE: recording active - 1000\|121242\|(\d{8}-\d{6}_1000_MIDCALL)\|10\.10\.10\.15\|"
            rb"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\|10\.10\.10\.15\|8600051\|INCALL\n",
            status,
        )
        assert match, status

        # START again: never de-duplicated; STATUS shows the newest only
        assert recording(sim, "START", stage="_2ND").startswith(
            b"SUCCESS: recording function sent - 1000|START_2ND|"
        )
        assert sim.state.wait_until(lambda: external_recording(sim, "1000") == "121243", 3)
        assert b"|121243|" in recording(sim, "STATUS") and b"_1000_2ND|" in recording(sim, "STATUS")
        assert [r.recording_id for r in sim.state.open_recordings("1000")] == [121242, 121243]

        assert (
            recording(sim, "STOP")
            == b"SUCCESS: recording function sent - 1000|STOP||||10.10.10.15|8600051|INCALL\n"
        )
        # stop pending: a second STOP tells, STATUS cannot
        assert recording(sim, "STATUS") == b"NOTICE: not recording - 1000|||||10.10.10.15|8600051|INCALL\n"
        assert recording(sim, "STOP").startswith(b"ERROR: stop recording error - 1000|STOP|")
        assert sim.state.wait_until(lambda: external_recording(sim, "1000") == "", 3)
        assert (
            recording(sim, "STOP") == b"ERROR: stop recording error - 1000|||||10.10.10.15|8600051|INCALL\n"
        )
        assert sim.state.open_recordings("1000") == []
        assert all(r.end_time is not None for r in sim.state.recordings_for("1000"))
        assert sim.starts_for("1000") == 2


def test_screen_disabled_leaves_commands_pending(sim: VicidialSimulator) -> None:
    recording(sim, "START", stage="_X")
    assert not sim.state.wait_until(lambda: external_recording(sim, "1000") != "START_X", 0.2)
    assert sim.run_screen("1000") == 1
    agent = sim.state.agent("1000")
    assert agent is not None and agent.external_recording == "121242"
    assert sim.state.recordings_for("1000")[0].filename.endswith("_1000_X")
    assert sim.run_screen() == 0  # nothing pending any more


def test_screen_filename_keeps_only_safe_characters(sim: VicidialSimulator) -> None:
    for stage, suffix in (
        ("_a|b|c", "_a"),
        ("_consent ok ye", "_consentokye"),
        ("_ñandú", "_and"),
        ("_a&b=c", "_a"),
    ):
        sim.state.set_external_recording("1000", "START" + stage)
        sim.run_screen("1000")
        assert sim.state.recordings_for("1000")[-1].filename.endswith("_1000" + suffix), stage


def test_screen_acts_even_while_commands_keep_coming() -> None:
    with VicidialSimulator(screen_delay=0.1) as sim:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not sim.state.recordings_for("1000"):
            assert recording(sim, "START").startswith(b"SUCCESS: ")
        assert sim.state.recordings_for("1000"), "the emulated screen never polled"


def test_set_external_recording_triggers_the_screen() -> None:
    with VicidialSimulator(screen_delay=0.05) as sim:
        sim.state.set_external_recording("1001", "START_HELPER")
        assert sim.state.wait_until(confirmed(sim, "1001"), 3)
        sim.state.set_external_recording("1001", "STOP")
        assert sim.state.wait_until(lambda: external_recording(sim, "1001") == "", 3)


def test_log_in_and_out(sim: VicidialSimulator) -> None:
    assert recording(sim, "STATUS", agent_user="1003") == b"ERROR: agent_user is not logged in - 1003\n"
    sim.state.log_in_agent(
        "1003", conf_exten="8600054", extension="SIP/1003", status="PAUSED", pause_code="LOGIN"
    )
    assert (
        recording(sim, "STATUS", agent_user="1003")
        == b"NOTICE: not recording - 1003|||||10.10.10.15|8600054|PAUSED\n"
    )
    assert sim.state.log_out_agent("1002")
    assert recording(sim, "STATUS", agent_user="1002") == b"ERROR: agent_user is not logged in - 1002\n"
    _status, _headers, body = request(sim, path=NON_AGENT_API_PATH, params=query(function="logged_in_agents"))
    assert [line.split(b"|")[0] for line in body.splitlines()] == [b"1000", b"1001", b"1003"]
    assert body.splitlines()[-1] == b"1003|TESTCAMP|8600054|PAUSED|0||0|Agent 1003|AGENTS|1"


# --- login, lock, flags ---------------------------------------------------------------------------


def test_failed_login_lock_expires_after_15_minutes() -> None:
    clock = FakeClock()
    with VicidialSimulator(screen_delay=None, clock=clock) as sim:
        user = sim.state.user("6666")
        assert user is not None
        user.last_login_date = int(clock.now)  # logged in to a GUI just now
        for _ in range(10):
            assert b"|BAD|0|api|" in recording(sim, "STATUS", **{"pass": "wrong"})
        assert recording(sim, "STATUS") == b"ERROR: Invalid Username/Password: |6666|1234|0|1|LOCK|\n"
        clock.now += 901
        assert recording(sim, "STATUS").startswith(b"NOTICE: not recording - 1000|")
        assert user.failed_login_count == 10  # api.php never resets the count on success


def test_strict_sql_mode_and_ip_lists(sim: VicidialSimulator) -> None:
    sim.state.flags.strict_sql_mode = True
    status, _headers, body = request(
        sim,
        params=query(function="recording", value="START", agent_user="1000", stage="_ABCDEFGHIJKLM" + "X"),
    )
    assert (status, body) == (
        200,
        b"SUCCESS: recording function sent - 1000|START_ABCDEFGHIJKLM||||10.10.10.15|8600051|INCALL\n",
    )
    status, _headers, body = request(
        sim, params=query(function="recording", value="XXSTARTXXXXXXXX", agent_user="1000", stage="_ABCDEFGH")
    )
    assert (status, body) == (500, b"")
    sim.state.restrict_api_ips(["10.0.0.5"])
    assert recording(sim, "STATUS") == b"ERROR: Invalid Username/Password: |6666|1234|0|1|IPBLOCK|\n"
    sim.state.restrict_api_ips(["127.0.0.1"])
    assert recording(sim, "STATUS").startswith(b"NOTICE: recording active - 1000|START_ABCDEFGHIJKLM||||")


# --- transport ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"function": "recording", "value": "STATUS", "agent_user": "1000"},
        {"function": "recording", "value": "START", "agent_user": "1001", "stage": "_POSTED"},
        {"function": "recording", "value": "STATUS", "agent_user": "1000", "pass": "wrong"},
        {"function": "version"},
    ],
)
def test_post_form_body_answers_like_get(sim: VicidialSimulator, params: dict[str, str]) -> None:
    via_get = request(sim, params=query(**params))
    sim.reset()
    via_post = request(sim, method="POST", body=query(**params))
    assert via_get[0] == via_post[0] == 200
    assert via_get[2] == via_post[2]


def test_get_wins_over_post_and_post_needs_a_form_content_type(sim: VicidialSimulator) -> None:
    _status, _headers, body = request(
        sim,
        method="POST",
        params=query(function="recording", value="STATUS", agent_user="1000"),
        body="value=START",
    )
    assert body.startswith(b"NOTICE: not recording")
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=5)
    conn.request("POST", AGENT_API_PATH, body=query(function="recording", value="STATUS", agent_user="1000"))
    assert conn.getresponse().read() == b"ERROR: Invalid Source - \n"  # PHP leaves $_POST empty
    conn.close()


def test_counters_and_request_records(sim: VicidialSimulator) -> None:
    recording(sim, "START", stage="_A")
    recording(sim, "START", agent_user="1003")  # not logged in: not accepted
    recording(sim, "START", **{"pass": "wrong"})  # login fails: not accepted
    recording(sim, "STATUS")
    recording(sim, "STOP", agent_user="1002")  # nothing to stop: not accepted, not a START anyway
    assert sim.count(function="recording") == 5
    assert sim.count(value="START") == 3
    assert sim.count(value="START", agent_user="1000") == 2
    assert sim.count(path=NON_AGENT_API_PATH) == 0
    assert sim.starts_for("1000") == 1 and sim.starts_for("1003") == 0
    assert all(r.params.get("pass") == "<redacted>" for r in sim.requests)
    assert sim.requests[0].method == "GET" and sim.requests[0].path == AGENT_API_PATH
    assert sim.requests[0].fault is None and sim.requests[0].params["stage"] == "_A"
    sim.reset_counters()
    assert sim.count() == 0 and sim.starts_for("1000") == 0


def test_keep_alive_mode_reuses_connections() -> None:
    with VicidialSimulator(screen_delay=None, keep_alive=True) as sim:
        conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=5)
        sockets = []
        for value in ("STATUS", "START", "STATUS"):
            conn.request(
                "GET", AGENT_API_PATH + "?" + query(function="recording", value=value, agent_user="1000")
            )
            response = conn.getresponse()
            body = response.read()
            assert response.getheader("Content-Length") == str(len(body))
            assert response.getheader("Connection") is None
            assert RESULT_LINE.match(body)
            sockets.append(conn.sock)
        assert sockets[0] is not None and sockets[0] is sockets[1] is sockets[2]
        conn.request("GET", AGENT_API_PATH + "?" + query(function="version"), headers={"Connection": "close"})
        response = conn.getresponse()
        assert response.getheader("Connection") == "close"
        assert response.read().startswith(b"VERSION: 2.14-81|")
        conn.close()


def test_default_mode_closes_without_content_length(sim: VicidialSimulator) -> None:
    raw, error = raw_exchange(sim, query(function="version"), timeout=5)
    assert error is None
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    headers, body = split_response(raw)
    assert "Content-Length" not in headers and headers["Connection"] == "close"
    assert body.startswith(b"VERSION: 2.14-81|BUILD: 240429-2220|DATE: ")


# --- faults ---------------------------------------------------------------------------------------------

START = query(function="recording", value="START", agent_user="1000")
START_LINE = b"SUCCESS: recording function sent - 1000|START||||10.10.10.15|8600051|INCALL\n"


def assert_untouched(sim: VicidialSimulator, kind: str) -> None:
    agent = sim.state.agent("1000")
    assert agent is not None and agent.external_recording == "", kind
    assert sim.starts_for("1000") == 0
    assert [r.fault for r in sim.requests] == [kind]


def test_fault_hang(sim: VicidialSimulator) -> None:
    sim.inject(Fault("hang", count=1))
    data, error = raw_exchange(sim, START, timeout=0.3)
    assert data == b"" and isinstance(error, socket.timeout)
    assert_untouched(sim, "hang")
    assert recording(sim, "STATUS").startswith(b"NOTICE: not recording")  # count=1: used up


def test_fault_stall_body(sim: VicidialSimulator) -> None:
    sim.inject(Fault("stall_body", count=1))
    data, error = raw_exchange(sim, START, timeout=0.3)
    assert isinstance(error, socket.timeout)
    headers, body = split_response(data)
    assert int(headers["Content-Length"]) == len(START_LINE) > len(body) > 0
    assert START_LINE.startswith(body)
    assert_untouched(sim, "stall_body")


@pytest.mark.parametrize(
    ("kind", "status"), [("http500_empty", 500), ("empty200", 200), ("proxy502_html", 502)]
)
def test_fault_canned_answers(sim: VicidialSimulator, kind: str, status: int) -> None:
    sim.inject(Fault(kind, count=1))
    got_status, headers, body = request(sim, params=START)
    assert got_status == status
    if kind == "proxy502_html":
        assert b"<h1>502 Bad Gateway</h1>" in body and headers["Server"].startswith("nginx")
    else:
        assert body == b"" and headers["X-Powered-By"] == "PHP/8.2.36"
    assert_untouched(sim, kind)


@pytest.mark.parametrize("kind", ["garbage200", "invalid_utf8"])
def test_fault_no_result_line(sim: VicidialSimulator, kind: str) -> None:
    sim.inject(Fault(kind, count=1))
    status, _headers, body = request(sim, params=START)
    assert status == 200 and body and not RESULT_LINE.search(body)
    if kind == "invalid_utf8":
        assert body.startswith(b"\xff\xfe")
        with pytest.raises(UnicodeDecodeError):
            body.decode("utf-8")
    assert_untouched(sim, kind)


def test_fault_cut_mid_line(sim: VicidialSimulator) -> None:
    sim.inject(Fault("cut_mid_line", count=2))
    data, error = raw_exchange(sim, START, timeout=5)
    assert error is None  # orderly close
    headers, body = split_response(data)
    assert body == START_LINE[: len(START_LINE) // 2]
    assert int(headers["Content-Length"]) > len(body)
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=5)
    conn.request("GET", AGENT_API_PATH + "?" + START)
    with pytest.raises(http.client.IncompleteRead):
        conn.getresponse().read()
    conn.close()
    agent = sim.state.agent("1000")
    assert agent is not None and agent.external_recording == ""
    assert [r.fault for r in sim.requests] == ["cut_mid_line", "cut_mid_line"]


def test_fault_reset_mid_body(sim: VicidialSimulator) -> None:
    sim.inject(Fault("reset_mid_body", count=1))
    data, error = raw_exchange(sim, START, timeout=5)
    assert isinstance(error, ConnectionResetError), (data, error)
    assert_untouched(sim, "reset_mid_body")


def test_fault_php_warnings_does_the_real_action(sim: VicidialSimulator) -> None:
    sim.inject(Fault("php_warnings", count=1))
    status, _headers, body = request(sim, params=START)
    assert status == 200
    lines = body.split(b"\n")
    assert lines[0] == b"<br />" and lines[1].startswith(b"<b>Warning</b>:  Undefined variable $x in <b>")
    assert b"/srv/www/htdocs/agc/api.php" in lines[1]
    assert START_LINE in body and not body.startswith(START_LINE) and not body.endswith(START_LINE)
    assert [m.group() for m in RESULT_LINE.finditer(body)] == [b"SUCCESS: "]
    agent = sim.state.agent("1000")
    assert agent is not None and agent.external_recording == "START"


def test_fault_huge_body_does_the_real_action(sim: VicidialSimulator) -> None:
    sim.inject(Fault("huge_body", count=1))
    status, _headers, body = request(sim, params=START)
    assert status == 200 and len(body) > 3_000_000
    assert body.endswith(START_LINE)
    assert len(RESULT_LINE.findall(body)) == 1
    assert sim.starts_for("1000") == 1


def test_fault_slow_does_the_real_action(sim: VicidialSimulator) -> None:
    sim.inject(Fault("slow", count=1, delay=0.2))
    started = time.monotonic()
    status, _headers, body = request(sim, params=START)
    assert time.monotonic() - started >= 0.2
    assert (status, body) == (200, START_LINE)
    assert sim.starts_for("1000") == 1 and sim.requests[0].fault == "slow"


def test_fault_login_echo(sim: VicidialSimulator) -> None:
    sim.inject(Fault("login_echo", count=1))
    status, _headers, body = request(sim, params=START)
    assert status == 200
    assert body.startswith(b"ERROR: Invalid Username/Password: |6666|1234|0|1|BAD|0|api|SELECT count(*) ")
    assert b"user='6666' and pass='1234'" in body and body.endswith(b");|\n")
    assert_untouched(sim, "login_echo")
    user = sim.state.user("6666")
    assert user is not None and user.failed_login_count == 0


def test_every_fault_kind_is_tested() -> None:
    tested = {
        "hang", "stall_body", "http500_empty", "empty200", "proxy502_html", "garbage200", "invalid_utf8",
        "cut_mid_line", "reset_mid_body", "php_warnings", "huge_body", "slow", "login_echo",
    }  # fmt: skip
    assert tested == FAULT_KINDS


def test_fault_matching_and_counts(sim: VicidialSimulator) -> None:
    sim.inject(Fault("http500_empty", count=2, function="recording", value="START"))
    assert recording(sim, "STATUS").startswith(b"NOTICE:")  # does not match: not consumed
    assert request(sim, params=START)[0] == 500
    assert request(sim, params=START)[0] == 500
    assert request(sim, params=START)[2] == START_LINE  # used up
    sim.inject(Fault("empty200", path=NON_AGENT_API_PATH))  # every matching request until cleared
    for _ in range(3):
        assert request(sim, path=NON_AGENT_API_PATH, params=query(function="logged_in_agents"))[2] == b""
    assert recording(sim, "STATUS").startswith(b"NOTICE:")
    sim.clear_faults()
    assert request(sim, path=NON_AGENT_API_PATH, params=query(function="logged_in_agents"))[2].startswith(
        b"1000|"
    )
    assert [r.fault for r in sim.requests].count("http500_empty") == 2


def test_stop_releases_a_hung_request() -> None:
    sim = VicidialSimulator(screen_delay=0.5).start()
    sim.inject(Fault("hang"))
    outcome: list[tuple[bytes, Optional[BaseException]]] = []

    def client() -> None:
        outcome.append(raw_exchange(sim, START, timeout=10))

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    assert sim.state.wait_until(lambda: len(sim.requests) == 1, 5)
    started = time.monotonic()
    sim.stop()
    assert time.monotonic() - started < 3
    thread.join(timeout=5)
    assert not thread.is_alive() and outcome
    data, _error = outcome[0]
    assert data == b""


def test_unknown_path_is_404(sim: VicidialSimulator) -> None:
    status, _headers, body = request(sim, path="/agc/nothing.php", params="x=1")
    assert status == 404 and b"Not Found" in body
    assert sim.requests[-1].path == "/agc/nothing.php"


# --- command line ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_main_serves_until_sigterm() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vicirec.testing.simulator", "--port", str(port), "--screen-delay", "0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(proc.stdout, selectors.EVENT_READ)
        assert selector.select(timeout=15), "no output from the simulator"
        line = proc.stdout.readline()
        expected = (
            f"vicidial simulator listening on http://127.0.0.1:{port} (API user 6666, agents 1000-1002)\n"
        )
        assert line == expected.encode()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request(
            "GET", AGENT_API_PATH + "?" + query(function="recording", value="STATUS", agent_user="1000")
        )
        assert conn.getresponse().read() == b"NOTICE: not recording - 1000|||||10.10.10.15|8600051|INCALL\n"
        conn.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
