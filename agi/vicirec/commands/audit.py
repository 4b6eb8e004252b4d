"""``vicirec audit``: print the audit records that match; the search is :mod:`vicirec.audit.search`."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Optional

from vicirec.audit.search import AuditFilter, ReadStats, format_table, parse_when, read_records
from vicirec.audit.trail import AuditError, AuditRecord, key_file_for, read_key_file
from vicirec.config import AuditSettings
from vicirec.errors import VicirecError


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``vicirec audit``: print matching records. Exit 0 when some matched, 1 when none, 2 on errors."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="vicirec audit",
        description="Search the consent / PCI audit trail ([audit] path). "
                    "Exit status: 0 records found, 1 none, 2 error.",
    )
    parser.add_argument("--config", help="default: $VICIREC_CONFIG or /etc/vicirec/vicirec.toml")
    parser.add_argument("--file", action="append", metavar="PATH",
                        help="audit file(s) to read, in order (rotated .gz files too); "
                             "default: [audit] path of the config")
    parser.add_argument("--uniqueid", help="the call's Asterisk uniqueid")
    parser.add_argument("--agent", help="VICIdial agent user")
    parser.add_argument("--action", type=str.upper,
                        choices=("START", "STOP", "STATUS", "CONSENT", "GRAB", "ANSWER", "GOSUB"))
    parser.add_argument("--outcome", type=str.upper, choices=("OK", "ERROR"))
    parser.add_argument("--since", metavar="WHEN", help="YYYY-MM-DD or ISO time (UTC unless given)")
    parser.add_argument("--until", metavar="WHEN",
                        help="YYYY-MM-DD (that whole day included) or ISO time (records before it)")
    parser.add_argument("--caller", metavar="NUMBER",
                        help="the caller's phone number (hashed or masked the way the file stores it)")
    parser.add_argument("--key-file", metavar="PATH",
                        help="HMAC key for --caller when the config cannot be read (default: <path>.key)")
    parser.add_argument("--consent", action="store_true",
                        help="only consents: START and CONSENT records with outcome OK")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    options = parser.parse_args(argv)

    try:
        since = parse_when(options.since) if options.since else None
        until = parse_when(options.until, end_of_day=True) if options.until else None
    except ValueError as exc:
        print(f"vicirec audit: bad date: {exc}", file=sys.stderr)
        return 2
    settings, problem = _settings(options.config)
    paths = options.file or ([settings.path] if settings and settings.path else [])
    if not paths:
        print(f"vicirec audit: no audit file: give --file, or set [audit] path ({problem or 'it is empty'})",
              file=sys.stderr)
        return 2
    key: Optional[bytes] = None
    if options.caller:
        try:
            key = _search_key(options.key_file, settings, paths[0])
        except (OSError, AuditError) as exc:
            print(f"vicirec audit: no audit key ({exc}); hashed caller numbers cannot be matched "
                  "(give --config or --key-file)", file=sys.stderr)
    selection = AuditFilter(
        uniqueid=options.uniqueid, agent=options.agent, action=options.action, outcome=options.outcome,
        since=since, until=until, caller=options.caller, key=key, consent=options.consent,
    )
    stats = ReadStats()
    matched: list[AuditRecord] = []
    count = 0
    try:
        for record in read_records(paths, stats):
            if not selection.matches(record):
                continue
            count += 1
            if options.format == "json":
                print(record.to_json())
            else:
                matched.append(record)
    except OSError as exc:
        print(f"vicirec audit: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    if matched:
        print(format_table(matched))
    if stats.skipped:
        print(f"vicirec audit: skipped {stats.skipped} line(s) that are not audit records", file=sys.stderr)
    return 0 if count else 1


def _settings(config_file: Optional[str]) -> tuple[Optional[AuditSettings], str]:
    from vicirec.config import load_config

    try:
        return load_config(config_file).audit, ""
    except VicirecError as error:
        return None, error.message


def _search_key(key_file: Optional[str], settings: Optional[AuditSettings], first_path: str) -> bytes:
    if key_file:
        return read_key_file(key_file)
    if settings is not None and settings.hash_key:
        return settings.hash_key.encode("utf-8")
    base = settings.path if settings is not None and settings.path else first_path
    return read_key_file(key_file_for(base))
