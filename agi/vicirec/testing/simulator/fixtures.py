"""The lab's users and logged-in agents, as in the captured corpus (API user 6666, agents 1000-1003)."""

from __future__ import annotations

from vicirec.testing.simulator.records import ApiUser, LiveAgent

API_USER = "6666"
API_PASS = "1234"  # noqa: S105 - the lab fixture password of the corpus


def _agent_user(user: str, full_name: str) -> ApiUser:
    return ApiUser(
        user=user,
        password=f"{user}pw",
        full_name=full_name,
        user_level=1,
        vdc_agent_api_access=False,
        view_reports=False,
        api_allowed_functions="",
        user_group="AGENTS",
    )


def _lab_users() -> list[ApiUser]:
    return [
        ApiUser(API_USER, API_PASS, full_name="Admin", user_level=9),
        ApiUser("apinoaccess", "1234", user_level=8, vdc_agent_api_access=False),
        ApiUser("apilevel0", "1234", user_level=0),
        ApiUser("apiinactive", "1234", user_level=8, active=False),
        ApiUser("apionly", "1234", user_level=8, api_only_user=True, view_reports=False),
        ApiUser("apiagentlvl1", "1234", user_level=1, view_reports=False),
        ApiUser("apilimited", "1234", user_level=8, api_allowed_functions=" external_pause webserver "),
        ApiUser("apirec", "1234", user_level=8, api_allowed_functions=" recording "),
        ApiUser("apirecnospc", "1234", user_level=8, api_allowed_functions="recording"),
        _agent_user("1000", "Agent One Thousand"),
        _agent_user("1001", "Agent 1001"),
        _agent_user("1002", "Agent 1002"),
        _agent_user("1003", "Agent 1003"),
    ]


def _lab_agents(now: float) -> list[LiveAgent]:
    return [
        LiveAgent(
            user="1000",
            conf_exten="8600051",
            extension="SIP/1000",
            status="INCALL",
            lead_id=1,
            callerid="V1123181500000000001",
            uniqueid="1795459430.20",
            channel="SIP/trunk-0000002a",
            full_name="Agent One Thousand",
            last_update_time=now,
            call_started_at=now,
        ),
        LiveAgent(
            user="1001",
            conf_exten="8600052",
            extension="PJSIP/1001",
            status="PAUSED",
            full_name="Agent 1001",
            pause_code="LOGIN",
            last_update_time=now,
            call_started_at=now,
        ),
        LiveAgent(
            user="1002",
            conf_exten="8600053",
            extension="SIP/1002",
            status="READY",
            full_name="Agent 1002",
            last_update_time=now,
            call_started_at=now,
        ),
    ]
