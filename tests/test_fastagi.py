"""The FastAGI daemon through real sockets: the fake Asterisk against the VICIdial simulator.

Most tests run the server in this process (a thread runs its loop, as the main thread does in
``vicirec serve``); the life-cycle tests run ``vicirec serve`` as a subprocess and talk to it with
signals and a ``$NOTIFY_SOCKET`` of their own.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import pytest

from vicirec import logs
from vicirec.config import Config, LogSettings, load_config
from vicirec.engine import VARIABLE_NAMES
from vicirec.fastagi.daemon import build_runtime
from vicirec.fastagi.sdnotify import Notifier
from vicirec.fastagi.server import FastAgiServer, bind_listener, listening_address
from vicirec.fastagi.session import CLAIM_VARIABLE
from vicirec.redaction import Redactor
from vicirec.testing.fake_asterisk import AgiRun, FakeAsterisk, FakeChannel, HangupPlan
from vicirec.testing.simulator import API_PASS, API_USER, Fault, VicidialSimulator
from vicirec.vicidial.client import make_session

CALL_ID = "V1123181500000000001"  # the simulator's agent 1000 is on this call
HOST = "127.0.0.1"
ASTERISK = FakeAsterisk()


@pytest.fixture(scope="module")
def sim() -> Iterator[VicidialSimulator]:
    with VicidialSimulator(screen_delay=None, keep_alive=True) as simulator:
        yield simulator


@pytest.fixture(autouse=True)
def fresh_simulator(sim: VicidialSimulator) -> None:
    sim.reset()


@pytest.fixture
def log_path(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "vicirec.log"
    logs.configure(LogSettings(target="file", path=str(path), level="debug"), Redactor([API_PASS]))
    yield path
    logs.configure(LogSettings(target="none"), Redactor())


def write_config(path: Path, sim: VicidialSimulator, *, log: Optional[Path] = None, source: str = "vicirec",
                 fastagi: Optional[dict[str, Any]] = None, call: Optional[dict[str, Any]] = None) -> Path:
    lines = ["[vicidial]", f'api_url = "{sim.api_url}"', f'user = "{API_USER}"', f'password = "{API_PASS}"',
             f'source = "{source}"', "[log]"]
    lines += ['target = "file"', f'path = "{log}"'] if log else ['target = "none"']
    # The HTTP lookup cannot corroborate a call id match: accept it uncorroborated, as a lab does.
    lines += ["[agents]", "require_corroboration = false"]
    for section, values in (("fastagi", fastagi or {}), ("call", call or {})):
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def log_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for(predicate: Any, timeout: float = 5.0) -> bool:
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


@contextmanager
def serving(config: Config) -> Iterator[tuple[FastAgiServer, int]]:
    """The daemon's server on a free port, its loop in a thread."""
    listener = bind_listener(HOST, 0)
    runtime = build_runtime(config, make_session(pool_size=config.fastagi.max_sessions))
    server = FastAgiServer(listener, runtime, max_sessions=config.fastagi.max_sessions)
    port = listening_address(listener)[1]
    loop = threading.Thread(target=server.run, daemon=True)
    loop.start()
    try:
        yield server, port
    finally:
        server.request_stop()
        loop.join(timeout=5.0)
        assert not loop.is_alive()


@pytest.fixture
def config_file(tmp_path: Path, sim: VicidialSimulator) -> Path:
    return write_config(tmp_path / "vicirec.toml", sim)


def server_config(tmp_path: Path, sim: VicidialSimulator, **fastagi: Any) -> Config:
    call = fastagi.pop("call", None)
    return load_config(str(write_config(tmp_path / "daemon.toml", sim, fastagi=fastagi, call=call)))


def fastagi(port: int, args: list[str], channel: FakeChannel, script: str = "vicirec", **kw: Any) -> AgiRun:
    return ASTERISK.run_fastagi(HOST, port, script, args, channel, timeout=10.0, **kw)


def vicirec_vars(channel: FakeChannel) -> dict[str, str]:
    """The report's variables (the daemon's claim on the call is checked on its own)."""
    return {name: value for name, value in channel.variables.items()
            if name.startswith("VICIREC_") and name != CLAIM_VARIABLE}


