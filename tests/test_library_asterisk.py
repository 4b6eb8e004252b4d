"""The Gosub library on a real Asterisk 22: FastAGI by default, the process AGI when the daemon is down.

Runs only where the private Asterisk runtime is present (``../shared/asterisk/runtime``, or the
directory in ``$VICIREC_ASTERISK_RUNTIME``); skipped elsewhere. Asterisk runs the shipped
``extensions_vicirec.conf`` (its default daemon URL pointed at a port of this test), the real process
AGI (``vicirec.agi`` in its agi-bin, as the installer writes it) and a real ``vicirec serve``, both
against the VICIdial simulator. What is proved: a refused connection runs the process AGI once; a
daemon killed in the middle of a session is never followed by the process AGI, so VICIdial sees one
START; a pinned daemon that is down is ``UNREACHABLE``.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

from faultlab import AgentFaultSimulator, free_port, fresh_agent, lab_config, log_events, secure

REPO = Path(__file__).resolve().parent.parent
LIBRARY = REPO / "dialplan" / "extensions_vicirec.conf"
DEFAULT_DAEMON = "agi://127.0.0.1:4573/vicirec"

pytestmark = pytest.mark.slow


def runtime_launcher() -> Optional[Path]:
    base = os.environ.get("VICIREC_ASTERISK_RUNTIME") or str(REPO.parent / "shared" / "asterisk" / "runtime")
    launcher = Path(base) / "asterisk-private"
    if not launcher.is_file():
        return None
    ok = subprocess.run([str(launcher), "check"], check=False, capture_output=True, timeout=60)
    return launcher if ok.returncode == 0 else None


TEST_DIALPLAN = """
[vr-hold]
exten => s,1,Answer()
 same => n,Wait(30)
 same => n,Hangup()

[vr-test]
exten => s,1,Answer()
 same => n,Gosub(vicirec,${VR_ACTION},1(${VR_ARG1},${VR_ARG2},${VR_ARG3}))
 same => n,Set(GLOBAL(R_${VR_ID}_RESULT)=${VICIREC_RESULT})
 same => n,Set(GLOBAL(R_${VR_ID}_ERROR)=${VICIREC_ERROR})
 same => n,Set(GLOBAL(R_${VR_ID}_MESSAGE)=${VICIREC_MESSAGE})
 same => n,Set(GLOBAL(R_${VR_ID}_RECORDING)=${VICIREC_RECORDING})
 same => n,Set(GLOBAL(R_${VR_ID}_CLAIMED)=${VICIREC_CLAIMED})
 same => n,Set(GLOBAL(R_${VR_ID}_AGISTATUS)=${AGISTATUS})
 same => n,UserEvent(VrDone,Id: ${VR_ID})
 same => n,Hangup()
