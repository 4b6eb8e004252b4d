"""Process AGI that replays the script side of a recorded transcript (see transcript_replay.py).

Environment: REPLAY_TRANSCRIPT (path), REPLAY_REPORT (where to write the JSON report),
REPLAY_SLEEP_SCALE (default 0.1). SIGHUP is caught and counted ("SIGHUP disposition: log").
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from transcript_replay import Endpoint, encode_report, replay  # noqa: E402

_SIGNALS: list[float] = []


def _on_sighup(_signum: int, _frame: object) -> None:
    _SIGNALS.append(time.monotonic())


def main() -> int:
    signal.signal(signal.SIGHUP, _on_sighup)
    report = replay(Path(os.environ["REPLAY_TRANSCRIPT"]), Endpoint(0, 1),
                    sleep_scale=float(os.environ.get("REPLAY_SLEEP_SCALE", "0.1")))
    report["sighups"] = len(_SIGNALS)
    report["argv"] = sys.argv[1:]
    Path(os.environ["REPLAY_REPORT"]).write_text(json.dumps(encode_report(report)), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
