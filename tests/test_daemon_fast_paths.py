"""The daemon's cheaper paths keep the bytes and the semantics of the plain ones.

* the HTTP form is encoded and sent without ``Session.post`` (a prepared request per URL): the same
  request line, headers (in the same order) and body as ``session.post(data=dict(form))``;
* one watchdog thread keeps every request's deadline instead of a ``threading.Timer`` each;
* the reporter sets the variables of a FastAGI session on a selector loop: the same commands, one
  at a time (never a second one before the reply to the first: Asterisk would not see it), the
  same summary event, a half-close and a bounded drain.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest
import requests

from vicirec.asterisk.channel import AgiSession
from vicirec.asterisk.codec import parse_environment
from vicirec.engine import VARIABLE_NAMES, Report
from vicirec.errors import ErrorCode
from vicirec.fastagi.reporter import Reporter
from vicirec.reporting import report_commands
from vicirec.vicidial.client import VicidialClient, Watchdog, _encode_form, make_session

HOST = "127.0.0.1"
FORM = {"source": "vicirec", "user": "6666", "pass": 'p a&s=s+é"\\%', "agent_user": "7000",
        "function": "recording", "value": "START", "stage": "_CONSENT"}


# --- the HTTP form --------------------------------------------------------------------------------


def test_form_body_is_what_requests_makes_of_the_dict() -> None:
    expected = requests.models.RequestEncodingMixin._encode_params(dict(FORM))
    assert _encode_form(FORM) == expected.encode("ascii")


class _Recorder:
    """An HTTP server that keeps every request's bytes (the Host line aside) and answers ``ok``."""

    def __init__(self) -> None:
        self.sock = socket.create_server((HOST, 0))
        self.port = self.sock.getsockname()[1]
        self.requests: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _address = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _sep, body = data.partition(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                while len(body) < length:
                    body += conn.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + body)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    def close(self) -> None:
        self.sock.close()


def _client(session: requests.Session) -> VicidialClient:
    client = VicidialClient.__new__(VicidialClient)  # _send_form needs only these attributes
    client._session = session
    client._templates = {}
    client._verify = True
    return client


@pytest.mark.parametrize("with_cookie", [False, True])
def test_form_request_bytes_match_session_post(with_cookie: bool) -> None:
    server = _Recorder()
    try:
        url = f"http://{HOST}:{server.port}/agc/api.php"
        plain, fast = make_session(), make_session()
        if with_cookie:  # a jar that is not empty takes requests' own path: the cookie goes out
            for session in (plain, fast):
                session.cookies.set("PHPSESSID", "abc", domain=HOST, path="/")
        plain.post(url, data=dict(FORM), timeout=(2, 2), stream=True, allow_redirects=False).close()
        client = _client(fast)
        for _ in range(2):  # the first call prepares the template, the second copies it
            client._send_form(url, FORM, (2.0, 2.0)).close()
        deadline = time.monotonic() + 5
        while len(server.requests) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(server.requests) == 3
        assert server.requests[0] == server.requests[1] == server.requests[2]
        assert (b"Cookie: PHPSESSID=abc" in server.requests[0]) is with_cookie
    finally:
        server.close()


# --- the watchdog ---------------------------------------------------------------------------------


def test_watchdog_fires_on_time_and_never_after_cancel() -> None:
    watchdog = Watchdog()
    fired: list[tuple[str, float]] = []
    now = time.monotonic()
    late = watchdog.arm(now + 0.3, lambda: fired.append(("late", time.monotonic())))
    cancelled = watchdog.arm(now + 0.1, lambda: fired.append(("cancelled", time.monotonic())))
    early = watchdog.arm(now + 0.05, lambda: fired.append(("early", time.monotonic())))  # wakes the thread
    cancelled.cancel()
    time.sleep(0.5)
    assert [name for name, _at in fired] == ["early", "late"]
    assert fired[0][1] >= now + 0.05 and fired[1][1] >= now + 0.3
    assert fired[1][1] < now + 0.45
    early.cancel()  # after firing: harmless
    late.cancel()
    assert watchdog.pending() == 0
    assert watchdog.fired == 2


