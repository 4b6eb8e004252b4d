"""``vicirec check``: would the AGI work as configured? One line per finding, with what to do.

Offline (``--offline``): the config and the files it names, read the way the AGI reads them. Online
(the default) also: one agent-API request that proves the login, the API access and the recording
permission (never retried), the agent lookup once, the permissions of the config, log and audit
trail as Asterisk's group meets them, ``vicirec.agi`` in agi-bin, the resolvers against the lookup,
and which path calls take (the FastAGI daemon the dialplan library tries, or the process AGI).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Optional

from vicirec.config import Config, config_path, load_config
from vicirec.errors import ConfigError

# Warnings that make `check` fail: settings that work but expose the API password.
FATAL_WARNINGS = ("readable by every user",)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vicirec check",
        description="Check that the AGI would work as configured: the config file and the files it "
                    "names, VICIdial's answer to one harmless request (login, API access, the "
                    "recording permission; never retried), the agent lookup, file permissions for "
                    "Asterisk's group, vicirec.agi in agi-bin, and which path calls take (FastAGI "
                    "daemon or process AGI). Exit status: 0 when it would work, 1 otherwise.",
    )
    parser.add_argument("--config", help="default: $VICIREC_CONFIG or /etc/vicirec/vicirec.toml")
    parser.add_argument("--offline", action="store_true",
                        help="only the config and the files it names: ask no server")
    parser.add_argument("--group", default="asterisk",
                        help="the group Asterisk (and the AGI) runs as (default asterisk)")
    parser.add_argument("--agi-bin", default="/var/lib/asterisk/agi-bin", metavar="DIR",
                        help="Asterisk's astagidir (default /var/lib/asterisk/agi-bin)")
    parser.add_argument("--asterisk-etc", default="/etc/asterisk", metavar="DIR",
                        help="where extensions*.conf set the VICIREC_AGI global (default /etc/asterisk)")
    options = parser.parse_args(argv)
    path = config_path(options.config)
    try:
        config = load_config(options.config)
    except ConfigError as error:
        print(f"{path}: ERROR: {error.message}", file=sys.stderr)
        return 1
    try:
        # What the AGI builds next: reads agents.map_file and astguiclient.conf, finds the driver.
        from vicirec.runtime import build_service

        build_service(config)
    except ConfigError as error:
        print(f"{path}: ERROR: {error.message}", file=sys.stderr)
        return 1
    failed = False
    for warning in config.warnings:
        fatal = any(marker in warning for marker in FATAL_WARNINGS)
        failed = failed or fatal
        print(f"{path}: {'ERROR' if fatal else 'WARNING'}: {warning}", file=sys.stderr)
    if options.offline:
        if failed:
            return 1
        resolvers = ", ".join(config.agents.resolvers)
        print(f"{path}: OK (agent API {config.vicidial.api_url}, resolvers {resolvers})")
        return 0
    errors = _online(config, options, str(path)) + failed
    if errors:
        print(f"{path}: {errors} error(s): the AGI would not work as configured; fix them and run "
              "vicirec check again", file=sys.stderr)
        return 1
    print(f"{path}: OK: the AGI would work as configured")
    return 0


def _online(config: Config, options: argparse.Namespace, path: str) -> int:
    """Print every finding; the number of errors."""
    from vicirec import logs
    from vicirec.commands.check_files import (
        Finding,
        Level,
        error,
        file_findings,
        path_findings,
        principal,
        resolver_findings,
    )
    from vicirec.commands.check_remote import vicidial_findings

    logs.configure_fallback()
    logs.protect([config.vicidial.password])
    findings: list[Finding] = list(vicidial_findings(config))
    findings.extend(resolver_findings(config))
    who = principal(options.group)
    if who is None:
        findings.append(error(f"group {options.group} does not exist: give --group, the group Asterisk "
                              "runs as (AST_GROUP, or the group of /var/run/asterisk)"))
    else:
        findings.extend(file_findings(config, who, options.agi_bin))
    findings.extend(path_findings(config, options.asterisk_etc, options.agi_bin))
    for finding in findings:
        out = sys.stdout if finding.level is Level.OK else sys.stderr
        print(f"{path}: {finding.level.value}: {finding.text}", file=out)
    return sum(1 for finding in findings if finding.level is Level.ERROR)
