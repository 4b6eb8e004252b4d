"""Does anything the caller cannot forge tie this channel to the agent a caller-supplied id named?

``call_id`` and ``lead_id`` match on CALLERID(name), which an inbound caller sets to anything,
including another live call's VICIdial id. Such a match stands only when an Asterisk- or
VICIdial-controlled fact agrees (first match wins, cheapest first):

* ``uniqueid``: the agent row's ``uniqueid`` is this channel's ``agi_uniqueid`` or ``CHANNEL(linkedid)``;
* ``channel``: the agent row's ``channel`` is this channel (either half of a Local channel);
* ``room``: the agent's ``conf_exten`` is the ConfBridge room this channel is verifiably a party of,
  or the live MeetMe room the dialplan noted for this channel (a match only: MeetMe cannot list);
* ``bridge``: the agent's phone (``extension``) is bridged with this channel.

A fact counts only where both sides hold a value. If at least one could be checked and none
agrees, the match is *contradicted* and always refused. If none could be checked (the HTTP lookup
reports no uniqueid, channel or phone), it is *uncorroborated*: refused unless
``agents.require_corroboration = false``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from vicirec.agents.call_facts import bridge_parties, call_devices, confirmed_room, shared_call_leg
from vicirec.agents.chain import LiveAgent, ResolveContext
from vicirec.agents.devices import device_of_extension


class Support(str, enum.Enum):
    CONFIRMED = "confirmed"
    CONTRADICTED = "contradicted"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class Corroboration:
    support: Support
    detail: str  # which fact confirmed, or which ones disagreed


def corroborate(agent: LiveAgent, context: ResolveContext) -> Corroboration:
    shared = shared_call_leg(agent, context)
    if shared:
        return Corroboration(Support.CONFIRMED, shared)
    checked = [name for name, value in (("uniqueid", agent.uniqueid), ("channel", agent.channel)) if value]
    if agent.session_id:
        room = confirmed_room(context)
        if room.number is not None and room.listed:
            if room.number == agent.session_id:
                return Corroboration(Support.CONFIRMED, f"this channel is in the agent's room {room.number}")
            checked.append("room")
        elif room.number is not None and room.number == agent.session_id:
            # MeetMe: the dialplan noted the room when the customer entered it, and it is live.
            # A different room proves nothing (the customer may have moved since), so only a match counts.
            return Corroboration(Support.CONFIRMED, f"this channel came from the agent's live MeetMe room "
                                 f"{room.number}")
    phone = device_of_extension(agent.extension) if agent.extension else None
    if phone is not None and bridge_parties(context):
        if any(device.key == phone.key for device in call_devices(context)):
            return Corroboration(Support.CONFIRMED, f"the agent's phone {phone} is on this call")
        checked.append("bridge")
    if checked:
        return Corroboration(Support.CONTRADICTED, "the agent's call has a different " + ", ".join(checked))
    return Corroboration(
        Support.UNAVAILABLE,
        f"the {context.directory.name} lookup cannot corroborate it (it reports no uniqueid, channel or "
        "phone, and this channel is in no verified ConfBridge room)",
    )
