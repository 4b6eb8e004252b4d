"""How an invocation ends, for both transports: audit record written, variables set, one summary
event logged, in that order."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Optional

from vicirec.asterisk import codec
from vicirec.asterisk.channel import AgiSession
from vicirec.asterisk.codec import AgiEnvironment
from vicirec.deadline import Deadline
from vicirec.engine import Report
from vicirec.errors import AgiError, ErrorCode

if TYPE_CHECKING:  # pragma: no cover - the audit module is imported only where one is configured
    from vicirec.audit.trail import AuditTrail

# Writing the variables gets its own small budget: they matter most when the deadline is gone.
REPORT_SECONDS = 2.0


def finish_invocation(
    session: AgiSession,
    report: Report,
    log: Any,
    *,
    transport: str,
    started: float,
    audit: Optional[AuditTrail] = None,
) -> bool:
    """Write the audit record, set the variables, log the one summary event every invocation ends
    with. Fail closed: when the audit record cannot be written the channel reads ERROR / INTERNAL,
    whatever the action did, because a consent that cannot be proven must not read OK."""
    report, audited = audit_invocation(audit, session, report, log, transport=transport)
    reported = write_report(session, report)
    log_invocation(log, session, report, transport=transport, started=started, reported=reported,
                   audited=audited)
    return reported


def log_invocation(
    log: Any, session: AgiSession, report: Report, *, transport: str, started: float, reported: bool,
    audited: Optional[bool],
) -> None:
    """finish_invocation's last step: the one summary event of the invocation."""
    log.info(
        "invocation",
        transport=transport,
        **report.log_fields(),
        hung_up=session.hung_up,
        variables_set=reported,
        audited=audited,
        duration_ms=round((time.monotonic() - started) * 1000, 1),
    )


def report_commands(report: Report) -> list[bytes]:
    """The ``SET VARIABLE`` lines write_report sends, in its order."""
    return [codec.set_variable(name, value) for name, value in report.variables()]


def audit_invocation(
    audit: Optional[AuditTrail], session: AgiSession, report: Report, log: Any, *, transport: str
) -> tuple[Report, Optional[bool]]:
    """finish_invocation's first step: the report to set (downgraded when the record could not be
    written) and whether it was (None: no audit trail configured)."""
    return audit_report(audit, session.environment, report, log, transport=transport)


def audit_report(
    audit: Optional[AuditTrail], environment: AgiEnvironment, report: Report, log: Any, *, transport: str
) -> tuple[Report, Optional[bool]]:
    """:func:`audit_invocation` without a session (``vicirec start`` from a shell has none)."""
    if audit is None:
        return report, None
    try:
        audit.record(report, environment, transport=transport)
    except Exception as error:  # any failure at all: fail closed
        log.exception(
            "audit_write_failed",
            path=audit.path,
            error=str(error),
            error_type=error.__class__.__name__,
            action=report.action,
            agent=report.agent,
            original_result="OK" if report.ok else "ERROR",
            original_error=report.error.value if report.error else "",
            original_message=report.message,
        )
        return audit_failed_report(report, error), False
    return report, True


def audit_failed_report(report: Report, error: BaseException) -> Report:
    before = "OK" if report.ok else f"ERROR {report.error.value if report.error else ''}".rstrip()
    return replace(
        report,
        ok=False,
        error=ErrorCode.INTERNAL,
        message=f"the audit trail could not be written; the action itself ended {before} ({error})",
    )


def write_report(session: AgiSession, report: Report) -> bool:
    """Set every VICIREC_* variable; False if the channel would not take them."""
    budget = Deadline(REPORT_SECONDS)
    try:
        for name, value in report.variables():
            session.set_variable(name, value, budget)
    except AgiError:
        return False
    return True
