"""Fault matrix: START, STOP and STATUS against every way VICIdial's web server is seen to
misbehave, through the real process AGI (``vicirec-agi``) and the real FastAGI daemon
(``vicirec serve``), both under the fake Asterisk.

For each fault and action: the variables the dialplan reads, a clean end (exit 0 / daemon up), the
time taken (within ``[call] deadline`` plus a small margin), how many requests VICIdial saw (a START
at most once; STATUS and STOP may be asked again within the deadline) and that the API password is
nowhere outside the HTTP request itself. Every row runs at the same time (faults are chosen per
agent, each action of each row on its own agent), once per transport, so the whole matrix costs
about one deadline plus the process AGIs' start-up CPU; the tests then read the results.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import pytest

from faultlab import (
    DEADLINES,
    MARGIN,
    SECRET,
    TRANSPORTS,
    AgentFaultSimulator,
    EndlessBody,
    Endpoint,
    Once,
    assert_contract,
    assert_no_secret,
    closed_api_url,
    deadline_for,
    fresh_agent,
    give_recording,
    lab_config,
    log_events,
    secure,
    start_endpoint,
)
from vicirec.config import config_from_mapping
from vicirec.deadline import Deadline
from vicirec.errors import Unreachable
from vicirec.testing.fake_asterisk import AgiRun
from vicirec.testing.simulator import Fault
from vicirec.vicidial.client import VicidialClient
from vicirec.vicidial.responses import Action

ACTIONS = ("START", "STOP", "STATUS")
#: The client's back-off between attempts (vicirec.vicidial.client), the last one repeating.
BACKOFF = (0.05, 0.2, 0.5, 1.0)
#: A slow but correct answer "just inside" arrives this long before the caller's deadline (counted
#: from the moment Asterisk starts the AGI, so a slow interpreter start cannot push it outside);
#: "just outside" arrives this long after it.
INSIDE_BY = 0.7
OUTSIDE_BY = 0.5
#: How long hung / stalled simulator requests hold their socket (well past every deadline).
HOLD = max(DEADLINES.values()) + 2.0
#: Process AGIs allowed to be starting at once (each burns ~0.4 s of CPU importing before its first
#: request, and that time counts against its deadline). Runs that have made their first request
#: free their slot, so the waiting rows overlap while start-ups never starve each other.
STARTING_AT_ONCE = max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Case:
    name: str
    kind: Optional[str]  # simulator fault kind; None: connection refused (nothing listens)
    error: Optional[str]  # the VICIREC_ERROR expected; None: success (VICIREC_RESULT=OK)
    delay: float = 0.0  # the fault's delay; for the slow rows computed from the deadline
    waits: bool = False  # takes about a whole deadline: scheduled first


CASES = (
    Case("refused", None, "UNREACHABLE"),
    Case("hang", "hang", "TIMEOUT", HOLD, waits=True),
    Case("stall_body", "stall_body", "TIMEOUT", HOLD, waits=True),
    Case("http500_empty", "http500_empty", "BAD_RESPONSE"),
    Case("proxy502_html", "proxy502_html", "BAD_RESPONSE"),
    Case("empty200", "empty200", "BAD_RESPONSE"),
    Case("garbage200", "garbage200", "BAD_RESPONSE"),
    Case("invalid_utf8", "invalid_utf8", "BAD_RESPONSE"),
    Case("cut_mid_line", "cut_mid_line", "BAD_RESPONSE"),
    Case("reset_mid_body", "reset_mid_body", "BAD_RESPONSE"),
    Case("php_warnings", "php_warnings", None),
    Case("huge_body", "huge_body", "BAD_RESPONSE"),
    Case("login_echo", "login_echo", "AUTH"),
    Case("slow_inside", "slow", None, waits=True),
    Case("slow_outside", "slow", "TIMEOUT", waits=True),
)


def max_attempts(deadline: float) -> int:
    """The most attempts the client's back-off fits into ``deadline`` (plus one for rounding)."""
    attempts, spent = 1, 0.0
    while True:
        pause = BACKOFF[min(attempts - 1, len(BACKOFF) - 1)]
        if spent + pause > deadline:
            return attempts + 1
        spent += pause
        attempts += 1


@dataclass
class Outcome:
    case: Case
    action: str
    agent: str
    endpoint: Endpoint
    run: AgiRun
    recording_id: Optional[int]


