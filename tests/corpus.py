"""Loader for the raw-response corpus of the real VICIdial agent API (``agent-api-corpus.txt``).

Each ``=== CASE Xnn: title ===`` block becomes one :class:`CorpusCase`; the appendix is ignored.
Malformed blocks raise ``ValueError`` (a case silently dropped would hide a behaviour).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

TESTS_DIR = Path(__file__).resolve().parent
DATA_DIR = TESTS_DIR / "data"
CORPUS_PATH = DATA_DIR / "vicidial" / "agent-api-corpus.txt"

_CASE_RE = re.compile(r"^=== CASE (?P<id>[A-Z]\d+): (?P<title>.*) ===$")
_REQUEST_RE = re.compile(r"^request: (?P<method>[A-Z]+) (?P<target>\S+)$")
_STATUS_RE = re.compile(r"^http_status: (?P<code>\d{3})\b")
_BODY_LEN_RE = re.compile(r"^body_len: (?P<n>\d+) bytes$")
_EXTREC_RE = re.compile(r"^external_recording\[[^\]]+\]: before=(?P<before>.*) after=(?P<after>.*)$")
_EXTPARK_RE = re.compile(r"^external_park\[(?P<agent>[^\]]+)\]: before=(?P<before>.*) after=(?P<after>.*)$")
_SETUP_PREFIXES = ("setup_sql:", "pre_requests:")
_PRE_BODY_RE = re.compile(r"^\s+pre\d+_body_repr: ")


@dataclass(frozen=True)
class CorpusCase:
    case_id: str  # "A05"
    title: str
    method: str  # GET/POST/HEAD/PUT
    target: str  # "/agc/api.php?source=..." exactly as recorded
    post_body: Optional[str]
    http_status: int
    body: bytes  # ast.literal_eval of body_repr
    setup: tuple[str, ...]  # raw setup lines (setup_sql:, pre_requests:, preN_body_repr...) verbatim
    notes: tuple[str, ...]
    external_recording_before: Optional[bytes]
    external_recording_after: Optional[bytes]
    #: park_call cases: (agent, external_park before, after)
    external_park: Optional[tuple[str, bytes, bytes]] = None

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]


def _bytes_literal(text: str, case_id: str) -> bytes:
    value = ast.literal_eval(text.strip())
    if isinstance(value, tuple):  # several vicidial_live_agents rows: the first one is reported
        value = value[0]
    if not isinstance(value, bytes):
        raise ValueError(f"{case_id}: expected a bytes literal, got {text!r}")
    return value


class _Block:
    def __init__(self, case_id: str, title: str) -> None:
        self.case_id = case_id
        self.title = title
        self.method: Optional[str] = None
        self.target: Optional[str] = None
        self.post_body: Optional[str] = None
        self.status: Optional[int] = None
        self.body: Optional[bytes] = None
        self.body_len: Optional[int] = None
        self.setup: list[str] = []
        self.notes: list[str] = []
        self.before: Optional[bytes] = None
        self.after: Optional[bytes] = None
        self.park: Optional[tuple[str, bytes, bytes]] = None

    def feed(self, line: str) -> None:
        if match := _REQUEST_RE.match(line):
            self.method, self.target = match["method"], match["target"]
        elif line.startswith("post_body: "):
            self.post_body = line[len("post_body: ") :]
        elif line.startswith(_SETUP_PREFIXES) or _PRE_BODY_RE.match(line):
            self.setup.append(line)
        elif match := _STATUS_RE.match(line):
            self.status = int(match["code"])
        elif match := _BODY_LEN_RE.match(line):
            self.body_len = int(match["n"])
        elif line.startswith("body_repr: "):
            self.body = _bytes_literal(line[len("body_repr: ") :], self.case_id)
        elif match := _EXTREC_RE.match(line):
            self.before = _bytes_literal(match["before"], self.case_id)
            self.after = _bytes_literal(match["after"], self.case_id)
        elif match := _EXTPARK_RE.match(line):
            self.park = (match["agent"], _bytes_literal(match["before"], self.case_id),
                         _bytes_literal(match["after"], self.case_id))
        elif line.startswith("note: "):
            self.notes.append(line[len("note: ") :])

    def build(self) -> CorpusCase:
        missing = [
            name
            for name, value in (
                ("request", self.target),
                ("http_status", self.status),
                ("body_repr", self.body),
            )
            if value is None
        ]
        if missing:
            raise ValueError(f"corpus case {self.case_id}: missing {', '.join(missing)}")
        assert self.method is not None and self.target is not None
        assert self.status is not None and self.body is not None
        if self.body_len is not None and self.body_len != len(self.body):
            raise ValueError(f"corpus case {self.case_id}: body_len {self.body_len} != {len(self.body)}")
        return CorpusCase(
            case_id=self.case_id,
            title=self.title,
            method=self.method,
            target=self.target,
            post_body=self.post_body,
            http_status=self.status,
            body=self.body,
            setup=tuple(self.setup),
            notes=tuple(self.notes),
            external_recording_before=self.before,
            external_recording_after=self.after,
            external_park=self.park,
        )


def load_corpus(path: Optional[Path] = None) -> list[CorpusCase]:
    """Every case of the corpus, in file order."""
    text = (path or CORPUS_PATH).read_text(encoding="utf-8")
    cases: list[CorpusCase] = []
    block: Optional[_Block] = None
    for line in text.splitlines():
        if line.startswith("=== "):
            if block is not None:
                cases.append(block.build())
                block = None
            match = _CASE_RE.match(line)
            if match:
                block = _Block(match["id"], match["title"])
            continue
        if block is not None:
            block.feed(line)
    if block is not None:
        cases.append(block.build())
    ids = [case.case_id for case in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"duplicate corpus case ids: {duplicates}")
    return cases
