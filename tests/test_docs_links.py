"""The READMEs point at things that exist: every relative link, every ``#anchor`` and every file
name in inline code that looks like one of the repository's files.

Checked: ``README.md``, each top folder's ``README.md`` and ``tests/data/README.md`` (the other
READMEs under ``tests/data`` were captured with the evidence and are not edited). In a code block
only the repository paths a command names (``tests/benchmarks/soak.py``) are checked, against the
root. An inline-code path resolves against the repository root, the README's folder,
``agi/vicirec`` (module paths) or ``tests``; ``tests/x.py::test_y`` also needs ``def test_y`` in
that file. A bare ``name.py`` must be the name of some file in the repository (this is what catches
a module renamed or moved: ``fastagi_session.py``), and a dotted ``vicirec.x.y`` a module under
``agi/`` (or a name in one). ``../`` paths must stay inside the repository.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Extensions that make an inline-code word a file name.
FILE_SUFFIXES = (".py", ".md", ".sh", ".conf", ".toml", ".txt", ".sql", ".service", ".example", ".json")
#: First path components that make an inline-code word a path in the repository.
REPO_DIRS = ("agi", "deploy", "dialplan", "tests")
#: Where an inline-code path may be relative to (besides the README's own folder).
BASES = ("", "agi/vicirec", "tests")
SKIPPED_DIRS = {".git", ".venv", "venv", "__pycache__", "build", "dist", ".mypy_cache", ".ruff_cache",
                ".pytest_cache", ".hypothesis"}

LINK = re.compile(r"(?<!!)\[(?:[^\]\\]|\\.)*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE = re.compile(r"(`+)(.+?)\1")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")
#: ``vicirec.agi``, ``vicirec.toml``, ``vicirec.example.net``: files and hosts, not modules.
NOT_MODULES = {"agi", "toml", "example", "log", "logrotate", "net", "conf", "key", "jsonl", "service", "map"}
MODULE = re.compile(r"(?<![\w.])(vicirec(?:\.\w+)+)")
COMMAND_PATH = re.compile(r"(?<![\w./-])((?:agi|deploy|dialplan|tests)/[\w./-]*\w)")


def documents(root: Path) -> list[Path]:
    found = [root / "README.md", *sorted(root.glob("*/README.md")), root / "tests" / "data" / "README.md"]
    return [path for path in found if path.is_file()]


def split_lines(text: str) -> Iterator[tuple[int, str, bool]]:
    """(line number, line, inside a fenced code block)."""
    fenced = False
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        yield number, line, fenced


def prose_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    return ((number, line) for number, line, fenced in split_lines(text) if not fenced)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed, spaces to ``-``."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for _number, line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def repo_file_names(root: Path) -> set[str]:
    names = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        for entry in folder.iterdir():
            if entry.is_dir():
                if entry.name not in SKIPPED_DIRS and not entry.name.endswith(".egg-info"):
                    stack.append(entry)
            else:
                names.add(entry.name)
    return names


def looks_like_repo_path(word: str) -> bool:
    if not word or any(c in word for c in " \t<>*{}$=@,;|'\"()[]…") or "://" in word or "..." in word:
        return False
    if word.startswith(("../", "./")):
        return True
    if word.startswith(("/", "~", "-", ".")):
        return False
    if "/" in word:
        first = word.split("/", 1)[0]
        return first in REPO_DIRS or word.rstrip("/").endswith(FILE_SUFFIXES) or word.endswith("/")
    return word.endswith(".py")


def _inside(path: Path, root: Path) -> bool:
    resolved, top = path.resolve(), root.resolve()
    return resolved == top or top in resolved.parents


def _resolve(word: str, readme: Path, root: Path) -> Path | None:
    bases = [readme.parent] if word.startswith(".") else [readme.parent, *(root / b for b in BASES)]
    for base in bases:
        candidate = base / word
        if candidate.exists() and _inside(candidate, root):
            return candidate
    return None


def check_module(word: str, root: Path) -> str | None:
    """``vicirec.a.b`` (a module, or a name in one): why it does not exist, or None."""
    parts = word.split(".")
    for cut in range(len(parts), 0, -1):
        base = root / "agi" / Path(*parts[:cut])
        module = base.with_suffix(".py") if (base.with_suffix(".py")).is_file() else base / "__init__.py"
        if module.is_file():
            rest = parts[cut:]
            if not rest:
                return None
            if len(rest) == 1 and re.search(rf"\b{re.escape(rest[0])}\b", module.read_text(encoding="utf-8")):
                return None
            break
    return f"`{word}`: no such module in agi/"


def check_mention(word: str, readme: Path, root: Path, names: set[str]) -> str | None:
    """Why ``word`` (inline code) is a broken reference, or None."""
    modules = [m for m in MODULE.findall(word) if m.rsplit(".", 1)[1] not in NOT_MODULES]
    if modules:
        return next((problem for m in modules if (problem := check_module(m, root))), None)
    if " " in word:  # a command: the repository paths it names
        missing = [p for p in COMMAND_PATH.findall(word) if not (root / p).exists()]
        return f"`{word}`: {missing[0]}: no such file or folder" if missing else None
    path_part, _, test_name = word.partition("::")
    if not looks_like_repo_path(path_part):
        return None
    if "/" not in path_part:
        return None if path_part in names else f"`{word}`: no file of that name in the repository"
    target = _resolve(path_part, readme, root)
    if target is None:
        return f"`{word}`: no such file or folder"
    if test_name and not re.search(rf"^\s*def {re.escape(test_name.split('[')[0])}\(",
                                   target.read_text(encoding="utf-8"), re.MULTILINE):
        return f"`{word}`: {path_part} has no {test_name.split('[')[0]}"
    return None


def check_link(target: str, readme: Path, root: Path) -> str | None:
    """Why the link ``target`` is broken, or None (links to the web are not fetched)."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
        return None
    path_part, _, anchor = target.partition("#")
    destination = (readme.parent / path_part).resolve() if path_part else readme
    if not destination.exists():
        return f"({target}): no such file or folder"
    if root.resolve() not in (destination, *destination.parents):
        return f"({target}): outside the repository"
    if anchor:
        if destination.is_dir() or destination.suffix != ".md":
            return f"({target}): an anchor into something that is not a Markdown file"
        if anchor not in anchors(destination):
            return f"({target}): no heading with the anchor #{anchor}"
    return None


