"""A tiny process AGI for the fake-Asterisk tests. ``argv[1]`` picks the behaviour:

* ``exit:N``       read the env block, ``SET VARIABLE RESULT before-exit``, exit N
* ``raise``        read the block, set RESULT=before-raise, raise (exit 1, traceback on stderr)
* ``abort``        read the block, set RESULT=before-abort, os.abort() (SIGABRT)
* ``sleep:S``      read the block, sleep S seconds, exit 0 (timeout tests)
* ``failure``      write ``failure`` (what Asterisk's child writes when execv fails), then sleep 2 s
* ``partial``      read the block, write ``SET VARIABLE PARTIAL yes`` with no newline, exit 0
* ``nosighup``     like exit:0 but SIGHUP is default (kills the script)
* ``hupwait``      log SIGHUP, NOOP, then every 50 ms ``SET VARIABLE AFTER_HUP n`` until a write fails
                   or 1.5 s pass; writes the outcome to stderr (AGIEXITONHANGUP tests)
"""

from __future__ import annotations

import os
import signal
import sys
import time

_HUPS: list[float] = []


def _read_line() -> bytes:
    out = bytearray()
    while True:
        ch = os.read(0, 1)
        if not ch:
            return bytes(out)
        out += ch
        if ch == b"\n":
            return bytes(out)


def _read_env() -> None:
    while _read_line() not in (b"\n", b""):
        pass


def _command(cmd: bytes) -> bytes:
    os.write(1, cmd + b"\n")
    return _read_line()


def main() -> int:
    mode = sys.argv[1] if len(sys.argv) > 1 else "exit:0"
    if mode == "failure":
        os.write(1, b"failure\n")
        time.sleep(2)
        return 0
    if mode != "nosighup":
        signal.signal(signal.SIGHUP, lambda _s, _f: _HUPS.append(time.monotonic()))
    _read_env()
    if mode.startswith("exit:") or mode == "nosighup":
        _command(b"SET VARIABLE RESULT before-exit")
        return int(mode.split(":", 1)[1]) if mode.startswith("exit:") else 0
    if mode == "raise":
        _command(b"SET VARIABLE RESULT before-raise")
        raise RuntimeError("deliberate crash from the test AGI")
    if mode == "abort":
        _command(b"SET VARIABLE RESULT before-abort")
        os.abort()
    if mode.startswith("sleep:"):
        time.sleep(float(mode.split(":", 1)[1]))
        return 0
    if mode == "partial":
        os.write(1, b"SET VARIABLE PARTIAL yes")
        return 0
    if mode == "hupwait":
        _command(b"NOOP before hangup")
        end = time.monotonic() + 1.5
        n = 0
        while time.monotonic() < end:
            time.sleep(0.05)
            n += 1
            try:
                os.write(1, b"SET VARIABLE AFTER_HUP %d\n" % n)
            except BrokenPipeError:
                sys.stderr.write(f"EPIPE after {n} writes, sighups={len(_HUPS)}\n")
                return 0
        sys.stderr.write(f"no EPIPE, sighups={len(_HUPS)}\n")
        return 0
    sys.stderr.write(f"unknown mode {mode}\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
