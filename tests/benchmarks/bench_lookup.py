"""Agent lookup speed: lookups per second and latency of each backend, cached and uncached.

One run measures every row: the ``http`` backend (non-agent API ``logged_in_agents`` against the
VICIdial simulator, in its own process, keep-alive HTTP) and the ``mysql`` backend (a private
MariaDB started for the run), each without and with the FastAGI daemon's shared cache
(``agents.cache_seconds = 1``), from 1 thread and from several. Everything talks to 127.0.0.1 only;
each row runs for ``--seconds``.

    python tests/benchmarks/bench_lookup.py                  # 2 s a row, 100 agents, 8 threads
    python tests/benchmarks/bench_lookup.py --seconds 1 --agents 300

"backend fetches" is how often VICIdial was really asked: with the cache, one per second at most,
however many callers look at once.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: mariadb_server

from mariadb_server import MariaDb, ServerUnavailable, start_private_server  # noqa: E402
from vicirec.agents.astguiclient import load_astguiclient_conf  # noqa: E402
from vicirec.agents.cache import CachedDirectory  # noqa: E402
from vicirec.agents.chain import AgentDirectory  # noqa: E402
from vicirec.agents.http_directory import HttpDirectory  # noqa: E402
from vicirec.agents.mysql_directory import MysqlDirectory  # noqa: E402
from vicirec.config import Config, config_from_mapping  # noqa: E402
from vicirec.deadline import Deadline  # noqa: E402
from vicirec.vicidial.client import VicidialClient, make_session  # noqa: E402

CACHE_SECONDS = 1.0
START_TIMEOUT = 30.0


def agent_rows(count: int) -> list[dict[str, Any]]:
    """``count`` logged-in agents, a third of them on a call."""
    rows = []
    for index in range(count):
        user = str(3000 + index)
        on_call = index % 3 == 0
        rows.append(
            {
                "user": user,
                "server_ip": "10.10.10.15",
                "conf_exten": str(8700000 + index),
                "extension": f"SIP/{user}",
                "status": "INCALL" if on_call else "READY",
                "lead_id": index + 1 if on_call else 0,
                "campaign_id": "BENCH",
                "uniqueid": f"1795460000.{index}" if on_call else "",
                "callerid": f"V1123181500{index + 1:09d}" if on_call else "",
                "channel": f"SIP/trunk-{index:08x}" if on_call else "",
            }
        )
    return rows


# --- the simulator in its own process -------------------------------------------------------------


def _serve_simulator(agents: int, reply: Connection, stop: Any) -> None:
    from vicirec.testing.simulator import VicidialSimulator

    simulator = VicidialSimulator(screen_delay=None, keep_alive=True)
    for row in agent_rows(agents):
        simulator.state.log_in_agent(
            row["user"],
            conf_exten=row["conf_exten"],
            extension=row["extension"],
            status=row["status"],
            lead_id=row["lead_id"],
            callerid=row["callerid"],
            uniqueid=row["uniqueid"],
            channel=row["channel"],
            campaign_id=row["campaign_id"],
        )
    simulator.start()
    reply.send(simulator.base_url)
    try:
        stop.wait(timeout=3600)
    finally:
        simulator.stop()


class SimulatorProcess:
    def __init__(self, agents: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        parent, child = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_serve_simulator, args=(agents, child, self._stop), daemon=True
        )
        self._process.start()
        if not parent.poll(START_TIMEOUT):
            self.close()
            raise RuntimeError("the VICIdial simulator did not start")
        self.base_url: str = parent.recv()

    def close(self) -> None:
        self._stop.set()
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout=5)


# --- measuring ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    backend: str
    cached: bool
    threads: int
    lookups: int
    seconds: float
    p50_ms: float
    p99_ms: float
    fetches: int
    errors: int


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def measure(directory: AgentDirectory, threads: int, seconds: float) -> tuple[list[float], int, float]:
    """Every thread looks up back to back for ``seconds``; latencies (s), errors, wall time."""
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors = [0] * threads
    start = threading.Barrier(threads + 1)
    stop_at = [0.0]

    def worker(slot: int) -> None:
        start.wait()
        mine = latencies[slot]
        while True:
            began = time.perf_counter()
            if began >= stop_at[0]:
                return
            try:
                directory.logged_in_agents(Deadline(5.0))
            except Exception:  # noqa: BLE001 - counted and shown, never fatal to the run
                errors[slot] += 1
            mine.append(time.perf_counter() - began)

    pool = [threading.Thread(target=worker, args=(slot,), daemon=True) for slot in range(threads)]
    for thread in pool:
        thread.start()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    start.wait()
    for thread in pool:
        thread.join(timeout=seconds + 30)
    wall = time.perf_counter() - began
    return [value for values in latencies for value in values], sum(errors), wall


class CountingDirectory:
    """Counts how often the real backend is asked."""

    def __init__(self, inner: AgentDirectory) -> None:
        self.inner = inner
        self.name = inner.name
        self.fetches = 0
        self._lock = threading.Lock()

    def logged_in_agents(self, deadline: Deadline) -> Any:
        with self._lock:
            self.fetches += 1
        return self.inner.logged_in_agents(deadline)


def run_rows(backend: str, make: Any, threads: Sequence[int], seconds: float) -> list[Row]:
    rows = []
    for cached in (False, True):
        for count in threads:
            counting = CountingDirectory(make())
            directory: AgentDirectory = CachedDirectory(counting, CACHE_SECONDS) if cached else counting
            directory.logged_in_agents(Deadline(5.0))  # warm up: connections, imports
            counting.fetches = 0
            if isinstance(directory, CachedDirectory):
                directory.clear()
            latencies, errors, wall = measure(directory, count, seconds)
            latencies.sort()
            rows.append(
                Row(
                    backend,
                    cached,
                    count,
                    len(latencies),
                    wall,
                    percentile(latencies, 0.5) * 1000,
                    percentile(latencies, 0.99) * 1000,
                    counting.fetches,
                    errors,
                )
            )
    return rows


def print_table(rows: Sequence[Row], agents: int, seconds: float) -> None:
    print(
        f"agent lookup: {agents} logged-in agents, {seconds:g} s a row, cache {CACHE_SECONDS:g} s, 127.0.0.1"
    )
    header = (
        f"{'backend':8} {'cache':6} {'threads':>7} {'lookups':>8} {'lookups/s':>10} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'backend fetches':>15} {'errors':>6}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row.backend:8} {'yes' if row.cached else 'no':6} {row.threads:>7} {row.lookups:>8} "
            f"{row.lookups / row.seconds:>10.0f} {row.p50_ms:>8.3f} {row.p99_ms:>8.3f} {row.fetches:>15} "
            f"{row.errors:>6}"
        )


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each row (default 2)")
    parser.add_argument("--agents", type=int, default=100, help="logged-in agents (default 100)")
    parser.add_argument("--threads", type=int, default=8, help="concurrent callers in the second row")
    options = parser.parse_args(argv)
    seconds = min(max(options.seconds, 0.2), 10.0)
    threads = sorted({1, max(1, options.threads)})
    rows: list[Row] = []

    simulator = SimulatorProcess(options.agents)
    try:
        config: Config = config_from_mapping(
            {"vicidial": {"api_url": simulator.base_url + "/agc/api.php", "user": "6666", "password": "1234"}}
        )
        session = make_session(pool_size=max(threads))
        client = VicidialClient(config, session=session)
        rows += run_rows("http", lambda: HttpDirectory(client), threads, seconds)
    finally:
        simulator.close()

    database: Optional[MariaDb] = None
    try:
        database = start_private_server()
    except ServerUnavailable as exc:
        print(f"mysql rows skipped: {exc}", file=sys.stderr)
    if database is not None:
        try:
            database.replace_agents(agent_rows(options.agents))
            with tempfile.TemporaryDirectory(prefix="vicirec-bench-") as workdir:
                conf = database.astguiclient_conf(Path(workdir) / "astguiclient.conf")
                settings = load_astguiclient_conf(str(conf))
                rows += run_rows("mysql", lambda: MysqlDirectory(settings, config), threads, seconds)
        finally:
            database.stop()
    print_table(rows, options.agents, seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
