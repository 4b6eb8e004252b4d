"""Load: N concurrent callers against ``vicirec serve``, each running whole sessions.

A session is one call doing what a dialplan does on a consent key press: ``START,_CONSENT`` (the
agent is found by VICIdial's call id in CALLERID(name): the non-agent API lookup runs, shared by
the daemon's short cache) and then ``STATUS`` (found again the same way: the ``VICIREC_AGENT`` the
START wrote is marked as discovered, so it is not taken for the dialplan's own choice). START and
STATUS are two AGI invocations, two FastAGI connections, like two ``Gosub(vicirec,...)`` calls.
Every invocation sets all 16 ``VICIREC_*`` variables.

The daemon, the VICIdial simulator (its own process, keep-alive HTTP) and the load generator
(``lean_agi_client.py``: one thread, raw sockets, the bytes Asterisk sends) share this machine.

    python tests/benchmarks/bench_load.py             # 50 callers: closed loop, then 200/s offered
    python tests/benchmarks/bench_load.py --concurrency 10 --rate 100 --sessions 1000

Three runs: 3000 sessions (30 s at most) in a closed loop (every caller starts its next session
as soon as one ends: the most the daemon can do); 3000 in an open loop (200 new calls a second
spread over the 50 callers, late when none is free); 10 s of an open loop at 60 % of what the
closed loop carried (the wait when the daemon has headroom). With 50 callers always busy, a
closed loop at 200 sessions/s means 250 ms per session (Little's law), so the latency goal is
judged on the open-loop run: does the daemon carry 200 sessions/s with p99 < 50 ms?

Goal (2 cores): >= 200 sessions/s at 50 concurrent, p99 of Asterisk's wait < 50 ms, no errors,
and the simulator counted exactly one START per session that sent one.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from agi_bench_support import (
    HOST,
    Budget,
    DaemonProcess,
    SimulatorProcess,
    percentile,
    print_table,
    self_cpu_seconds,
    write_config,
)
from lean_agi_client import LeanLoadClient, LoadResult

GOAL_SESSIONS_PER_SECOND = 200.0
GOAL_P99_MS = 50.0
EASY_SECONDS = 10.0


@dataclass
class LoadFigures:
    concurrency: int
    rate: Optional[float]
    result: LoadResult
    daemon_cpu: float
    simulator_cpu: float
    client_cpu: float
    starts_expected: dict[str, int]
    starts_counted: dict[str, int]

    @property
    def completed(self) -> int:
        return self.result.sessions_started

    @property
    def per_second(self) -> float:
        return len(self.result.sessions) / self.result.elapsed if self.result.elapsed else 0.0

    def wait_ms(self, fraction: float) -> float:
        return percentile([o.wait for o in self.result.outcomes if o.result != "BUSY"], fraction) * 1000

    def busy_wait_ms(self, fraction: float) -> float:
        """How long a refused invocation waited for its answer (0 when none was refused)."""
        return percentile([o.wait for o in self.result.outcomes if o.result == "BUSY"], fraction) * 1000

    def session_ms(self, fraction: float) -> float:
        return percentile(self.result.sessions, fraction) * 1000

    def errors(self) -> int:
        return sum(n for result, n in self.result.results().items() if result not in ("OK", "BUSY"))

    def busy(self) -> int:
        return self.result.results().get("BUSY", 0)

    def starts_match(self) -> bool:
        users = set(self.starts_expected) | {u for u, n in self.starts_counted.items() if n}
        return all(self.starts_expected.get(u, 0) == self.starts_counted.get(u, 0) for u in users)

    def cpu_per_session_ms(self, seconds: float) -> float:
        return seconds / self.completed * 1000 if self.completed else 0.0


def run_load(daemon: DaemonProcess, sim: SimulatorProcess, *, concurrency: int, sessions: int,
             max_seconds: float, rate: Optional[float] = None) -> LoadFigures:
    agents = sim.agents[:concurrency]
    if len(agents) < concurrency:
        raise ValueError(f"the simulator has {len(sim.agents)} agents, {concurrency} callers need one each")
    # warm up: connections in the HTTP pool, the lookup cache, the worker threads
    LeanLoadClient(HOST, daemon.port, agents, sessions=min(concurrency * 2, 100), max_seconds=10).run()
    sim.ask("reset")
    daemon_before, sim_before, self_before = daemon.cpu_seconds(), sim.cpu_seconds(), self_cpu_seconds()
    client = LeanLoadClient(HOST, daemon.port, agents, sessions=sessions, max_seconds=max_seconds, rate=rate)
    result = client.run()
    daemon_cpu = daemon.cpu_seconds() - daemon_before
    simulator_cpu = sim.cpu_seconds() - sim_before
    client_cpu = self_cpu_seconds() - self_before
    counted = sim.ask("starts")
    return LoadFigures(concurrency, rate, result, daemon_cpu, simulator_cpu, client_cpu,
                       dict(result.starts_by_agent), {u: n for u, n in counted.items() if n})


HEADERS = ("callers", "offered", "sessions", "sess/s", "OK inv/s", "wait p50 ms", "wait p99 ms",
           "session p99 ms", "daemon CPU ms/sess", "sim CPU ms/sess", "client CPU ms/sess", "OK", "busy",
           "busy wait p99 ms", "errors", "STARTs = sessions", "late starts")


def table_row(figures: LoadFigures) -> list[object]:
    results = figures.result.results()
    return [
        figures.concurrency, f"{figures.rate:g}/s" if figures.rate else "max", figures.completed,
        round(figures.per_second, 1),
        round(results.get("OK", 0) / figures.result.elapsed, 1) if figures.result.elapsed else 0.0,
        figures.wait_ms(0.5), figures.wait_ms(0.99), figures.session_ms(0.99),
        figures.cpu_per_session_ms(figures.daemon_cpu), figures.cpu_per_session_ms(figures.simulator_cpu),
        figures.cpu_per_session_ms(figures.client_cpu), results.get("OK", 0), figures.busy(),
        figures.busy_wait_ms(0.99), figures.errors(), "yes" if figures.starts_match() else "NO",
        figures.result.late_starts,
    ]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rate", type=float, default=GOAL_SESSIONS_PER_SECOND,
                        help="sessions/s offered in the open-loop run")
    parser.add_argument("--sessions", type=int, default=3000, help="sessions per run (two runs)")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="stop starting sessions after this")
    parser.add_argument("--max-sessions", type=int, default=64, help="the daemon's fastagi.max_sessions")
    options = parser.parse_args(argv)
    budget = Budget(2 * options.max_seconds + EASY_SECONDS + 60)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="vicirec-bench-") as tmp, \
            SimulatorProcess(agents=options.concurrency) as sim:
        workdir = Path(tmp)
        config = write_config(workdir / "vicirec.toml", sim.api_url, log=workdir / "vicirec.log",
                              fastagi={"max_sessions": options.max_sessions})
        with DaemonProcess(config, workdir) as daemon:
            closed = run_load(daemon, sim, concurrency=options.concurrency, sessions=options.sessions,
                              max_seconds=min(options.max_seconds, budget.left()))
            opened = run_load(daemon, sim, concurrency=options.concurrency, sessions=options.sessions,
                              max_seconds=min(options.max_seconds, budget.left()), rate=options.rate)
            # and below saturation: what a caller waits when the daemon has headroom
            easy_rate = max(1.0, round(0.6 * min(closed.per_second, options.rate)))
            easy = run_load(daemon, sim, concurrency=options.concurrency, rate=easy_rate,
                            sessions=int(easy_rate * EASY_SECONDS),
                            max_seconds=min(EASY_SECONDS + 5, budget.left()))
    print_table(f"FastAGI load: {options.concurrency} callers, session = START + STATUS (2 invocations), "
                f"daemon max_sessions={options.max_sessions}; load average {load_before:.1f} -> "
                f"{os.getloadavg()[0]:.1f}", HEADERS, [table_row(closed), table_row(opened), table_row(easy)])
    print(f"\nclosed loop (callers back to back): {closed.per_second:.1f} sessions/s = "
          f"{closed.per_second / GOAL_SESSIONS_PER_SECOND:.2f}x the {GOAL_SESSIONS_PER_SECOND:g}/s goal")
    print(f"open loop at {options.rate:g}/s offered: {opened.per_second:.1f} sessions/s achieved, p99 wait "
          f"{opened.wait_ms(0.99):.1f} ms = {opened.wait_ms(0.99) / GOAL_P99_MS:.2f}x the {GOAL_P99_MS:g} ms "
          f"limit, {opened.result.late_starts} late starts, errors {opened.errors()}, aborted "
          f"{opened.result.aborted}")
    print(f"open loop at {easy_rate:g}/s (60 % of what the closed loop carried): p99 wait "
          f"{easy.wait_ms(0.99):.1f} ms, errors {easy.errors()}")
    for name, figures in (("closed", closed), ("open", opened), ("open, 60 %", easy)):
        print(f"results ({name}): {dict(figures.result.results())}")
    met = (opened.per_second >= 0.97 * GOAL_SESSIONS_PER_SECOND and opened.wait_ms(0.99) < GOAL_P99_MS
           and closed.errors() == opened.errors() == 0 and closed.starts_match() and opened.starts_match())
    print(f"goal (>= {GOAL_SESSIONS_PER_SECOND:g} sessions/s with p99 < {GOAL_P99_MS:g} ms, no errors, one "
          f"START per session): {'MET' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
