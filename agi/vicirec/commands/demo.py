"""``vicirec demo``: one consent call played through the real process AGI.

The built-in VICIdial simulator plays api.php (and the agent's browser screen, which acts on a
START or STOP about a second later); the fake Asterisk runs ``vicirec-agi`` over real pipes with
the environment block, arguments and replies of a real Asterisk 22. Nothing is mocked.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Optional, Union

from vicirec.testing.fake_asterisk import AgiRun, FakeAsterisk
from vicirec.testing.harness import (
    LAB_CALL_ID,
    agi_environment,
    caller_channel,
    process_agi_command,
    write_config,
)
from vicirec.testing.simulator import VicidialSimulator

Setting = Union[str, bool]

#: (section, key, the demo's value, an installed config's value, why the demo differs). The demo's
#: config is built from this table, so what it prints is what it runs with.
DEPARTURES: tuple[tuple[str, str, Setting, Setting, str], ...] = (
    ("agents", "require_corroboration", False, True,
     "over the HTTP lookup nothing the caller cannot forge confirms the call id in CALLERID(name), "
     "so with the installed default this call would end in NO_AGENT"),
    ("agents", "lookup", "http", "mysql on a VICIdial server",
     "the simulator has no VICIdial database; the installer chooses mysql when /etc/astguiclient.conf "
     "exists, and mysql corroborates the call id by uniqueid and channel"),
    ("audit", "caller_number", "mask", "hash", "so the audit trail printed below shows the number's shape"),
)


def _toml(value: Setting) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else f'"{value}"'


def print_departures() -> None:
    print("Settings this demo departs from an installed config with (a working demo is not a working "
          "default; see deploy/README.md):")
    for section, key, value, installed, why in DEPARTURES:
        shown = installed if isinstance(installed, str) and " " in installed else _toml(installed)
        print(f"  [{section}] {key} = {_toml(value)}   (installed: {shown})\n      {why}")
    print("  [vicidial] api_url, [log] path, [audit] path: the simulator and a temporary directory\n")


STEPS = (
    ("The caller hears the consent prompt and presses 1: START with confirmation",
     ["START", "_CONSENT", "confirm=4"]),
    ("Later in the call: is it being recorded?", ["STATUS"]),
    ("The caller reaches card capture: PCI pause, STOP with confirmation", ["STOP", "confirm=4"]),
    ("Card captured: a second STOP finds nothing to stop", ["STOP"]),
)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vicirec demo",
        description="One consent call played through the real process AGI: the built-in VICIdial "
                    "simulator plays api.php and the agent's browser screen, a fake Asterisk runs "
                    "vicirec-agi over real pipes. Nothing is mocked.",
    )
    parser.add_argument("--screen-delay", type=float, default=0.8,
                        help="seconds the simulated agent screen takes to act (default 0.8)")
    parser.add_argument("--keep", metavar="DIR",
                        help="write the config, log and audit trail to DIR and keep them "
                             "(default: a temporary directory, removed when the demo ends)")
    options = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        if options.keep:
            Path(options.keep).mkdir(parents=True, exist_ok=True)
            workdir = str(Path(options.keep).resolve())
        else:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="vicirec-demo-"))
        simulator = stack.enter_context(VicidialSimulator(screen_delay=options.screen_delay))
        return _run(simulator, workdir, kept=bool(options.keep))


def _run(simulator: VicidialSimulator, workdir: str, *, kept: bool) -> int:
    overrides: dict[str, dict[str, Setting]] = {"audit": {"path": str(Path(workdir) / "audit.jsonl")}}
    for section, key, value, _installed, _why in DEPARTURES:
        overrides.setdefault(section, {})[key] = value
    config = write_config(Path(workdir), simulator.api_url, overrides=overrides)
    print(f"VICIdial simulator: {simulator.api_url} (agent 1000 on call {LAB_CALL_ID})")
    print(f"AGI: {' '.join(process_agi_command())}")
    print(f"config: {config}" + ("" if kept else " (temporary: removed when the demo ends; "
                                                 "--keep DIR keeps it)") + "\n")
    print_departures()
    channel = caller_channel()
    asterisk = FakeAsterisk()
    failures = 0
    for title, args in STEPS:
        run = asterisk.run_process(
            process_agi_command(), args, channel, env=agi_environment(config), timeout=20.0,
        )
        failures += _show(title, args, run)
        channel = run.channel  # the next AGI() on this channel sees what this one set
    print(f"The simulator saw {simulator.count(function='recording', value='START')} START, "
          f"{simulator.count(function='recording', value='STOP')} STOP and "
          f"{simulator.count(function='recording', value='STATUS')} STATUS requests, "
          f"{simulator.count(function='logged_in_agents')} agent lookups; "
          f"recordings started for agent 1000: {simulator.starts_for('1000')}.")
    _show_file("Log (one JSON object per invocation)", Path(workdir) / "vicirec.log", "invocation")
    _show_file("Audit trail", Path(workdir) / "audit.jsonl", None)
    return 1 if failures else 0


def _show(title: str, args: Sequence[str], run: AgiRun) -> int:
    print(f"== {title}")
    print(f"   AGI(vicirec.agi,{','.join(args)})  ->  AGISTATUS={run.agistatus} "
          f"exit={run.exit_code} in {run.elapsed * 1000:.0f} ms, {len(run.commands)} AGI commands")
    for name, value in sorted(run.channel.variables.items()):
        if name.startswith("VICIREC_") and value != "":
            print(f"   {name:<26} {value}")
    print()
    expected_ok = args[0] != "STOP" or "confirm=4" in args
    ok = run.channel.variables.get("VICIREC_RESULT") == "OK"
    return 0 if ok == expected_ok and run.agistatus == "SUCCESS" else 1


def _show_file(title: str, path: Path, event: Optional[str]) -> None:
    if not path.exists():
        return
    print(f"== {title}: {path.name}")
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if event is not None and record.get("event") != event:
            continue
        keys = ("action", "agent", "agent_source", "stage", "result", "error", "recording_id",
                "confirmed_after", "duration_ms", "outcome", "caller", "time")
        shown = {key: record[key] for key in keys if key in record and record[key] not in ("", None)}
        print("   " + json.dumps(shown))
    print()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
