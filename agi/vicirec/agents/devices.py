"""Phones and channels by name: which device a channel belongs to. Pure: strings in, values out.

Asterisk names a channel ``<technology>/<resource>-<sequence>`` (``SIP/1000-0000002a``,
``PJSIP/1001-00000007``, ``IAX2/1002-123``) and a Local channel ``Local/<exten>@<context>-<seq>;<half>``.
VICIdial names the agent's phone in ``vicidial_live_agents.extension`` without the sequence
(``SIP/1000``, ``PJSIP/1001``, ``Local/1001@default``). A :class:`Device` is what both have in common:
the technology (compared without case) and the resource (for Local: the extension, context dropped).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Optional

_TECHNOLOGY = r"[A-Za-z][A-Za-z0-9_]{0,31}"
_RESOURCE_CHARS = r"[A-Za-z0-9_.+#*@:~-]"
_CHANNEL = re.compile(
    rf"({_TECHNOLOGY})/({_RESOURCE_CHARS}{{1,200}}?)(?:-([0-9A-Fa-f]{{1,16}}))?(?:;([12]))?"
)
_EXTENSION = re.compile(rf"({_TECHNOLOGY})/({_RESOURCE_CHARS}{{1,200}})")
_BARE_EXTENSION = re.compile(r"[A-Za-z0-9_.+#*-]{1,80}")
#: Channels a conference adds that are never a person: the announcer and the recorder.
NON_PARTY_TECHNOLOGIES = frozenset({"CBANN", "CBREC"})


@dataclass(frozen=True)
class Device:
    technology: str  # as written (SIP, PJSIP, IAX2, Local...)
    resource: str    # the endpoint, or for Local the extension without its @context

    @property
    def key(self) -> tuple[str, str]:
        """What two names of the same phone share (technology names are case-insensitive)."""
        return (self.technology.upper(), self.resource)

    def __str__(self) -> str:
        return f"{self.technology}/{self.resource}"


def device_of_channel(name: str) -> Optional[Device]:
    """The phone behind an Asterisk channel name, or ``None`` when the name is not one."""
    return _device(_CHANNEL.fullmatch(name.strip()))


def device_of_extension(extension: str) -> Optional[Device]:
    """The phone named by VICIdial's ``extension`` column (``SIP/1000``, ``Local/1001@default``)."""
    return _device(_EXTENSION.fullmatch(extension.strip()))


def _device(match: Optional[re.Match[str]]) -> Optional[Device]:
    if match is None:
        return None
    technology, resource = match.group(1), match.group(2)
    if technology.upper() == "LOCAL":
        resource = resource.partition("@")[0]  # a Local channel is its extension; context ignored
    if not resource:
        return None
    return Device(technology, resource)


def is_bare_extension(text: str) -> bool:
    """A dialplan extension with no technology (``1001``), as a static map may name a phone."""
    return bool(_BARE_EXTENSION.fullmatch(text))


def split_channel_list(value: str) -> list[str]:
    """``BRIDGEPEER`` / ``CONFBRIDGE_CHANNELS``: one name, or a comma list (in a conference)."""
    return [part.strip() for part in value.split(",") if part.strip()]


def is_party(channel: str) -> bool:
    """False for a conference's announcer or recorder channel (``CBAnn/room-0000000e;2``)."""
    technology = channel.partition("/")[0].upper()
    return technology not in NON_PARTY_TECHNOLOGIES


def same_call_leg(first: str, second: str) -> bool:
    """Equal channel names, or the two halves (``;1`` / ``;2``) of one Local channel."""
    if not first or not second:
        return False
    return _without_local_half(first) == _without_local_half(second)


def _without_local_half(name: str) -> str:
    if name[:6].upper() == "LOCAL/" and name[-2:] in (";1", ";2"):
        return name[:-2]
    return name


def devices_of_channels(channels: Iterable[str]) -> list[Device]:
    """The distinct devices of ``channels`` in order, skipping names that are not channels."""
    seen: dict[tuple[str, str], Device] = {}
    for channel in channels:
        device = device_of_channel(channel)
        if device is not None and device.key not in seen:
            seen[device.key] = device
    return list(seen.values())
