"""The ``EXEC`` applications the fake knows by default (``Set``, ``Wait``, ``Verbose``, no-ops)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from vicirec.testing.fake_asterisk.args import _scan_int
from vicirec.testing.fake_asterisk.channel import _s

if TYPE_CHECKING:
    from vicirec.testing.fake_asterisk.interpreter import AgiInterpreter


#: An application for ``EXEC``: gets the interpreter and the raw argument string, returns
#: (application return value, seconds it blocks before returning).
AppHandler = Callable[["AgiInterpreter", bytes], tuple[int, float]]


def _app_set(interp: AgiInterpreter, data: bytes) -> tuple[int, float]:
    name, eq, value = data.partition(b"=")
    if eq and name:
        interp.set_variable(name, value)
    return 0, 0.0


def _app_wait(interp: AgiInterpreter, data: bytes) -> tuple[int, float]:
    try:
        seconds = float(_s(data).strip() or "0")
    except ValueError:
        seconds = 0.0
    return 0, max(0.0, seconds)


def _app_verbose(interp: AgiInterpreter, data: bytes) -> tuple[int, float]:
    level, comma, msg = data.partition(b",")
    lvl, _rest = _scan_int(level)
    if comma and lvl is not None:
        interp.verbose.append((lvl, _s(msg)))
    else:
        interp.verbose.append((0, _s(data)))
    return 0, 0.0


def _app_ok(interp: AgiInterpreter, data: bytes) -> tuple[int, float]:
    return 0, 0.0


#: EXEC applications known by default (names are case-insensitive). The rest give ``result=-2``.
DEFAULT_APPLICATIONS: dict[str, AppHandler] = {
    "set": _app_set,
    "noop": _app_ok,
    "verbose": _app_verbose,
    "wait": _app_wait,
    "userevent": _app_ok,
    "log": _app_ok,
    "answer": _app_ok,
    "playback": _app_ok,
    "mixmonitor": _app_ok,
    "stopmixmonitor": _app_ok,
}