def test_watchdog_cancel_waits_for_a_running_action() -> None:
    watchdog = Watchdog()
    started, finished = threading.Event(), threading.Event()

    def slow() -> None:
        started.set()
        time.sleep(0.2)
        finished.set()

    guard = watchdog.arm(time.monotonic(), slow)
    assert started.wait(2)
    guard.cancel()
    assert finished.is_set()  # cancel() returned only once the action was over


def test_watchdog_lets_go_of_a_cancelled_action_s_response_at_once() -> None:
    """A cancelled deadline waits in the heap until its time; it must not keep the response (its
    socket and buffers) alive that long: under load that was megabytes of resident memory."""
    import gc
    import weakref

    class Response:
        pass

    response = Response()
    alive = weakref.ref(response)
    guard = Watchdog().arm(time.monotonic() + 60.0, lambda held=response: None)
    del response
    assert alive() is not None
    guard.cancel()
    gc.collect()
    assert alive() is None


def test_watchdog_survives_a_failing_action() -> None:
    watchdog = Watchdog()
    done = threading.Event()

    def boom() -> None:
        raise OSError("gone")

    watchdog.arm(time.monotonic(), boom)
    watchdog.arm(time.monotonic() + 0.05, done.set)
    assert done.wait(2)


# --- the reporter ---------------------------------------------------------------------------------


class _Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))


class _Asterisk(threading.Thread):
    """The far end: answers each command line only once it is whole, checks nothing else is queued
    behind it, then answers ``HANGUP`` and closes when the daemon half-closes."""

    def __init__(self, sock: socket.socket, replies: dict[int, bytes], *, extra_before: bytes = b"") -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.replies = replies
        self.extra_before = extra_before
        self.lines: list[bytes] = []
        self.pipelined = False
        self.saw_eof = False

    def run(self) -> None:
        self.sock.settimeout(5)
        buffer = b""
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    self.saw_eof = True
                    self.sock.sendall(b"HANGUP\n")
                    return
                buffer += data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if buffer:
                        self.pipelined = True
                    self.lines.append(line + b"\n")
                    reply = self.replies.get(len(self.lines), b"200 result=1\n")
                    if self.extra_before and len(self.lines) == 1:
                        reply = self.extra_before + reply
                    self.sock.sendall(reply)
        except OSError:
            return
        finally:
            self.sock.close()


def _run_reporter(replies: dict[int, bytes], *, extra_before: bytes = b""
                  ) -> tuple[_Asterisk, _Log, list[float], AgiSession, Report]:
    daemon_side, asterisk_side = socket.socketpair()
    asterisk = _Asterisk(asterisk_side, replies, extra_before=extra_before)
    asterisk.start()
    environment = parse_environment(b"agi_network: yes\nagi_uniqueid: 1.2\nagi_arg_1: STATUS\n\n")

    class _NoTransport:
        def send(self, data: bytes, deadline: object) -> None:
            raise AssertionError("the reporter does its own I/O")

        def receive(self, deadline: object) -> bytes:
            raise AssertionError("the reporter does its own I/O")

        def close(self) -> None:
            pass

    session = AgiSession(_NoTransport(), environment)
    report = Report(ok=True, action="STATUS", agent="7000", agent_source="argument", recording=True,
                    message='quote " and \\ backslash')
    log = _Log()
    released: list[float] = []
    done = threading.Event()

    def release(conn: socket.socket) -> None:
        assert conn is daemon_side
        released.append(time.monotonic())
        done.set()

    reporter = Reporter()
    reporter.start()
    try:
        reporter.submit(daemon_side, "127.0.0.1", session, report, log, started=time.monotonic(),
                        audited=None, release=release)
        assert done.wait(5)
        asterisk.join(5)
        deadline = time.monotonic() + 2
        while reporter.busy() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert reporter.busy() == 0
    finally:
        reporter.stop()
    assert daemon_side.fileno() == -1  # closed by the reporter
    return asterisk, log, released, session, report


