"""The consent / PCI audit trail: one JSON line per action, appended before the AGI reports OK.

The file (``[audit] path``; empty = off) is append-only. Every record is written with one
``write(2)`` on an ``O_APPEND`` descriptor while holding ``flock(LOCK_EX)``, then ``fsync``-ed, so
lines from many processes and threads never tear or interleave and a record is on disk before the
channel reads ``VICIREC_RESULT=OK``. A rotated or deleted file is noticed on the next record (the
path's inode is compared with the open descriptor's) and the path is reopened.

The caller's number is written as ``[audit] caller_number`` says: ``hash`` (HMAC-SHA256 under a
per-install secret, ``sha256:<hex>``; without the key a phone number cannot be found by trying
them all), ``mask`` (only the last 4 digits kept), ``clear`` or ``omit``. The secret is
``[audit] hash_key`` when set, else a random key in ``<path>.key`` made (mode 0640) on first use.

``vicirec audit`` (:mod:`vicirec.audit.search`) searches the file.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import hmac
import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Optional

from vicirec.config import AuditSettings
from vicirec.errors import ErrorCode, VicirecError
from vicirec.shared_files import SHARED_SECRET_MODE, open_for_append, set_mode

if TYPE_CHECKING:  # pragma: no cover - typing only; keeps the AGI's import time down
    from vicirec.asterisk.codec import AgiEnvironment
    from vicirec.engine import Report

SCHEMA_VERSION = 1
HASH_PREFIX = "sha256:"
MIN_KEY_CHARS = 16
MASK_KEEP_DIGITS = 4
# How long a record may wait for another writer's lock before the write fails (closed).
LOCK_WAIT_SECONDS = 1.0
_LOCK_POLL_SECONDS = 0.002
_MESSAGE_MAX_CHARS = 300
_FIELD_MAX_CHARS = 120
_CALLER_MAX_CHARS = 80
CALLER_MODES = ("hash", "mask", "clear", "omit")
_ONLY_WHEN_SET = ("consent_id", "deferred")


class AuditError(VicirecError):
    """The audit trail could not be written (or its key read): the invocation must not read OK."""

    code = ErrorCode.INTERNAL


# --- the record -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditRecord:
    """One line of the audit file; field order is the JSON key order."""

    v: int
    time: str                        # UTC, ISO 8601 with milliseconds: 2024-05-01T12:00:00.123Z
    host: str                        # the telephony server that ran the AGI
    transport: str                   # process | fastagi | cli (vicirec start|stop|status)
    uniqueid: str
    channel: str
    caller: str                      # as [audit] caller_number says; "" when omitted or unknown
    agent: str
    agent_source: str                # how the agent was found (argument, call_id, ...)
    action: str                      # START | STOP | STATUS | CONSENT ("" when the request was refused)
    stage: str
    outcome: str                     # OK | ERROR
    error: str                       # VICIREC_ERROR ("" on OK)
    message: str
    recording: Optional[bool]        # STATUS / confirmed START and STOP: recording or not
    recording_id: str
    filename: str
    confirmed_after: Optional[float]  # seconds from START/STOP to VICIdial's confirmation
    # CONSENT (fastagi/deferred.py): the consent's id, on the CONSENT record and on the START the
    # daemon later sent for it (deferred = true), which links the two.
    consent_id: str = ""
    deferred: bool = False
    verified: Optional[bool] = None   # STOP checked where it is carried out (VICIREC_VERIFIED)

    def to_json(self) -> str:
        data = asdict(self)
        for name in _ONLY_WHEN_SET:  # records without a consent keep the v1 keys exactly
            if not data[name]:
                del data[name]
        if data["verified"] is None:  # only a STOP that was checked carries it (true or false)
            del data["verified"]
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> AuditRecord:
        """Read one line; unknown keys are ignored, missing ones take empty values."""
        data = json.loads(line)
        if not isinstance(data, dict) or not isinstance(data.get("time"), str):
            raise ValueError("not an audit record")
        values: dict[str, Any] = {}
        for item in fields(cls):
            value = data.get(item.name)
            if item.name == "v":
                values["v"] = value if isinstance(value, int) else 0
            elif item.name == "deferred":
                values["deferred"] = value is True
            elif item.name in ("recording", "verified"):
                values[item.name] = value if isinstance(value, bool) else None
            elif item.name == "confirmed_after":
                number = isinstance(value, (int, float)) and not isinstance(value, bool)
                values["confirmed_after"] = float(value) if number and value is not None else None
            else:
                values[item.name] = value if isinstance(value, str) else ("" if value is None else str(value))
        return cls(**values)

    @property
    def when(self) -> datetime:
        return parse_time(self.time)


def utc_timestamp(moment: Optional[datetime] = None) -> str:
    moment = (moment or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """An ISO 8601 time (``Z`` or an offset; no zone means UTC) as an aware UTC datetime."""
    text = text.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


# --- the caller's number ----------------------------------------------------------------------


def normalize_number(number: str) -> str:
    """What is hashed, masked or compared: the digits, or the text when it holds none."""
    text = number.strip()[:_CALLER_MAX_CHARS]
    if text.lower() == "unknown":  # Asterisk's placeholder for no caller id
        return ""
    digits = "".join(ch for ch in text if ch in "0123456789")
    return digits or _printable(text)


def hash_number(number: str, key: bytes) -> str:
    normalized = normalize_number(number)
    if not normalized:
        return ""
    return HASH_PREFIX + hmac.new(key, normalized.encode("utf-8"), hashlib.sha256).hexdigest()


def mask_number(number: str) -> str:
    normalized = normalize_number(number)
    if len(normalized) <= MASK_KEEP_DIGITS:
        return "*" * len(normalized)
    return "*" * (len(normalized) - MASK_KEEP_DIGITS) + normalized[-MASK_KEEP_DIGITS:]


def protect_number(number: str, mode: str, key: Optional[bytes]) -> str:
    """The caller's number as the audit file keeps it (``key`` is needed for ``hash``)."""
    if mode == "omit":
        return ""
    if mode == "clear":
        return _printable(number.strip()[:_CALLER_MAX_CHARS]) if normalize_number(number) else ""
    if mode == "mask":
        return mask_number(number)
    if mode == "hash":
        if not normalize_number(number):
            return ""
        if key is None:
            raise AuditError("no key to hash the caller's number with")
        return hash_number(number, key)
    raise ValueError(f"unknown caller_number mode {mode!r}")


