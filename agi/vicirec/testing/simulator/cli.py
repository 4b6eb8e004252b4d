"""``python -m vicirec.testing.simulator`` and ``vicirec simulator``: serve it until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any, Optional

from vicirec.testing.simulator.fixtures import API_USER
from vicirec.testing.simulator.server import VicidialSimulator


def _screen_delay_arg(text: str) -> Optional[float]:
    if text.lower() in ("none", "off", "never"):
        return None
    delay = float(text)
    if delay < 0:
        raise argparse.ArgumentTypeError("must be >= 0, or 'off'")
    return delay


def main(argv: Optional[Sequence[str]] = None, prog: str = "vicirec simulator") -> int:
    """Serve the simulator until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Simulated VICIdial agent API (agc/api.php) for tests, demos and dry runs.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8089, help="port (default 8089; 0 picks a free one)")
    parser.add_argument(
        "--screen-delay",
        type=_screen_delay_arg,
        default=1.0,
        help="seconds until the emulated agent screen acts on START/STOP ('off': never; default 1.0)",
    )
    parser.add_argument("--keep-alive", action="store_true", help="HTTP/1.1 keep-alive with Content-Length")
    args = parser.parse_args(argv)

    done = threading.Event()

    def _on_signal(signum: int, frame: Optional[FrameType]) -> None:
        done.set()

    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, _on_signal)
    sim = VicidialSimulator(
        host=args.host, port=args.port, screen_delay=args.screen_delay, keep_alive=args.keep_alive
    )
    try:
        sim.start()
        print(
            f"vicidial simulator listening on {sim.base_url} (API user {API_USER}, agents 1000-1002)",
            flush=True,
        )
        while not done.wait(timeout=1.0):
            pass
    finally:
        sim.stop()
        for restored, handler in previous.items():
            signal.signal(restored, handler)
    return 0
