"""Every case of the real-server corpus, replayed against the simulator, byte for byte.

For each api.php / non_agent_api.php case: reset the simulator to the lab fixtures, fix its clock to
the time the real server answered at, apply the case's ``setup_sql`` (translated statement by
statement; an unknown statement fails the case) and ``pre_requests``, send the recorded request with
http.client and compare status, headers, body bytes and ``external_recording`` before/after.

Cases that are not api.php / non_agent_api.php are listed in ``SKIPPED`` with the reason; a case
neither handled nor listed fails.
"""

from __future__ import annotations

import ast
import http.client
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Optional

import pytest

from corpus import CORPUS_PATH, CorpusCase, load_corpus
from vicirec.testing.simulator import (
    AGENT_API_PATH,
    NON_AGENT_API_PATH,
    LiveAgent,
    VicidialSimulator,
)

CASES = load_corpus()
BY_ID = {case.case_id: case for case in CASES}
SIMULATED_PATHS = (AGENT_API_PATH, NON_AGENT_API_PATH)

_SCREEN_POLL = "agc/conf_exten_check.php is the agent screen's poll; the simulator does not serve it"
_SCREEN_ACTION = (
    "agc/manager_send.php (the screen starting/stopping the conference recording) is not served; "
    "the screen emulation (run_screen) does its work in the life-cycle replay of the L cases"
)
SKIPPED: dict[str, str] = {
    "L02": _SCREEN_POLL,
    "L04": _SCREEN_ACTION,
    "L07": _SCREEN_ACTION,
    "L10": _SCREEN_POLL,
    "L11": _SCREEN_ACTION,
    "S01": _SCREEN_POLL + " (pipes in external_recording shift the screen's fields)",
    "S02": _SCREEN_POLL + " (a newline in external_recording splits the screen's status line)",
    "S03": "agc/manager_send.php file-name filtering; the screen emulation drops the same characters",
    "S04": "agc/manager_send.php: a raw '&' in the screen's POST cuts the file name; emulated by the screen",
    "S05": "agc/manager_send.php: non-ASCII bytes dropped from the file name; emulated by the screen",
}

#: The non-api.php steps of the life cycle whose effect the screen emulation reproduces.
SCREEN_STEPS = {"L04": "1000", "L07": "1000", "L11": "1000"}

#: All corpus responses carry exactly these headers, in this order.
PHP_HEADERS = [
    ("Connection", "close"),
    ("X-Powered-By", "PHP/8.2.36"),
    ("Content-type", "text/html; charset=utf-8"),
    ("Cache-Control", "no-cache, must-revalidate"),
    ("Pragma", "no-cache"),
]


def _epoch(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc).timestamp()


#: The corpus run began at A01's DATE/EPOCH; the lab fixtures (the agents' calls) date from then.
LAB_START = _epoch("2026-11-23 18:33:18")
DEFAULT_NOW = _epoch("2026-11-23 18:33:20")
#: When the real server answered, for the cases whose bytes depend on it (version line, the
#: UNIX_TIMESTAMP(now-900) in the echoed SQL, recording_log start times = NOW()-INTERVAL n).
CLOCK: dict[str, str] = {
    "A01": "2026-11-23 18:33:18",
    "A05": "2026-11-23 18:33:18",
    "A06": "2026-11-23 18:33:19",
    "A07": "2026-11-23 18:33:19",
    "A09": "2026-11-23 18:33:19",
    "A10": "2026-11-23 18:33:19",
    "A21": "2026-11-23 18:33:19",
    "A22": "2026-11-23 18:33:19",
    "E05": "2026-11-23 18:33:53",
    "E06": "2026-11-23 18:33:53",
    "N06": "2026-11-23 18:33:54",
    "N11": "2026-11-23 18:33:54",
    **{f"L{n:02d}": "2026-11-23 18:33:55" for n in range(1, 13)},
    "K09": "2026-12-02 18:59:23",  # the park_call cases were captured later (echoed SQL: now-900)
}
LIFE_CYCLE = [f"L{n:02d}" for n in range(1, 13)]
#: Cases that continue the state another case left behind.
PREREQUISITES: dict[str, tuple[str, ...]] = {
    "A22": ("A21",),
    **{case_id: tuple(LIFE_CYCLE[:i]) for i, case_id in enumerate(LIFE_CYCLE)},
}


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def lab() -> Iterator[tuple[VicidialSimulator, FakeClock]]:
    clock = FakeClock(LAB_START)
    with VicidialSimulator(screen_delay=None, clock=clock) as sim:
        yield sim, clock


# --- talking to the simulator --------------------------------------------------------------------


def send(
    sim: VicidialSimulator, method: str, target: str, post_body: Optional[str] = None
) -> tuple[int, list[tuple[str, str]], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=10)
    try:
        headers = {}
        body = None
        if post_body is not None:
            body = post_body.encode("utf-8")
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, target, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        conn.close()


def _agent_of(case: CorpusCase, sim: VicidialSimulator) -> str:
    """The agent whose external_recording the corpus shows (agent_user of the request, else 1000)."""
    text = case.query + "&" + (case.post_body or "")
    match = re.search(r"(?:^|&)agent_user=([^&]*)", text)
    if match:
        agent = re.sub(r"[^-_0-9a-zA-Z]", "", match.group(1).replace("%20", ""))
        if sim.state.agent(agent) is not None:
            return agent
    return "1000"


# --- setup_sql translation -----------------------------------------------------------------------


def _split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside quotes and parentheses."""
    parts: list[str] = []
    depth = 0
    quoted = False
    current: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if quoted:
            if char == "\\" and i + 1 < len(text):
                current.append(text[i : i + 2])
                i += 2
                continue
            if char == "'":
                quoted = False
        elif char == "'":
            quoted = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == sep and depth == 0:
            parts.append("".join(current).strip())
            current = []
            i += 1
            continue
        current.append(char)
        i += 1
    if "".join(current).strip():
        parts.append("".join(current).strip())
    return parts


_SQL_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "0": "\0", "\\": "\\", "'": "'", '"': '"'}


def _sql_value(expr: str, now: float) -> object:
    expr = expr.strip()
    if expr.startswith("'") and expr.endswith("'"):
        body = expr[1:-1].replace("''", "'")
        return re.sub(r"\\(.)", lambda m: _SQL_ESCAPES.get(m.group(1), m.group(1)), body)
    if match := re.fullmatch(r"NOW\(\)(?:-INTERVAL (\d+) SECOND)?", expr):
        return float(int(now) - int(match.group(1) or 0))
    if match := re.fullmatch(r"UNIX_TIMESTAMP\(\)(?:-(\d+))?", expr):
        return int(now) - int(match.group(1) or 0)
    if re.fullmatch(r"-?\d+", expr):
        return int(expr)
    if re.fullmatch(r"-?\d+\.\d+", expr):
        return float(expr)
    raise AssertionError(f"setup value not understood: {expr!r}")


def _assignments(text: str, now: float) -> dict[str, object]:
    out: dict[str, object] = {}
    for part in _split_top(text, ","):
        name, _, expr = part.partition("=")
        out[name.strip()] = _sql_value(expr, now)
    return out


def apply_sql(sim: VicidialSimulator, statement: str, now: float) -> None:
    state = sim.state
    if match := re.fullmatch(r"SET GLOBAL sql_mode=(.+)", statement):
        state.flags.strict_sql_mode = "STRICT" in str(_sql_value(match.group(1), now))
        return
    if match := re.fullmatch(r"UPDATE (\w+) SET (.+?)(?: WHERE (\w+)=(.+))?", statement):
        table, where_col, where_expr = match.group(1), match.group(3), match.group(4)
        values = _assignments(match.group(2), now)
        where = _sql_value(where_expr, now) if where_expr else None
        _apply_update(sim, table, values, where_col, where)
        return
    if match := re.fullmatch(r"INSERT INTO (\w+) \(([^)]*)\) VALUES (.+)", statement):
        table = match.group(1)
        columns = [c.strip() for c in match.group(2).split(",")]
        for group in _split_top(match.group(3), ","):
            assert group.startswith("(") and group.endswith(")"), group
            row = dict(zip(columns, (_sql_value(v, now) for v in _split_top(group[1:-1], ","))))
            _apply_insert(sim, table, row)
        return
    raise AssertionError(f"setup statement not understood: {statement!r}")


def _apply_update(
    sim: VicidialSimulator, table: str, values: dict[str, object], where_col: Optional[str], where: object
) -> None:
    state = sim.state
    for column, value in values.items():
        if table == "system_settings" and column == "vdc_agent_api_active":
            state.flags.api_active = value == "1"
        elif table == "system_settings" and column == "allow_ip_lists":
            state.flags.allow_ip_lists = value == "1"
        elif table == "servers" and column == "active_asterisk_server":
            state.flags.active_asterisk_server = value == "Y"
        elif table == "vicidial_users" and where_col == "user":
            user = state.user(str(where))
            assert user is not None, where
            if column == "last_login_date":
                assert isinstance(value, float)
                user.last_login_date = int(value)
            else:
                assert column == "custom_three", column
                user.custom_three = str(value)
        elif table == "vicidial_live_agents" and where_col == "user":
            if column == "external_recording":
                state.set_external_recording(str(where), str(value))
            else:
                assert column == "server_ip", column
                for row in state.agent_rows(str(where)):
                    row.server_ip = str(value)
        elif table == "vicidial_user_groups" and where_col == "user_group" and column == "api_ip_list":
            state.group_api_ip_list[str(where)] = str(value)
        elif table == "recording_log" and where_col == "recording_id":
            if column == "end_time":
                assert isinstance(value, float) and isinstance(where, int)
                state.end_recording(where, value)
            else:  # end_epoch, length_in_sec, length_in_min follow from end_time
                assert column in ("end_epoch", "length_in_sec", "length_in_min"), column
        else:
            raise AssertionError(f"setup UPDATE not understood: {table}.{column} where {where_col}")


def _apply_insert(sim: VicidialSimulator, table: str, row: dict[str, object]) -> None:
    state = sim.state
    if table == "recording_log":
        start = row["start_time"]
        assert isinstance(start, float) and row["start_epoch"] == int(start), row
        state.add_recording(
            recording_id=int(str(row["recording_id"])),
            user=str(row["user"]),
            start_time=start,
            filename=str(row["filename"]),
            channel=str(row["channel"]),
            server_ip=str(row["server_ip"]),
            extension=str(row["extension"]),
            lead_id=int(str(row["lead_id"])),
            vicidial_id=str(row["vicidial_id"]),
        )
    elif table == "vicidial_live_agents":
        state.add_live_agent_row(
            LiveAgent(
                user=str(row["user"]),
                server_ip=str(row["server_ip"]),
                conf_exten=str(row["conf_exten"]),
                extension=str(row["extension"]),
                status=str(row["status"]),
                lead_id=int(str(row["lead_id"])),
                campaign_id=str(row["campaign_id"]),
                last_update_time=float(str(row["last_update_time"])),
                external_recording=str(row["external_recording"]),
            )
        )
    elif table == "vicidial_ip_lists":
        state.ip_lists.setdefault(str(row["ip_list_id"]), set())
    elif table == "vicidial_ip_list_entries":
        state.ip_lists.setdefault(str(row["ip_list_id"]), set()).add(str(row["ip_address"]))
    else:
        raise AssertionError(f"setup INSERT not understood: {table}")


def apply_setup(sim: VicidialSimulator, case: CorpusCase, now: float) -> None:
    pre_prefixes: dict[int, bytes] = {}
    pre_requests: list[tuple[int, str, str]] = []
    for line in case.setup:
        if line.startswith("setup_sql: "):
            for statement in _split_top(line[len("setup_sql: ") :], ";"):
                apply_sql(sim, statement, now)
        elif match := re.fullmatch(r"pre_requests: (\d+) x ([A-Z]+) (\?\S+)", line):
            pre_requests.append((int(match.group(1)), match.group(2), match.group(3)))
        elif match := re.fullmatch(r"\s+pre(\d+)_body_repr: (b'.*')(?:\.\.\.)?", line):
            prefix = ast.literal_eval(match.group(2))
            assert isinstance(prefix, bytes)
            pre_prefixes[int(match.group(1))] = prefix
        else:
            raise AssertionError(f"{case.case_id}: setup line not understood: {line!r}")
    number = 0
    for times, method, query in pre_requests:
        for _ in range(times):
            number += 1
            status, _headers, body = send(sim, method, case.path + query)
            assert status == 200
            assert body.startswith(pre_prefixes[number]), (case.case_id, number, body)
    assert number == len(pre_prefixes), case.case_id


# --- the test ------------------------------------------------------------------------------------


def _prepare(sim: VicidialSimulator, clock: FakeClock) -> None:
    clock.now = LAB_START
    sim.reset()


def _run_case(sim: VicidialSimulator, clock: FakeClock, case: CorpusCase) -> None:
    clock.now = _epoch(CLOCK[case.case_id]) if case.case_id in CLOCK else DEFAULT_NOW
    if case.case_id in SCREEN_STEPS:
        assert sim.run_screen(SCREEN_STEPS[case.case_id]) == 1, case.case_id
        agent = sim.state.agent(SCREEN_STEPS[case.case_id])
        assert agent is not None
        assert agent.external_recording.encode() == case.external_recording_after, case.case_id
        return
    if case.path not in SIMULATED_PATHS:
        assert case.case_id in SKIPPED, f"{case.case_id}: not simulated and not in SKIPPED"
        return
    if case.case_id == "C17":  # PHP spins until max_execution_time (30 s in the lab); keep it short
        sim.state.flags.max_execution_time = 0.05
    if case.case_id == "N06":  # the vicidial_log row of the lab call was written at 18:33:54
        sim.state.calls["V1123181500000000001"].call_date = clock.now

    apply_setup(sim, case, clock.now)
    agent_user = _agent_of(case, sim)
    if case.external_park is not None:
        for row in sim.state.agent_rows(case.external_park[0]):
            assert row.external_park.encode() == case.external_park[1], case.case_id
    if case.external_recording_before is not None:
        for row in sim.state.agent_rows(agent_user):
            assert row.external_recording.encode() == case.external_recording_before, case.case_id

    status, headers, body = send(sim, case.method, case.target, case.post_body)

    assert status == case.http_status, case.case_id
    assert headers == PHP_HEADERS, case.case_id
    assert body == case.body, case.case_id
    if case.external_park is not None:
        park_agent, _before, park_after = case.external_park
        for row in sim.state.agent_rows(park_agent):
            assert row.external_park.encode() == park_after, case.case_id
    if case.external_recording_after is not None:
        rows = sim.state.agent_rows(agent_user)
        assert rows, case.case_id
        for row in rows:  # api.php's UPDATE hits every row of the agent (F10)
            assert row.external_recording.encode() == case.external_recording_after, case.case_id


@pytest.mark.parametrize("case", CASES, ids=[case.case_id for case in CASES])
def test_corpus_case(lab: tuple[VicidialSimulator, FakeClock], case: CorpusCase) -> None:
    sim, clock = lab
    if case.case_id in SKIPPED:
        pytest.skip(SKIPPED[case.case_id])
    if case.path not in SIMULATED_PATHS:
        pytest.fail(f"{case.case_id} ({case.path}) is neither simulated nor listed in SKIPPED")
    _prepare(sim, clock)
    for earlier in PREREQUISITES.get(case.case_id, ()):
        _run_case(sim, clock, BY_ID[earlier])
    _run_case(sim, clock, case)


def test_skip_list_names_real_cases_only() -> None:
    assert set(SKIPPED) <= set(BY_ID)
    for case_id in SKIPPED:
        assert BY_ID[case_id].path not in SIMULATED_PATHS, f"{case_id} is simulated: do not skip it"


def test_corpus_headers_are_the_ones_checked() -> None:
    expected = "headers: " + " | ".join(f"{name}: {value}" for name, value in PHP_HEADERS)
    lines = [
        line for line in CORPUS_PATH.read_text(encoding="utf-8").splitlines() if line.startswith("headers: ")
    ]
    assert len(lines) == len(CASES)
    assert set(lines) == {expected}


def test_corpus_is_complete() -> None:
    assert len(CASES) >= 120
    assert len({case.case_id for case in CASES}) == len(CASES)
