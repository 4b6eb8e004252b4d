"""``vicirec``: the command line. Each subcommand lives in its own module and is imported only
when it runs, so ``vicirec check`` does not pay for the daemon and the daemon not for the demo."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Optional, TextIO

from vicirec import __version__

# name -> (module with a main(argv) -> int, or "module:function", one-line help)
SUBCOMMANDS = {
    "demo": ("vicirec.commands.demo",
             "play one call through the real AGI against the built-in VICIdial simulator"),
    "simulator": ("vicirec.testing.simulator", "run the VICIdial simulator on 127.0.0.1 (--port N)"),
    "serve": ("vicirec.fastagi.daemon", "run the FastAGI daemon (default 127.0.0.1:4573)"),
    "check": ("vicirec.commands.check",
              "would the AGI work as configured? asks VICIdial once, checks files (--offline: config)"),
    "audit": ("vicirec.commands.audit", "search the consent / PCI audit trail"),
    "status": ("vicirec.commands.act:status_main", "--agent U: is the agent's session being recorded?"),
    "start": ("vicirec.commands.act:start_main", "--agent U [--stage S] [--confirm N]: start recording"),
    "stop": ("vicirec.commands.act:stop_main", "--agent U [--confirm N]: stop recording"),
    "whois": ("vicirec.commands.whois",
              "which agent the resolvers find for --call-id/--uniqueid/--channel/--room, and why"),
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        _usage()
        return 0 if args else 2
    if args[0] == "--version":
        print(f"vicirec {__version__}")
        return 0
    name = args[0]
    if name not in SUBCOMMANDS:
        print(f"vicirec: unknown command {name!r}", file=sys.stderr)
        _usage(file=sys.stderr)
        return 2
    module_name, _, function = SUBCOMMANDS[name][0].partition(":")
    module = importlib.import_module(module_name)
    result: int = getattr(module, function or "main")(args[1:])
    return result


def _usage(file: Optional[TextIO] = None) -> None:
    parser = argparse.ArgumentParser(prog="vicirec", description="VICIdial call recording from Asterisk")
    lines = [parser.format_usage().strip().replace("[-h]", "[--version] COMMAND [options]"), "", "commands:"]
    lines += [f"  {name:<10} {help_text}" for name, (_module, help_text) in SUBCOMMANDS.items()]
    lines.append("\n`vicirec COMMAND --help` for the options of one command.")
    print("\n".join(lines), file=file or sys.stdout)
