"""``python -m vicirec.testing.fake_asterisk``: run one AGI and print the transcript."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from typing import Optional

from vicirec.testing.fake_asterisk.channel import FakeChannel, _s
from vicirec.testing.fake_asterisk.runner import FakeAsterisk
from vicirec.testing.fake_asterisk.transcript import HangupPlan

DESCRIPTION = "A fake Asterisk 22 that runs an AGI the way ``res_agi`` does, byte for byte."


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m vicirec.testing.fake_asterisk [options] -- script [args...]`` or
    ``... --fastagi agi://host:port/script [args...]``: run one AGI and print the transcript."""
    parser = argparse.ArgumentParser(prog="fake_asterisk", description=DESCRIPTION)
    parser.add_argument("--fastagi", metavar="URL", help="agi://host[:port]/script instead of a process")
    parser.add_argument("--channel", default=FakeChannel.name)
    parser.add_argument("--uniqueid", default=FakeChannel.uniqueid)
    parser.add_argument("--callerid", default="unknown", help="caller id number")
    parser.add_argument("--var", action="append", default=[], metavar="NAME=VALUE", help="channel variable")
    parser.add_argument("--hangup-after", type=float, default=None, metavar="SECONDS")
    parser.add_argument("--no-sighup", action="store_true", help="AGISIGHUP=no")
    parser.add_argument("--exit-on-hangup", action="store_true", help="AGIEXITONHANGUP=yes")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("command", nargs="*", help="script [args...] (or the args of the FastAGI)")
    opts = parser.parse_args(argv)
    channel = FakeChannel(name=opts.channel, uniqueid=opts.uniqueid, callerid_num=opts.callerid)
    for item in opts.var:
        key, _, value = item.partition("=")
        channel.variables[key] = value
    plan = HangupPlan(after=opts.hangup_after) if opts.hangup_after is not None else None
    fake = FakeAsterisk()
    if opts.fastagi:
        m = re.match(r"^agi://([^/:]+)(?::(\d+))?(?:/(.*))?$", opts.fastagi)
        if not m:
            parser.error("--fastagi wants agi://host[:port]/script")
        run = fake.run_fastagi(m.group(1), int(m.group(2) or 4573), m.group(3) or "", opts.command, channel,
                               hangup=plan, agi_sighup=not opts.no_sighup, exit_on_hangup=opts.exit_on_hangup,
                               timeout=opts.timeout)
    else:
        if not opts.command:
            parser.error("give the script to run")
        run = fake.run_process(opts.command[:1], opts.command[1:], channel, hangup=plan,
                               agi_sighup=not opts.no_sighup, exit_on_hangup=opts.exit_on_hangup,
                               timeout=opts.timeout)
    sys.stdout.write(run.dump())
    sys.stdout.write(f"AGISTATUS={run.agistatus} exit={run.exit_code} signal={run.signal} "
                     f"elapsed={run.elapsed:.3f} timed_out={run.timed_out}\n")
    for key, value in sorted(channel.variables.items()):
        sys.stdout.write(f"  {key}={value!r}\n")
    if run.stderr:
        sys.stdout.write("stderr:\n" + _s(run.stderr))
    return 0 if run.agistatus == "SUCCESS" else 1
