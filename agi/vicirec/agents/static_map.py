"""The ``static_map`` file: which agent user answers on which phone.

Format (``agents.map_file``), one mapping a line, ``#`` starts a comment line::

    # device or extension = agent user
    SIP/1000    = 1000
    PJSIP/1001  = 1001
    Local/1002  = 1002     # a Local channel: the extension, any @context
    1003        = 1003     # a bare extension: that resource on any technology

The left side is a device (``TECH/resource``; for ``Local`` an ``@context`` is ignored) or a bare
extension; the right side an agent user (letters, digits, ``_``, ``-``; at most 20). ``#`` starts a
comment anywhere on a line. Anything else, a key given twice, a non-ASCII byte or a file over 1 MiB
is an error naming the line: a typo in this file must not silently send a recording command to
another agent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Optional

from vicirec.agents.devices import Device, device_of_extension, is_bare_extension
from vicirec.config import read_named_file
from vicirec.errors import ConfigError
from vicirec.request import AGENT_USER

MAX_MAP_BYTES = 1 << 20


@dataclass(frozen=True)
class StaticMapEntry:
    line: int
    key: str        # as written
    agent: str


@dataclass(frozen=True)
class StaticMap:
    devices: dict[tuple[str, str], StaticMapEntry] = field(default_factory=dict)
    extensions: dict[str, StaticMapEntry] = field(default_factory=dict)
    source: str = ""

    def __len__(self) -> int:
        return len(self.devices) + len(self.extensions)

    def agent_for(self, device: Device) -> Optional[StaticMapEntry]:
        """The entry naming this device, else the entry naming its bare extension."""
        entry = self.devices.get(device.key)
        if entry is not None:
            return entry
        return self.extensions.get(device.resource)

    def matches(self, devices: Iterable[Device]) -> list[tuple[Device, StaticMapEntry]]:
        found: list[tuple[Device, StaticMapEntry]] = []
        for device in devices:
            entry = self.agent_for(device)
            if entry is not None:
                found.append((device, entry))
        return found


def parse_static_map(text: str, source: str = "agents.map_file") -> StaticMap:
    """Read the map's text (no I/O); raise :class:`ConfigError` naming the first bad line."""
    devices: dict[tuple[str, str], StaticMapEntry] = {}
    extensions: dict[str, StaticMapEntry] = {}
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        where = f"{source} line {number}"
        if not line.isascii() or any(not (ch.isprintable() or ch == "\t") for ch in line):
            raise ConfigError(f"{where}: only printable ASCII is allowed")
        content = line.partition("#")[0].strip()
        if not content:
            continue
        key, equals, agent = (part.strip() for part in content.partition("="))
        if not equals or "=" in agent:
            raise ConfigError(f"{where}: expected 'device = agent user'")
        if not AGENT_USER.fullmatch(agent):
            raise ConfigError(f"{where}: {agent!r} is not an agent user (letters, digits, _ or -, 1-20)")
        entry = StaticMapEntry(number, key, agent)
        if "/" in key:
            device = device_of_extension(key)
            if device is None:
                raise ConfigError(f"{where}: {key!r} is not a device such as SIP/1000 or PJSIP/1001")
            previous = devices.get(device.key)
            if previous is not None:
                raise ConfigError(f"{where}: {key} is already mapped on line {previous.line}")
            devices[device.key] = entry
        elif is_bare_extension(key):
            previous = extensions.get(key)
            if previous is not None:
                raise ConfigError(f"{where}: {key} is already mapped on line {previous.line}")
            extensions[key] = entry
        else:
            raise ConfigError(f"{where}: {key!r} is neither a device (SIP/1000) nor an extension (1000)")
    return StaticMap(devices, extensions, source)


def load_static_map(path: str) -> StaticMap:
    data = read_named_file(path, "agents.map_file", limit=MAX_MAP_BYTES)
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path} line {line}: only printable ASCII is allowed") from exc
    return parse_static_map(text, source=path)
