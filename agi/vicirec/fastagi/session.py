"""One FastAGI connection, start to end: environment block, route, run, report, close.

The logic is the process AGI's (``RecordingService.handle`` and ``finish_invocation``); only the
transport and the budgets differ. Everything here runs in a worker thread: no signal handlers, no
global state besides the shared, read-only :class:`DaemonRuntime` of the moment.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Union

from vicirec import logs
from vicirec.asterisk import codec
from vicirec.asterisk.channel import AgiSession
from vicirec.config import Config
from vicirec.deadline import Deadline
from vicirec.engine import RecordingService, Report, error_report
from vicirec.errors import AgiError, AgiTimeout, BadRequest, ErrorCode, VicirecError
from vicirec.fastagi.reporter import Release, Reporter
from vicirec.fastagi.transport import KernelTimeoutTransport
from vicirec.reporting import REPORT_SECONDS, audit_invocation
from vicirec.request import is_consent
from vicirec.runtime import SessionChannelView

if TYPE_CHECKING:  # pragma: no cover - imported only when an audit trail is configured
    from vicirec.audit.trail import AuditTrail
    from vicirec.fastagi.deferred import DeferredStarts

#: ``agi://host:port/vicirec,...``: the one script this daemon serves.
SCRIPT_NAME = "vicirec"

#: Set before anything else happens in a session. The dialplan library clears it before AGI() and
#: runs the process AGI instead only when it is still empty after AGISTATUS=FAILURE: then this
#: daemon never took the call and cannot have sent a START.
CLAIM_VARIABLE = "VICIREC_CLAIMED"

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


@dataclass(frozen=True)
class DaemonRuntime:
    """What one generation of the config serves with; SIGHUP swaps in a new one whole."""

    config: Config
    service: RecordingService
    allow: tuple[Network, ...]
    audit: Optional[AuditTrail] = None
    # CONSENT's pending consents (agents.lookup = "mysql" only); the same object across reloads.
    deferred: Optional[DeferredStarts] = None

    def peer_allowed(self, address: str) -> bool:
        """True when no allowlist is configured, or ``address`` is inside one of its networks."""
        if not self.allow:
            return True
        return address_in(address, self.allow)


def parse_allowlist(entries: Sequence[str]) -> tuple[Network, ...]:
    """``fastagi.allow`` entries (addresses or CIDRs; checked by the config loader already)."""
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def address_in(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack listener shows IPv4 peers as ::ffff:a.b.c.d
    return any(ip in network for network in networks)


def script_path(network_script: str) -> str:
    """``agi_network_script`` without its ``?query`` and surrounding slashes."""
    return network_script.partition("?")[0].strip("/")


def refusal_bytes(report: Report) -> bytes:
    """The ``SET VARIABLE`` lines for every VICIREC_* variable of ``report``, ready to send."""
    return b"".join(codec.set_variable(name, value) for name, value in report.variables())


def busy_report(max_sessions: int) -> Report:
    return Report(ok=False, error=ErrorCode.UNREACHABLE,
                  message=f"vicirec daemon busy ({max_sessions} sessions)")


def stopping_report() -> Report:
    return Report(ok=False, error=ErrorCode.UNREACHABLE, message="vicirec daemon stopping")


def unknown_script_report(path: str) -> Report:
    shown = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "_.-/") else "?" for ch in path[:40])
    if not path:
        message = f"no script in the FastAGI URL: use agi://HOST:PORT/{SCRIPT_NAME}"
    else:
        message = f"unknown FastAGI script '{shown}': use agi://HOST:PORT/{SCRIPT_NAME}"
    return error_report(BadRequest(message))


def work_seconds(config: Config) -> float:
    """The handling budget of one session, counted from accept: the process AGI's call deadline,
    cut so that setting the variables still fits inside ``fastagi.session_deadline``."""
    session = config.fastagi.session_deadline
    reserve = min(REPORT_SECONDS, session / 2)
    return max(0.0, min(config.call.deadline, session - reserve))


def serve_connection(
    conn: socket.socket, peer: str, accepted_at: float, runtime: DaemonRuntime, *,
    reporter: Reporter, release: Release,
) -> bool:
    """Serve one connection; never raises for anything Asterisk or VICIdial did. True when the
    session went to the ``reporter``, whose loop then sets the variables, logs the summary, closes
    ``conn`` and calls ``release(conn)``; False when it ended before (the caller closes ``conn``,
    and enforces ``session_deadline`` from outside by shutting the socket down)."""
    settings = runtime.config.fastagi
    transport = KernelTimeoutTransport(conn)
    env_budget = min(settings.env_timeout, settings.session_deadline) - (time.monotonic() - accepted_at)
    try:
        session = AgiSession.open(transport, Deadline(env_budget), max_line_bytes=settings.max_line_bytes)
    except AgiTimeout:
        logs.get_logger(peer=peer).warning("fastagi_environment_timeout", timeout=settings.env_timeout)
        return False
    except AgiError as error:
        log = logs.get_logger(peer=peer)
        log.warning("fastagi_environment_unreadable", error=error.message, raw=error.raw)
        return False
    env = session.environment
    log = logs.get_logger(uniqueid=env.uniqueid, channel=env.channel)
    path = script_path(env.network_script)
    report: Report
    if path != SCRIPT_NAME:
        report, audited = audit_invocation(runtime.audit, session, unknown_script_report(path), log,
                                           transport="fastagi")
    elif not claim(session, accepted_at, runtime.config, log):
        return False
    elif runtime.deferred is not None and is_consent(env.args):
        report, audited = runtime.deferred.consent(session, log)  # audits it itself (with its id)
    else:
        report = run_service(runtime.service, session, accepted_at, runtime.config, log)
        report, audited = audit_invocation(runtime.audit, session, report, log, transport="fastagi")
    reporter.submit(conn, peer, session, report, log, started=accepted_at, audited=audited, release=release)
    return True


def claim(session: AgiSession, accepted_at: float, config: Config, log: Any) -> bool:
    """Set :data:`CLAIM_VARIABLE` and wait for Asterisk's reply (one round trip). False: the
    claim may not have landed, so the session must end without acting on the call."""
    deadline = Deadline(work_seconds(config) - (time.monotonic() - accepted_at))
    try:
        session.set_variable(CLAIM_VARIABLE, "1", deadline)
    except AgiError as error:
        log.warning("fastagi_claim_failed", error=error.message, raw=error.raw)
        return False
    return True


def run_service(
    service: RecordingService, session: AgiSession, accepted_at: float, config: Config, log: Any
) -> Report:
    env = session.environment
    deadline = Deadline(work_seconds(config) - (time.monotonic() - accepted_at))
    try:
        return service.handle(env.args, env, SessionChannelView(session, deadline), deadline)
    except VicirecError as error:
        return error_report(error)
    except Exception as error:  # the contract: variables are set whatever went wrong
        log.exception("internal_error", error_type=error.__class__.__name__)
        return error_report(VicirecError(f"internal error ({error.__class__.__name__})"))
