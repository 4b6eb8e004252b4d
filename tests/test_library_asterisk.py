"""The Gosub library on a real Asterisk 22: FastAGI by default, the process AGI when the daemon is down.

Runs where tests/real_asterisk.py finds an Asterisk (the runtime in ``../shared/asterisk/runtime``,
or ``VICIREC_TEST_ASTERISK``); skipped elsewhere, a failure under ``VICIREC_TEST_REQUIRE_ASTERISK``.
Asterisk runs the shipped ``extensions_vicirec.conf`` (its default daemon URL pointed at a port of
this test), the real process AGI (``vicirec.agi`` in its agi-bin, as the installer writes it) and a
real ``vicirec serve``, both against the VICIdial simulator. What is proved: a refused connection
runs the process AGI once; a daemon killed in the middle of a session is never followed by the
process AGI, so VICIdial sees one START; a pinned daemon that is down is ``UNREACHABLE``.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from faultlab import AgentFaultSimulator, fresh_agent, lab_config, log_events, secure
from real_asterisk import PYST2_WARNINGS, Asterisk, free_port, private_asterisk, serve_daemon, write_agi_bin

REPO = Path(__file__).resolve().parent.parent
LIBRARY = REPO / "dialplan" / "extensions_vicirec.conf"
DEFAULT_DAEMON = "agi://127.0.0.1:4573/vicirec"
RESULTS = ("RESULT", "ERROR", "MESSAGE", "RECORDING", "CLAIMED")

pytestmark = [pytest.mark.slow, PYST2_WARNINGS]


@dataclass
class Lab:
    asterisk: Asterisk
    sim: AgentFaultSimulator
    config: Path
    daemon_port: int

    def call(self, action: str, *args: str, pin: str = "", timeout: float = 30.0) -> dict[str, str]:
        """Gosub(vicirec,ACTION,1(ARGS)) on a fresh Local channel; the VICIREC_* it left behind."""
        call = self.asterisk.run("vicirec", action, args, variables={"VICIREC_AGI": pin} if pin else {})
        call.wait_done(timeout)
        seen = {name: call.getvar(f"VICIREC_{name}") for name in RESULTS}
        seen["AGISTATUS"] = call.getvar("AGISTATUS")
        call.hangup()
        return seen

    def asterisk_log(self) -> str:
        return self.asterisk.full_log.read_text(errors="replace")

    def invocations(self, transport: str) -> list[dict[str, object]]:
        return [e for e in log_events(self.config.with_name("vicirec.log"))
                if e.get("event") == "invocation" and e.get("transport") == transport]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    directory = tmp_path_factory.mktemp("library")
    daemon_port = free_port()
    library = directory / "extensions_vicirec.conf"
    library.write_text(
        LIBRARY.read_text(encoding="utf-8").replace(DEFAULT_DAEMON, f"agi://127.0.0.1:{daemon_port}/vicirec"),
        encoding="utf-8")
    agi_bin = write_agi_bin(directory / "agi-bin")
    with AgentFaultSimulator(screen_delay=0.05) as sim:
        secure(sim)
        config = lab_config(directory / "conf", sim.api_url, deadline=4.0)
        with private_asterisk(directory, [library], agi_dir=agi_bin,
                              env={"VICIREC_CONFIG": str(config)}) as asterisk:
            yield Lab(asterisk, sim, config, daemon_port)


@pytest.fixture
def daemon(lab: Lab) -> Iterator[subprocess.Popen[bytes]]:
    """``vicirec serve`` on the library's daemon port."""
    with serve_daemon(lab.config, lab.daemon_port) as proc:
        yield proc


def starts(lab: Lab, agent: str) -> int:
    return lab.sim.count(function="recording", value="START", agent_user=agent)


def test_daemon_running_takes_the_call(lab: Lab, daemon: subprocess.Popen[bytes]) -> None:
    agent = fresh_agent(lab.sim)
    before = len(lab.invocations("process"))
    seen = lab.call("start", "_CONSENT", "", agent)
    assert (seen["RESULT"], seen["ERROR"], seen["CLAIMED"]) == ("OK", "", "1"), seen
    assert "daemon down" not in seen["MESSAGE"]
    assert starts(lab, agent) == 1
    assert len(lab.invocations("process")) == before  # the process AGI did not run


def test_daemon_down_runs_the_process_agi_once_and_says_so(lab: Lab) -> None:
    agent = fresh_agent(lab.sim)
    before = len(lab.invocations("process"))
    seen = lab.call("start", "_CONSENT", "", agent)
    assert (seen["RESULT"], seen["ERROR"], seen["CLAIMED"]) == ("OK", "", ""), seen
    assert seen["MESSAGE"].endswith("[daemon down: ran vicirec.agi]"), seen
    assert starts(lab, agent) == 1
    assert len(lab.invocations("process")) == before + 1
    log = lab.asterisk_log()
    assert f"failed for url 'agi://127.0.0.1:{lab.daemon_port}/vicirec': Connection refused" in log
    assert "vicirec: FastAGI daemon" in log and "running vicirec.agi for this call" in log


@pytest.mark.parametrize("killed_on", [1, 2], ids=["on-its-START", "on-its-confirming-STATUS"])
def test_a_daemon_killed_mid_session_never_leads_to_a_second_start(
    lab: Lab, daemon: subprocess.Popen[bytes], killed_on: int
) -> None:
    """With agent= the daemon's requests are START, then STATUS until confirmed: it is killed as
    VICIdial receives request number ``killed_on`` (recorded, so that START counts)."""
    agent = fresh_agent(lab.sim)
    before = len(lab.invocations("process"))
    arrived = itertools.count(1)

    def kill_on_arrival() -> None:
        if next(arrived) == killed_on:
            daemon.kill()

    lab.sim.on_request[agent] = kill_on_arrival
    try:
        seen = lab.call("start", "_CONSENT", "3", agent)
    finally:
        lab.sim.on_request.pop(agent, None)
    # Asterisk 22 ends the AGI with SUCCESS here (the killed daemon's socket closes cleanly): the
    # claim, not AGISTATUS, is what keeps the process AGI from running
    assert daemon.wait(timeout=10) == -signal.SIGKILL
    assert (seen["RESULT"], seen["ERROR"], seen["CLAIMED"]) == ("ERROR", "INTERNAL", "1"), seen
    assert "daemon down" not in seen["MESSAGE"]
    assert starts(lab, agent) == 1  # never a second START
    assert len(lab.invocations("process")) == before  # the process AGI never ran


def test_a_pinned_daemon_that_is_down_is_unreachable(lab: Lab) -> None:
    agent = fresh_agent(lab.sim)
    pinned = f"agi://127.0.0.1:{lab.daemon_port}/vicirec"
    before = len(lab.invocations("process"))
    seen = lab.call("stop", "", agent, pin=pinned)
    assert (seen["RESULT"], seen["ERROR"], seen["AGISTATUS"]) == ("ERROR", "UNREACHABLE", "FAILURE"), seen
    assert pinned in seen["MESSAGE"]
    assert len(lab.invocations("process")) == before
    assert lab.sim.count(agent_user=agent) == 0
