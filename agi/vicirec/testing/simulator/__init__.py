"""VICIdial simulator: ``agc/api.php`` (agent API) and a slice of ``vicidial/non_agent_api.php``.

A real HTTP server (127.0.0.1 by default) that answers with the exact bytes VICIdial 2.14-81 on
PHP 8.2 / MariaDB 10.11 sends. The raw-response corpus (``tests/data/vicidial/agent-api-corpus.txt``)
is the ground truth; ``tests/test_simulator_corpus.py`` replays every case of it against this module.

It implements api.php's logic instead of replaying answers:

* the checks in api.php's order (version, coffee, source, login, system API flag, value/agent_user,
  ``api_allowed_functions``, alt_user, agent logged in), with api.php's own variable filters and
  "GET wins over POST" (PHP fills ``$_POST`` only for form-encoded POST bodies);
* ``user_authorization()``: the echoed password and SQL text, GOOD / LOCK / ERRSERVERS / IPBLOCK /
  BAD, ten failed logins lock a user for 15 minutes, a successful API call never resets the count;
* PHP 8 string/number comparisons (``'START_MIDCALL' > 0`` is true, ``'START' < 1`` is false);
* MariaDB's ``external_recording VARCHAR(20)`` (silently cut, or HTTP 500 with ``strict_sql_mode``;
  invalid UTF-8 likewise) and api.php's byte-wise 14-byte stage cut, including the ``\\n\\n`` case
  that loops until ``max_execution_time``.

A background "agent screen" emulates the agent's browser: ``screen_delay`` seconds after
``external_recording`` became ``START<stage>`` it starts a recording (new numeric id in
``external_recording``, a ``recording_log`` row named ``YYYYMMDD-HHMMSS_<user><stage>`` after the
call's start, stage reduced to ``[-_0-9a-zA-Z]``); after ``STOP`` it ends every open recording of
that agent and clears the column. Like the real poll it acts on whatever the column holds when it
looks (a STOP written before it looked wins over the START). ``screen_delay=None`` leaves commands
pending for ever; ``run_screen()`` makes the screen act at once.

Faults (:class:`Fault`) make the socket misbehave in the ways real deployments do.

Not simulated: ``conf_exten_check.php`` / ``manager_send.php`` (the screen is emulated instead),
``format=debug``, api.php functions other than ``recording`` / ``version`` / ``coffee`` (they answer
like an unknown function: an empty body). Non-agent API: ``logged_in_agents``, ``agent_status``,
``callid_info``, ``lead_search``, ``recording_lookup`` and ``version``; error lines the corpus does
not show are modelled on the documented ones.

Run it for a demo: ``python -m vicirec.testing.simulator --port 8089``.

Modules, one seam each:

* ``state``: :class:`SimulatorState`, the simulated database and api.php's logic, the agent screen;
* ``records``: the table rows (:class:`ApiUser`, :class:`LiveAgent`, :class:`Lead`, ...);
* ``php``: PHP / MariaDB semantics (filters, comparisons, the stage cut, the column);
* ``faults``: :class:`Fault` kinds and the canned misbehaviour they send;
* ``fixtures``: the lab's users and agents;
* ``server``: :class:`VicidialSimulator`, the HTTP server;
* ``cli``: the command line (``main``).
"""


from __future__ import annotations

from vicirec.testing.simulator.cli import main
from vicirec.testing.simulator.faults import FAULT_KINDS, Fault
from vicirec.testing.simulator.fixtures import API_PASS, API_USER
from vicirec.testing.simulator.php import cut_stage, mysql_int, php_compare_int, php_form_decode
from vicirec.testing.simulator.records import (
    ApiUser,
    CallLog,
    Lead,
    LiveAgent,
    RecordingRow,
    RequestRecord,
    SystemFlags,
)
from vicirec.testing.simulator.server import VicidialSimulator
from vicirec.testing.simulator.state import (
    AGENT_API_PATH,
    API_BUILD,
    API_VERSION,
    FIRST_RECORDING_ID,
    NON_AGENT_API_PATH,
    SimulatorState,
)

__all__ = [
    "AGENT_API_PATH",
    "API_BUILD",
    "API_PASS",
    "API_USER",
    "API_VERSION",
    "FAULT_KINDS",
    "FIRST_RECORDING_ID",
    "NON_AGENT_API_PATH",
    "ApiUser",
    "CallLog",
    "Fault",
    "Lead",
    "LiveAgent",
    "RecordingRow",
    "RequestRecord",
    "SimulatorState",
    "SystemFlags",
    "VicidialSimulator",
    "cut_stage",
    "main",
    "mysql_int",
    "php_compare_int",
    "php_form_decode",
]
