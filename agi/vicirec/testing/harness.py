"""Glue for driving vicirec's real entry points under the test doubles: a config pointing at a
simulator, the process AGI's command line, and a caller channel like the corpus lab's."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional, Union

from vicirec.testing.fake_asterisk import FakeChannel

LAB_CALL_ID = "V1123181500000000001"  # agent 1000's call in the corpus lab
LAB_CUSTOMER_NUMBER = "7275551212"
LAB_API_USER = "6666"
LAB_API_PASSWORD = "1234"  # noqa: S105 - the corpus lab's API user, public test fixture

TomlValue = Union[str, int, float, bool, list[str]]


def toml_text(sections: Mapping[str, Mapping[str, TomlValue]]) -> str:
    """A TOML document for the flat tables vicirec's config uses."""
    lines: list[str] = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: TomlValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(
    directory: Path,
    api_url: str,
    *,
    password: str = LAB_API_PASSWORD,
    overrides: Optional[Mapping[str, Mapping[str, TomlValue]]] = None,
) -> Path:
    """A 0640 config in ``directory`` for the simulator at ``api_url``, logging to ``vicirec.log``."""
    sections: dict[str, dict[str, TomlValue]] = {
        "vicidial": {"api_url": api_url, "user": LAB_API_USER, "password": password, "source": "vicirec"},
        "call": {"deadline": 6.0},
        "log": {"target": "file", "path": str(directory / "vicirec.log"), "level": "info"},
    }
    for section, values in (overrides or {}).items():
        sections.setdefault(section, {}).update(values)
    path = directory / "vicirec.toml"
    path.write_text(toml_text(sections))
    path.chmod(0o640)
    return path


def process_agi_command() -> list[str]:
    """The installed ``vicirec-agi`` next to this interpreter, else ``python -m vicirec.process_agi``."""
    script = Path(sys.executable).with_name("vicirec-agi")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "vicirec.process_agi"]


def agi_environment(config: Path, base: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env["VICIREC_CONFIG"] = str(config)
    return env


def caller_channel(call_id: str = LAB_CALL_ID, **fields: Any) -> FakeChannel:
    """The customer's channel of a VICIdial call: the call id in CALLERID(name)."""
    values: dict[str, Any] = {
        "name": "SIP/trunk-0000002a",
        "uniqueid": "1795459430.20",
        "callerid_num": LAB_CUSTOMER_NUMBER,
        "callerid_name": call_id,
        "context": "vicirec-example-consent",
        "extension": "s",
        "priority": "4",
    }
    values.update(fields)
    return FakeChannel(**values)