def broken_references(readme: Path, root: Path, names: set[str] | None = None) -> list[str]:
    names = repo_file_names(root) if names is None else names
    problems = []
    where = readme.relative_to(root)
    for number, line, fenced in split_lines(readme.read_text(encoding="utf-8")):
        if fenced:  # a command in a code block: only the repository paths it names
            for word in COMMAND_PATH.findall(line):
                if not (root / word).exists():
                    problems.append(f"{where}:{number}: {word} (in a code block): no such file or folder")
            continue
        for match in LINK.finditer(line):
            problem = check_link(match.group(1), readme, root)
            if problem:
                problems.append(f"{where}:{number}: link {problem}")
        for match in CODE.finditer(line):
            problem = check_mention(match.group(2).strip(), readme, root, names)
            if problem:
                problems.append(f"{where}:{number}: {problem}")
    return problems


def test_there_are_documents_to_check() -> None:
    checked = {str(path.relative_to(ROOT)) for path in documents(ROOT)}
    expected = {"README.md", "agi/README.md", "deploy/README.md", "dialplan/README.md", "tests/README.md"}
    assert expected <= checked


@pytest.mark.parametrize("readme", documents(ROOT), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_reference_resolves(readme: Path) -> None:
    assert broken_references(readme, ROOT) == []


def test_the_checker_finds_each_kind_of_broken_reference(tmp_path: Path) -> None:
    (tmp_path / "agi" / "vicirec" / "fastagi").mkdir(parents=True)
    (tmp_path / "agi" / "vicirec" / "__init__.py").write_text("")
    (tmp_path / "agi" / "vicirec" / "fastagi" / "__init__.py").write_text("")
    (tmp_path / "agi" / "vicirec" / "fastagi" / "session.py").write_text("def run() -> None: ...\n")
    (tmp_path.parent / "outside.txt").write_text("beside the repository, not in it")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_a.py").write_text("def test_real() -> None:\n    pass\n")
    (tmp_path / "tests" / "README.md").write_text("# Tests\n\n## The `doubles`, explained…\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "# Front page\n\n"
        "Good: [tests](tests/README.md#the-doubles-explained), [top](#front-page), [web](https://x.org/a),\n"
        "`fastagi/session.py`, `agi/vicirec/fastagi/`, `tests/test_a.py::test_real`, `session.py`,\n"
        "`SIP/1000`, `/etc/vicirec/vicirec.toml`, `START/STOP`, `python -m vicirec.fastagi.session`,\n"
        "`vicirec.fastagi.session.run`, `ls agi/vicirec`.\n\n"
        "```\nnot links: [gone](nowhere.md) `x.py` but a path: python tests/nowhere.py\n```\n"
        "Bad: [gone](docs/gone.md), [anchor](tests/README.md#nope), [self](#missing),\n"
        "`fastagi_session.py`, `agi/vicirec/audit_search.py`, `tests/test_a.py::test_gone`,\n"
        "`deploy/x.sh`, `../outside.txt`, `vicirec.fastagi_session`, `vicirec.fastagi.session.gone`,\n"
        "`sh deploy/y.sh --help`.\n"
    )
    problems = broken_references(readme, tmp_path)
    assert [p.split(": ", 1)[1] for p in problems] == [
        "tests/nowhere.py (in a code block): no such file or folder",
        "link (docs/gone.md): no such file or folder",
        "link (tests/README.md#nope): no heading with the anchor #nope",
        "link (#missing): no heading with the anchor #missing",
        "`fastagi_session.py`: no file of that name in the repository",
        "`agi/vicirec/audit_search.py`: no such file or folder",
        "`tests/test_a.py::test_gone`: tests/test_a.py has no test_gone",
        "`deploy/x.sh`: no such file or folder",
        "`../outside.txt`: no such file or folder",
        "`vicirec.fastagi_session`: no such module in agi/",
        "`vicirec.fastagi.session.gone`: no such module in agi/",
        "`sh deploy/y.sh --help`: deploy/y.sh: no such file or folder",
    ]
    lines = [p.split(": ", 1)[0].split(":")[1] for p in problems]
    assert lines == ["9", "11", "11", "11", "12", "12", "12", "13", "13", "13", "13", "14"]


@pytest.mark.parametrize(("heading", "anchor"), [
    ("What happens when…", "what-happens-when"),
    ("`VICIREC_AGENT` as input, and `VICIREC_AGENT_DISCOVERED`",
     "vicirec_agent-as-input-and-vicirec_agent_discovered"),
    ("Deadlines, retries and the circuit breaker", "deadlines-retries-and-the-circuit-breaker"),
    ("pyst2, and why the AGI codec is vicirec's own", "pyst2-and-why-the-agi-codec-is-vicirecs-own"),
])
def test_anchors_are_githubs(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor
