"""A real Asterisk where VICIdial's own AGIs are stand-ins (tests/real_asterisk.py finds and starts it).

For the recipes that sit inside VICIdial's call flow: the park IVR (``park_CID.agi`` runs the
campaign's IVR Park Call AGI) and the Call Menu (the in-group AGIs after the consent question).
``vicirec.agi`` is the real process AGI against the simulator, with an audit trail; ``park_target``
is what the stand-in ``park_CID.agi`` hands the call to (``vicirec.agi``, or a FastAGI URL). Used by
tests/test_vicidial_flows.py and tests/test_callmenu_consent.py.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from real_asterisk import Asterisk, private_asterisk, warnings_in, write_agi_bin
from vicirec.testing.harness import write_config
from vicirec.testing.simulator import VicidialSimulator

PARK_CID_STAND_IN = """#!/bin/sh
# park_CID.agi's part: EXEC AGI <the campaign's IVR Park Call AGI> (it reads no reply), then hold
while read line; do [ -z "$line" ] && break; done
echo "EXEC AGI {target},GOSUB,vicirec-example-park-consent"
read reply
echo "EXEC Wait 1"
read reply
"""
IN_GROUP_STAND_IN = """#!/bin/sh
# stands in for one of VICIdial's AGIs: notes its name and arguments, does nothing else
while read line; do [ -z "$line" ] && break; done
echo "$(basename "$0") $*" >> "$(dirname "$0")/../vicidial-agis.log"
"""
#: the caller of a Call Menu: answers, waits for the prompt, presses ${KEYS}
MENU_CUSTOMER = """[vicirec-test-menu-customer]
exten => s,1,Answer()
 same => n,Wait(2)
 same => n,SendDTMF(${KEYS})
 same => n,Wait(30)
"""
IN_GROUP_AGIS = ("agi-VDAD_inbound_calltime_check.agi", "agi-VDAD_ALL_inbound.agi")


@dataclass
class VicidialAsterisk:
    asterisk: Asterisk
    base: Path
    config: Path

    @property
    def trail(self) -> Path:
        """The audit trail of every vicirec invocation on this Asterisk."""
        return self.base / "audit.jsonl"

    @property
    def in_group_log(self) -> Path:
        """One line (name, arguments) per run of a stand-in in-group AGI."""
        return self.base / "vicidial-agis.log"

    def originate(self, caller: str, destination: str) -> None:
        """``channel originate Local/s@CALLER extension s@DESTINATION``."""
        self.asterisk.cli(f"channel originate Local/s@{caller} extension s@{destination}")

    def wait_for(self, done: Callable[[], bool], seconds: float = 40.0) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not done():
            time.sleep(0.1)
        return done()

    def audited(self, action: str) -> bool:
        return self.trail.is_file() and f'"action":"{action}"' in self.trail.read_text()

    def unexpected_warnings(self, expected: Sequence[str] = ()) -> list[str]:
        """WARNING/ERROR lines of log/full but those containing one of ``expected``."""
        return [line for line in warnings_in(self.asterisk.full_log)
                if not any(text in line for text in expected)]


@contextlib.contextmanager
def vicidial_asterisk(work: Path, sim: VicidialSimulator, dialplan: str, includes: Sequence[Path], *,
                      park_target: str = "vicirec.agi") -> Iterator[VicidialAsterisk]:
    """``dialplan`` (the test's entry and customer contexts) and ``includes`` (the shipped examples)
    loaded strictly, with the prompt ``custom/vicirec-consent``; VICIdial's AGIs are stand-ins."""
    agi_bin = write_agi_bin(work / "agi", {"park_CID.sh": PARK_CID_STAND_IN.format(target=park_target),
                                           **{name: IN_GROUP_STAND_IN for name in IN_GROUP_AGIS}})
    config = write_config(work, sim.api_url, overrides={
        # over the non-agent API a call id cannot be corroborated: this lab accepts it
        "agents": {"require_corroboration": False},
        "audit": {"path": str(work / "audit.jsonl"), "caller_number": "omit"}})
    entry = work / "entry.conf"
    entry.write_text(dialplan, encoding="utf-8")
    with private_asterisk(work, [entry, *includes], agi_dir=agi_bin,
                          env={"VICIREC_CONFIG": str(config)}) as asterisk:
        asterisk.sound("custom/vicirec-consent", 1.0)
        yield VicidialAsterisk(asterisk, work, config)
