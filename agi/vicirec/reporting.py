"""How an invocation ends, for both transports: variables set, one summary event logged."""

from __future__ import annotations

import time
from typing import Any

from vicirec.asterisk.channel import AgiSession
from vicirec.deadline import Deadline
from vicirec.engine import Report
from vicirec.errors import AgiError

# Writing the variables gets its own small budget: they matter most when the deadline is gone.
REPORT_SECONDS = 2.0


def finish_invocation(
    session: AgiSession, report: Report, log: Any, *, transport: str, started: float
) -> bool:
    """Set the variables and log the one summary event every invocation ends with."""
    reported = write_report(session, report)
    log.info(
        "invocation",
        transport=transport,
        **report.log_fields(),
        hung_up=session.hung_up,
        variables_set=reported,
        duration_ms=round((time.monotonic() - started) * 1000, 1),
    )
    return reported


def write_report(session: AgiSession, report: Report) -> bool:
    """Set every VICIREC_* variable; False if the channel would not take them."""
    budget = Deadline(REPORT_SECONDS)
    try:
        for name, value in report.variables():
            session.set_variable(name, value, budget)
    except AgiError:
        return False
    return True
