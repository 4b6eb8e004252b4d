"""The rows of the VICIdial tables the simulator holds (the columns api.php looks at), and the
record of one request as received.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

LAB_SERVER_IP = "10.10.10.15"


@dataclass(frozen=True)
class RequestRecord:
    """One request as received: the variables PHP saw (GET wins over POST), password redacted."""

    method: str
    path: str
    params: dict[str, str]
    at: float
    fault: Optional[str]


@dataclass
class ApiUser:
    """A ``vicidial_users`` row (the columns api.php looks at)."""

    user: str
    password: str
    full_name: str = ""
    user_level: int = 9
    active: bool = True
    vdc_agent_api_access: bool = True
    api_only_user: bool = False
    view_reports: bool = True
    api_allowed_functions: str = " ALL_FUNCTIONS "
    user_group: str = "ADMIN"
    custom_three: str = ""
    failed_login_count: int = 0
    last_login_date: Optional[int] = None  # epoch seconds; None is SQL NULL


@dataclass
class LiveAgent:
    """A ``vicidial_live_agents`` row. Plain fields: override them freely before traffic."""

    user: str
    conf_exten: str
    extension: str
    status: str = "READY"
    server_ip: str = LAB_SERVER_IP
    lead_id: int = 0
    callerid: str = ""
    uniqueid: str = ""
    channel: str = ""
    campaign_id: str = "TESTCAMP"
    calls_today: int = 0
    full_name: str = ""
    user_group: str = "AGENTS"
    user_level: int = 1
    pause_code: str = ""
    sub_status: str = ""
    external_recording: str = ""
    external_park: str = ""  # park_call writes it (PARK_IVR_CUSTOMER, GRAB_IVR_CUSTOMER...)
    last_update_time: float = 0.0
    #: when the current call began; the screen's recording file names carry this date.
    call_started_at: float = 0.0


@dataclass
class Lead:
    """A ``vicidial_list`` row."""

    lead_id: int
    phone_number: str
    vendor_lead_code: str = ""
    list_id: int = 101
    status: str = "NEW"


@dataclass
class CallLog:
    """What ``callid_info`` reports for one call id."""

    call_id: str
    custtime: int
    call_date: float
    phone: str
    call_type: str
    campaign_id: str
    list_id: int
    status: str
    user: str


@dataclass
class RecordingRow:
    """A ``recording_log`` row."""

    recording_id: int
    channel: str
    server_ip: str
    extension: str
    start_time: float
    filename: str
    lead_id: int
    user: str
    vicidial_id: str
    end_time: Optional[float] = None
    length_in_sec: Optional[int] = None
    location: str = ""


@dataclass
class SystemFlags:
    """System-wide switches the corpus exercises."""

    api_active: bool = True  # system_settings.vdc_agent_api_active
    active_asterisk_server: bool = True  # servers.active_asterisk_server
    strict_sql_mode: bool = False  # MariaDB sql_mode STRICT_TRANS_TABLES
    allow_ip_lists: bool = False  # system_settings.allow_ip_lists
    max_execution_time: float = 30.0  # PHP max_execution_time (the stage \n\n loop)