"""


class Ami:
    """The smallest AMI client: actions with an ActionID, events kept until asked for."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        self.number = 0
        self.events: list[dict[str, str]] = []
        self._line(time.monotonic() + 10)  # banner

    def _line(self, deadline: float) -> str:
        while b"\r\n" not in self.buf:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("AMI closed the connection")
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def _message(self, deadline: float) -> dict[str, str]:
        message: dict[str, str] = {}
        while True:
            line = self._line(deadline)
            if not line:
                if message:
                    return message
                continue
            key, _, value = line.partition(": ")
            message.setdefault(key, value)

    def action(self, name: str, **fields: str) -> dict[str, str]:
        self.number += 1
        action_id = f"vr-{self.number}"
        text = f"Action: {name}\r\nActionID: {action_id}\r\n"
        for key, value in fields.items():
            for one in value.split("\n"):  # several Variable: lines
                text += f"{key}: {one}\r\n"
        self.sock.sendall((text + "\r\n").encode())
        deadline = time.monotonic() + 10
        while True:
            message = self._message(deadline)
            if message.get("ActionID") == action_id and "Response" in message:
                return message
            self.events.append(message)

    def wait_user_event(self, name: str, ident: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event.get("UserEvent") == name and event.get("Id") == ident:
                    return
            self.events.append(self._message(deadline))

    def getvar(self, name: str) -> str:
        reply = self.action("Getvar", Variable=name)
        return reply.get("Value", "") if reply.get("Response") == "Success" else ""


@dataclass
class Lab:
    directory: Path
    launcher: Path
    instance: Path
    ami: Ami
    sim: AgentFaultSimulator
    config: Path
    daemon_port: int
    calls: int = 0

    def call(self, action: str, *args: str, pin: str = "", timeout: float = 30.0) -> dict[str, str]:
        """Gosub(vicirec,ACTION,1(ARGS)) on a fresh Local channel; the VICIREC_* it left behind."""
        self.calls += 1
        ident = str(self.calls)
        padded = [*args, "", "", ""][:3]
        variables = [f"VR_ID={ident}", f"VR_ACTION={action}"]
        variables += [f"VR_ARG{n}={value}" for n, value in enumerate(padded, start=1)]
        if pin:
            variables.append(f"VICIREC_AGI={pin}")
        reply = self.ami.action("Originate", Channel="Local/s@vr-hold", Context="vr-test", Exten="s",
                                Priority="1", Async="true", Variable="\n".join(variables))
        assert reply.get("Response") == "Success", reply
        self.ami.wait_user_event("VrDone", ident, timeout)
        return {name: self.ami.getvar(f"R_{ident}_{name}")
                for name in ("RESULT", "ERROR", "MESSAGE", "RECORDING", "CLAIMED", "AGISTATUS")}

    def asterisk_log(self) -> str:
        return (self.instance / "log" / "full").read_text(errors="replace")

    def invocations(self, transport: str) -> list[dict[str, object]]:
        return [e for e in log_events(self.config.with_name("vicirec.log"))
                if e.get("event") == "invocation" and e.get("transport") == transport]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    launcher = runtime_launcher()
    if launcher is None:
        pytest.skip("the private Asterisk runtime is not here (../shared/asterisk/runtime)")
    directory = tmp_path_factory.mktemp("library")
    daemon_port = free_port()
    (directory / "extensions_vicirec.conf").write_text(
        LIBRARY.read_text(encoding="utf-8").replace(DEFAULT_DAEMON, f"agi://127.0.0.1:{daemon_port}/vicirec"),
        encoding="utf-8")
    (directory / "test.conf").write_text(TEST_DIALPLAN, encoding="utf-8")
    agi_bin = directory / "agi-bin"
    agi_bin.mkdir()
    # as deploy/install.sh writes it: this interpreter, absolute, isolated
    (agi_bin / "vicirec.agi").write_text(
        f"#!{sys.executable} -I\nfrom vicirec.process_agi import main\nraise SystemExit(main())\n",
        encoding="utf-8")
    (agi_bin / "vicirec.agi").chmod(0o755)
    with AgentFaultSimulator(screen_delay=0.05) as sim:
        secure(sim)
        config = lab_config(directory / "conf", sim.api_url, deadline=4.0)
        instance = directory / "ast"
        started = subprocess.run(
            [str(launcher), "start", str(instance), "--agi-dir", str(agi_bin),
             "--include", str(directory / "extensions_vicirec.conf"),
             "--include", str(directory / "test.conf"),
             "--env", f"VICIREC_CONFIG={config}"],
            check=True, capture_output=True, text=True, timeout=120)
        values = dict(line.split("=", 1) for line in started.stdout.splitlines() if "=" in line)
        try:
            ami = Ami(int(values["AMI_PORT"]))
            assert ami.action("Login", Username="test", Secret="test").get("Response") == "Success"
            yield Lab(directory, launcher, instance, ami, sim, config, daemon_port)
        finally:
            subprocess.run([str(launcher), "stop", str(instance)], check=False, capture_output=True,
                           timeout=60)


@pytest.fixture
def daemon(lab: Lab) -> Iterator[subprocess.Popen[bytes]]:
    """``vicirec serve`` on the library's daemon port."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "vicirec", "serve", "--config", str(lab.config), "--host", "127.0.0.1",
         "--port", str(lab.daemon_port)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        until = time.monotonic() + 20
        while time.monotonic() < until:
            assert proc.poll() is None, "vicirec serve exited"
            try:
                socket.create_connection(("127.0.0.1", lab.daemon_port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)


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
