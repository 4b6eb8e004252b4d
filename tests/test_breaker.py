"""The circuit breaker: pure state machine under a fake clock, then wired into the VICIdial client
against a refused port, a hanging server and the VICIdial simulator (all on 127.0.0.1)."""

from __future__ import annotations

import threading
import time
from typing import Any, Optional

import pytest

from test_retry_server import ScriptedServer, refused_port
from vicirec.config import config_from_mapping
from vicirec.deadline import Deadline
from vicirec.errors import AuthFailed, BadResponse, NoAgent, Unreachable, VicidialTimeout
from vicirec.testing.simulator import VicidialSimulator
from vicirec.vicidial.breaker import BreakerState, CircuitBreaker, Permit
from vicirec.vicidial.client import VicidialClient
from vicirec.vicidial.responses import Action, RecordingState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def down() -> Unreachable:
    return Unreachable("cannot connect to VICIdial: connection refused")


def fail(breaker: CircuitBreaker, times: int = 1, error: Optional[Exception] = None) -> None:
    for _ in range(times):
        breaker.report(breaker.acquire(), error or down())


def refused_by_breaker(breaker: CircuitBreaker) -> str:
    with pytest.raises(Unreachable) as caught:
        breaker.acquire()
    return caught.value.message


# --- the state machine ----------------------------------------------------------------------------


def test_opens_after_threshold_failures_in_a_row_and_answers_fast() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=5, cool_down=5.0, clock=clock)
    fail(breaker, 4)
    assert breaker.snapshot().state is BreakerState.CLOSED and breaker.snapshot().consecutive_failures == 4
    fail(breaker, 1, VicidialTimeout("VICIdial did not answer within 3.0 s"))  # timeouts count too
    assert breaker.snapshot().state is BreakerState.OPEN
    assert refused_by_breaker(breaker) == "VICIdial unreachable; not retrying for 5.0 s"
    clock.now += 3.2
    assert refused_by_breaker(breaker) == "VICIdial unreachable; not retrying for 1.8 s"
    assert breaker.snapshot().retry_in == pytest.approx(1.8)


def test_any_answer_from_vicidial_resets_the_count() -> None:
    breaker = CircuitBreaker(failure_threshold=3, clock=Clock())
    answers = (None, BadResponse("VICIdial answered HTTP 500"), AuthFailed("bad password"), NoAgent("x"))
    for answered in answers:
        fail(breaker, 2)
        breaker.report(breaker.acquire(), answered)
        assert breaker.snapshot().consecutive_failures == 0
    fail(breaker, 2)
    assert breaker.snapshot().state is BreakerState.CLOSED


def test_half_open_lets_exactly_one_probe_through_and_closes_on_success() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=2, cool_down=5.0, clock=clock)
    fail(breaker, 2)
    clock.now += 5.0
    assert breaker.snapshot().state is BreakerState.HALF_OPEN  # the next request will probe
    probe = breaker.acquire()
    assert probe.probe
    assert "probe in flight" in refused_by_breaker(breaker)
    breaker.report(probe, None)
    assert breaker.snapshot().state is BreakerState.CLOSED
    assert breaker.acquire() == Permit(probe=False)


def test_failed_probe_opens_for_another_cool_down() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=2, cool_down=5.0, clock=clock)
    fail(breaker, 2)
    clock.now += 6.0
    breaker.report(breaker.acquire(), down())
    assert breaker.snapshot().state is BreakerState.OPEN
    assert refused_by_breaker(breaker) == "VICIdial unreachable; not retrying for 5.0 s"
    clock.now += 5.0
    assert breaker.acquire().probe


def test_released_or_lost_probe_does_not_wedge_the_breaker() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, cool_down=1.0, clock=clock, probe_timeout=30.0)
    fail(breaker)
    clock.now += 1.0
    breaker.release(breaker.acquire())  # e.g. no time was left to send it
    lost = breaker.acquire()  # this probe never reports back
    assert lost.probe
    clock.now += 29.0
    refused_by_breaker(breaker)
    clock.now += 1.0
    assert breaker.acquire().probe


def test_a_bug_is_not_a_failure() -> None:
    breaker = CircuitBreaker(failure_threshold=1, clock=Clock())
    breaker.report(breaker.acquire(), RuntimeError("bug"))
    assert breaker.snapshot().state is BreakerState.CLOSED and breaker.snapshot().consecutive_failures == 0


def test_late_answers_do_not_close_an_open_breaker() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, cool_down=5.0, clock=clock)
    early = breaker.acquire()  # sent before the breaker opened
    fail(breaker)
    breaker.report(early, None)
    assert breaker.snapshot().state is BreakerState.OPEN


def test_threshold_zero_never_opens_and_bad_parameters_are_refused() -> None:
    breaker = CircuitBreaker(failure_threshold=0, clock=Clock())
    fail(breaker, 100)
    assert breaker.snapshot().state is BreakerState.CLOSED
    for kwargs in ({"failure_threshold": -1}, {"cool_down": -1.0}, {"probe_timeout": 0.0}):
        with pytest.raises(ValueError):
            CircuitBreaker(**kwargs)


def test_state_changes_are_reported() -> None:
    clock = Clock()
    changes: list[tuple[str, str, str]] = []
    breaker = CircuitBreaker(failure_threshold=2, cool_down=1.0, clock=clock,
                             on_change=lambda old, new, why: changes.append((str(old), str(new), why)))
    fail(breaker, 2)
    clock.now += 1.0
    breaker.report(breaker.acquire(), None)
    assert changes == [
        ("closed", "open", "2 failures in a row"),
        ("open", "half-open", "cool-down over; probing"),
        ("half-open", "closed", "probe answered"),
    ]


