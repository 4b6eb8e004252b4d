"""Per-invocation cost: the process AGI, the FastAGI daemon and a naive pyst2 + requests baseline.

Each transport runs the same START (agent found by VICIdial's call id in CALLERID(name), stage
``_CONSENT``) against the VICIdial simulator (its own process), driven by the fake Asterisk
(``FakeAsterisk.run_process`` / ``run_fastagi``): what Asterisk waits per AGI() call, and the CPU
the AGI costs.

* process AGI: the wrapper ``deploy/install.sh`` writes (``#!<venv python> -I`` + ``main()``); CPU
  is the child's, from ``getrusage(RUSAGE_CHILDREN)`` deltas around each run (the fake reaps it);
* naive baseline: ``naive_agi.py`` with the same interpreter line;
* FastAGI: ``vicirec serve`` as a process; CPU from ``/proc/<pid>/stat`` deltas (clock ticks) over
  batches of invocations, per invocation, median over the batches.

    python tests/benchmarks/bench_invocation.py              # 25 process runs each, 300 FastAGI
    python tests/benchmarks/bench_invocation.py --process-runs 10 --fastagi-runs 100

Goals: FastAGI at least 20x cheaper in CPU than the process AGI; process AGI CPU / naive CPU <= 1.2.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from agi_bench_support import (
    HERE,
    HOST,
    Budget,
    DaemonProcess,
    SimulatorProcess,
    children_cpu_seconds,
    median,
    percentile,
    print_table,
    write_config,
)

from vicirec.testing.fake_asterisk import AgiRun, FakeAsterisk, FakeChannel

ARGS = ["START", "_CONSENT"]
FASTAGI_BATCH = 50
GOAL_FASTAGI_RATIO = 20.0
GOAL_NAIVE_RATIO = 1.2


def write_agi_scripts(directory: Path) -> tuple[Path, Path]:
    """The process AGI wrapper as install.sh writes it, and the naive script, same interpreter line."""
    shebang = f"#!{sys.executable} -I\n"
    vicirec = directory / "vicirec.agi"
    vicirec.write_text(shebang + "from vicirec.process_agi import main\nraise SystemExit(main())\n")
    naive = directory / "naive.agi"
    naive.write_text(shebang + (HERE / "naive_agi.py").read_text())
    for script in (vicirec, naive):
        script.chmod(0o755)
    return vicirec, naive


class Series:
    def __init__(self, name: str) -> None:
        self.name = name
        self.cpu: list[float] = []
        self.wall: list[float] = []
        self.ok = 0
        self.runs = 0

    def add(self, run: AgiRun, cpu: Optional[float]) -> None:
        self.runs += 1
        if cpu is not None:
            self.cpu.append(cpu)
        self.wall.append(run.elapsed)
        self.ok += run.channel.variables.get("VICIREC_RESULT") == "OK"

    def row(self) -> list[object]:
        return [self.name, self.runs, median(self.cpu) * 1000, percentile(self.cpu, 0.9) * 1000,
                median(self.wall) * 1000, percentile(self.wall, 0.9) * 1000, self.ok]


def run_process_agis(asterisk: FakeAsterisk, scripts: Sequence[tuple[Series, Path]],
                     agents: list[tuple[str, str]], env: dict[str, str], runs: int, budget: Budget) -> None:
    for number in range(runs):
        for series, script in scripts:  # interleaved: both see the same machine load
            if budget.over:
                return
            channel = FakeChannel(callerid_name=agents[number % len(agents)][1], callerid_num="7275551212")
            before = children_cpu_seconds()
            run = asterisk.run_process([str(script)], ARGS, channel, env=env, timeout=20.0)
            series.add(run, children_cpu_seconds() - before)


def run_fastagi(asterisk: FakeAsterisk, daemon: DaemonProcess, series: Series, agents: list[tuple[str, str]],
                runs: int, budget: Budget) -> None:
    for warm in range(10):
        channel = FakeChannel(callerid_name=agents[warm % 2][1])
        asterisk.run_fastagi(HOST, daemon.port, "vicirec", ARGS, channel)
    done = 0
    while done < runs and not budget.over:
        before = daemon.cpu_seconds()
        batch = min(FASTAGI_BATCH, runs - done)
        for number in range(batch):
            channel = FakeChannel(callerid_name=agents[(done + number) % len(agents)][1],
                                  callerid_num="7275551212")
            series.add(asterisk.run_fastagi(HOST, daemon.port, "vicirec", ARGS, channel, timeout=20.0), None)
        series.cpu.append((daemon.cpu_seconds() - before) / batch)
        done += batch


WATCHED_IMPORTS = ("structlog.dev", "asyncio", "asterisk.agi", "tomllib", "tomli", "requests", "structlog",
                   "urllib3", "ssl", "http.client", "importlib.metadata")


def import_profile(asterisk: FakeAsterisk, agents: list[tuple[str, str]], env: dict[str, str]) -> None:
    """One process AGI run under ``-X importtime``: the total and the heaviest imports."""
    channel = FakeChannel(callerid_name=agents[0][1], callerid_num="7275551212")
    argv = [sys.executable, "-X", "importtime", "-I", "-m", "vicirec.process_agi"]
    run = asterisk.run_process(argv, ARGS, channel, env=env, timeout=20.0)
    cumulative: dict[str, int] = {}
    top_level = 0
    for line in run.stderr.decode("utf-8", "replace").splitlines():
        parts = line.split("|")
        if not line.startswith("import time:") or len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2].rstrip()
        cumulative[name.strip()] = int(parts[1])
        if not name.startswith("  "):
            top_level += int(parts[1])
    rows = [[name, cumulative[name] / 1000 if name in cumulative else "not imported"]
            for name in WATCHED_IMPORTS]
    print_table(f"process AGI under -X importtime: {len(cumulative)} modules, {top_level / 1000:.1f} ms of "
                f"imports (top-level cumulative; importtime's own overhead included)",
                ["module", "cumulative ms"], rows)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--process-runs", type=int, default=25, help="runs of each process AGI")
    parser.add_argument("--fastagi-runs", type=int, default=300)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    options = parser.parse_args(argv)
    budget = Budget(options.max_seconds)
    load_before = os.getloadavg()[0]
    process, naive, fastagi = Series("process AGI"), Series("naive pyst2+requests"), Series("FastAGI")
    asterisk = FakeAsterisk()
    with tempfile.TemporaryDirectory(prefix="vicirec-bench-") as tmp, SimulatorProcess(agents=10) as sim:
        workdir = Path(tmp)
        config = write_config(workdir / "vicirec.toml", sim.api_url, log=workdir / "vicirec.log")
        vicirec_agi, naive_agi = write_agi_scripts(workdir)
        env = {**os.environ, "VICIREC_CONFIG": str(config), "NAIVE_VICIDIAL_URL": f"http://{HOST}:{sim.port}",
               "NAIVE_VICIDIAL_USER": "6666", "NAIVE_VICIDIAL_PASS": "1234"}
        run_process_agis(asterisk, [(process, vicirec_agi), (naive, naive_agi)], sim.agents, env,
                         options.process_runs, budget)
        import_profile(asterisk, sim.agents, env)
        with DaemonProcess(config, workdir) as daemon:
            run_fastagi(asterisk, daemon, fastagi, sim.agents, options.fastagi_runs, budget)
    print_table(
        f"Per-invocation cost of START (call id lookup + START + variables), fake Asterisk -> simulator; "
        f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}",
        ["transport", "runs", "CPU median ms", "CPU p90 ms", "wall median ms", "wall p90 ms", "OK"],
        [process.row(), naive.row(), fastagi.row()],
    )
    cpu = {series.name: median(series.cpu) for series in (process, naive, fastagi)}
    fastagi_ratio = cpu["process AGI"] / cpu["FastAGI"] if cpu["FastAGI"] else float("inf")
    naive_ratio = cpu["process AGI"] / cpu["naive pyst2+requests"] if cpu["naive pyst2+requests"] else 0.0
    wall_ratio = median(process.wall) / median(fastagi.wall) if fastagi.wall else 0.0
    fastagi_met = "met" if fastagi_ratio >= GOAL_FASTAGI_RATIO else "NOT met"
    naive_met = "met" if naive_ratio <= GOAL_NAIVE_RATIO else "NOT met"
    print(f"\nratios: process AGI / FastAGI CPU = {fastagi_ratio:.1f}x (goal >= {GOAL_FASTAGI_RATIO:g}x: "
          f"{fastagi_met}); process AGI / naive CPU = {naive_ratio:.2f} (goal <= {GOAL_NAIVE_RATIO}: "
          f"{naive_met}); process AGI / FastAGI wall = {wall_ratio:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
