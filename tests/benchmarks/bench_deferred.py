"""CONSENT latency: from an agent taking a consented call to VICIdial receiving the deferred START.

One run, everything on 127.0.0.1: a private MariaDB (vicidial_live_agents, vicidial_auto_calls),
the VICIdial simulator in a process of its own (it records when each request arrives), and the real
``vicirec serve`` with ``agents.lookup = "mysql"`` and an audit trail. The fake Asterisk sends
``--pending`` consents that no agent ever takes (the load the poller carries) plus ``--taken``
consents; then, one at a time at random intervals, an agent takes each of the latter (one UPDATE of
its live row, as VICIdial does). The latency of a call is the simulator's arrival time of its START
minus the moment that UPDATE returned. Every START must arrive exactly once, for the right agent.

    python tests/benchmarks/bench_deferred.py                       # 200 + 200 consents, 250 ms poll
    python tests/benchmarks/bench_deferred.py --poll 0.1 --taken 100

Goal: the 99th percentile under 300 ms with a 250 ms poll on 200 pending consents. A poll runs every
interval, so the wait is uniform over [0, interval] plus one query and one HTTP request.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: mariadb_server

from mariadb_server import MariaDb, ServerUnavailable, start_private_server  # noqa: E402
from vicirec.testing.fake_asterisk import FakeAsterisk, FakeChannel  # noqa: E402
from vicirec.testing.harness import toml_text  # noqa: E402
from vicirec.testing.simulator import API_PASS, API_USER, VicidialSimulator  # noqa: E402

SERVER_IP = "10.10.10.15"
FIRST_AGENT = 7000
START_TIMEOUT = 20.0


def _simulator_child(agents: int, pipe: Connection) -> None:
    with VicidialSimulator(screen_delay=None, keep_alive=True) as sim:
        for index in range(agents):
            user = str(FIRST_AGENT + index)
            sim.state.log_in_agent(user, conf_exten=str(8600100 + index), extension=f"SIP/{user}")
        pipe.send(sim.api_url)
        while pipe.poll(None):
            if pipe.recv() != "starts":
                break
            with sim.state.lock:
                starts = [(r.params.get("agent_user", ""), r.at) for r in sim.requests
                          if r.params.get("function") == "recording" and r.params.get("value") == "START"]
            pipe.send(starts)


def _uniqueid(index: int) -> str:
    return f"1795470000.{index}"


def _prepare_database(database: MariaDb, taken: int, pending: int) -> None:
    database.replace_agents([
        {"user": str(FIRST_AGENT + i), "server_ip": SERVER_IP, "conf_exten": str(8600100 + i),
         "extension": f"SIP/{FIRST_AGENT + i}", "status": "READY", "campaign_id": "BENCH"}
        for i in range(taken)
    ])
    connection = database.admin()
    try:
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM vicidial_auto_calls")
            for index in range(taken + pending):
                cursor.execute(
                    "INSERT INTO vicidial_auto_calls (server_ip, campaign_id, status, lead_id, uniqueid, "
                    "callerid, channel, call_type) VALUES (%s, 'SALESLINE', 'LIVE', %s, %s, '', '', 'IN')",
                    [SERVER_IP, index + 1, _uniqueid(index)])
    finally:
        connection.close()


def _serve(config: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    process = subprocess.Popen([sys.executable, "-m", "vicirec", "serve", "--config", str(config),
                                "--port", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    give_up = time.monotonic() + START_TIMEOUT
    while time.monotonic() < give_up:
        if log.exists():
            for line in log.read_text().splitlines():
                event = json.loads(line)
                if event.get("event") == "fastagi_listening" and event.get("pid") == process.pid:
                    return process, int(event["port"])
        time.sleep(0.05)
    process.kill()
    raise SystemExit("vicirec serve did not start")


def _percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--poll", type=float, default=0.25, help="fastagi.consent_poll_interval (s)")
    parser.add_argument("--pending", type=int, default=200, help="consents no agent takes (load)")
    parser.add_argument("--taken", type=int, default=200, help="consents an agent takes (measured)")
    parser.add_argument("--seed", type=int, default=1)
    options = parser.parse_args(argv)
    rng = random.Random(options.seed)
    try:
        database = start_private_server()
    except ServerUnavailable as error:
        print(f"no MariaDB: {error}")
        return 1
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    child = context.Process(target=_simulator_child, args=(options.taken, theirs), daemon=True)
    child.start()
    api_url = ours.recv()
    workdir = Path(tempfile.mkdtemp(prefix="vicirec-bench-deferred-"))
    conf = database.astguiclient_conf(workdir / "astguiclient.conf", server_ip=SERVER_IP)
    log = workdir / "vicirec.log"
    config = workdir / "vicirec.toml"
    config.write_text(toml_text({
        "vicidial": {"api_url": api_url, "user": API_USER, "password": API_PASS},
        "agents": {"lookup": "mysql", "astguiclient_conf": str(conf)},
        "log": {"target": "file", "path": str(log), "level": "info"},
        "audit": {"path": str(workdir / "audit.jsonl")},
        "fastagi": {"consent_poll_interval": options.poll, "consent_max_pending": 10000,
                    "consent_timeout": 3600.0},
    }))
    config.chmod(0o600)
    _prepare_database(database, options.taken, options.pending)
    daemon, port = _serve(config, log)
    asterisk = FakeAsterisk()
    try:
        began = time.monotonic()
        total = options.taken + options.pending
        for index in range(total):
            channel = FakeChannel(name=f"SIP/trunk-{index:08x}", uniqueid=_uniqueid(index),
                                  callerid_num="7275551212", context="CONSENT", extension="1")
            run = asterisk.run_fastagi("127.0.0.1", port, "vicirec", ["CONSENT", "_CONSENT"], channel,
                                       timeout=10.0)
            if run.channel.variables.get("VICIREC_DEFERRED") != "1":
                raise SystemExit(f"consent {index} not held: {run.channel.variables.get('VICIREC_MESSAGE')}")
        consenting = time.monotonic() - began
        taken_at: dict[str, float] = {}
        connection = database.admin()
        try:
            with connection.cursor() as cursor:
                for index in range(options.taken):
                    time.sleep(rng.uniform(0.02, 0.08))  # spread over the poll's phase
                    user = str(FIRST_AGENT + index)
                    cursor.execute("UPDATE vicidial_live_agents SET status = 'QUEUE', uniqueid = %s, "
                                   "lead_id = %s WHERE user = %s", [_uniqueid(index), index + 1, user])
                    taken_at[user] = time.time()
        finally:
            connection.close()
        give_up = time.monotonic() + 10 * options.poll + 5
        starts: list[tuple[str, float]] = []
        while time.monotonic() < give_up:
            ours.send("starts")
            starts = ours.recv()
            if len(starts) >= options.taken:
                break
            time.sleep(0.1)
        time.sleep(3 * options.poll)  # later polls must not START anything again
        ours.send("starts")
        starts = ours.recv()
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
        ours.send("quit")
        child.join(timeout=5)
        database.stop()
    per_agent: dict[str, list[float]] = {}
    for user, at in starts:
        per_agent.setdefault(user, []).append(at)
    wrong = [user for user in per_agent if user not in taken_at]
    twice = [user for user, ats in per_agent.items() if len(ats) > 1]
    latencies = [(ats[0] - taken_at[user]) * 1000 for user, ats in per_agent.items() if user in taken_at]
    print(f"consents: {total} ({options.pending} never taken), held in {consenting:.1f} s; "
          f"poll {options.poll * 1000:.0f} ms")
    print(f"STARTs: {len(starts)} for {len(per_agent)} agents; missing {options.taken - len(latencies)}, "
          f"twice {len(twice)}, wrong agent {len(wrong)}")
    if not latencies:
        return 1
    p50, p90, p99 = (_percentile(latencies, share) for share in (0.5, 0.9, 0.99))
    print(f"take -> START latency ms: min {min(latencies):.1f}  p50 {p50:.1f}  p90 {p90:.1f}  "
          f"p99 {p99:.1f}  max {max(latencies):.1f}")
    print(f"p99 / poll interval: {p99 / (options.poll * 1000):.2f}; goal p99 < 300 ms: "
          f"{'met' if p99 < 300 else 'NOT met'}")
    ok = not wrong and not twice and len(latencies) == options.taken
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