def customer(**kw: Any) -> FakeChannel:
    return FakeChannel(callerid_name=CALL_ID, callerid_num="7275551212", **kw)


# --- the same answers as the process AGI -------------------------------------------------------


def _comparable(variables: dict[str, str]) -> dict[str, str]:
    # The recording's start time and file name carry the clock; that they are there is what counts.
    return {name: (bool(value) if name in ("VICIREC_START_TIME", "VICIREC_FILENAME") else value)  # type: ignore[misc]
            for name, value in variables.items()}


def _start_status_stop(sim: VicidialSimulator, run: Any) -> list[dict[str, str]]:
    sim.reset()
    channel = customer()
    seen = []
    for args in (["START", "_CONSENT"], ["STATUS"], ["STOP"]):
        result = run(args, channel)
        assert result.agistatus == "SUCCESS", result.dump()
        seen.append(_comparable(vicirec_vars(channel)))
        sim.run_screen()  # the agent screen carries out the START / STOP
    return seen


def test_start_status_stop_set_the_same_variables_as_the_process_agi(
    sim: VicidialSimulator, config_file: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "VICIREC_CONFIG": str(config_file)}

    def process(args: list[str], channel: FakeChannel) -> AgiRun:
        argv = [sys.executable, "-m", "vicirec.process_agi"]
        return ASTERISK.run_process(argv, args, channel, env=env, timeout=15.0)

    by_process = _start_status_stop(sim, process)
    with serving(load_config(str(config_file))) as (_server, port):
        by_daemon = _start_status_stop(sim, lambda args, channel: fastagi(port, args, channel))
    assert by_daemon == by_process
    start, status, stop = by_daemon
    assert set(start) == set(VARIABLE_NAMES)
    assert (start["VICIREC_RESULT"], start["VICIREC_AGENT"], start["VICIREC_AGENT_SOURCE"]) == (
        "OK", "1000", "call_id")
    assert (status["VICIREC_RESULT"], status["VICIREC_RECORDING"]) == ("OK", "1")
    assert (stop["VICIREC_RESULT"], stop["VICIREC_ACTION"]) == ("OK", "STOP")
    assert sim.starts_for("1000") == 1  # one START per transport, the counters were reset between


@pytest.mark.parametrize("script", ["nope", "", "vicirec/extra"])
def test_unknown_script_is_a_bad_request(sim: VicidialSimulator, tmp_path: Path, script: str) -> None:
    with serving(server_config(tmp_path, sim)) as (_server, port):
        run = fastagi(port, ["START"], customer(), script=script)
    variables = vicirec_vars(run.channel)
    assert set(variables) == set(VARIABLE_NAMES)
    assert (variables["VICIREC_RESULT"], variables["VICIREC_ERROR"]) == ("ERROR", "BAD_REQUEST")
    assert "agi://HOST:PORT/vicirec" in variables["VICIREC_MESSAGE"]
    assert sim.count(function="recording") == 0


def test_query_string_of_the_script_is_ignored(sim: VicidialSimulator, tmp_path: Path) -> None:
    with serving(server_config(tmp_path, sim)) as (_server, port):
        run = fastagi(port, ["STATUS"], customer(), script="vicirec?site=a")
    assert run.channel.variables["VICIREC_RESULT"] == "OK"


# --- hangups -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "before_reply"),
    [
        (b"GET VARIABLE", True),                  # HANGUP before the first reply
        (b"GET VARIABLE", False),                 # ... right after it
        (b"SET VARIABLE VICIREC_RESULT", True),   # while the variables are being set
        (b"SET VARIABLE VICIREC_AGENT ", False),
    ],
)
def test_hangup_line_before_or_after_a_reply_changes_nothing(
    sim: VicidialSimulator, tmp_path: Path, log_path: Path, prefix: bytes, before_reply: bool
) -> None:
    with serving(server_config(tmp_path, sim)) as (_server, port):
        run = fastagi(port, ["START", "_CONSENT"], customer(),
                      hangup=HangupPlan.on_prefix(prefix, before_reply=before_reply))
    assert b"HANGUP\n" in run.replies()
    assert run.agistatus == "HANGUP"
    variables = vicirec_vars(run.channel)
    assert set(variables) == set(VARIABLE_NAMES)  # set in dead mode, visible in the h extension
    assert (variables["VICIREC_RESULT"], variables["VICIREC_AGENT"]) == ("OK", "1000")
    assert sim.starts_for("1000") == 1
    invocation = [e for e in log_events(log_path) if e["event"] == "invocation"]
    assert invocation[-1]["hung_up"] is True and invocation[-1]["variables_set"] is True


