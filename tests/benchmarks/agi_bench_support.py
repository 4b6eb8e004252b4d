"""What the FastAGI / process AGI benchmarks share: the simulator and daemon processes, CPU
accounting, statistics and tables. Everything listens on and talks to 127.0.0.1 only, and every
wait is bounded."""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Optional

HOST = "127.0.0.1"
HERE = Path(__file__).resolve().parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- CPU ------------------------------------------------------------------------------------------


def process_cpu_seconds(pid: int) -> float:
    """user + system CPU of a live process, all its threads (``/proc/<pid>/stat``, clock ticks)."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    # fields[0] is field 3 (state): utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def children_cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def self_cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- statistics and tables ------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` 0..1); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(fraction * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max(len(str(h)), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
    print(f"\n{title}")
    print("  ".join(str(h).rjust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(value.rjust(w) for value, w in zip(row, widths)))
    sys.stdout.flush()


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


# --- the VICIdial simulator, in its own process ---------------------------------------------------


class SimulatorProcess:
    """``sim_child.py`` as a subprocess; ``ask("starts")`` etc. return its JSON answers."""

    def __init__(self, *, agents: int, screen_delay: float = 0.2) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "sim_child.py"), "--agents", str(agents),
             "--screen-delay", str(screen_delay)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        hello = self._read_line(timeout=30.0)
        self.port: int = hello["port"]
        self.api_url: str = hello["api_url"]
        self.agents: list[tuple[str, str]] = [(user, call_id) for user, call_id in hello["agents"]]

    def ask(self, command: str) -> Any:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._read_line(timeout=30.0)

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.process.pid)

    def _read_line(self, timeout: float) -> Any:
        stdout = self.process.stdout
        assert stdout is not None
        line = _readline_within(stdout, timeout)
        if not line:
            raise RuntimeError("the simulator process did not answer")
        return json.loads(line)

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.ask("quit")
            except (OSError, RuntimeError, ValueError):
                pass
            try:
                self.process.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()

    def __enter__(self) -> SimulatorProcess:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _readline_within(stream: IO[str], timeout: float) -> str:
    import select

    ready, _w, _x = select.select([stream], [], [], timeout)
    return stream.readline() if ready else ""


# --- config and the daemon ------------------------------------------------------------------------


def write_config(path: Path, api_url: str, *, log: Optional[Path] = None,
                 fastagi: Optional[dict[str, Any]] = None, agents: Optional[dict[str, Any]] = None) -> Path:
    lines = ["[vicidial]", f'api_url = "{api_url}"', 'user = "6666"', 'password = "1234"', "[log]"]
    lines += ['target = "file"', f'path = "{log}"'] if log else ['target = "none"']
    # The HTTP lookup cannot corroborate a call id match (no uniqueid / channel in its answer):
    # the benchmarks accept it uncorroborated, so that the lookup by call id really runs.
    agent_settings = {"require_corroboration": False, **(agents or {})}
    for section, values in (("agents", agent_settings), ("fastagi", fastagi or {})):
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


class DaemonProcess:
    """``vicirec serve`` as a subprocess, ready once its ``$NOTIFY_SOCKET`` got ``READY=1``."""

    def __init__(self, config: Path, workdir: Path) -> None:
        self.port = free_port()
        notify_path = workdir / f"notify-{self.port}.sock"
        self._notify_path = notify_path
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(notify_path))
        self._notify.settimeout(30.0)
        env = {**os.environ, "NOTIFY_SOCKET": str(notify_path)}
        vicirec = [sys.executable, "-m", "vicirec", "serve"]
        command = [*vicirec, "--config", str(config), "--port", str(self.port)]
        self.process = subprocess.Popen(command, env=env)
        try:
            while b"READY=1" not in self._notify.recv(4096).split(b"\n"):
                pass
        except OSError:
            self.close()
            raise

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.process.pid)

    def close(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20.0)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._notify.close()
        self._notify_path.unlink(missing_ok=True)
        return self.process.returncode

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class Budget:
    """A benchmark's wall-clock bound: ``left()`` seconds, ``over`` once spent."""

    def __init__(self, seconds: float) -> None:
        self.until = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self.until - time.monotonic())

    @property
    def over(self) -> bool:
        return time.monotonic() >= self.until
