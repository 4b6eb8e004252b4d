"""The naive process AGI a developer would write first: the import floor vicirec is held to.

pyst2's ``asterisk.agi.AGI()`` reads the environment block, ``requests`` asks VICIdial's non-agent
API which agent is on the caller's call id and sends the same START, ``structlog`` logs one line.
No config file (the VICIdial URL and login come from the environment the benchmark passes), no
deadline, no retries, three variables. ``bench_invocation.py`` runs it like Asterisk runs vicirec.
"""

from __future__ import annotations

import os
import sys

import requests
import structlog
from asterisk.agi import AGI


def main() -> int:
    agi = AGI()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout is Asterisk's
    log = structlog.get_logger()
    base = os.environ["NAIVE_VICIDIAL_URL"]
    login = {"source": "naive", "user": os.environ["NAIVE_VICIDIAL_USER"],
             "pass": os.environ["NAIVE_VICIDIAL_PASS"]}
    call_id = agi.env.get("agi_calleridname", "")
    agents = requests.post(f"{base}/vicidial/non_agent_api.php",
                           data={**login, "function": "logged_in_agents"}, timeout=3)
    agent = ""
    for line in agents.text.splitlines():
        fields = line.split("|")
        if len(fields) > 5 and fields[5] == call_id:
            agent = fields[0]
    stage = sys.argv[2] if len(sys.argv) > 2 else ""
    reply = requests.post(f"{base}/agc/api.php", data={**login, "agent_user": agent, "function": "recording",
                                                       "value": "START", "stage": stage}, timeout=3)
    ok = reply.text.startswith("SUCCESS")
    agi.set_variable("VICIREC_RESULT", "OK" if ok else "ERROR")
    agi.set_variable("VICIREC_AGENT", agent)
    agi.set_variable("VICIREC_MESSAGE", reply.text.strip()[:80])
    log.info("invocation", agent=agent, ok=ok)
    return 0


if __name__ == "__main__":
    sys.exit(main())
