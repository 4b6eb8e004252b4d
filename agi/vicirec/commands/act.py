"""``vicirec status|start|stop --agent USER``: one action from a root shell, without a call.

The same path as a call (``runtime.build_service`` → ``RecordingService.handle`` → audit record →
one ``invocation`` log event), over a channel that is no channel: the administrator names the
agent, so the chain is the ``argument`` resolver alone, and the arguments are built exactly as the
dialplan passes them (``START,STAGE,agent=U,confirm=N``), so the same sanitiser checks them. The
audit record and the log event say ``transport: cli`` and name the shell user as the channel.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from vicirec.asterisk.codec import AgiEnvironment

TRANSPORT = "cli"


class FactsChannelView:
    """A :class:`vicirec.agents.chain.ChannelView` over facts the administrator typed, not a
    channel: variables and expressions not given read as empty."""

    def __init__(self, variables: Optional[Mapping[str, str]] = None,
                 expressions: Optional[Mapping[str, str]] = None) -> None:
        self._variables = dict(variables or {})
        self._expressions = dict(expressions or {})

    def variable(self, name: str) -> Optional[str]:
        return self._variables.get(name)

    def expression(self, expression: str, channel: Optional[str] = None) -> str:
        return "" if channel else self._expressions.get(expression, "")


def shell_user() -> str:
    try:
        return os.environ.get("SUDO_USER") or getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def shell_environment(args: Sequence[str], *, channel: Optional[str] = None, uniqueid: Optional[str] = None,
                      call_id: str = "") -> AgiEnvironment:
    """The ``agi_*`` block a shell invocation stands in for (by default: the shell user as the
    channel, a uniqueid of its own)."""
    values = {
        "agi_request": "vicirec",
        "agi_channel": f"CLI/{shell_user()}" if channel is None else channel,
        "agi_uniqueid": (f"cli-{socket.gethostname()}-{os.getpid()}-{int(time.time())}"
                         if uniqueid is None else uniqueid),
        "agi_callerid": "unknown",
        "agi_calleridname": call_id or "unknown",
    }
    return AgiEnvironment(values=values, args=tuple(args))


def action_arguments(action: str, agent: str, stage: str, confirm: Optional[str]) -> list[str]:
    """What the dialplan library passes: ``ACTION[,stage],agent=U[,confirm=N]``."""
    args = [action]
    if stage:
        args.append(stage)
    args.append(f"agent={agent}")
    if confirm is not None:
        args.append(f"confirm={confirm}")
    return args


def _parser(action: str) -> argparse.ArgumentParser:
    what = {
        "STATUS": "Ask VICIdial whether the agent's session is being recorded",
        "START": "Start recording the agent's session",
        "STOP": "Stop recording the agent's session",
    }[action]
    parser = argparse.ArgumentParser(
        prog=f"vicirec {action.lower()}",
        description=f"{what}, from a shell, through the same engine, checks, deadline, audit trail "
                    "and log as a call (transport cli). Prints the VICIREC_* variables as NAME=value "
                    "lines. Exit status: 0 when VICIREC_RESULT=OK, 1 otherwise.",
    )
    parser.add_argument("--agent", required=True, metavar="USER", help="the VICIdial agent user")
    if action == "START":
        parser.add_argument("--stage", default="", metavar="LABEL",
                            help="recording label, cleaned as the dialplan's stage argument is")
    if action != "STATUS":
        parser.add_argument("--confirm", metavar="SECONDS",
                            help="wait until VICIdial confirms (default: [call] confirm)")
    parser.add_argument("--config", help="default: $VICIREC_CONFIG or /etc/vicirec/vicirec.toml")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    return parser


def status_main(argv: Optional[Sequence[str]] = None) -> int:
    return _main("STATUS", argv)


def start_main(argv: Optional[Sequence[str]] = None) -> int:
    return _main("START", argv)


def stop_main(argv: Optional[Sequence[str]] = None) -> int:
    return _main("STOP", argv)


def _main(action: str, argv: Optional[Sequence[str]]) -> int:
    options = _parser(action).parse_args(argv)
    started = time.monotonic()
    args = action_arguments(action, options.agent, getattr(options, "stage", ""),
                            getattr(options, "confirm", None))
    report = run_action(args, config_file=options.config, started=started)
    variables = report.variables()
    if options.json:
        print(json.dumps(dict(variables)))
    else:
        for name, value in variables:
            print(f"{name}={value}")
    return 0 if report.ok else 1


def run_action(args: Sequence[str], *, config_file: Optional[str], started: float) -> Any:
    """One invocation as a call would run it; the :class:`vicirec.engine.Report` it ends with
    (after the audit record and the ``invocation`` log event)."""
    from vicirec import logs
    from vicirec.agents.resolvers import ArgumentResolver
    from vicirec.config import load_config
    from vicirec.deadline import Deadline
    from vicirec.engine import Report, error_report
    from vicirec.errors import ConfigError, VicirecError
    from vicirec.reporting import audit_report
    from vicirec.runtime import build_service

    environment = shell_environment(args)
    report: Report
    try:
        config = load_config(config_file)
    except ConfigError as error:
        print(f"vicirec: {error.message}", file=sys.stderr)
        return error_report(error)
    logs.configure_for(config)
    log = logs.get_logger(uniqueid=environment.uniqueid, channel=environment.channel)
    for warning in config.warnings:
        log.warning("config_warning", warning=warning)
    audit: Any = None
    if config.audit.path:
        from vicirec.audit.trail import AuditTrail
        audit = AuditTrail(config.audit)
    deadline = Deadline(config.call.deadline - (time.monotonic() - started))
    try:
        # The administrator names the agent: nothing on a shell could be discovered anyway.
        service = build_service(config, logger=log).with_resolvers([ArgumentResolver()])
        report = service.handle(environment.args, environment, FactsChannelView(), deadline)
    except VicirecError as error:
        report = error_report(error)
    except Exception as error:  # the same contract as a call: a report whatever went wrong
        log.exception("internal_error", error_type=error.__class__.__name__)
        report = error_report(VicirecError(f"internal error ({error.__class__.__name__})"))
    report, audited = audit_report(audit, environment, report, log, transport=TRANSPORT)
    log.info("invocation", transport=TRANSPORT, **report.log_fields(), hung_up=False, variables_set=True,
             audited=audited, duration_ms=round((time.monotonic() - started) * 1000, 1))
    return report
