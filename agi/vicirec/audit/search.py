"""``vicirec audit``: search the consent / PCI audit trail that :mod:`vicirec.audit` writes.

Reading, filtering and printing only; never imported on a call's path.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import IO, Optional

from vicirec.audit import (
    HASH_PREFIX,
    AuditError,
    AuditRecord,
    caller_matches,
    key_file_for,
    parse_time,
    read_key_file,
)
from vicirec.config import AuditSettings
from vicirec.errors import VicirecError

# --- searching --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditFilter:
    """Which records ``vicirec audit`` prints; every given criterion must hold."""

    uniqueid: Optional[str] = None
    agent: Optional[str] = None
    action: Optional[str] = None
    outcome: Optional[str] = None
    since: Optional[datetime] = None   # inclusive
    until: Optional[datetime] = None   # exclusive
    caller: Optional[str] = None       # a phone number, compared as the file stores it
    key: Optional[bytes] = None        # to compare with hashed numbers
    consent: bool = False              # START records with outcome OK

    def matches(self, record: AuditRecord) -> bool:
        if self.uniqueid is not None and record.uniqueid != self.uniqueid:
            return False
        if self.agent is not None and record.agent != self.agent:
            return False
        if self.action is not None and record.action.upper() != self.action.upper():
            return False
        if self.outcome is not None and record.outcome.upper() != self.outcome.upper():
            return False
        if self.consent and (record.action != "START" or record.outcome != "OK"):
            return False
        if self.since is not None or self.until is not None:
            try:
                when = record.when
            except ValueError:
                return False
            if self.since is not None and when < self.since:
                return False
            if self.until is not None and when >= self.until:
                return False
        return self.caller is None or caller_matches(record.caller, self.caller, self.key)


@dataclass
class ReadStats:
    records: int = 0
    skipped: int = 0


def read_records(paths: Iterable[str], stats: Optional[ReadStats] = None) -> Iterator[AuditRecord]:
    """Every record of the files in order (``.gz`` rotated files too); unreadable lines skipped
    and counted in ``stats``."""
    stats = stats if stats is not None else ReadStats()
    for path in paths:
        with _open_text(path) as file:
            for line in file:
                if not line.strip():
                    continue
                try:
                    record = AuditRecord.from_json(line)
                except (ValueError, TypeError):
                    stats.skipped += 1
                    continue
                stats.records += 1
                yield record


def _open_text(path: str) -> IO[str]:
    if path.endswith(".gz"):
        import gzip

        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def parse_when(text: str, *, end_of_day: bool = False) -> datetime:
    """``YYYY-MM-DD`` (the start of that UTC day; with ``end_of_day`` the start of the next one)
    or an ISO 8601 time (no zone = UTC)."""
    text = text.strip()
    if len(text) == 10 and text[4] == "-" and text[7] == "-":
        day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=timezone.utc)
        return day + timedelta(days=1) if end_of_day else day
    return parse_time(text.replace(" ", "T", 1))


TABLE_COLUMNS = (
    ("time", "TIME (UTC)"), ("uniqueid", "UNIQUEID"), ("agent", "AGENT"), ("action", "ACTION"),
    ("stage", "STAGE"), ("result", "RESULT"), ("recording_id", "RECORDING"), ("filename", "FILENAME"),
    ("confirmed_after", "CONFIRMED"), ("caller", "CALLER"),
)


def table_row(record: AuditRecord) -> dict[str, str]:
    result = record.outcome + (f" {record.error}" if record.error else "")
    confirmed = "" if record.confirmed_after is None else f"{record.confirmed_after:g}s"
    caller = record.caller
    if caller.startswith(HASH_PREFIX):
        caller = caller[: len(HASH_PREFIX) + 12] + "…"
    values = asdict(record)
    values.update(result=result, confirmed_after=confirmed, caller=caller)
    return {name: str(values[name] or "") for name, _title in TABLE_COLUMNS}


def format_table(records: Sequence[AuditRecord]) -> str:
    rows = [table_row(record) for record in records]
    widths = {
        name: max([len(title)] + [len(row[name]) for row in rows]) for name, title in TABLE_COLUMNS
    }
    lines = ["  ".join(title.ljust(widths[name]) for name, title in TABLE_COLUMNS).rstrip()]
    lines += ["  ".join(row[name].ljust(widths[name]) for name, _ in TABLE_COLUMNS).rstrip() for row in rows]
    return "\n".join(lines)


# --- vicirec audit ----------------------------------------------------------------------------


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
    parser.add_argument("--action", type=str.upper, choices=("START", "STOP", "STATUS"))
    parser.add_argument("--outcome", type=str.upper, choices=("OK", "ERROR"))
    parser.add_argument("--since", metavar="WHEN", help="YYYY-MM-DD or ISO time (UTC unless given)")
    parser.add_argument("--until", metavar="WHEN",
                        help="YYYY-MM-DD (that whole day included) or ISO time (records before it)")
    parser.add_argument("--caller", metavar="NUMBER",
                        help="the caller's phone number (hashed or masked the way the file stores it)")
    parser.add_argument("--key-file", metavar="PATH",
                        help="HMAC key for --caller when the config cannot be read (default: <path>.key)")
    parser.add_argument("--consent", action="store_true",
                        help="only consents: START records with outcome OK, with their recording")
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