def test_dead_channel_in_the_h_extension(sim: VicidialSimulator, tmp_path: Path) -> None:
    with serving(server_config(tmp_path, sim)) as (_server, port):
        run = fastagi(port, ["STATUS"], customer(hung_up=True, extension="h"))
    assert run.agistatus == "SUCCESS"
    assert vicirec_vars(run.channel)["VICIREC_RESULT"] == "OK"


def _raw_session(port: int, env: bytes, answer: Any, timeout: float = 5.0) -> list[bytes]:
    """Play Asterisk by hand: send ``env``, answer each command line with ``answer(line)`` (a list
    of separate writes), until the server closes. Returns the command lines received."""
    commands: list[bytes] = []
    with socket.create_connection((HOST, port), timeout=timeout) as conn:
        conn.sendall(env)
        buffer = b""
        while True:
            data = conn.recv(65536)
            if not data:
                return commands
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                commands.append(line)
                for chunk in answer(line):
                    conn.sendall(chunk)
                    time.sleep(0.002)  # one write per line, as Asterisk does


def test_multi_line_520_reply_is_read_whole_and_the_session_stays_in_step(
    sim: VicidialSimulator, tmp_path: Path
) -> None:
    usage = [b"520-Invalid command syntax.  Proper usage follows:\n",
             b"Returns <literal>0</literal> if <replaceable>variablename</replaceable> is not set.\n",
             b"520 End of proper usage.\n"]

    def answer(line: bytes) -> list[bytes]:
        return usage if line.startswith(b"GET VARIABLE") else [b"200 result=1\n"]

    env = (b"agi_network: yes\nagi_network_script: vicirec\nagi_request: agi://127.0.0.1/vicirec\n"
           b"agi_channel: SIP/x-1\nagi_uniqueid: 1.1\nagi_calleridname: " + CALL_ID.encode() +
           b"\nagi_arg_1: STATUS\n\n")
    with serving(server_config(tmp_path, sim)) as (_server, port):
        commands = _raw_session(port, env, answer)
    assert commands[0] == b'SET VARIABLE VICIREC_CLAIMED "1"'
    assert commands[1].startswith(b"GET VARIABLE")
    sets = [c.split(b" ")[2] for c in commands[1:] if c.startswith(b"SET VARIABLE")]
    assert sets == [name.encode() for name in VARIABLE_NAMES]  # every reply matched its command
    assert b'SET VARIABLE VICIREC_RESULT "ERROR"' in commands


def test_511_dead_channel_reply_marks_the_hangup_and_the_variables_still_go_out(
    sim: VicidialSimulator, tmp_path: Path, log_path: Path
) -> None:
    dead = b"511 Command Not Permitted on a dead channel or intercept routine\n"

    def answer(line: bytes) -> list[bytes]:
        return [dead] if line.startswith(b"GET VARIABLE") else [b"200 result=1\n"]

    env = (b"agi_network: yes\nagi_network_script: vicirec\nagi_request: agi://127.0.0.1/vicirec\n"
           b"agi_channel: SIP/x-2\nagi_uniqueid: 2.2\nagi_calleridname: " + CALL_ID.encode() +
           b"\nagi_arg_1: STATUS\n\n")
    with serving(server_config(tmp_path, sim)) as (_server, port):
        commands = _raw_session(port, env, answer)
    assert [c.split(b" ")[2] for c in commands if c.startswith(b"SET VARIABLE")] == [
        CLAIM_VARIABLE.encode(), *(name.encode() for name in VARIABLE_NAMES)]
    invocation = [e for e in log_events(log_path) if e["event"] == "invocation"][-1]
    assert invocation["hung_up"] is True and invocation["variables_set"] is True


