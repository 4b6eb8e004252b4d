"""The cost of the FastAGI daemon's claim on a call (``SET VARIABLE VICIREC_CLAIMED "1"`` and its
reply), measured against a real Asterisk 22 (the private runtime in ``../shared/asterisk/runtime``).

One AGI(agi://...) session from a Local channel; this script plays the daemon's side with the
daemon's own code (``AgiSession.set_variable`` over ``KernelTimeoutTransport``) and times many
claims in a row: wall time per round trip and this thread's CPU per claim.

    python tests/benchmarks/bench_claim.py              # 2000 claims
    python tests/benchmarks/bench_claim.py --claims 500
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from real_asterisk import Asterisk, find_asterisk  # noqa: E402
from vicirec.asterisk.channel import AgiSession  # noqa: E402
from vicirec.deadline import Deadline  # noqa: E402
from vicirec.fastagi.session import CLAIM_VARIABLE  # noqa: E402
from vicirec.fastagi.transport import KernelTimeoutTransport  # noqa: E402

DIALPLAN = """
[bench-hold]
exten => s,1,Answer()
 same => n,Wait(60)

[bench-claim]
exten => s,1,Answer()
 same => n,AGI(agi://127.0.0.1:{port}/vicirec)
 same => n,UserEvent(BenchDone,Id: 1)
 same => n,Hangup()
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=2000)
    options = parser.parse_args()
    source, why_not = find_asterisk()
    if source is None:
        print(f"{why_not}: nothing measured")
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-claim-") as workdir, \
            socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        conf = Path(workdir) / "bench.conf"
        conf.write_text(DIALPLAN.format(port=port), encoding="utf-8")
        asterisk = Asterisk(source, Path(workdir) / "ast")
        try:
            asterisk.start(includes=[conf])
            assert asterisk.ami is not None
            asterisk.ami.action({"Action": "Originate", "Channel": "Local/s@bench-hold",
                                 "Context": "bench-claim", "Exten": "s", "Priority": "1", "Async": "true"})
            conn, _peer = listener.accept()
            session = AgiSession.open(KernelTimeoutTransport(conn), Deadline(10.0))
            walls: list[float] = []
            cpus: list[float] = []
            for _ in range(options.claims):
                wall, cpu = time.perf_counter(), time.thread_time()
                session.set_variable(CLAIM_VARIABLE, "1", Deadline(5.0))
                cpus.append(time.thread_time() - cpu)
                walls.append(time.perf_counter() - wall)
            session.close()
            asterisk.ami.wait_event(lambda e: e.get("UserEvent") == "BenchDone", 10.0, what="BenchDone")
        finally:
            asterisk.stop()
    walls.sort()
    print(f"{options.claims} claims on one session, real Asterisk 22 over 127.0.0.1:")
    print(f"  wall per claim (round trip): median {walls[len(walls) // 2] * 1e3:.3f} ms, "
          f"p99 {walls[int(len(walls) * 0.99)] * 1e3:.3f} ms")
    print(f"  daemon CPU per claim: mean {sum(cpus) / len(cpus) * 1e6:.0f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
