"""``vicirec-agi``: the process AGI Asterisk runs as ``AGI(vicirec.agi,ACTION,...)``.

Order matters here. SIGHUP is handled before anything else (Python's default action kills the
script, and with it the chance to set the variables the ``h`` extension reads). Then stdout is
taken over: the protocol keeps a private copy of the descriptor and fd 1 is pointed at /dev/null,
so a stray ``print`` from any library can never shift Asterisk's replies by one.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any, Optional

ENV_BLOCK_SECONDS = 5.0


class _SighupFlag:
    def __init__(self) -> None:
        self.received = False

    def __call__(self, _signum: int, _frame: Any) -> None:
        self.received = True


def main(argv: Optional[Sequence[str]] = None) -> int:
    sighup = _SighupFlag()
    signal.signal(signal.SIGHUP, sighup)
    # The process lives for a fraction of a second and allocates almost only while importing: the
    # cyclic collector's passes over the growing module graph are pure start-up cost (~5 % of it).
    gc.disable()
    started = time.monotonic()
    protocol_out = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    return run(0, protocol_out, sighup=lambda: sighup.received, started=started)


def run(read_fd: int, write_fd: int, *, sighup: Any, started: float,
        environ: Optional[dict[str, str]] = None) -> int:
    # Imported here, after the signal handler is in place: these imports are most of the start-up.
    from vicirec import logs
    from vicirec.asterisk.channel import AgiSession, PipeTransport
    from vicirec.config import load_config
    from vicirec.deadline import Deadline
    from vicirec.engine import Report, error_report
    from vicirec.errors import AgiError, ConfigError, VicirecError

    environ = dict(os.environ) if environ is None else environ
    transport = PipeTransport(read_fd, write_fd)
    try:
        session = AgiSession.open(transport, Deadline(ENV_BLOCK_SECONDS), sighup_received=sighup)
    except AgiError as error:
        # Log where the admin looks (the configured log; stderr is /dev/null under a daemonised
        # Asterisk), falling back to stderr only when the config cannot be read either.
        try:
            fallback_config = load_config(environ=environ)
        except ConfigError:
            logs.configure_fallback()
        else:
            logs.configure_for(fallback_config)
        logs.get_logger().error("agi_environment_unreadable", error=error.message, raw=error.raw)
        transport.close()
        return 1

    from vicirec.reporting import finish_invocation
    from vicirec.runtime import SessionChannelView, build_service

    env = session.environment
    report: Report
    log: Any
    audit: Any = None
    try:
        config = load_config(environ=environ)
    except ConfigError as error:
        logs.configure_fallback()
        log = logs.get_logger(uniqueid=env.uniqueid, channel=env.channel)
        report = error_report(error)
    else:
        logs.configure_for(config)
        log = logs.get_logger(uniqueid=env.uniqueid, channel=env.channel)
        for warning in config.warnings:
            log.warning("config_warning", warning=warning)
        if config.audit.path:
            from vicirec.audit.trail import AuditTrail
            audit = AuditTrail(config.audit)
        deadline = Deadline(config.call.deadline - (time.monotonic() - started))
        try:
            service = build_service(config, logger=log)
            report = service.handle(env.args, env, SessionChannelView(session, deadline), deadline)
        except VicirecError as error:
            report = error_report(error)
        except Exception as error:  # the contract: variables are set whatever went wrong
            log.exception("internal_error", error_type=error.__class__.__name__)
            report = error_report(VicirecError(f"internal error ({error.__class__.__name__})"))
    reported = finish_invocation(session, report, log, transport="process", started=started, audit=audit)
    session.close()
    return 0 if reported else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