class Lab:
    """One simulator for the module; endpoints (configs, daemons) made on first use; the matrix run
    once per transport, all rows at once."""

    def __init__(self, root: Path, sim: AgentFaultSimulator, endless: EndlessBody) -> None:
        self.root = root
        self.sim = sim
        self.endless = endless
        self._endpoints: dict[tuple[str, str], Endpoint] = {}
        self._matrix: dict[str, dict[tuple[str, str], Outcome]] = {}

    def endpoint(self, transport: str, target: str = "sim") -> Endpoint:
        key = (transport, target)
        if key not in self._endpoints:
            urls = {"sim": self.sim.api_url, "endless": self.endless.api_url}
            url = urls[target] if target in urls else closed_api_url()
            config = lab_config(self.root / f"{transport}-{target}", url, deadline=deadline_for(transport))
            self._endpoints[key] = start_endpoint(transport, config)
        return self._endpoints[key]

    def close(self) -> None:
        for endpoint in self._endpoints.values():
            if endpoint.daemon is not None:
                endpoint.daemon.stop()

    def matrix(self, transport: str) -> dict[tuple[str, str], Outcome]:
        if transport not in self._matrix:
            self._matrix[transport] = self._run_matrix(transport)
        return self._matrix[transport]

    def _run_matrix(self, transport: str) -> dict[tuple[str, str], Outcome]:
        jobs: list[tuple[Case, str, str, Endpoint, Optional[int]]] = []
        for case in sorted(CASES, key=lambda c: not c.waits):
            endpoint = self.endpoint(transport, "refused" if case.kind is None else "sim")
            for action in ACTIONS:
                agent = fresh_agent(self.sim)
                recording_id = give_recording(self.sim, agent) if action != "START" else None
                jobs.append((case, action, agent, endpoint, recording_id))
        launched: dict[str, float] = {}
        for case, _action, agent, _endpoint, _id in jobs:
            if case.kind is not None:
                self.sim.plans[agent] = self._plan(case, agent, launched, deadline_for(transport))

        starting = threading.Semaphore(STARTING_AT_ONCE if transport == "process" else len(jobs))

        def run(job: tuple[Case, str, str, Endpoint, Optional[int]]) -> Outcome:
            case, action, agent, endpoint, recording_id = job
            starting.acquire()
            started = Once(starting.release)
            self.sim.on_request[agent] = started
            try:
                launched[agent] = time.monotonic()
                run = endpoint.run([action, f"agent={agent}"])
            finally:
                started()
            return Outcome(case, action, agent, endpoint, run, recording_id)

        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            outcomes = list(pool.map(run, jobs))
        return {(o.case.name, o.action): o for o in outcomes}

    def table(self) -> str:
        """Row per fault, column per transport: what each action ended as (error, seconds, requests)."""
        transports = [t for t in TRANSPORTS if t in self._matrix]
        lines = ["| fault | " + " | ".join(transports) + " |", "|---|" + "---|" * len(transports)]
        for case in CASES:
            cells = []
            for transport in transports:
                parts = []
                for action in ACTIONS:
                    o = self._matrix[transport][(case.name, action)]
                    seen = self.sim.count(function="recording", value=action, agent_user=o.agent)
                    parts.append(f"{action} {o.run.var('VICIREC_ERROR') or o.run.var('VICIREC_RESULT')} "
                                 f"{o.run.elapsed:.2f}s n={seen}")
                cells.append("<br>".join(parts))
            lines.append(f"| {case.name} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    @staticmethod
    def _plan(case: Case, agent: str, launched: dict[str, float], deadline: float) -> Callable[[], Fault]:
        kind = case.kind
        assert kind is not None
        if case.name in ("slow_inside", "slow_outside"):
            offset = -INSIDE_BY if case.name == "slow_inside" else OUTSIDE_BY

            def slow() -> Fault:
                answer_at = launched[agent] + deadline + offset
                return Fault(kind=kind, delay=max(0.0, answer_at - time.monotonic()))
            return slow
        return lambda: Fault(kind=kind, delay=case.delay)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with AgentFaultSimulator(screen_delay=0.05) as sim, EndlessBody() as endless:
        secure(sim)
        rig = Lab(tmp_path_factory.mktemp("faults"), sim, endless)
        try:
            yield rig
        finally:
            rig.close()
            table = os.environ.get("VICIREC_MATRIX_TABLE")
            if table:  # the matrix as a Markdown table, for the README / a report
                Path(table).write_text(rig.table())


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_vicidial_fault(lab: Lab, transport: str, case: Case) -> None:
    sim = lab.sim
    deadline = deadline_for(transport)
    outcomes = {action: lab.matrix(transport)[(case.name, action)] for action in ACTIONS}
    for action, outcome in outcomes.items():
        run, agent, endpoint = outcome.run, outcome.agent, outcome.endpoint
        where = f"{transport}/{case.name}/{action}"
        result = assert_contract(run, endpoint)
        expected = ("OK", "") if case.error is None else ("ERROR", case.error)
        assert (result["VICIREC_RESULT"], result["VICIREC_ERROR"]) == expected, (where, result)
        assert (result["VICIREC_ACTION"], result["VICIREC_AGENT"]) == (action, agent), where
        assert result["VICIREC_MESSAGE"], where

        # Time: never past the deadline (plus start-up and reporting); the daemon (no start-up to
        # pay) gives up on a refused connection before the deadline.
        assert run.elapsed <= deadline + MARGIN, (where, run.elapsed)
        if case.kind is None and transport == "fastagi":
            assert run.elapsed < deadline, (where, run.elapsed)

        # What VICIdial saw.
        seen = sim.count(function="recording", value=action, agent_user=agent)
        if case.kind is None:
            assert seen == 0, where
        elif action == "START" or case.error in (None, "AUTH"):
            assert seen == 1, (where, seen)  # a START at most once; a login failure never retried
        else:
            assert 1 <= seen <= max_attempts(deadline), (where, seen)
        assert sim.starts_for(agent) <= 1, where

        assert_no_secret(run, endpoint)

    if case.error is None:  # the answer was found inside the noise / in time: fields are parsed
        status = outcomes["STATUS"]
        assert (status.run.var("VICIREC_RECORDING"), status.run.var("VICIREC_RECORDING_ID")) == (
            "1", str(status.recording_id))
        assert outcomes["STOP"].run.var("VICIREC_RECORDING_ID") == ""
        assert sim.starts_for(outcomes["START"].agent) == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_endless_body_is_capped_not_read(lab: Lab, transport: str) -> None:
    """A body that never ends: the byte cap stops the read long before the deadline would, and the
    connection is dropped (the server's writes fail) instead of being drained."""
    endpoint = lab.endpoint(transport, "endless")
    before = lab.endless.sent
    lab.endless.client_left.clear()
    began = time.monotonic()
    run = endpoint.run(["STATUS", "agent=1000"])
    result = assert_contract(run, endpoint)
    assert (result["VICIREC_RESULT"], result["VICIREC_ERROR"]) == ("ERROR", "BAD_RESPONSE"), result
    assert "larger than" in result["VICIREC_MESSAGE"]
    assert time.monotonic() - began < deadline_for(transport)
    assert lab.endless.client_left.wait(5.0), "the client kept the endless body open"
    assert lab.endless.sent - before < 32 * 1024 * 1024
    assert_no_secret(run, endpoint)



def test_refused_stays_unreachable_when_the_back_off_overruns() -> None:
    """Found by the matrix on a loaded machine: a back-off sleep that overran the deadline made the
    next attempt give up before trying, and the report said TIMEOUT ("no time left") instead of
    the UNREACHABLE that made it retry. The last real failure is what gets reported."""
    config = config_from_mapping({"vicidial": {
        "api_url": closed_api_url(), "user": "6666", "password": SECRET, "failure_threshold": 0}})

    def overrunning_sleep(seconds: float) -> None:
        time.sleep(seconds + 0.45)  # a starved process wakes up late

    client = VicidialClient(config, sleep=overrunning_sleep)
    with pytest.raises(Unreachable):
        client.recording(Action.START, "1000", Deadline(0.5))
    assert client.requests_sent == 1


def test_the_daemon_s_breaker_stops_hammering_a_hung_vicidial_then_probes_again(tmp_path: Path) -> None:
    """Through ``vicirec serve``: two requests time out against a VICIdial that never answers,
    the breaker opens (logged), the next ones are UNREACHABLE at once without a request, and after
    the cool-down one probe finds VICIdial back and closes it."""
    with secure(AgentFaultSimulator()) as sim:
        config = lab_config(tmp_path, sim.api_url, deadline=1.0, overrides={
            "vicidial": {"failure_threshold": 2, "cool_down": 1.5, "read_timeout": 0.4}})
        endpoint = start_endpoint("fastagi", config)
        try:
            sim.inject(Fault("hang", delay=5.0))
            # STATUS may be retried within its deadline: its two attempts time out, the breaker
            # opens, and whatever attempt comes next is refused.
            result = assert_contract(endpoint.run(["STATUS", "agent=1000"]), endpoint)
            assert result["VICIREC_ERROR"] in ("TIMEOUT", "UNREACHABLE"), result
            assert len(sim.requests) == 2
            seen = len(sim.requests)
            began = time.monotonic()
            for _ in range(3):
                result = assert_contract(endpoint.run(["START", "agent=1000"]), endpoint)
                assert (result["VICIREC_RESULT"], result["VICIREC_ERROR"]) == ("ERROR", "UNREACHABLE")
            assert time.monotonic() - began < 1.0  # answered at once, not after a timeout
            assert len(sim.requests) == seen and sim.starts_for("1000") == 0
            sim.clear_faults()
            time.sleep(1.6)
            result = assert_contract(endpoint.run(["STATUS", "agent=1000"]), endpoint)
            assert result["VICIREC_RESULT"] == "OK", result
            events = [e for e in log_events(endpoint.log) if e.get("event") == "vicidial_breaker"]
            assert [e["state"] for e in events] == ["open", "half-open", "closed"], events
        finally:
            assert endpoint.daemon is not None
            endpoint.daemon.stop()
