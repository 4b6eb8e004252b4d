"""Scaling: the load of ``bench_load.py`` at 1, 10, 50 and 200 concurrent callers, one daemon.

The daemon keeps its default ``fastagi.max_sessions`` (64): beyond it, connections must be refused
at once with ``VICIREC_ERROR=UNREACHABLE`` ("busy" in the table), never queued or left hanging. The
table shows where throughput stops growing and how the daemon degrades past that point. A caller
whose session was refused starts its next one 0.1 s later (a new call, not a retry storm).

"wait" columns are for admitted invocations, "busy wait" for refused ones. "sessions" counts the
sessions started, "sess/s" those completed without any error or refusal, "OK inv/s" the
invocations (START or STATUS) answered OK: past saturation a session whose START got in but whose
STATUS was refused is work done but no completed session.

    python tests/benchmarks/bench_scale.py
    python tests/benchmarks/bench_scale.py --levels 1,50,200 --seconds 10
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from agi_bench_support import Budget, DaemonProcess, SimulatorProcess, print_table, write_config
from bench_load import HEADERS, LoadFigures, run_load, table_row


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--levels", default="1,10,50,200", help="concurrent callers, comma-separated")
    parser.add_argument("--seconds", type=float, default=12.0, help="time per level (sessions capped too)")
    parser.add_argument("--sessions-per-caller", type=int, default=40)
    parser.add_argument("--max-sessions", type=int, default=64, help="the daemon's fastagi.max_sessions")
    options = parser.parse_args(argv)
    levels = [int(level) for level in options.levels.split(",")]
    budget = Budget(len(levels) * (options.seconds + 20) + 60)
    load_before = os.getloadavg()[0]
    rows = []
    best: Optional[LoadFigures] = None
    with tempfile.TemporaryDirectory(prefix="vicirec-bench-") as tmp, \
            SimulatorProcess(agents=max(levels)) as sim:
        workdir = Path(tmp)
        config = write_config(workdir / "vicirec.toml", sim.api_url, log=workdir / "vicirec.log",
                              fastagi={"max_sessions": options.max_sessions})
        with DaemonProcess(config, workdir) as daemon:
            for level in levels:
                if budget.left() < options.seconds + 10:
                    break
                figures = run_load(daemon, sim, concurrency=level, max_seconds=options.seconds,
                                   sessions=level * options.sessions_per_caller)
                rows.append(table_row(figures))
                if best is None or figures.per_second > best.per_second:
                    best = figures
                results = dict(figures.result.results())
                print(f"  {level} callers: {results}, aborted {figures.result.aborted}", flush=True)
    print_table(f"FastAGI scaling, daemon max_sessions={options.max_sessions}, session = START + STATUS; "
                f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}", HEADERS, rows)
    if best is not None:
        print(f"\nsaturation: the most sessions/s ({best.per_second:.1f}) at {best.concurrency} callers; "
              f"past max_sessions the excess is refused (busy, and how long a refusal took), the wait of "
              f"the admitted stays bounded (p99 column), errors counts everything else")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
