"""What this channel knows about its call, read lazily through a :class:`ResolveContext`.

Every value is classified by who controls it: the caller (``CALLERID(name)``: anything they like,
so it is validated strictly and never trusted alone), the dialplan author (the room variable) or
Asterisk itself (the channel name, uniqueid, linkedid, ``BRIDGEPEER``, the conference's party list).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from vicirec.agents.chain import LiveAgent, ResolveContext
from vicirec.agents.devices import Device, devices_of_channels, is_party, same_call_leg, split_channel_list

# VICIdial's call id: one capital letter, 9 time digits, the 10-digit zero-padded lead id. ASCII only,
# the whole value (fullmatch: a trailing newline, a space or a second id never slip through).
_CALL_ID = re.compile(r"[A-Z][0-9]{19}", re.ASCII)
# conf_exten: digits, as VICIdial numbers its conference rooms (8600051). Also keeps the room safe to
# place inside the CONFBRIDGE_CHANNELS(parties,<room>) expression.
_ROOM = re.compile(r"[0-9]{1,20}", re.ASCII)


# With extension_appended_cidname VICIdial writes "<call id> <extension or user>[ <campaign>]"
# (agi-VDAD_ALL_outbound.agi, agi-VDAD_ALL_inbound.agi); its own park_CID.agi keeps the first token.
# Only those forms pass: V/M/Y/J ids, one ASCII space before each of at most two suffix words.
_SUFFIXED_CALL_ID = re.compile(r"([VMYJ][0-9]{19})((?: [A-Za-z0-9_@.+#*:/-]{1,50}){1,2})", re.ASCII)


def strict_call_id(value: str) -> Optional[str]:
    """``value`` when it is exactly a VICIdial call id, else ``None``."""
    return value if _CALL_ID.fullmatch(value) else None


def call_id_of_name(name: str) -> Optional[str]:
    """The VICIdial call id a caller ID name carries, or ``None``.

    Either the whole name is a call id, or it is one as VICIdial's ``extension_appended_cidname``
    writes it (``V1123181500000000001 1000``, ``V1123181500000000001 1000 TESTCAMP``): then the
    first token must be a ``V``/``M``/``Y``/``J`` id and the suffix one or two plain words, none of
    them a second call id. Tabs, newlines, doubled or trailing spaces, quotes, pipes never pass.
    """
    if strict_call_id(name):
        return name
    match = _SUFFIXED_CALL_ID.fullmatch(name)
    if match is None:
        return None
    if any(strict_call_id(word) for word in match.group(2).split(" ")[1:]):
        return None
    return match.group(1)


def lead_id_of(call_id: str) -> int:
    """The lead id inside a (valid) call id."""
    return int(call_id[10:])


def caller_call_id(context: ResolveContext) -> tuple[Optional[str], str]:
    """The call id in CALLERID(name) (caller-controlled!), or ``None`` and why not."""
    name = context.environment.known("agi_calleridname")
    if not name:
        return None, "no caller ID name"
    call_id = call_id_of_name(name)
    if call_id is None:
        return None, "caller ID name is not a VICIdial call id"
    return call_id, ""


@dataclass(frozen=True)
class Room:
    """The conference room this channel is verifiably in, or why it is not known."""

    number: Optional[str]
    reason: str
    turned_down: bool = False  # a room was named, but this channel is not (or no longer) in it
    #: False for a MeetMe room: MEETME_INFO counts a room's parties but cannot name them, so the
    #: room is known to be live, not to hold this channel (see :func:`confirmed_room`).
    listed: bool = True
    engine: str = "ConfBridge"


# VICIdial numbers its agent sessions by engine (servers.conf_engine): MeetMe, the default up to
# Asterisk 18, 8600051-8600299; ConfBridge 9600000-9600299.
MEETME_ROOMS = range(8600051, 8600300)
CONFBRIDGE_ROOMS = range(9600000, 9600300)


def vicidial_engine_of(room: str) -> str:
    """``MeetMe`` or ``ConfBridge`` for a room number in VICIdial's ranges, else ``""``."""
    if not _ROOM.fullmatch(room):
        return ""
    number = int(room)
    if number in MEETME_ROOMS:
        return "MeetMe"
    if number in CONFBRIDGE_ROOMS:
        return "ConfBridge"
    return ""


# The conference's announcer channel, which Asterisk names after the room: CBAnn/8600051-0000000e;2
_ANNOUNCER = re.compile(r"CBAnn/([0-9]{1,20})-[0-9a-f]+(?:;[12])?", re.ASCII | re.IGNORECASE)


