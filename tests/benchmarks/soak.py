"""Soak the FastAGI daemon: thousands of calls, 50 at a time, with faults on both sides.

    /work/devenv/bin/python tests/benchmarks/soak.py --sessions 3000 --concurrency 50

``vicirec serve`` runs as a subprocess (config with an audit trail, pointed at an in-process VICIdial
simulator). Each *session* is one call: a ``START`` with a stage naming the session
(``_s<number>``) followed by a ``STOP``, each a FastAGI connection of its own, for the agent of the
session's concurrency slot (one agent per slot, so two calls never share VICIdial state).

Faults: about ``--fault-rate`` of the HTTP requests meet a simulator fault (``count=1``, every kind,
injected at random moments); about ``--hangup-rate`` of the AGI connections see the caller hang up
(an unsolicited ``HANGUP`` line at a random moment, the session carrying on in dead mode) and
``--leave-rate`` see Asterisk leave at once (``AGIEXITONHANGUP``: ``HANGUP`` twice, then the socket
closes, so the variables are lost by Asterisk's doing, not vicirec's).

The load generator is a lean FastAGI client (a thread per slot, blocking sockets, the bytes of the
transcripts), so it stays far below the daemon's CPU. It prints, against the goals:

* sessions completed;
* AGI connections that ended without every VICIREC_* variable set (goal 0; connections Asterisk
  itself abandoned are counted apart);
* duplicate STARTs: a session's stage seen in more than one START request (goal 0);
* audit records versus actions taken (goal equal, matched by uniqueid);
* the daemon's VmRSS at start (after a warm-up) and at the end (goal flat).

Exit status 0 when every goal is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/: the shared fault rig

from faultlab import AgentFaultSimulator, Daemon, lab_config, secure  # noqa: E402
from vicirec.engine import VARIABLE_NAMES  # noqa: E402
from vicirec.testing.simulator import AGENT_API_PATH, FAULT_KINDS, Fault  # noqa: E402

_SET_VARIABLE = re.compile(rb'^SET VARIABLE (\S+) "((?:[^"\\]|\\.)*)"$', re.DOTALL)
_UNESCAPE = re.compile(rb"\\(.)", re.DOTALL)
ACTIONS = ("START", "STOP")
#: The daemon's deadline in the soak config (seconds): what a hung request costs one slot.
DEADLINE = 2.0


# --- one AGI connection, as Asterisk 22 drives it ---------------------------------------------


@dataclass
class Connection:
    session: int
    action: str
    uniqueid: str
    variables: dict[str, str] = field(default_factory=dict)
    hangup: str = ""          # "", "caller" (HANGUP line, dead mode), "leave" (Asterisk left)
    error: str = ""           # a transport failure seen by the client
    wait: float = 0.0         # connect to server close: what the channel waited

    @property
    def complete(self) -> bool:
        return all(name in self.variables for name in VARIABLE_NAMES) and \
            self.variables.get("VICIREC_RESULT") in ("OK", "ERROR")

    @property
    def outcome(self) -> str:
        if self.variables.get("VICIREC_RESULT") == "OK":
            return "OK"
        return self.variables.get("VICIREC_ERROR") or self.error or "NOTHING"


def env_block(port: int, uniqueid: str, args: Sequence[str]) -> bytes:
    lines = [
        ("agi_network", "yes"), ("agi_network_script", "vicirec"),
        ("agi_request", f"agi://127.0.0.1:{port}/vicirec"), ("agi_channel", f"SIP/trunk-{uniqueid}"),
        ("agi_language", "en"), ("agi_type", "SIP"), ("agi_uniqueid", uniqueid), ("agi_version", "22.10.1"),
        ("agi_callerid", "7275551212"), ("agi_calleridname", "unknown"), ("agi_callingpres", "0"),
        ("agi_callingani2", "0"), ("agi_callington", "0"), ("agi_callingtns", "0"), ("agi_dnid", "unknown"),
        ("agi_rdnis", "unknown"), ("agi_context", "vicirec-soak"), ("agi_extension", "s"),
        ("agi_priority", "1"), ("agi_enhanced", "0.0"), ("agi_accountcode", ""), ("agi_threadid", "1"),
    ]
    lines += [(f"agi_arg_{n}", arg) for n, arg in enumerate(args, start=1)]
    return "".join(f"{key}: {value}\n" for key, value in lines).encode() + b"\n"


def reply_to(line: bytes, variables: dict[str, str]) -> bytes:
    match = _SET_VARIABLE.match(line)
    if match:
        variables[match.group(1).decode()] = _UNESCAPE.sub(rb"\1", match.group(2)).decode("utf-8", "replace")
        return b"200 result=1\n"
    upper = line[:20].upper()
    if upper.startswith(b"GET VARIABLE"):
        return b"200 result=0\n"
    if upper.startswith(b"GET FULL VARIABLE"):
        return b"200 result=1 ()\n"
    if upper.startswith((b"VERBOSE", b"NOOP")):
        return b"200 result=1\n"
    return b"510 Invalid or unknown command\n"


@dataclass(frozen=True)
class Hangup:
    """When the caller hangs up: right after the environment block (``at_command=0``), just before
    the reply to command number ``at_command``, or ``after`` seconds into the call (mid-request)."""

    at_command: Optional[int] = None
    after: Optional[float] = None


def run_connection(port: int, conn: Connection, args: Sequence[str], hangup: Optional[Hangup],
                   timeout: float) -> None:
    """One ``AGI(agi://...)``: connect, environment, answer commands until the server closes, then
    ``HANGUP`` and close like Asterisk."""
    began = time.monotonic()
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=2.0)
    except OSError as exc:
        conn.error = f"connect: {exc.__class__.__name__}"
        return
    hung_up = False
    answered = 0

    def hang_up() -> bool:
        """Tell the server; True when Asterisk also leaves (the connection ends here)."""
        nonlocal hung_up
        hung_up = True
        if conn.hangup == "leave":  # AGIEXITONHANGUP: HANGUP twice, then EOF
            sock.sendall(b"HANGUP\nHANGUP\n")
            return True
        sock.sendall(b"HANGUP\n")
        return False

    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(env_block(port, conn.uniqueid, args))
        if hangup is not None and hangup.at_command == 0 and hang_up():
            return
        buffer = b""
        while True:
            now = time.monotonic() - began
            if now > timeout:
                conn.error = "client timeout"
                return
            wait = timeout - now
            timed = hangup is not None and hangup.after is not None and not hung_up
            if timed and hangup is not None and hangup.after is not None:
                wait = max(0.0001, min(wait, hangup.after - now))
            sock.settimeout(wait)
            try:
                data = sock.recv(65536)
            except socket.timeout:
                if timed and hang_up():
                    return
                continue
            if not data:
                break
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                answered += 1
                if hangup is not None and not hung_up and hangup.at_command == answered and hang_up():
                    return
                sock.sendall(reply_to(line, conn.variables))
        try:
            sock.sendall(b"HANGUP\n")
        except OSError:
            pass
    except OSError as exc:
        conn.error = f"socket: {exc.__class__.__name__}"
    finally:
        conn.wait = time.monotonic() - began
        sock.close()


# --- the soak ---------------------------------------------------------------------------------


@dataclass
class Totals:
    connections: list[Connection] = field(default_factory=list)
    sessions_done: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


def fault_for(kind: str, rng: random.Random) -> Fault:
    if kind in ("hang", "stall_body"):
        return Fault(kind=kind, count=1, path=AGENT_API_PATH, delay=DEADLINE + 1.0)
    if kind == "slow":
        return Fault(kind=kind, count=1, path=AGENT_API_PATH, delay=rng.uniform(0.1, DEADLINE + 0.5))
    return Fault(kind=kind, count=1, path=AGENT_API_PATH)


def inject_faults(sim: AgentFaultSimulator, rate: float, totals: Totals, stop: threading.Event,
                  rng: random.Random) -> None:
    """About ``rate`` of the requests meet a fault: after a random gap of requests, arm one."""
    kinds = sorted(FAULT_KINDS)
    next_at = rng.randint(1, max(1, int(2 / rate)))
    while not stop.wait(0.01):
        if len(sim.requests) >= next_at:
            kind = rng.choice(kinds)
            sim.inject(fault_for(kind, rng))
            with totals.lock:
                totals.faults[kind] += 1
            next_at = len(sim.requests) + rng.randint(1, max(1, int(2 / rate)))


def slot_worker(slot: int, agent: str, port: int, sessions: list[int], args: argparse.Namespace,
                totals: Totals, deadline_at: float, rng: random.Random) -> None:
    for session in sessions:
        if time.monotonic() > deadline_at:
            return
        for number, action in enumerate(ACTIONS):
            uniqueid = f"17000{session:05d}.{number}"
            conn = Connection(session, action, uniqueid)
            argv = [action, f"agent={agent}"]
            if action == "START":
                argv.insert(1, f"_s{session}")  # the stage names the session: duplicates are countable
            hangup: Optional[Hangup] = None
            roll = rng.random()
            if roll < args.leave_rate + args.hangup_rate:
                conn.hangup = "leave" if roll < args.leave_rate else "caller"
                if rng.random() < 0.5:  # at a command (0: right after the environment block) ...
                    hangup = Hangup(at_command=rng.randint(0, len(VARIABLE_NAMES)))
                else:  # ... or at a moment, most likely while the HTTP call is in flight
                    hangup = Hangup(after=rng.uniform(0.0, 0.03))
            run_connection(port, conn, argv, hangup, timeout=DEADLINE + 10.0)
            with totals.lock:
                totals.connections.append(conn)
        with totals.lock:
            totals.sessions_done += 1


def audit_uniqueids(path: Path) -> Counter[str]:
    found: Counter[str] = Counter()
    if not path.exists():
        return found
    for line in path.read_text().splitlines():
        try:
            found[json.loads(line)["uniqueid"]] += 1
        except (ValueError, KeyError):
            found["<unreadable line>"] += 1
    return found


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--fault-rate", type=float, default=0.03, help="share of HTTP requests faulted")
    parser.add_argument("--hangup-rate", type=float, default=0.02, help="share of AGI calls with a hangup")
    parser.add_argument("--leave-rate", type=float, default=0.01, help="share where Asterisk leaves at once")
    parser.add_argument("--max-seconds", type=float, default=240.0, help="stop starting sessions after this")
    parser.add_argument("--warm-up", type=int, default=200, help="sessions before the first RSS reading")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)

    work = Path(tempfile.mkdtemp(prefix="vicirec-soak-"))
    audit_path = work / "audit.jsonl"
    with AgentFaultSimulator(screen_delay=0.05, keep_alive=True) as sim:
        secure(sim)
        agents = [f"soak{slot:03d}" for slot in range(args.concurrency)]
        for slot, agent in enumerate(agents):
            sim.state.log_in_agent(agent, conf_exten=f"86{slot:05d}", extension=f"SIP/{agent}",
                                   status="INCALL")
        config = lab_config(work, sim.api_url, deadline=DEADLINE, overrides={
            "audit": {"path": str(audit_path), "caller_number": "mask"},
            "fastagi": {"max_sessions": max(64, args.concurrency + 8)},
        })
        daemon = Daemon(config, work / "vicirec.log")
        print(f"soak: daemon pid {daemon.proc.pid} on 127.0.0.1:{daemon.port}; work dir {work}", flush=True)
        totals = Totals()
        stop = threading.Event()
        injector = threading.Thread(target=inject_faults, args=(sim, args.fault_rate, totals, stop,
                                                                random.Random(rng.random())), daemon=True)
        began = time.monotonic()
        deadline_at = began + args.max_seconds
        plan = [list(range(slot, args.sessions, args.concurrency)) for slot in range(args.concurrency)]
        workers = [
            threading.Thread(target=slot_worker, daemon=True, args=(
                slot, agents[slot], daemon.port, plan[slot], args, totals, deadline_at,
                random.Random(rng.random())))
            for slot in range(args.concurrency)
        ]
        for worker in workers:
            worker.start()
        # Warm-up without faults, then the first memory reading; faults from then on.
        while totals.sessions_done < min(args.warm_up, args.sessions) and any(w.is_alive() for w in workers):
            time.sleep(0.05)
        rss_start = daemon.rss_kb()
        rss_samples = [rss_start]
        injector.start()
        last_report = time.monotonic()
        while any(w.is_alive() for w in workers):
            time.sleep(0.2)
            if time.monotonic() - last_report >= 10.0:
                last_report = time.monotonic()
                rss_samples.append(daemon.rss_kb())
                print(f"  {time.monotonic() - began:6.1f} s: {totals.sessions_done} sessions, "
                      f"daemon VmRSS {rss_samples[-1]} kB", flush=True)
        elapsed = time.monotonic() - began
        stop.set()
        time.sleep(DEADLINE + 1.0)  # sessions Asterisk left may still be finishing in the daemon
        rss_end = daemon.rss_kb()
        rss_samples.append(rss_end)
        alive = daemon.alive
        code = daemon.stop()
        stderr = daemon.stderr()

        connections = totals.connections
        handled = [c for c in connections if not c.error.startswith("connect")]
        abandoned = [c for c in connections if c.hangup == "leave"]
        judged = [c for c in connections if c.hangup != "leave"]
        incomplete = [c for c in judged if not c.complete]
        starts: Counter[str] = Counter(
            r.params.get("stage", "") for r in sim.requests
            if r.params.get("function") == "recording" and r.params.get("value") == "START")
        duplicates = {stage: n for stage, n in starts.items() if n > 1}
        audited = audit_uniqueids(audit_path)
        expected_ids = Counter(c.uniqueid for c in handled)
        missing = sorted(set(expected_ids) - set(audited))
        extra = sorted(set(audited) - set(expected_ids))
        doubled = sorted(uid for uid, n in audited.items() if n > 1)
        outcomes = Counter(c.outcome for c in judged)
        faults_seen = Counter(r.fault for r in sim.requests if r.fault)

    rss_growth = rss_end - rss_start
    rss_flat = rss_growth <= max(4096, rss_start // 10)
    print()
    print(f"sessions completed          {totals.sessions_done} of {args.sessions} in {elapsed:.1f} s "
          f"({totals.sessions_done / elapsed:.1f} sessions/s, {len(connections)} AGI calls, "
          f"concurrency {args.concurrency})")
    print(f"HTTP requests / faulted     {len(sim.requests)} / {sum(faults_seen.values())} "
          f"({', '.join(f'{k} {n}' for k, n in sorted(faults_seen.items()))})")
    print(f"Asterisk-side hangups       caller {sum(c.hangup == 'caller' for c in connections)}, "
          f"Asterisk left {len(abandoned)}")
    print(f"outcomes                    {', '.join(f'{k} {n}' for k, n in outcomes.most_common())}")
    print(f"ended without variables     {len(incomplete)}   (goal 0; the {len(abandoned)} calls Asterisk "
          f"left are not counted)")
    for conn in incomplete[:10]:
        print(f"    {conn.uniqueid} {conn.action} hangup={conn.hangup or '-'} error={conn.error or '-'} "
              f"set={len(conn.variables)} wait={conn.wait:.2f}s")
    print(f"duplicate STARTs            {len(duplicates)}   (goal 0; {sum(starts.values())} START requests "
          f"for {len(starts)} sessions)")
    print(f"audit records / actions     {sum(audited.values())} / {len(handled)}   (goal equal; missing "
          f"{len(missing)}, unknown {len(extra)}, twice {len(doubled)})")
    for uid in missing[:5]:
        print(f"    no audit record for {uid}")
    print(f"daemon VmRSS                start {rss_start} kB, end {rss_end} kB, max {max(rss_samples)} kB "
          f"({'flat' if rss_flat else 'GROWING'}: {rss_growth:+d} kB)")
    print(f"daemon                      {'alive until stopped' if alive else 'DIED'}, exit {code}, "
          f"tracebacks on stderr {stderr.count(b'Traceback')}")
    goals = [not incomplete, not duplicates, not missing and not extra and not doubled, rss_flat, alive,
             code == 0, b"Traceback" not in stderr, totals.sessions_done == args.sessions]
    print(f"goals                       {'all met' if all(goals) else 'NOT all met'}")
    return 0 if all(goals) else 1


if __name__ == "__main__":
    raise SystemExit(main())
