"""Search the consent / PCI audit trail that :mod:`vicirec.audit.trail` writes: read, filter, format.

Pure of printing; ``vicirec audit`` (:mod:`vicirec.commands.audit`) is its front end.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import IO, Optional

from vicirec.audit.trail import (
    HASH_PREFIX,
    AuditRecord,
    caller_matches,
    parse_time,
)

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
    consent: bool = False              # START (and CONSENT) records with outcome OK

    def matches(self, record: AuditRecord) -> bool:
        if self.uniqueid is not None and record.uniqueid != self.uniqueid:
            return False
        if self.agent is not None and record.agent != self.agent:
            return False
        if self.action is not None and record.action.upper() != self.action.upper():
            return False
        if self.outcome is not None and record.outcome.upper() != self.outcome.upper():
            return False
        if self.consent and (record.action not in ("START", "CONSENT") or record.outcome != "OK"):
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