def test_the_daemon_never_loads_pyst2() -> None:
    # pyst2's AGI() installs a SIGHUP handler, which a worker thread must never do.
    code = ("import sys, vicirec.fastagi.daemon\n"
            "print('asterisk' in sys.modules or 'asterisk.agi' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          timeout=20).stdout.strip() == "False"


def test_session_socket_has_nodelay_and_kernel_deadlines() -> None:
    from vicirec.deadline import Deadline
    from vicirec.errors import AgiTimeout
    from vicirec.fastagi.transport import KernelTimeoutTransport

    with socket.create_server((HOST, 0)) as listener, \
            socket.create_connection(listener.getsockname()) as _peer:
        conn, _address = listener.accept()
        transport = KernelTimeoutTransport(conn)
        assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert conn.gettimeout() is None  # blocking: the kernel keeps the deadline
        started = time.monotonic()
        with pytest.raises(AgiTimeout):
            transport.receive(Deadline(0.2))  # the peer says nothing
        assert 0.15 <= time.monotonic() - started < 1.0
        transport.close()


# --- bounds --------------------------------------------------------------------------------------


def test_busy_refusal_is_immediate_and_sets_every_variable(sim: VicidialSimulator, tmp_path: Path) -> None:
    with serving(server_config(tmp_path, sim, max_sessions=1, env_timeout=3.0)) as (server, port):
        with socket.create_connection((HOST, port)):  # takes the one slot, says nothing
            assert wait_for(lambda: server.in_flight() == 1)
            started = time.monotonic()
            run = fastagi(port, ["START"], customer())
            elapsed = time.monotonic() - started
        assert server.stats.refused_busy == 1
    variables = vicirec_vars(run.channel)
    assert set(variables) == set(VARIABLE_NAMES)
    assert (variables["VICIREC_RESULT"], variables["VICIREC_ERROR"]) == ("ERROR", "UNREACHABLE")
    assert variables["VICIREC_MESSAGE"] == "vicirec daemon busy (1 sessions)"
    assert run.agistatus == "SUCCESS"
    assert elapsed < 0.5
    assert sim.count() == 0


def _closed_within(conn: socket.socket, timeout: float) -> float:
    """Seconds until the server closed ``conn`` (reading and dropping what it sent)."""
    started = time.monotonic()
    conn.settimeout(timeout)
    try:
        while conn.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return time.monotonic() - started


def test_unfinished_environment_block_is_dropped_after_env_timeout(
    sim: VicidialSimulator, tmp_path: Path, log_path: Path
) -> None:
    with serving(server_config(tmp_path, sim, env_timeout=0.3)) as (server, port):
        with socket.create_connection((HOST, port)) as conn:
            conn.sendall(b"agi_network: yes\nagi_network_script: vicirec\n")
            elapsed = _closed_within(conn, 3.0)
        assert wait_for(lambda: server.in_flight() == 0)
        assert fastagi(port, ["STATUS"], customer()).channel.variables["VICIREC_RESULT"] == "OK"
    assert 0.25 <= elapsed < 1.0
    assert any(e["event"] == "fastagi_environment_timeout" for e in log_events(log_path))


def test_a_9000_byte_line_is_dropped(sim: VicidialSimulator, tmp_path: Path, log_path: Path) -> None:
    with serving(server_config(tmp_path, sim)) as (_server, port), \
            socket.create_connection((HOST, port)) as conn:
        conn.sendall(b"agi_network: yes\nagi_request: " + b"x" * 9000 + b"\n\n")
        elapsed = _closed_within(conn, 3.0)
    assert elapsed < 0.5
    dropped = [e for e in log_events(log_path) if e["event"] == "fastagi_environment_unreadable"]
    assert dropped and "too long" in dropped[0]["error"]


def test_session_deadline_closes_a_peer_that_stops_answering(
    sim: VicidialSimulator, tmp_path: Path, log_path: Path
) -> None:
    config = server_config(tmp_path, sim, session_deadline=0.6)
    with serving(config) as (server, port):
        with socket.create_connection((HOST, port)) as conn:
            conn.sendall(b"agi_network: yes\nagi_network_script: vicirec\nagi_request: x\n"
                         b"agi_channel: SIP/x\nagi_arg_1: STATUS\n\n")
            assert _read_line(conn) == b'SET VARIABLE VICIREC_CLAIMED "1"'
            conn.sendall(b"200 result=1\n")  # the claim; then it never answers a command
            elapsed = _closed_within(conn, 5.0)
        assert server.stats.overdue == 1
    assert 0.5 <= elapsed < 1.2
    assert any(e["event"] == "fastagi_session_deadline" for e in log_events(log_path))


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(1)
        if not chunk:
            break
        data += chunk
    return data.rstrip(b"\n")


def test_the_claim_is_the_first_command_and_nothing_happens_without_its_reply(
    sim: VicidialSimulator, tmp_path: Path, log_path: Path
) -> None:
    """The dialplan library runs the process AGI when the daemon did not claim the call: so the
    daemon must act only once Asterisk has acknowledged the claim (then the variable is set)."""
    env = (b"agi_network: yes\nagi_network_script: vicirec\nagi_request: agi://127.0.0.1/vicirec\n"
           b"agi_channel: SIP/x-3\nagi_uniqueid: 3.3\nagi_calleridname: " + CALL_ID.encode() +
           b"\nagi_arg_1: START\nagi_arg_2: agent=1000\n\n")
    with serving(server_config(tmp_path, sim, call={"deadline": 0.5})) as (_server, port):
        with socket.create_connection((HOST, port)) as conn:
            conn.sendall(env)
            assert _read_line(conn) == b'SET VARIABLE VICIREC_CLAIMED "1"'  # before anything else
            _closed_within(conn, 5.0)  # Asterisk never acknowledges it
        time.sleep(0.2)
    assert sim.count() == 0  # no START, no lookup
    failed = [e for e in log_events(log_path) if e["event"] == "fastagi_claim_failed"]
    assert len(failed) == 1 and failed[0]["uniqueid"] == "3.3"
    assert not [e for e in log_events(log_path) if e["event"] == "invocation"]


def test_allowlist_closes_other_peers_at_once(sim: VicidialSimulator, tmp_path: Path, log_path: Path) -> None:
    with serving(server_config(tmp_path, sim, allow=["10.20.30.0/24", "::1"])) as (server, port):
        with socket.create_connection((HOST, port)) as conn:
            assert _closed_within(conn, 3.0) < 0.5
        assert server.stats.refused_peer == 1
    refused = [e for e in log_events(log_path) if e["event"] == "fastagi_peer_refused"]
    assert refused and refused[0]["peer"] == "127.0.0.1"
    with serving(server_config(tmp_path, sim, allow=["127.0.0.0/8"])) as (_server, port):
        assert fastagi(port, ["STATUS"], customer()).channel.variables["VICIREC_RESULT"] == "OK"


# --- life cycle: `vicirec serve` as a process ----------------------------------------------------


class NotifySocket:
    """A unix datagram socket standing in for systemd's notification socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))

    def expect(self, field: str, timeout: float = 10.0) -> list[str]:
        """Messages up to and including the first holding ``field`` (e.g. ``READY=1``)."""
        give_up = time.monotonic() + timeout
        seen: list[str] = []
        while True:
            self.sock.settimeout(max(0.01, give_up - time.monotonic()))
            try:
                message = self.sock.recv(4096).decode()
            except socket.timeout:
                raise AssertionError(f"no {field} within {timeout} s; got {seen}") from None
            seen.append(message)
            if field in message.split("\n"):
                return seen

    def close(self) -> None:
        self.sock.close()


@contextmanager
def daemon(config: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, NotifySocket]]:
    notify = NotifySocket(tmp_path / "notify.sock")
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "NOTIFY_SOCKET": str(notify.path)}
    process = subprocess.Popen([sys.executable, "-m", "vicirec", "serve", "--config", str(config),
                                "--port", str(port)], env=env, stderr=subprocess.PIPE)
    try:
        notify.expect("READY=1")
        yield process, port, notify
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=5.0)
        assert process.stderr is not None
        process.stderr.close()
        notify.close()


def test_notify_ready_then_sigterm_lets_the_session_in_flight_finish(
    sim: VicidialSimulator, tmp_path: Path
) -> None:
    log = tmp_path / "daemon.log"
    config = write_config(tmp_path / "vicirec.toml", sim, log=log)
    sim.inject(Fault("slow", count=1, function="recording", value="START", delay=1.0))
    with daemon(config, tmp_path) as (process, port, notify):
        listening = [e for e in log_events(log) if e["event"] == "fastagi_listening"]
        assert listening and listening[0]["port"] == port and listening[0]["host"] == HOST
        runs: list[AgiRun] = []
        caller = threading.Thread(target=lambda: runs.append(fastagi(port, ["START"], customer())))
        caller.start()
        assert wait_for(lambda: sim.count(function="recording", value="START") == 1)
        process.send_signal(signal.SIGTERM)
        notify.expect("STOPPING=1")
        assert wait_for(lambda: _refused(port), timeout=2.0)  # no longer accepting
        assert process.wait(timeout=10.0) == 0
        caller.join(timeout=10.0)
    assert runs and runs[0].channel.variables["VICIREC_RESULT"] == "OK"  # finished inside the grace
    assert sim.starts_for("1000") == 1
    assert [e["event"] for e in log_events(log)][-1] == "fastagi_stopped"


def _refused(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=0.5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sighup_reloads_the_config_and_reopens_the_log(sim: VicidialSimulator, tmp_path: Path) -> None:
    log = tmp_path / "daemon.log"
    config = write_config(tmp_path / "vicirec.toml", sim, log=log, source="first")
    with daemon(config, tmp_path) as (process, port, notify):
        assert fastagi(port, ["STATUS"], customer()).channel.variables["VICIREC_RESULT"] == "OK"
        assert sim.requests[-1].params["source"] == "first"

        write_config(config, sim, log=log, source="second")
        log.rename(tmp_path / "daemon.log.1")  # logrotate moved the file away
        process.send_signal(signal.SIGHUP)
        assert "RELOADING=1" in notify.expect("READY=1")[0]
        assert fastagi(port, ["STATUS"], customer()).channel.variables["VICIREC_RESULT"] == "OK"
        assert sim.requests[-1].params["source"] == "second"
        assert "fastagi_reloaded" in [e["event"] for e in log_events(log)]  # the new file

        config.write_text("[vicidial\nnot toml")
        process.send_signal(signal.SIGHUP)
        notify.expect("READY=1")
        assert fastagi(port, ["STATUS"], customer()).channel.variables["VICIREC_RESULT"] == "OK"
        assert sim.requests[-1].params["source"] == "second"  # the old config is kept
        assert "fastagi_reload_failed" in [e["event"] for e in log_events(log)]
        assert process.poll() is None


def test_exit_codes_for_a_bad_config_and_a_taken_port(sim: VicidialSimulator, tmp_path: Path) -> None:
    serve = [sys.executable, "-m", "vicirec", "serve"]
    missing = subprocess.run([*serve, "--config", str(tmp_path / "missing.toml")], check=False,
                             capture_output=True, timeout=20)
    assert missing.returncode == 78, missing.stderr
    # One plain line for the admin at the terminal, not a JSON log object.
    assert missing.stderr.decode().splitlines() == [
        f"vicirec serve: config file {tmp_path / 'missing.toml'} does not exist "
        "(fix it, run `vicirec check`, start again)"]
    config = write_config(tmp_path / "vicirec.toml", sim)
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = subprocess.run([*serve, "--config", str(config), "--port", str(port)], check=False,
                              capture_output=True, timeout=20)
    assert busy.returncode == 69, busy.stderr
    assert b"cannot listen" in busy.stderr


def test_notifier_reaches_an_abstract_socket() -> None:
    name = f"vicirec-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        listener.settimeout(2.0)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).ready("up")
        assert listener.recv(1024) == b"READY=1\nSTATUS=up"
    assert not Notifier({}).ready("nobody listens")