def test_concurrent_failures_are_all_counted() -> None:
    breaker = CircuitBreaker(failure_threshold=10_000, clock=Clock())
    start = threading.Barrier(8)

    def work() -> None:
        start.wait()
        fail(breaker, 250)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert breaker.snapshot().consecutive_failures == 2000


def test_only_one_of_many_concurrent_callers_probes() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, cool_down=1.0, clock=clock)
    fail(breaker)
    clock.now += 1.0
    start = threading.Barrier(16)
    permits: list[Permit] = []
    refused: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        start.wait()
        try:
            permit = breaker.acquire()
        except Unreachable as error:
            with lock:
                refused.append(error.message)
        else:
            with lock:
                permits.append(permit)

    threads = [threading.Thread(target=work) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert permits == [Permit(probe=True)] and len(refused) == 15


# --- in the client ----------------------------------------------------------------------------------


def client_for(url: str, breaker: CircuitBreaker, **vicidial: Any) -> VicidialClient:
    settings = {"api_url": url, "non_agent_api_url": url.replace("agc/api.php", "vicidial/non_agent_api.php"),
                "user": "6666", "password": "1234", "connect_timeout": 0.5, "read_timeout": 0.5, **vicidial}
    return VicidialClient(config_from_mapping({"vicidial": settings}), breaker=breaker)


def test_client_stops_hammering_a_refused_port() -> None:
    holder, port = refused_port()
    try:
        breaker = CircuitBreaker(failure_threshold=3, cool_down=30.0)
        client = client_for(f"http://127.0.0.1:{port}/agc/api.php", breaker)
        with pytest.raises(Unreachable, match="connection refused"):
            client.recording(Action.STATUS, "1000", Deadline(3.0))
        assert client.requests_sent == 2  # a refused connect is tried once more, not until the deadline
        with pytest.raises(Unreachable) as first:
            client.recording(Action.STATUS, "1000", Deadline(3.0))
        assert client.requests_sent == 3  # the 4th attempt met the open breaker
        assert first.value.message.startswith("VICIdial unreachable; not retrying for ")
        began = time.monotonic()
        for action in (Action.START, Action.STOP, Action.STATUS):
            with pytest.raises(Unreachable) as fast:
                client.recording(action, "1000", Deadline(3.0))
            assert "not retrying for" in fast.value.message
        assert time.monotonic() - began < 0.25  # no connect, no back-off: answered on the spot
        assert client.requests_sent == 3
    finally:
        holder.close()


def test_timeouts_open_the_breaker_and_a_no_time_left_call_does_not_count() -> None:
    breaker = CircuitBreaker(failure_threshold=2, cool_down=30.0)
    with ScriptedServer(["hang"]) as server:
        client = client_for(server.url, breaker, read_timeout=0.2)
        with pytest.raises(VicidialTimeout):
            client.recording(Action.STATUS, "1000", Deadline(0.0))  # never attempted
        assert breaker.snapshot().consecutive_failures == 0 and client.requests_sent == 0
        with pytest.raises(VicidialTimeout):
            client.recording(Action.START, "1000", Deadline(2.0))  # sent: never retried
        with pytest.raises(VicidialTimeout):
            client.recording(Action.STATUS, "1000", Deadline(0.3))
        assert breaker.snapshot().state is BreakerState.OPEN and server.count() == 2


def test_breaker_recovers_when_vicidial_comes_back() -> None:
    clock = Clock()
    holder, port = refused_port()
    breaker = CircuitBreaker(failure_threshold=2, cool_down=5.0, clock=clock)
    client = client_for(f"http://127.0.0.1:{port}/agc/api.php", breaker)
    with pytest.raises(Unreachable):
        client.recording(Action.STATUS, "1000", Deadline(2.0))
    assert breaker.snapshot().state is BreakerState.OPEN
    holder.close()
    with VicidialSimulator(port=port, screen_delay=0.05) as sim:
        # Up again, but the cool-down is not over: nothing is sent, and a START is safely refused.
        with pytest.raises(Unreachable):
            client.recording(Action.START, "1000", Deadline(2.0), "_CONSENT")
        assert sim.count() == 0 and sim.starts_for("1000") == 0
        clock.now += 5.0
        reply = client.recording(Action.STATUS, "1000", Deadline(2.0))  # the probe
        assert reply.state is RecordingState.NOT_RECORDING
        assert breaker.snapshot().state is BreakerState.CLOSED
        client.recording(Action.START, "1000", Deadline(2.0), "_CONSENT")
        assert sim.count() == 2 and sim.starts_for("1000") == 1


def test_auth_failures_do_not_open_the_breaker() -> None:
    breaker = CircuitBreaker(failure_threshold=2, cool_down=30.0)
    with VicidialSimulator(screen_delay=None) as sim:
        client = client_for(sim.api_url, breaker, password="wrong")
        for _ in range(3):
            with pytest.raises(AuthFailed):
                client.recording(Action.STATUS, "1000", Deadline(2.0))
        assert breaker.snapshot().state is BreakerState.CLOSED and sim.count() == 3


def test_many_sessions_against_a_dead_vicidial_send_few_requests() -> None:
    holder, port = refused_port()
    try:
        breaker = CircuitBreaker(failure_threshold=5, cool_down=30.0)
        client = client_for(f"http://127.0.0.1:{port}/agc/api.php", breaker)
        errors: list[BaseException] = []
        lock = threading.Lock()
        start = threading.Barrier(8)

        def session() -> None:
            start.wait()
            for _ in range(5):
                try:
                    client.recording(Action.STATUS, "1000", Deadline(2.0))
                except Unreachable as error:
                    with lock:
                        errors.append(error)

        threads = [threading.Thread(target=session) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
        assert len(errors) == 40
        assert client.requests_sent <= 5 + 8  # the threshold, plus those already in flight
    finally:
        holder.close()
