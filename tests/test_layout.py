"""The layout is the architecture: which wing of ``agi/vicirec`` may import which.

Read from the source with ``ast`` (every import, module level or inside a function), so a lazy
import counts as much as one at the top. Imports under ``if TYPE_CHECKING:`` are annotations only
and are not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import vicirec

PACKAGE = Path(vicirec.__file__).parent
WINGS = ("asterisk", "vicidial", "agents", "fastagi", "audit", "commands", "testing")

#: The leaf modules every wing may use.
BASE = {"errors", "config", "deadline", "redaction"}

#: wing -> the top-level names (wings or core modules) of vicirec it may import; None = anything.
ALLOWED: dict[str, set[str] | None] = {
    "asterisk": BASE | {"asterisk"},
    "vicidial": BASE | {"vicidial", "__init__"},  # __init__: the package version for User-Agent
    "agents": BASE | {"agents", "asterisk", "vicidial", "request"},
    "audit": BASE | {"audit", "shared_files"},
    "fastagi": None,
    "testing": None,
    "commands": None,
}

#: Nothing outside these imports the command line.
MAY_IMPORT_COMMANDS = {"commands"}


def top_name(module: str) -> str | None:
    """``vicirec.agents.chain`` -> ``agents``; ``vicirec`` -> ``__init__``; others -> None."""
    if module == "vicirec":
        return "__init__"
    if not module.startswith("vicirec."):
        return None
    return module.split(".")[1]


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {
        id(inner) for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")
        for inner in ast.walk(node)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "vicirec":
                names = [f"vicirec.{alias.name}" for alias in node.names
                         if (PACKAGE / alias.name).is_dir() or (PACKAGE / f"{alias.name}.py").is_file()]
                names += ["vicirec"] * (len(names) < len(node.names))
        else:
            continue
        found |= {name for name in (top_name(n) for n in names) if name is not None}
    return found


def owner_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def test_every_wing_is_a_documented_package() -> None:
    for wing in WINGS:
        init = PACKAGE / wing / "__init__.py"
        assert init.is_file(), wing
        docstring = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert docstring and "import" in docstring, f"{wing}/__init__.py must say what it may import"


def test_no_module_is_left_loose_that_belongs_to_a_wing() -> None:
    loose = {p.stem for p in PACKAGE.glob("*.py")}
    assert loose == {
        "__init__", "__main__", "config", "confirmation", "deadline", "engine", "errors", "logs", "park",
        "process_agi", "redaction", "reporting", "request", "runtime", "shared_files", "verification",
    }


def test_wings_import_only_what_they_may() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        owner = owner_of(path)
        allowed = ALLOWED.get(owner)
        used = imports_of(path) - {owner}
        if allowed is not None:
            wrong += [f"{path.relative_to(PACKAGE)} imports {name}" for name in sorted(used - allowed)]
        if "commands" in used and owner not in MAY_IMPORT_COMMANDS and owner != "__main__":
            wrong.append(f"{path.relative_to(PACKAGE)} imports commands")
        if "testing" in used and owner not in {"testing", "commands"}:
            wrong.append(f"{path.relative_to(PACKAGE)} imports testing")
    assert wrong == []


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import vicirec.audit\n"
                      "def f():\n    from vicirec.engine import Report\n    import vicirec.commands.cli\n"
                      "from vicirec import __version__, logs\n")
    assert imports_of(module) == {"engine", "commands", "logs", "__init__"}
