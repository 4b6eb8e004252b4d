"""The pure VICIdial parser walks every case of the real api.php corpus (tests/data/vicidial).

Each case's exact body bytes go through the parser the client uses for that request; the expected
result is written down per case below, so a case the table does not name fails the test.
"""

from __future__ import annotations

from typing import Union
from urllib.parse import parse_qs, urlsplit

import pytest

from corpus import CorpusCase, load_corpus
from vicirec.errors import ErrorCode, VicirecError
from vicirec.redaction import MASK
from vicirec.vicidial import responses
from vicirec.vicidial.responses import Action, RecordingState

S = RecordingState
E = ErrorCode
Expected = Union[RecordingState, ErrorCode, int, str]

EXPECTED: dict[str, Expected] = {
    # source, login, permissions (NOTES.md "Checks, in order")
    "A01": E.BAD_RESPONSE, "A02": E.CONFIG, "A03": E.CONFIG, "A04": S.NOT_RECORDING,
    "A05": E.AUTH, "A06": E.AUTH, "A07": E.AUTH, "A08": E.PERMISSION, "A09": E.AUTH, "A10": E.AUTH,
    "A11": S.NOT_RECORDING, "A12": S.NOT_RECORDING, "A13": E.PERMISSION, "A14": S.NOT_RECORDING,
    "A15": E.PERMISSION, "A16": E.BAD_REQUEST, "A17": E.PERMISSION, "A18": E.AUTH, "A20": S.NOT_RECORDING,
    "A21": E.AUTH, "A22": S.NOT_RECORDING, "A23": E.AUTH, "A25": S.NOT_RECORDING,
    # value filtering (values vicirec never sends, parsed as the action they resemble)
    "B01": E.BAD_REQUEST, "B02": E.BAD_REQUEST, "B03": E.BAD_REQUEST, "B04": E.BAD_REQUEST,
    "B05": S.COMMAND_SENT, "B06": S.COMMAND_SENT, "B07": E.BAD_RESPONSE, "B08": E.BAD_RESPONSE,
    "B09": S.START_PENDING, "B10": S.IDLE, "B11": E.BAD_RESPONSE, "B12": S.COMMAND_SENT,
    "B13": S.COMMAND_SENT,
    # START and stages; a newline in a stage splits the line (C15, C16), a hung worker (C17) and
    # strict sql_mode (C22, C23) leave an empty body
    "C01": S.COMMAND_SENT, "C02": S.COMMAND_SENT, "C03": S.COMMAND_SENT, "C04": S.COMMAND_SENT,
    "C05": S.COMMAND_SENT, "C06": S.COMMAND_SENT, "C07": S.COMMAND_SENT, "C08": S.COMMAND_SENT,
    "C09": S.COMMAND_SENT, "C10": S.COMMAND_SENT, "C11": S.COMMAND_SENT, "C12": S.COMMAND_SENT,
    "C14": S.COMMAND_SENT, "C15": E.BAD_RESPONSE, "C16": E.BAD_RESPONSE, "C17": E.BAD_RESPONSE,
    "C18": S.COMMAND_SENT, "C19": S.COMMAND_SENT, "C20": S.COMMAND_SENT, "C21": S.COMMAND_SENT,
    "C22": E.BAD_RESPONSE, "C23": E.BAD_RESPONSE,
    # STOP
    "D01": S.IDLE, "D02": S.STOP_PENDING, "D03": S.COMMAND_SENT, "D04": S.COMMAND_SENT,
    "D05": S.COMMAND_SENT, "D06": S.COMMAND_SENT, "D07": S.IDLE,
    # STATUS
    "E01": S.NOT_RECORDING, "E02": S.NOT_RECORDING, "E03": S.START_PENDING, "E04": S.NOT_RECORDING,
    "E05": S.RECORDING, "E06": S.RECORDING, "E08": S.NOT_RECORDING, "E09": S.NOT_RECORDING,
    "E10": S.NOT_RECORDING, "E11": S.NOT_RECORDING,
    # agent_user
    "F01": E.NOT_LOGGED_IN, "F02": E.NOT_LOGGED_IN, "F03": E.BAD_REQUEST, "F04": E.BAD_REQUEST,
    "F05": E.NOT_LOGGED_IN, "F06": S.NOT_RECORDING, "F07": S.NOT_RECORDING, "F09": S.NOT_RECORDING,
    "F10": S.COMMAND_SENT,
    # transport variants
    "G01": S.NOT_RECORDING, "G02": S.NOT_RECORDING, "G04": S.NOT_RECORDING, "G05": S.COMMAND_SENT,
    "G06": S.NOT_RECORDING, "G07": S.NOT_RECORDING, "G08": S.NOT_RECORDING, "G09": E.BAD_RESPONSE,
    "G10": E.BAD_RESPONSE, "G11": E.BAD_RESPONSE, "G12": E.BAD_RESPONSE, "G13": E.BAD_REQUEST,
    # non-agent API: vicirec asks only the default pipe format; other formats are refused
    "N01": 3, "N02": E.BAD_RESPONSE, "N03": E.BAD_RESPONSE, "N04": "PAUSED/8600052",
    "N05": E.NOT_LOGGED_IN, "N06": E.BAD_RESPONSE, "N07": E.NO_AGENT, "N08": E.PERMISSION,
    "N09": E.PERMISSION, "N10": E.BAD_RESPONSE, "N11": E.BAD_RESPONSE, "N12": E.BAD_RESPONSE,
    # the recording life cycle; the agent screen's own requests are not api.php answers
    "L01": S.COMMAND_SENT, "L02": E.BAD_RESPONSE, "L03": S.START_PENDING, "L04": E.BAD_RESPONSE,
    "L05": S.RECORDING, "L06": S.COMMAND_SENT, "L07": E.BAD_RESPONSE, "L08": S.RECORDING,
    "L09": S.COMMAND_SENT, "L10": E.BAD_RESPONSE, "L11": E.BAD_RESPONSE, "L12": S.NOT_RECORDING,
    "S01": E.BAD_RESPONSE, "S02": E.BAD_RESPONSE, "S03": E.BAD_RESPONSE, "S04": E.BAD_RESPONSE,
    "S05": E.BAD_RESPONSE,
    # park_call (the park IVR's hand-back); K07's value is one vicirec never sends
    "K01": "PARK_IVR_CUSTOMER|1000", "K02": "GRAB_IVR_CUSTOMER|1000", "K03": E.NO_AGENT,
    "K04": E.NOT_LOGGED_IN, "K05": E.BAD_REQUEST, "K06": E.BAD_REQUEST, "K07": "GRAB_IVR_CUSTOMERX|1000",
    "K08": E.PERMISSION, "K09": E.AUTH,
}

CASES = load_corpus()


def _params(case: CorpusCase) -> dict[str, str]:
    query = parse_qs(urlsplit(case.target).query, keep_blank_values=True)
    if case.post_body:
        for key, values in parse_qs(case.post_body, keep_blank_values=True).items():
            query.setdefault(key, values)
    return {key: values[-1] for key, values in query.items()}


def _action(value: str) -> Action:
    if value == "STATUS":
        return Action.STATUS
    if "STOP" in value:
        return Action.STOP
    return Action.START if "START" in value else Action.STATUS


def _parse(case: CorpusCase) -> Expected:
    params = _params(case)
    function = params.get("function", "")
    if function == "logged_in_agents":
        return len(responses.parse_logged_in_agents(case.body))
    if function == "agent_status":
        status = responses.parse_agent_status(case.body)
        return f"{status.status}/{status.session_id}"
    if function == "park_call":
        reply = responses.parse_park_call_reply(case.body)
        return f"{reply.value}|{reply.agent}"
    if function in ("callid_info", "lead_search", "recording_lookup"):
        line = responses.find_result_line(case.body)
        responses.raise_for_error(line)
    return responses.parse_recording_reply(case.body, _action(params.get("value", ""))).state


def test_the_corpus_is_all_there() -> None:
    assert len(CASES) >= 110
    assert {case.case_id for case in CASES} == set(EXPECTED)


@pytest.mark.parametrize("case", CASES, ids=[case.case_id for case in CASES])
def test_every_corpus_case_parses_to_its_result(case: CorpusCase) -> None:
    try:
        got: Expected = _parse(case)
    except VicirecError as error:
        got = error.code
        password = _params(case).get("pass", "")
        if len(password) >= 3:
            assert password not in error.message
            assert password not in (error.raw or "")
        if "Username/Password" in (error.raw or ""):
            assert MASK in (error.raw or "") and "SELECT" not in (error.raw or "")
    assert got == EXPECTED[case.case_id], case.title


def test_fields_read_from_both_ends_when_a_stage_holds_pipes() -> None:
    (case,) = [c for c in CASES if c.case_id == "C10"]
    reply = responses.parse_recording_reply(case.body, Action.START)
    assert reply.fields.value == "START_a|b|c"
    assert (reply.fields.agent_server, reply.fields.session_id, reply.fields.agent_status) == (
        "10.10.10.15", "8600051", "INCALL")


def test_active_recording_fields() -> None:
    (case,) = [c for c in CASES if c.case_id == "E05"]
    fields = responses.parse_recording_reply(case.body, Action.STATUS).fields
    assert fields.recording_id == "121242"
    assert fields.filename == "20261123-101500_1000_MIDCALL"
    assert fields.start_time == "2026-11-23 18:33:23"


def test_result_line_found_among_php_warnings() -> None:
    body = (
        b"<br />\n<b>Warning</b>:  Undefined variable $x in <b>/srv/www/htdocs/agc/api.php</b> on line "
        b"<b>12</b><br />\nNOTICE: recording active - 1000|121242|f|10.10.10.15|t|10.10.10.15|8600051|"
        b"INCALL\n<br />\n<b>Deprecated</b>: x\n"
    )
    reply = responses.parse_recording_reply(body, Action.STATUS)
    assert reply.state is S.RECORDING and reply.fields.recording_id == "121242"


def test_call_id_format() -> None:
    from vicirec.agents.call_facts import lead_id_of, strict_call_id

    assert strict_call_id("V1123181500000000001")
    assert lead_id_of("V1123181500000000001") == 1
    for bad in ("v1123181500000000001", "V112318150000000000", "V1123181500000000001 ", "V11231815'000000001",
                "V1123181500000000001|1001", "Y1123181500000000001&x", "V1123181500000000001\n"):
        assert not strict_call_id(bad)


def test_no_logged_in_agents_is_an_empty_list_not_an_error() -> None:
    assert responses.parse_logged_in_agents(b"ERROR: logged_in_agents NO LOGGED IN AGENTS\n") == []
    with pytest.raises(VicirecError):
        responses.parse_logged_in_agents(
            b"ERROR: logged_in_agents USER DOES NOT HAVE PERMISSION TO GET AGENT INFO\n")