def caller_matches(stored: str, number: str, key: Optional[bytes]) -> bool:
    """Could ``stored`` (any mode) be ``number``? A masked value matches every number that ends
    the same way; a hash matches only under the key it was made with."""
    if not stored or not normalize_number(number):
        return False
    if stored.startswith(HASH_PREFIX):
        return key is not None and hmac.compare_digest(stored, hash_number(number, key))
    if stored.startswith("*"):
        return stored == mask_number(number)
    return normalize_number(stored) == normalize_number(number)


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() else " " for ch in text)


# --- the key ----------------------------------------------------------------------------------


def key_file_for(audit_path: str) -> str:
    return audit_path + ".key"


def read_key_file(path: str) -> bytes:
    with open(path, "rb") as file:
        key = file.read(4096).strip()
    if len(key) < MIN_KEY_CHARS:
        raise AuditError(f"audit key file {path} is damaged (shorter than {MIN_KEY_CHARS} characters)")
    return key


def load_or_create_key(path: str) -> bytes:
    """The key in ``path``; made first (random, mode 0640) if missing. Safe when many processes
    race to make it: each writes a private temporary file and links it in; the first link wins."""
    try:
        return read_key_file(path)
    except FileNotFoundError:
        pass
    import secrets  # only the first call of an install gets here

    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    temporary = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, SHARED_SECRET_MODE)
    try:
        set_mode(fd, SHARED_SECRET_MODE)  # the other transport's user (same group) must read it
        os.write(fd, (secrets.token_hex(32) + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass  # another process made it first: use theirs
    else:
        _fsync_directory(directory)
    finally:
        os.unlink(temporary)
    return read_key_file(path)


def _fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- the writer -------------------------------------------------------------------------------


class AuditTrail:
    """Appends :class:`AuditRecord` lines to ``settings.path``; one per process AGI, one shared by
    every thread of the FastAGI daemon. Nothing is opened until the first record."""

    def __init__(
        self,
        settings: AuditSettings,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        host: Optional[str] = None,
        lock_wait: float = LOCK_WAIT_SECONDS,
    ) -> None:
        if not settings.path:
            raise ValueError("AuditTrail needs [audit] path")
        if settings.caller_number not in CALLER_MODES:
            raise ValueError(f"unknown caller_number mode {settings.caller_number!r}")
        self.path = settings.path
        self.caller_mode = settings.caller_number
        self.key_path = key_file_for(settings.path)
        self._key: Optional[bytes] = settings.hash_key.encode("utf-8") if settings.hash_key else None
        self._now = now
        self._host = host
        self._lock_wait = lock_wait
        self._lock = threading.Lock()
        self._fd: Optional[int] = None
        self._identity: Optional[tuple[int, int]] = None

    # --- building a record ---------------------------------------------------------------------

    def key(self) -> bytes:
        """The HMAC key: ``hash_key`` from the config, else the key file (made on first use)."""
        if self._key is None:
            with self._lock:
                if self._key is None:
                    try:
                        self._key = load_or_create_key(self.key_path)
                    except OSError as exc:
                        raise AuditError(
                            f"cannot read or create the audit key file {self.key_path}: {exc.strerror}"
                        ) from exc
        return self._key

    def caller(self, number: str) -> str:
        key = self.key() if self.caller_mode == "hash" and normalize_number(number) else None
        return protect_number(number, self.caller_mode, key)

    def build(
        self, report: Report, *, uniqueid: str, channel: str, caller_number: str, transport: str,
        consent_id: str = "", deferred: bool = False,
    ) -> AuditRecord:
        fields_ = report.fields
        recording_id = fields_.recording_id if fields_ else ""
        if self._host is None:
            self._host = socket.gethostname()
        return AuditRecord(
            v=SCHEMA_VERSION,
            time=utc_timestamp(self._now()),
            host=self._host,
            transport=transport,
            uniqueid=_short(uniqueid),
            channel=_short(channel),
            caller=self.caller(caller_number),
            agent=_short(report.agent),
            agent_source=_short(report.agent_source),
            action=_short(report.action),
            stage=_short(report.stage),
            outcome="OK" if report.ok else "ERROR",
            error=report.error.value if report.error else "",
            message=_printable(report.message)[:_MESSAGE_MAX_CHARS],
            recording=report.recording,
            recording_id=_short(recording_id),
            filename=_short(fields_.filename if fields_ and recording_id else ""),
            confirmed_after=report.confirmed_after,
            consent_id=_short(consent_id),
            deferred=deferred,
            verified=report.verified,
        )

    def record(
        self, report: Report, environment: AgiEnvironment, *, transport: str, consent_id: str = "",
        deferred: bool = False,
    ) -> AuditRecord:
        """Build the record of one invocation and write it; raises :class:`AuditError`."""
        record = self.build(
            report, uniqueid=environment.uniqueid, channel=environment.channel,
            caller_number=environment.known("agi_callerid"), transport=transport,
            consent_id=consent_id, deferred=deferred,
        )
        self.write(record)
        return record

    # --- writing -------------------------------------------------------------------------------

    def write(self, record: AuditRecord) -> None:
        """Append one line and fsync it; raises :class:`AuditError` on any failure."""
        line = record.to_json().encode("utf-8") + b"\n"
        with self._lock:
            try:
                fd = self._descriptor()
                self._append(fd, line)
                os.fsync(fd)
            except OSError as exc:
                self._close_locked()  # start from a fresh descriptor next time
                raise AuditError(f"cannot write the audit file {self.path}: {exc.strerror or exc}") from exc

    def reopen(self) -> None:
        """Close the descriptor; the next record opens the path again (after log rotation)."""
        with self._lock:
            self._close_locked()

    def close(self) -> None:
        self.reopen()

    def _descriptor(self) -> int:
        if self._fd is not None and self._identity is not None:
            try:
                stat = os.stat(self.path)
                current: Optional[tuple[int, int]] = (stat.st_dev, stat.st_ino)
            except FileNotFoundError:
                current = None
            if current == self._identity:
                return self._fd
            self._close_locked()  # rotated away or deleted: write to the file at the path now
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, mode=0o750, exist_ok=True)
        fd, created = open_for_append(self.path, readable=True)
        stat = os.fstat(fd)
        self._fd, self._identity = fd, (stat.st_dev, stat.st_ino)
        if created:
            _fsync_directory(directory or ".")
        return fd

    def _append(self, fd: int, line: bytes) -> None:
        self._flock(fd)
        try:
            # A writer that died mid-line (disk full) left no newline: start ours on a new line.
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(errno.ENOSPC, f"short write ({written} of {len(line)} bytes)")
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _flock(self, fd: int) -> None:
        # Bounded: a writer stopped while holding the lock must not hang every call behind it.
        give_up = time.monotonic() + self._lock_wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= give_up:
                    raise OSError(errno.ETIMEDOUT, f"audit file locked by another writer for "
                                                   f"{self._lock_wait:g} s") from None
                time.sleep(_LOCK_POLL_SECONDS)

    def _close_locked(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._fd, self._identity = None, None


def _short(value: str) -> str:
    return _printable(value)[:_FIELD_MAX_CHARS]
