"""The channel an AGI runs on (:class:`FakeChannel`) and the environment block Asterisk sends first
(:func:`build_env_block`), with the ``AST_*`` variables a process AGI inherits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Callable, Optional

ASTERISK_VERSION = "22.10.1"

#: The ``AST_*`` environment variables Asterisk 22.10.1 exported to process AGIs (protocol-process.txt;
#: the lab build's module and log dirs are replaced by the stock ones).
AST_ENVIRONMENT: dict[str, str] = {
    "AST_AGI_DIR": "/var/lib/asterisk/agi-bin",
    "AST_BUILD_DATE": "2026-11-23 18:24:58 UTC",
    "AST_BUILD_HOST": "vm",
    "AST_BUILD_KERNEL": "6.18.44-fc-v669",
    "AST_BUILD_MACHINE": "x86_64",
    "AST_BUILD_OS": "Linux",
    "AST_BUILD_USER": "root",
    "AST_CONFIG_DIR": "/etc/asterisk",
    "AST_CONFIG_FILE": "/etc/asterisk/asterisk.conf",
    "AST_DATA_DIR": "/var/lib/asterisk",
    "AST_KEY_DIR": "/var/lib/asterisk/keys",
    "AST_LOG_DIR": "/var/log/asterisk",
    "AST_MODULE_DIR": "/usr/lib/asterisk/modules",
    "AST_MONITOR_DIR": "/var/spool/asterisk/monitor",
    "AST_RUN_DIR": "/var/run/asterisk",
    "AST_SPOOL_DIR": "/var/spool/asterisk",
    "AST_SYSTEMNAME": "",
    "AST_VAR_DIR": "/var/lib/asterisk",
    "AST_VERSION": ASTERISK_VERSION,
}


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _s(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


@dataclass
class FakeChannel:
    """One Asterisk channel as an AGI sees it.

    ``callerid_num`` / ``callerid_name`` equal to ``"unknown"`` mean "not set" (the env block then
    says ``unknown``; ``CALLERID(name)`` reads empty and ``CALLERID(all)`` gives ``"" <num>``).
    ``variables`` holds channel variables and function reads by literal key (``"BRIDGEPEER"``,
    ``"CONNECTEDLINE(all)"``, ``"CONFBRIDGE_CHANNELS(parties,room1)"``...); a literal key wins over
    the built-in functions. ``others`` holds the variables of other channels by channel name (for
    ``GET FULL VARIABLE <expr> <channel>``, ``IMPORT(chan,var)``, ``CHANNEL STATUS <chan>``); its names
    and this channel's are what ``CHANNELS(regex)`` lists.
    ``hung_up=True`` means the AGI starts on a dead channel (``h`` extension); after a run in which
    the caller hung up it is set to True. The object is mutated in place by the runs.
    """

    name: str = "SIP/trunk-0000002a"
    uniqueid: str = "1795459430.20"
    callerid_num: str = "unknown"
    callerid_name: str = "unknown"
    context: str = "default"
    extension: str = "s"
    priority: str = "1"
    language: str = "en"
    channel_type: str = "SIP"
    accountcode: str = ""
    dnid: str = "unknown"
    rdnis: str = "unknown"
    callingpres: Optional[str] = None  # None: 67 with no caller id at all, else 0
    callingani2: str = "0"
    callington: str = "0"
    callingtns: str = "0"
    threadid: str = "139741756114624"
    state: str = "Up"
    dtmf: str = ""  # digits WAIT FOR DIGIT returns, first one first
    variables: dict[str, str] = field(default_factory=dict)
    others: dict[str, dict[str, str]] = field(default_factory=dict)
    hung_up: bool = False
    #: The dialplan AGI ``GOSUB`` can reach, by context: each runs (channel, extension, priority)
    #: in place of the subroutine (it may run nested AGIs on this channel, as dialplan would).
    subroutines: dict[str, Callable[[FakeChannel, str, str], None]] = field(default_factory=dict)

    def effective_callingpres(self) -> str:
        if self.callingpres is not None:
            return self.callingpres
        if self.callerid_num == "unknown" and self.callerid_name == "unknown":
            return "67"
        return "0"


def build_env_block(channel: FakeChannel, request: str, args: Sequence[str], *, network: bool = False,
                    network_script: Optional[str] = None, enhanced: bool = False) -> list[bytes]:
    """The environment block as res_agi writes it: one ``write()`` per line, then ``\\n``.

    ``network`` adds ``agi_network: yes`` first (FastAGI) and ``agi_network_script`` when
    ``network_script`` is non-empty.
    """
    lines: list[tuple[str, str]] = []
    if network:
        lines.append(("agi_network", "yes"))
        if network_script:
            lines.append(("agi_network_script", network_script))
    lines += [
        ("agi_request", request),
        ("agi_channel", channel.name),
        ("agi_language", channel.language),
        ("agi_type", channel.channel_type),
        ("agi_uniqueid", channel.uniqueid),
        ("agi_version", ASTERISK_VERSION),
        ("agi_callerid", channel.callerid_num),
        ("agi_calleridname", channel.callerid_name),
        ("agi_callingpres", channel.effective_callingpres()),
        ("agi_callingani2", channel.callingani2),
        ("agi_callington", channel.callington),
        ("agi_callingtns", channel.callingtns),
        ("agi_dnid", channel.dnid),
        ("agi_rdnis", channel.rdnis),
        ("agi_context", channel.context),
        ("agi_extension", channel.extension),
        ("agi_priority", channel.priority),
        ("agi_enhanced", "1.0" if enhanced else "0.0"),
        ("agi_accountcode", channel.accountcode),
        ("agi_threadid", channel.threadid),
    ]
    lines += [(f"agi_arg_{i}", arg) for i, arg in enumerate(args, start=1)]
    return [_b(f"{key}: {value}\n") for key, value in lines] + [b"\n"]