def confirmed_room(context: ResolveContext) -> Room:
    """The room this channel is in, if Asterisk lists this channel as a party of it.

    The room is named by the dialplan's room variable (``agents.room_variable``, set before
    ``ConfBridge()``) or, when that is unset, by the conference's announcer channel in
    ``BRIDGEPEER`` (Asterisk names it ``CBAnn/<room>-...``; callers cannot choose it). A variable
    stays on the channel after the caller leaves the conference, so the room counts only while
    ``CONFBRIDGE_CHANNELS(parties,<room>)`` still names this channel. A room ConfBridge does not
    know may be a MeetMe room (VICIdial's default engine up to Asterisk 18): see :func:`_meetme_room`.
    """
    variable = context.config.agents.room_variable
    value = context.variable(variable)
    if not value:
        rooms = {m.group(1) for peer in split_channel_list(context.expression("${BRIDGEPEER}"))
                 if (m := _ANNOUNCER.fullmatch(peer))}
        if len(rooms) != 1:
            return Room(None, f"{variable} is not set and no single ConfBridge announcer is in BRIDGEPEER")
        value = rooms.pop()
    elif not _ROOM.fullmatch(value):
        return Room(None, f"{variable} is not a conference number (digits only)")
    parties = split_channel_list(context.expression(f"${{CONFBRIDGE_CHANNELS(parties,{value})}}"))
    if not parties:
        return _meetme_room(context, value)
    own = context.environment.channel
    if not any(same_call_leg(own, party) for party in parties):
        return Room(None, f"this channel is not a party of ConfBridge room {value}", turned_down=True)
    return Room(value, "")


def _meetme_room(context: ResolveContext, value: str) -> Room:
    """A room ConfBridge does not know, asked of MeetMe (``MEETME_INFO(parties,<room>)``: a count).

    A channel running an AGI is not inside MeetMe (MeetMe runs no dialplan for its members), so a
    MeetMe room here is one the dialplan noted (``agents.room_variable``) before the customer
    left it: for the park IVR, the agent's room. It counts while it has parties, as an unlisted
    room: only an agent on this very call may be taken from it (resolvers.SessionResolver)."""
    count = context.expression(f"${{MEETME_INFO(parties,{value})}}").strip()
    if count.isascii() and count.isdigit() and int(count) > 0:
        return Room(value, f"MeetMe room {value} has {int(count)} parties (MeetMe cannot name them)",
                    listed=False, engine="MeetMe")
    engine = vicidial_engine_of(value)
    hint = f" (VICIdial numbers {engine} rooms so)" if engine else ""
    return Room(None, f"neither ConfBridge nor MeetMe lists parties in room {value}{hint}")


def bridge_parties(context: ResolveContext) -> list[str]:
    """The other channels on this call (``BRIDGEPEER``; a comma list in a conference), people only."""
    own = context.environment.channel
    peers = split_channel_list(context.expression("${BRIDGEPEER}"))
    return [peer for peer in peers if is_party(peer) and not same_call_leg(peer, own)]


def call_devices(context: ResolveContext) -> list[Device]:
    """The phones on this call: the bridge parties', then this channel's own (the agent may press)."""
    return devices_of_channels([*bridge_parties(context), context.environment.channel])


def shared_call_leg(agent: LiveAgent, context: ResolveContext) -> str:
    """Which Asterisk-controlled fact ties the agent row's call to this channel ("" for none): the
    same uniqueid, the call's linkedid, or this very channel."""
    environment = context.environment
    if agent.uniqueid:
        if agent.uniqueid == environment.uniqueid:
            return "the agent's call has this channel's uniqueid"
        linked = linkedid(context)
        if linked and agent.uniqueid == linked:
            return "the agent's call has this call's linkedid"
    if agent.channel and same_call_leg(agent.channel, environment.channel):
        return "the agent's call is on this channel"
    return ""


def on_this_call(agent: LiveAgent, context: ResolveContext) -> bool:
    """The agent row's call is this channel's: same call id in CALLERID(name) (VICIdial's own join,
    park_CID.agi), or one of :func:`shared_call_leg`'s facts."""
    call_id, _why = caller_call_id(context)
    if call_id is not None and agent.callerid == call_id:
        return True
    return bool(shared_call_leg(agent, context))


def linkedid(context: ResolveContext) -> str:
    """``CHANNEL(linkedid)``: the uniqueid of the call's first channel (Asterisk-controlled)."""
    return context.variable("CHANNEL(linkedid)")
