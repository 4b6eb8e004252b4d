"""The verified STOP on a real Asterisk 22 (the private runtime, ``VICIREC_ASTERISK_PRIVATE``;
skipped without it): the process AGI reads ``CHANNELS(^Local/5<session>@)`` through real AGI, while
a real ``Local/58600051@`` channel stands in for VICIdial's recording channel (exten 8309's
``Monitor`` half), VICIdial's API is simulated and its database is a real MariaDB.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pytest

from mariadb_server import MariaDb, ServerUnavailable, get_server
from sim_mirror import SimulatorMirror
from vicirec.testing.harness import process_agi_command, write_config
from vicirec.testing.simulator import VicidialSimulator

RUNTIME = Path(os.environ.get("VICIREC_ASTERISK_PRIVATE", "/work/shared/asterisk/runtime/asterisk-private"))
SERVER_IP = "10.10.10.15"
CONTEXT = "vr-real"
DIALPLAN = """
[{context}]
; stands in for VICIdial's recording channel: Local/5<session>@... while a recording runs
exten => 58600051,1,Answer()
 same => n,Wait(30)
 same => n,Hangup()
; the customer's channel asking for a verified STOP
exten => stop,1,Answer()
 same => n,AGI({agi},STOP,confirm=4,agent=1000)
 same => n,Set(DB(vr/verified)=${{VICIREC_VERIFIED}})
 same => n,Set(DB(vr/message)=${{FILTER(0-9A-Za-z .:/@(),${{VICIREC_MESSAGE}})}})
 same => n,Hangup()
"""


class Asterisk:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def cli(self, command: str) -> str:
        done = subprocess.run([str(RUNTIME), "cli", str(self.directory), command], capture_output=True,
                              text=True, timeout=20, check=False)
        return done.stdout

    def channels(self, prefix: str) -> list[str]:
        lines = self.cli("core show channels concise").splitlines()
        return [line.split("!", 1)[0] for line in lines if line.startswith(prefix)]

    def db_get(self, key: str) -> Optional[str]:
        for line in self.cli(f"database get vr {key}").splitlines():
            if line.startswith("Value:"):
                return line.split(":", 1)[1].strip()
        return None


@pytest.fixture
def asterisk(tmp_path: Path) -> Iterator[tuple[Asterisk, VicidialSimulator, MariaDb, Path]]:
    if not RUNTIME.exists():
        pytest.skip(f"no Asterisk runtime at {RUNTIME}")
    if subprocess.run([str(RUNTIME), "check"], capture_output=True, timeout=60, check=False).returncode:
        pytest.skip("the Asterisk runtime's libraries are missing (asterisk-private deps)")
    try:
        database = get_server()
    except ServerUnavailable as exc:
        pytest.skip(str(exc))
    agi = tmp_path / "vicirec-test.sh"
    agi.write_text("#!/bin/sh\nexec " + " ".join(process_agi_command()) + ' "$@"\n')
    agi.chmod(0o755)
    include = tmp_path / "vr.conf"
    include.write_text(DIALPLAN.format(agi=agi, context=CONTEXT))
    with VicidialSimulator(screen_delay=0.5) as sim:
        conf = database.astguiclient_conf(tmp_path / "astguiclient.conf", server_ip=SERVER_IP)
        config = write_config(tmp_path, sim.api_url, overrides={
            "agents": {"resolvers": ["argument"], "lookup": "mysql", "astguiclient_conf": str(conf)},
            "call": {"deadline": 6.0}})
        directory = tmp_path / "ast"
        subprocess.run([str(RUNTIME), "start", str(directory), "--include", str(include),
                        "--env", f"VICIREC_CONFIG={config}"], capture_output=True, timeout=60, check=True)
        try:
            yield Asterisk(directory), sim, database, tmp_path
        finally:
            subprocess.run([str(RUNTIME), "stop", str(directory)], capture_output=True, timeout=60,
                           check=False)


def run_stop(ast: Asterisk) -> tuple[Optional[str], Optional[str]]:
    ast.cli(f"channel originate Local/stop@{CONTEXT} application Wait 15")
    until = time.monotonic() + 15
    while time.monotonic() < until:
        verified = ast.db_get("verified")
        if verified is not None:
            return verified, ast.db_get("message")
        time.sleep(0.2)
    return None, None


def start_recording(ast: Asterisk, sim: VicidialSimulator) -> None:
    delay, sim.state.screen_delay = sim.state.screen_delay, None
    try:
        sim.state.set_external_recording("1000", "START")
        sim.run_screen("1000")
    finally:
        sim.state.screen_delay = delay
    ast.cli(f"channel originate Local/58600051@{CONTEXT} application Wait 30")
    assert len(ast.channels("Local/58600051@")) == 2


@pytest.mark.slow
def test_a_stop_whose_recording_channel_is_hung_up_is_verified(
    asterisk: tuple[Asterisk, VicidialSimulator, MariaDb, Path],
) -> None:
    ast, sim, database, _ = asterisk

    def hang_up_after_the_screen(key: str, cause: str) -> None:
        # StopMonitorConf queues the Hangup after the database says stopped (AST_manager_send.pl)
        if cause == "screen" and sim.state.live_agents[key][0].external_recording == "":
            def later() -> None:
                time.sleep(0.3)
                for name in ast.channels("Local/58600051@"):
                    ast.cli(f"channel request hangup {name}")
            threading.Thread(target=later, daemon=True).start()

    with SimulatorMirror(database, sim):
        start_recording(ast, sim)
        sim.state.listeners.append(hang_up_after_the_screen)
        verified, message = run_stop(ast)
    assert verified == "1", message
    assert "no Local/58600051@ channel left on 10.10.10.15" in (message or "")


@pytest.mark.slow
def test_a_recording_channel_still_up_on_asterisk_is_not_verified(
    asterisk: tuple[Asterisk, VicidialSimulator, MariaDb, Path],
) -> None:
    ast, sim, database, _ = asterisk
    with SimulatorMirror(database, sim):
        start_recording(ast, sim)
        verified, message = run_stop(ast)
    assert verified == "0", message
    assert "Local/58600051@ channel(s) still up" in (message or "")