def test_reporter_sets_every_variable_one_command_at_a_time() -> None:
    asterisk, log, released, session, report = _run_reporter({})
    assert asterisk.lines == report_commands(report)
    assert len(asterisk.lines) == len(VARIABLE_NAMES)
    assert not asterisk.pipelined
    assert asterisk.saw_eof  # half-closed after the last reply
    assert len(released) == 1
    [(event, fields)] = log.events
    assert event == "invocation"
    assert fields["transport"] == "fastagi" and fields["variables_set"] is True
    assert fields["audited"] is None and fields["hung_up"] is False
    assert fields["result"] == "OK" and fields["action"] == "STATUS"


def test_reporter_notes_a_hangup_line_between_replies() -> None:
    asterisk, log, _released, session, _report = _run_reporter({}, extra_before=b"HANGUP\n")
    assert len(asterisk.lines) == len(VARIABLE_NAMES)
    assert session.hung_up
    assert log.events[0][1]["hung_up"] is True and log.events[0][1]["variables_set"] is True


def test_reporter_stops_at_a_rejected_command() -> None:
    asterisk, log, released, _session, _report = _run_reporter({3: b"510 Invalid or unknown command\n"})
    assert len(asterisk.lines) == 3  # nothing after the failure, as write_report
    assert log.events[0][1]["variables_set"] is False
    assert len(released) == 1


def test_reporter_ends_when_asterisk_closes() -> None:
    daemon_side, asterisk_side = socket.socketpair()
    asterisk_side.close()
    environment = parse_environment(b"agi_network: yes\nagi_arg_1: START\n\n")
    session = AgiSession(None, environment)  # type: ignore[arg-type]
    log = _Log()
    done = threading.Event()
    reporter = Reporter()
    reporter.start()
    try:
        reporter.submit(daemon_side, "127.0.0.1", session,
                        Report(ok=False, error=ErrorCode.UNREACHABLE, message="x"), log,
                        started=time.monotonic(), audited=False, release=lambda _conn: done.set())
        assert done.wait(5)
    finally:
        reporter.stop()
    assert log.events[0][1]["variables_set"] is False
    assert log.events[0][1]["audited"] is False


def test_reporter_stop_releases_what_is_left() -> None:
    daemon_side, asterisk_side = socket.socketpair()  # the far end never answers
    environment = parse_environment(b"agi_network: yes\nagi_arg_1: START\n\n")
    session = AgiSession(None, environment)  # type: ignore[arg-type]
    released: list[socket.socket] = []
    reporter = Reporter()
    reporter.start()
    reporter.submit(daemon_side, "127.0.0.1", session, Report(ok=True), _Log(), started=time.monotonic(),
                    audited=None, release=released.append)
    time.sleep(0.1)
    assert reporter.busy() == 1
    reporter.stop()
    assert released == [daemon_side]
    asterisk_side.close()


def test_one_write_connection_sends_the_same_bytes_as_urllib3() -> None:
    """make_session's connections hold the head back until the body: same bytes, one send."""
    server = _Recorder()
    try:
        url = f"http://{HOST}:{server.port}/agc/api.php"
        plain = requests.Session()
        plain.trust_env = False
        plain.headers["User-Agent"] = make_session().headers["User-Agent"]
        ours = make_session()
        for session in (plain, ours):
            session.post(url, data=dict(FORM), timeout=(2, 2)).close()
            session.post(url, data=b"", timeout=(2, 2)).close()  # no body: getresponse sends the head
        deadline = time.monotonic() + 5
        while len(server.requests) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.requests[0] == server.requests[2]
        assert server.requests[1] == server.requests[3]
    finally:
        server.close()


def test_one_write_connection_writes_head_and_body_together(monkeypatch: pytest.MonkeyPatch) -> None:
    from vicirec.vicidial import client as client_module

    sent: list[bytes] = []
    original = client_module.urllib3.connection.HTTPConnection.send

    def spy(self: Any, data: Any) -> None:
        sent.append(bytes(data))
        original(self, data)

    monkeypatch.setattr(client_module.urllib3.connection.HTTPConnection, "send", spy)
    server = _Recorder()
    try:
        make_session().post(f"http://{HOST}:{server.port}/x", data=dict(FORM), timeout=(2, 2)).close()
    finally:
        server.close()
    assert len(sent) == 1
    assert sent[0].startswith(b"POST /x HTTP/1.1\r\n") and sent[0].endswith(_encode_form(FORM))
