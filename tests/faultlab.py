"""Shared rig of the fault tests: a VICIdial simulator whose API user has a distinctive password,
configs with a small deadline, the FastAGI daemon (``vicirec serve``) as a subprocess, and one
``run`` that drives either transport through the fake Asterisk.

Everything talks to 127.0.0.1 and every wait is bounded.
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Optional

from vicirec.engine import VARIABLE_NAMES
from vicirec.testing.fake_asterisk import AgiRun, FakeAsterisk, FakeChannel, parse_args
from vicirec.testing.harness import (
    TomlValue,
    agi_environment,
    caller_channel,
    process_agi_command,
    write_config,
)
from vicirec.testing.simulator import API_USER, ApiUser, Fault, VicidialSimulator

#: The API password every fault test configures: distinctive, so a leak anywhere is found.
SECRET = "S3cr3t-Pa55"
#: ``[call] deadline`` of the fault tests, per transport. The process AGI spends its first few hundred
#: milliseconds of CPU importing (seconds on a loaded two-core box), inside its deadline; the
#: daemon pays that once.
DEADLINES = {"process": 4.0, "fastagi": 2.5}
DEADLINE = DEADLINES["fastagi"]
#: What a run may take beyond the deadline: interpreter start, writing the variables, exit.
MARGIN = 1.0
#: The fake Asterisk's own bound on one AGI() call; far above anything a passing run takes.
RUN_TIMEOUT = 20.0
TRANSPORTS = ("process", "fastagi")
FASTAGI_SCRIPT = "vicirec"

ASTERISK = FakeAsterisk()
TRACEBACK = b"Traceback (most recent call last)"


def free_port() -> int:
    """A port nothing listens on (bound and released at once: connecting to it is refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def closed_api_url() -> str:
    return f"http://127.0.0.1:{free_port()}/agc/api.php"


def secure(sim: VicidialSimulator, password: str = SECRET) -> VicidialSimulator:
    """Give the simulator's API user (6666) our password (again after ``sim.reset()``)."""
    sim.state.add_user(ApiUser(API_USER, password, full_name="Admin", user_level=9))
    return sim


def lab_config(
    directory: Path,
    api_url: str,
    *,
    deadline: float = DEADLINE,
    overrides: Optional[Mapping[str, Mapping[str, TomlValue]]] = None,
) -> Path:
    """A 0640 config in ``directory`` (log: ``directory/vicirec.log``) with the secret password,
    the small deadline, a read timeout no shorter than it (the deadline is what is under test, not
    the per-attempt cap) and no circuit breaker (these tests want every request to go out)."""
    directory.mkdir(parents=True, exist_ok=True)
    sections: dict[str, dict[str, TomlValue]] = {
        "call": {"deadline": deadline},
        "vicidial": {"failure_threshold": 0, "read_timeout": deadline},
    }
    for section, values in (overrides or {}).items():
        sections.setdefault(section, {}).update(values)
    return write_config(directory, api_url, password=SECRET, overrides=sections)


class AgentFaultSimulator(VicidialSimulator):
    """The simulator with faults chosen by ``agent_user`` (on top of the injected ones), so many
    cases run at the same time against one simulator (and one daemon), each on its own agent.
    ``on_request[agent]`` is called as each request of that agent arrives."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plans: dict[str, Callable[[], Fault]] = {}
        self.on_request: dict[str, Callable[[], None]] = {}

    def _arrive(
        self, method: str, path: str, get: Mapping[str, bytes], post: Mapping[str, bytes]
    ) -> Optional[Fault]:
        injected = super()._arrive(method, path, get, post)  # records the request
        agent = (get.get("agent_user") or post.get("agent_user") or b"").decode("latin-1")
        arrived = self.on_request.get(agent)
        if arrived is not None:
            arrived()
        if injected is not None:
            return injected
        plan = self.plans.get(agent)
        return plan() if plan is not None else None


class Once:
    """Calls ``action`` the first time it is called, never again (thread-safe)."""

    def __init__(self, action: Callable[[], None]) -> None:
        self._action: Optional[Callable[[], None]] = action
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            action, self._action = self._action, None
        if action is not None:
            action()


class Daemon:
    """``python -m vicirec serve --config F --host 127.0.0.1 --port 0`` as a subprocess; the port it
    got is read from its ``fastagi_listening`` log event."""

    def __init__(self, config: Path, log: Path, *, start_timeout: float = 20.0) -> None:
        self.config = config
        self.log = log
        self.stderr_path = config.with_name("daemon.stderr")
        self._stderr = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vicirec", "serve", "--config", str(config), "--host", "127.0.0.1",
             "--port", "0"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr,
            start_new_session=True,
        )
        self.port = self._wait_listening(start_timeout)

    def _wait_listening(self, timeout: float) -> int:
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            if self.proc.poll() is not None:
                break
            port = _listening_port(self.log, self.proc.pid)
            if port is not None:
                return port
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"vicirec serve did not start: {self.stderr().decode('utf-8', 'replace')[-2000:]}")

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr(self) -> bytes:
        return self.stderr_path.read_bytes()

    def rss_kb(self) -> int:
        return vm_rss_kb(self.proc.pid)

    def stop(self, timeout: float = 15.0) -> Optional[int]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5.0)
        self._stderr.close()
        return self.proc.returncode


def _listening_port(log: Path, pid: int) -> Optional[int]:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        if '"fastagi_listening"' not in line:
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("pid") in (None, pid):
            return int(event["port"])
    return None


def vm_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@dataclass
class Endpoint:
    """One way into vicirec: the process AGI with ``config``, or the daemon serving it."""

    transport: str
    config: Path
    daemon: Optional[Daemon] = None
    extra_logs: list[Path] = field(default_factory=list)

    @property
    def log(self) -> Path:
        return self.config.with_name("vicirec.log")

    def run(self, args: Sequence[str], channel: Optional[FakeChannel] = None, **kw: Any) -> AgiRun:
        channel = channel if channel is not None else caller_channel()
        kw.setdefault("timeout", RUN_TIMEOUT)
        if self.transport == "process":
            env = kw.pop("env", None) or agi_environment(self.config)
            return ASTERISK.run_process(process_agi_command(), list(args), channel, env=env, **kw)
        assert self.daemon is not None
        return ASTERISK.run_fastagi("127.0.0.1", self.daemon.port, FASTAGI_SCRIPT, list(args), channel, **kw)

    def stderr(self, run: Optional[AgiRun] = None) -> bytes:
        """What went to stderr: the AGI's own (process) or the daemon's so far (FastAGI)."""
        if self.daemon is not None:
            return self.daemon.stderr()
        return run.stderr if run is not None else b""

    def logs(self) -> bytes:
        blobs = []
        for path in [self.log, *self.extra_logs]:
            if path.exists():
                blobs.append(path.read_bytes())
        return b"\n".join(blobs)


def deadline_for(transport: str) -> float:
    return DEADLINES[transport]


def start_endpoint(transport: str, config: Path) -> Endpoint:
    if transport == "process":
        return Endpoint("process", config)
    return Endpoint("fastagi", config, daemon=Daemon(config, config.with_name("vicirec.log")))


def variables(run: AgiRun) -> dict[str, str]:
    """Every VICIREC_* variable (asserted set), as strings."""
    values = {name: run.channel.variables.get(name) for name in VARIABLE_NAMES}
    missing = [name for name, value in values.items() if value is None]
    assert not missing, f"not set: {missing}\n{run.dump()}"
    return {name: value or "" for name, value in values.items()}


def assert_contract(run: AgiRun, endpoint: Endpoint) -> dict[str, str]:
    """The dialplan contract on either transport: every VICIREC_* variable set, a clean end (exit 0
    / the daemon still up), nothing but well-formed AGI commands sent, no traceback anywhere."""
    assert not run.timed_out, run.dump()
    if endpoint.transport == "process":
        assert run.exit_code == 0, (run.exit_code, run.stderr.decode("utf-8", "replace"))
    else:
        assert endpoint.daemon is not None and endpoint.daemon.alive
    assert run.agistatus in ("SUCCESS", "HANGUP"), run.agistatus
    assert_clean_commands(run)
    assert TRACEBACK not in endpoint.stderr(run), endpoint.stderr(run).decode("utf-8", "replace")
    result = variables(run)
    assert result["VICIREC_RESULT"] in ("OK", "ERROR")
    return result


def assert_clean_commands(run: AgiRun) -> None:
    for line in run.sent_by_script().splitlines():
        words = parse_args(line)
        assert words[:2] in ([b"SET", b"VARIABLE"], [b"GET", b"VARIABLE"], [b"GET", b"FULL"]), line


def assert_no_secret(run: AgiRun, endpoint: Endpoint, secret: str = SECRET) -> None:
    """The password is nowhere: channel variables, AGI transcript (both directions), stderr, logs."""
    needle = secret.encode()
    for name, value in run.channel.variables.items():
        assert secret not in value, f"password in channel variable {name}"
    assert needle not in run.sent_by_script(), "password sent to Asterisk"
    assert needle not in run.received_by_script(), "password in what Asterisk sent"
    assert needle not in endpoint.stderr(run), "password on stderr"
    assert needle not in endpoint.logs(), "password in the log file"


def log_events(path: Path) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    if not path.exists():
        return events
    for line in path.read_text(errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            events.append({"event": "<unparsable>", "line": line})
    return events


_AGENT_COUNTER = iter(range(10**6))
_AGENT_LOCK = threading.Lock()


def fresh_agent(sim: VicidialSimulator, prefix: str = "f") -> str:
    """A new logged-in agent (INCALL in its own room), so runs never share VICIdial state."""
    with _AGENT_LOCK:
        number = next(_AGENT_COUNTER)
    user = f"{prefix}{os.getpid() % 1000}x{number}"
    sim.state.log_in_agent(user, conf_exten=f"87{number:05d}", extension=f"SIP/{user}", status="INCALL",
                           lead_id=number + 100)
    return user


def fresh_channel(**fields: Any) -> FakeChannel:
    """The caller channel of the harness with a uniqueid no other run uses (to find its log lines)."""
    with _AGENT_LOCK:
        number = next(_AGENT_COUNTER)
    fields.setdefault("uniqueid", f"{int(time.time())}.{number}")
    return caller_channel(**fields)


def invocation_event(endpoint: Endpoint, uniqueid: str) -> dict[str, Any]:
    """The one ``invocation`` log event of the run with ``uniqueid``."""
    found = [
        event for event in log_events(endpoint.log)
        if event.get("event") == "invocation" and event.get("uniqueid") == uniqueid
    ]
    assert len(found) == 1, found
    return found[0]


def give_recording(sim: VicidialSimulator, user: str) -> int:
    """Make ``user`` record (as if the screen had acted on a START): STATUS says active, STOP works."""
    row = sim.state.add_recording(user=user, start_time=time.time(), filename=f"20240501-120000_{user}")
    sim.state.set_external_recording(user, str(row.recording_id))
    return row.recording_id


class EndlessBody:
    """An HTTP server on 127.0.0.1 that answers 200 and then streams filler for ever (until the
    client goes away or ``limit`` bytes): what a runaway PHP page looks like. Counts what it sent."""

    CHUNK = b"<!-- " + b"x" * 16370 + b" -->\n"

    def __init__(self, limit: int = 256 * 1024 * 1024) -> None:
        self.limit = limit
        self.sent = 0
        self.client_left = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.end_headers()
                try:
                    while outer.sent < outer.limit:
                        self.wfile.write(outer.CHUNK)
                        outer.sent += len(outer.CHUNK)
                except OSError:
                    outer.client_left.set()

            do_GET = do_POST

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                       daemon=True)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/agc/api.php"

    def __enter__(self) -> EndlessBody:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5.0)
