"""Confirmation cost and speed: requests per confirmed START/STOP, and how long after the agent
screen acted vicirec knew it (issue 11.4).

One run measures four rows: START and STOP confirmed through api.php (STATUS polls; a second STOP
for a STOP), and through VICIdial's database (``lookup = "mysql"``: a private MariaDB kept equal to
the simulator, api.php hears only the command). The simulated screen acts ``--screen-delay`` after
the command; with ``random`` each trial draws it from 0.1 to 1.1 s (the real screen polls once a
second, at a phase the command does not know). Everything runs on 127.0.0.1.

    python tests/benchmarks/bench_confirm.py                 # 8 trials a row, random screen delay
    python tests/benchmarks/bench_confirm.py --trials 4 --screen-delay 1.0

"api.php requests" counts the command too (the old schedule sent 21 STOPs in 5 s of waiting, one
every 250 ms); "detection delay" is from the screen's action to the moment the confirmation saw it.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: mariadb_server, sim_mirror

from mariadb_server import MariaDb, ServerUnavailable, start_private_server  # noqa: E402
from sim_mirror import SimulatorMirror  # noqa: E402
from vicirec.agents.astguiclient import load_astguiclient_conf  # noqa: E402
from vicirec.agents.mysql_directory import MysqlDirectory  # noqa: E402
from vicirec.agents.recording_db import RecordingDatabase  # noqa: E402
from vicirec.config import Config, config_from_mapping  # noqa: E402
from vicirec.confirmation import Confirmed, Confirmer, PollSchedule  # noqa: E402
from vicirec.deadline import Deadline  # noqa: E402
from vicirec.testing.simulator import VicidialSimulator  # noqa: E402
from vicirec.vicidial.client import VicidialClient, make_session  # noqa: E402
from vicirec.vicidial.responses import Action  # noqa: E402

AGENT = "1000"
CONFIRM_SECONDS = 5.0
LIMIT_MS = 600.0


@dataclass
class Row:
    name: str
    requests: list[int]
    reads: list[int]
    delays_ms: list[float]
    failures: int = 0


def trial(sim: VicidialSimulator, confirmer: Confirmer, client: VicidialClient, action: Action,
          delay: float, row: Row) -> None:
    sim.state.screen_delay = delay
    sim.reset_counters()
    deadline = Deadline(CONFIRM_SECONDS + 2.0)
    client.recording(action, AGENT, deadline, "" if action is Action.STOP else "_BENCH")
    window = Deadline(CONFIRM_SECONDS)
    outcome: Confirmed = (confirmer.started if action is Action.START else confirmer.stopped)(
        AGENT, deadline, window)
    acted = sim.state.screen_acted.get(AGENT)
    if not outcome.done or outcome.after is None or acted is None:
        row.failures += 1
        return
    row.requests.append(sim.count(function="recording"))
    row.reads.append(outcome.checks if confirmer.database is not None else 0)
    row.delays_ms.append((window.started + outcome.after - acted) * 1000)


def run_rows(sim: VicidialSimulator, config: Config, database: Optional[RecordingDatabase], label: str,
             trials: int, screen_delay: Optional[float], rng: random.Random) -> list[Row]:
    client = VicidialClient(config, session=make_session(pool_size=2))
    confirmer = Confirmer(client, database, PollSchedule(interval=config.call.confirm_poll_interval))
    rows = [Row(f"{label} START", [], [], []), Row(f"{label} STOP", [], [], [])]
    for _ in range(trials):
        for action, row in ((Action.START, rows[0]), (Action.STOP, rows[1])):
            delay = screen_delay if screen_delay is not None else rng.uniform(0.1, 1.1)
            trial(sim, confirmer, client, action, delay, row)
    return rows


def report(rows: list[Row], old_interval: float) -> None:
    print(f"{'row':<16}{'api.php requests':>18}{'db reads':>10}{'delay ms mean':>15}{'max':>8}{'failed':>8}")
    for row in rows:
        if not row.delays_ms:
            print(f"{row.name:<16}{'-':>18}{'-':>10}{'-':>15}{'-':>8}{row.failures:>8}")
            continue
        print(f"{row.name:<16}{statistics.mean(row.requests):>18.1f}{statistics.mean(row.reads):>10.1f}"
              f"{statistics.mean(row.delays_ms):>15.0f}{max(row.delays_ms):>8.0f}{row.failures:>8}")
    worst = max((max(r.delays_ms) for r in rows if r.delays_ms), default=float("nan"))
    print(f"\nworst detection delay {worst:.0f} ms (limit {LIMIT_MS:.0f} ms): "
          f"{'OK' if worst < LIMIT_MS else 'OVER'}")
    print(f"a 5 s wait that never confirms asks {len(list(PollSchedule(interval=0.5).times(5.0)))} times "
          f"(was {int(CONFIRM_SECONDS / old_interval) + 1} at {old_interval} s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--screen-delay", default="random", help="seconds, or 'random' (0.1-1.1 s)")
    args = parser.parse_args()
    screen_delay = None if args.screen_delay == "random" else float(args.screen_delay)
    rng = random.Random(11)
    rows: list[Row] = []
    with VicidialSimulator(screen_delay=1.0) as sim, tempfile.TemporaryDirectory() as workdir:
        config = config_from_mapping({
            "vicidial": {"api_url": sim.api_url, "user": "6666", "password": "1234"},
            "call": {"deadline": 8.0},
        })
        rows += run_rows(sim, config, None, "api.php", args.trials, screen_delay, rng)
        database: Optional[MariaDb] = None
        try:
            database = start_private_server()
        except ServerUnavailable as exc:
            print(f"(no MariaDB, database rows skipped: {exc})")
        if database is not None:
            try:
                conf = database.astguiclient_conf(Path(workdir) / "astguiclient.conf")
                directory = MysqlDirectory(load_astguiclient_conf(str(conf)), config)
                with SimulatorMirror(database, sim):
                    rows += run_rows(sim, config, RecordingDatabase(directory), "database", args.trials,
                                     screen_delay, rng)
            finally:
                database.stop()
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"bench_confirm {started}: {args.trials} trials a row, screen delay {args.screen_delay}, "
          f"confirm window {CONFIRM_SECONDS:g} s, poll interval {config.call.confirm_poll_interval} s\n")
    report(rows, old_interval=0.25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
