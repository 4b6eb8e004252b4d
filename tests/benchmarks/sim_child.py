"""The VICIdial simulator in a process of its own, for the benchmarks.

A real VICIdial is another machine's web server; in one process with the load generator the
simulator would share its GIL and skew every figure. This child starts ``VicidialSimulator``,
logs in ``--agents`` agents (user ``7000+i``, each on its own call id), prints one JSON line
(port, agents) and then answers commands on stdin, one per line, with one JSON line each:

* ``starts``: START commands the simulator accepted, per agent user;
* ``counts``: requests received, per ``function``;
* ``reset``: forget the counters;
* ``quit`` (or end of stdin, e.g. the parent died): stop and exit.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Optional

from vicirec.testing.simulator import VicidialSimulator

FIRST_AGENT = 7000


def call_id_of(index: int) -> str:
    """A VICIdial call id: a letter, 9 time digits, the 10-digit lead id."""
    return f"B{112318150 + index:09d}{index + 1:010d}"


def log_in_agents(sim: VicidialSimulator, count: int) -> list[tuple[str, str]]:
    agents = []
    for index in range(count):
        user, call_id = str(FIRST_AGENT + index), call_id_of(index)
        sim.state.log_in_agent(user, conf_exten=str(8600100 + index), extension=f"SIP/{user}",
                               status="INCALL", lead_id=index + 1, callerid=call_id)
        agents.append((user, call_id))
    return agents


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--screen-delay", type=float, default=0.2)
    options = parser.parse_args(argv)
    sim = VicidialSimulator(screen_delay=options.screen_delay, keep_alive=True).start()
    agents = log_in_agents(sim, options.agents)
    users = [user for user, _call_id in agents]
    _say({"port": sim.port, "api_url": sim.api_url, "agents": agents})
    try:
        for line in sys.stdin:
            command = line.strip()
            if command == "starts":
                _say({user: sim.starts_for(user) for user in users})
            elif command == "counts":
                with sim.state.lock:
                    functions = Counter(r.params.get("function", "") for r in sim.requests)
                _say(dict(functions))
            elif command == "reset":
                sim.reset_counters()
                _say({"ok": True})
            elif command == "quit":
                break
    finally:
        sim.stop()
    return 0


def _say(payload: object) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    raise SystemExit(main())
