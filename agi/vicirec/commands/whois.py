"""``vicirec whois``: which agent the configured resolvers find for the facts of a call, and why.

The administrator's tool for a ``NO_AGENT`` they cannot explain: give what the log or the CDR shows
(the call id in CALLERID(name), the uniqueid, the channel, the ConfBridge room) and every resolver
of ``[agents] resolvers`` runs on those facts against the configured lookup, as on a call; each
one's finding, refusal and reason is printed. It acts on nothing: no START, STOP or STATUS is sent.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Optional

from vicirec.commands.act import FactsChannelView, shell_environment


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vicirec whois",
        description="Run the configured resolver chain on the facts of a call and print, resolver by "
                    "resolver, what each found or refused and why. Acts on nothing. Exit status: 0 "
                    "when the chain names one agent, 1 when a call would get NO_AGENT (or another "
                    "error), 2 on a bad command line.",
    )
    parser.add_argument("--call-id", default="", metavar="ID",
                        help="VICIdial's call id as CALLERID(name) holds it (V1123181500000000001)")
    parser.add_argument("--uniqueid", default="", help="the caller's channel's Asterisk uniqueid")
    parser.add_argument("--channel", default="", help="the caller's channel (SIP/trunk-0000002a)")
    parser.add_argument("--room", default="", help="the ConfBridge room the channel is in (8600051); "
                        "the channel is taken to be one of its parties")
    parser.add_argument("--config", help="default: $VICIREC_CONFIG or /etc/vicirec/vicirec.toml")
    options = parser.parse_args(argv)
    if not (options.call_id or options.uniqueid or options.channel or options.room):
        parser.error("give at least one of --call-id, --uniqueid, --channel, --room")

    from vicirec import logs
    from vicirec.agents.chain import ResolveContext, explain_agent
    from vicirec.config import load_config
    from vicirec.deadline import Deadline
    from vicirec.errors import VicirecError
    from vicirec.request import Invocation
    from vicirec.runtime import build_service
    from vicirec.vicidial.responses import Action

    started = time.monotonic()
    logs.configure_fallback()
    try:
        config = load_config(options.config)
        logs.protect([config.vicidial.password])
        service = build_service(config)
    except VicirecError as error:
        print(f"vicirec whois: {error.message}", file=sys.stderr)
        return 1
    room_variable = config.agents.room_variable
    variables = {room_variable: options.room} if options.room else {}
    expressions: dict[str, str] = {}
    if options.room and options.channel:
        expressions[f"${{CONFBRIDGE_CHANNELS(parties,{options.room})}}"] = options.channel
    environment = shell_environment(["STATUS"], channel=options.channel,
                                    uniqueid=options.uniqueid, call_id=options.call_id)
    context = ResolveContext(
        invocation=Invocation(action=Action.STATUS), environment=environment,
        channel=FactsChannelView(variables, expressions), directory=service.directory,
        deadline=Deadline(config.call.deadline - (time.monotonic() - started)), config=config,
    )
    explanation = explain_agent(service.resolvers, context)
    facts = [f"{name} {value}" for name, value in (
        ("call id", options.call_id), ("uniqueid", options.uniqueid), ("channel", options.channel),
        (f"room ({room_variable})", options.room)) if value]
    print(f"facts: {', '.join(facts)}")
    print(f"lookup: {config.agents.lookup}; resolvers: {', '.join(config.agents.resolvers)}")
    width = max((len(v.resolver) for v in explanation.verdicts), default=8)
    for verdict in explanation.verdicts:
        if verdict.agent is not None:
            outcome = f"found {verdict.agent}"
        elif verdict.refused:
            outcome = "refused"
        else:
            outcome = "nothing"
        print(f"  {verdict.resolver:<{width}}  {outcome:<12} {verdict.reason}")
    if explanation.resolution is not None:
        resolution = explanation.resolution
        print(f"=> agent {resolution.agent} (found by {resolution.source})")
        return 0
    failure = explanation.error
    assert failure is not None
    print(f"=> {failure.code.value}: {failure.message}")
    return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
