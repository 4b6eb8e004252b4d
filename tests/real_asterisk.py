"""A real Asterisk for the tests: a private instance on 127.0.0.1, driven through AMI (pyst2).

Where the Asterisk comes from (first match wins):

* ``VICIREC_TEST_ASTERISK=/path/to/sbin/asterisk``: an administrator's own build. The instance is
  still laid out by the ``asterisk-private`` launcher (``VICIREC_TEST_ASTERISK_PRIVATE``, default
  the shared runtime's), which is handed that binary, ``VICIREC_TEST_ASTERISK_MODULES`` (default
  ``/usr/lib/asterisk/modules``) and ``VICIREC_TEST_ASTERISK_DOCS`` (the XML documentation,
  default ``/var/lib/asterisk/documentation``) instead of its own tarball.
* the relocatable Asterisk 22.10.1 runtime at ``<repo>/../shared/asterisk/runtime``.

Without either, :func:`asterisk_or_skip` skips with the reason (fails instead when
``VICIREC_TEST_REQUIRE_ASTERISK`` is set, as .ci/run does when the runtime is there).

What gets loaded is what ``deploy/install.sh`` installed into a staged root (:func:`stage_install`),
included the way its messages and the file headers tell an administrator to: the library and
every ``vicirec-example-*.conf`` from extensions.conf, ``features_vicirec.conf`` inside
``[applicationmap]``, ``confbridge_vicirec.conf`` at the end of confbridge.conf. The process AGI is
the installed ``vicirec.agi`` (its ``astagidir`` is the staged agi-bin); the FastAGI transport is
``vicirec serve`` from the installed venv; the ``VICIREC_AGI`` global names the one a lab uses.

A test module needs five small fixtures (copy them from tests/test_real_asterisk.py: the staged
install is shared by the whole session through :func:`stage_install_once`; :func:`open_lab` builds
one Asterisk per transport). A scenario is then a few lines::

    call = lab.asterisk.run("vicirec-example-consent", callerid=LAB_CALL_ID)
    call.wait_app("Read")          # the IVR is asking
    call.press("1")                # the caller's own Local leg sends the DTMF
    call.wait_done()               # the routine returned (UserEvent VrtestDone)
    assert call.getvar("VICIREC_CONSENT") == "YES"
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from vicirec.testing.harness import TomlValue, write_config
from vicirec.testing.simulator import VicidialSimulator

REPO = Path(__file__).resolve().parent.parent
RUNTIME = REPO.parent / "shared" / "asterisk" / "runtime"
ENV_BINARY = "VICIREC_TEST_ASTERISK"
ENV_LAUNCHER = "VICIREC_TEST_ASTERISK_PRIVATE"
ENV_MODULES = "VICIREC_TEST_ASTERISK_MODULES"
ENV_DOCS = "VICIREC_TEST_ASTERISK_DOCS"
ENV_REQUIRE = "VICIREC_TEST_REQUIRE_ASTERISK"  # set (CI): no Asterisk is a failure, not a skip
#: pyst2 0.5's event thread calls threading's deprecated isSet()/currentThread() on every event
PYST2_WARNINGS = pytest.mark.filterwarnings("ignore::DeprecationWarning:asterisk.manager")
EVENT_TIMEOUT = 20.0
SCREEN_DELAY = 0.3  # the simulated agent screen acts this long after a START/STOP
#: every prompt the examples play, with its length (s); the runtime ships only silent beep,
#: silence/N and conf-* files. A test may remove_sound() one and must sound() it back.
PROMPTS = {
    "this-call-may-be-monitored-or-recorded": 1.0, "press-1": 0.5, "option-is-invalid": 0.2,
    "vm-sorry": 0.2, "auth-thankyou": 0.2, "beeperr": 0.2, "please-try-again": 0.2,
}

#: The test side of every call (not shipped): the caller's phone, its keypad, and a runner that
#: Gosubs into the routine under test and then says so with a UserEvent.
HARNESS_DIALPLAN = """\
; written by tests/real_asterisk.py: the test's half of each call
[vrtest-caller]
; the caller's phone (the ;2 half of the originated Local channel): answers and waits
exten => s,1,Answer()
 same => n,Wait(120)
 same => n,Hangup()

[vrtest-press]
; the test redirects a phone here to press VRT_DIGITS towards the channel under test
exten => s,1,SendDTMF(${VRT_DIGITS},150)
 same => n,Wait(120)
 same => n,Hangup()

[vrtest-agent]
; the agent's phone in a Dial() bridge
exten => s,1,Answer()
 same => n,Wait(120)
 same => n,Hangup()

[vrtest-run]
; the channel under test: Gosub into the routine, then report
exten => s,1,Answer()
 same => n,Gosub(${VRT_CONTEXT},${VRT_EXTEN},1(${VRT_ARG1},${VRT_ARG2},${VRT_ARG3}))
 same => n,UserEvent(VrtestDone)
 same => n,Wait(120)
 same => n,Hangup()

[vrtest-recording]
; stands in for VICIdial's recording channel (exten 8309's Local/5<session>@ half) while a recording runs
exten => _5X.,1,Answer()
 same => n,Wait(120)
 same => n,Hangup()

[vrtest-confbridge]
; a conference member: ConfBridge(room,bridge profile,user profile,menu)
exten => s,1,Answer()
 same => n,ConfBridge(${VRT_ROOM},default_bridge,quiet_user,${VRT_MENU})
 same => n,Hangup()
"""


# ---------------------------------------------------------------------------------------------
# which Asterisk
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AsteriskSource:
    """How to start an instance: the launcher, and the build it runs (None: the runtime's own)."""

    launcher: Path
    binary: Optional[Path] = None
    modules: Optional[Path] = None
    docs: Optional[Path] = None

    @property
    def description(self) -> str:
        return f"{self.binary} (own build)" if self.binary else f"runtime {RUNTIME}"


@functools.cache
def find_asterisk() -> tuple[Optional[AsteriskSource], str]:
    """(source, "") when an Asterisk can be started here, else (None, why not); asked once a run."""
    launcher = Path(os.environ.get(ENV_LAUNCHER) or RUNTIME / "asterisk-private")
    if not launcher.is_file():
        return None, (f"no Asterisk for the real-Asterisk tests: {launcher} is missing (the runtime "
                      f"../shared/asterisk/runtime, or set {ENV_LAUNCHER})")
    binary = os.environ.get(ENV_BINARY)
    if binary:
        path = Path(binary)
        if not os.access(path, os.X_OK):
            return None, f"{ENV_BINARY}={binary} is not an executable"
        modules = Path(os.environ.get(ENV_MODULES) or "/usr/lib/asterisk/modules")
        docs = Path(os.environ.get(ENV_DOCS) or "/var/lib/asterisk/documentation")
        for what, where in (("modules", modules), ("documentation", docs)):
            if not where.is_dir():
                return None, f"{ENV_BINARY} is set but its {what} directory {where} does not exist"
        return AsteriskSource(launcher, path.resolve(), modules, docs), ""
    check = subprocess.run(["bash", str(launcher), "check"], check=False, capture_output=True, text=True,
                           timeout=120)
    if check.returncode != 0:
        missing = " ".join(line.split()[1] for line in check.stdout.splitlines()
                           if line.startswith("MISSING") and len(line.split()) > 1)
        return None, (f"the Asterisk runtime cannot run here (missing: {missing or check.stdout.strip()}); "
                      f"install: apt-get install $({launcher} deps)")
    return AsteriskSource(launcher), ""


def asterisk_or_skip() -> AsteriskSource:
    source, reason = find_asterisk()
    if source is None:
        if os.environ.get(ENV_REQUIRE):
            pytest.fail(f"{ENV_REQUIRE} is set but {reason}")
        pytest.skip(reason)
    return source


# ---------------------------------------------------------------------------------------------
# the installer's files
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StagedInstall:
    """deploy/install.sh run with ``--root``; ``prefix`` is made real by a symlink into the root,
    so the AGI's shebang (which names the final path) runs."""

    root: Path
    prefix: Path

    @property
    def agi_bin(self) -> Path:
        return self.root / "var/lib/asterisk/agi-bin"

    @property
    def asterisk_etc(self) -> Path:
        return self.root / "etc/asterisk"

    @property
    def python(self) -> Path:
        return self.prefix / "venv/bin/python3"


def stage_install(base: Path) -> StagedInstall:
    """Install into ``base/root`` as tests/test_install.py does (offline, --no-deps); lend the venv
    this test run's site-packages for the dependencies."""
    from test_install import run_installer  # noqa: PLC0415 - reuse the installer test's offline staging

    root = base / "root"
    prefix = base / "opt"
    run_installer(root, "--prefix", str(prefix), "--no-systemd")
    staged_prefix = root / str(prefix).lstrip("/")
    prefix.symlink_to(staged_prefix, target_is_directory=True)
    staged = StagedInstall(root, prefix)
    info = subprocess.run([str(staged.python), "-I", "-c",
                           "import sysconfig, sys; print(sysconfig.get_paths()['purelib']); "
                           "print('{}.{}'.format(*sys.version_info[:2]))"],
                          check=True, capture_output=True, text=True, timeout=60).stdout.split()
    if info[1] != "{}.{}".format(*sys.version_info[:2]):
        pytest.skip(f"the staged venv is Python {info[1]}, this test run {sys.version_info[:2]}")
    (Path(info[0]) / "zz_test_bridge.pth").write_text(sysconfig.get_paths()["purelib"] + "\n",
                                                       encoding="utf-8")
    return staged


_STAGED: dict[str, StagedInstall] = {}


def stage_install_once(factory: pytest.TempPathFactory) -> StagedInstall:
    """One staged install per test session, shared by every module that asks for it."""
    if "install" not in _STAGED:
        _STAGED["install"] = stage_install(factory.mktemp("vr"))
    return _STAGED["install"]


@dataclass(frozen=True)
class DialplanFiles:
    """The three files that load the installed dialplan, as an administrator would add them."""

    extensions: Path
    features: Path
    confbridge: list[Path]


def installed_dialplan(staged: StagedInstall, out: Path, globals_: Mapping[str, str]) -> DialplanFiles:
    """Include lines for every installed file; fails when a file fits none of the three places."""
    examples = staged.asterisk_etc / "vicirec-examples"
    ext = ["; what an administrator adds to extensions.conf (deploy/install.sh, dialplan/README.md)"]
    if globals_:
        ext.append("[globals](+)")
        ext.extend(f"{name}={value}" for name, value in globals_.items())
    ext.append(f'#include "{staged.asterisk_etc / "extensions_vicirec.conf"}"')
    features = ["; features.conf: the entries go INSIDE [applicationmap] (features_vicirec.conf)",
                "[applicationmap]"]
    confbridge: list[Path] = []
    for path in sorted(examples.iterdir()):
        if path.name.startswith("vicirec-example-") and path.suffix == ".conf":
            ext.append(f'#include "{path}"')
        elif path.name.startswith("features_"):
            features.append(f'#include "{path}"')
        elif path.name.startswith("confbridge_"):
            confbridge.append(path)
        else:
            raise AssertionError(f"the installer placed {path.name}: the real-Asterisk tests do not "
                                 "know where it belongs; teach installed_dialplan()")
    out.mkdir(parents=True, exist_ok=True)
    (out / "vicirec-extensions.conf").write_text("\n".join(ext) + "\n\n" + HARNESS_DIALPLAN, encoding="utf-8")
    (out / "vicirec-features.conf").write_text("\n".join(features) + "\n", encoding="utf-8")
    return DialplanFiles(out / "vicirec-extensions.conf", out / "vicirec-features.conf", confbridge)


# ---------------------------------------------------------------------------------------------
# AMI
# ---------------------------------------------------------------------------------------------


class Ami:
    """pyst2's ``asterisk.manager.Manager`` plus a searchable record of every event.

    Every action gets a fresh dict: ``Manager.send_action(cdict={})`` updates its mutable default
    argument, so keyword calls would carry an earlier ActionID (and headers) into the next action.
    """

    def __init__(self, port: int) -> None:
        from asterisk.manager import Manager  # noqa: PLC0415 - pyst2, a runtime dependency

        self._cond = threading.Condition()
        self.events: list[dict[str, str]] = []
        self._manager = Manager()
        self._manager.register_event("*", self._on_event)
        self._manager.connect("127.0.0.1", port)
        self._manager.login("test", "test")

    def _on_event(self, event: Any, _manager: Any) -> None:
        headers = {str(k): str(v).strip() for k, v in event.headers.items()}
        with self._cond:
            self.events.append(headers)
            self._cond.notify_all()

    def action(self, headers: Mapping[str, Any]) -> dict[str, str]:
        response = self._manager.send_action(dict(headers))
        return {str(k): str(v).strip() for k, v in response.headers.items()}

    def wait_event(self, predicate: Callable[[dict[str, str]], bool], timeout: float = EVENT_TIMEOUT,
                   since: int = 0, what: str = "event") -> dict[str, str]:
        deadline = time.monotonic() + timeout
        index = since
        with self._cond:
            while True:
                while index < len(self.events):
                    if predicate(self.events[index]):
                        return self.events[index]
                    index += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no {what} within {timeout} s")
                self._cond.wait(remaining)

    def snapshot(self, since: int = 0) -> list[dict[str, str]]:
        with self._cond:
            return list(self.events[since:])

    def mark(self) -> int:
        with self._cond:
            return len(self.events)

    def close(self) -> None:
        # pyst2 0.5 calls threading's deprecated isSet()/currentThread(), in close() and again in
        # its __del__: let both happen here, not at some later garbage collection
        manager, self._manager = self._manager, None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                manager.logoff()
            finally:
                manager.close()
                del manager
                gc.collect()


# ---------------------------------------------------------------------------------------------
# the instance and its calls
# ---------------------------------------------------------------------------------------------


def _parse_env(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


class Asterisk:
    """One private instance (start with :meth:`start`, always :meth:`stop`)."""

    def __init__(self, source: AsteriskSource, directory: Path) -> None:
        self.source = source
        self.dir = directory
        self.ami: Optional[Ami] = None
        self.info: dict[str, str] = {}
        self._calls = 0
        self.calls: list[Call] = []

    def _launcher(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(self.source.launcher), *args], check=False, capture_output=True,
                              text=True, timeout=timeout)

    def start(self, *, includes: Sequence[Path] = (), features: Sequence[Path] = (),
              confbridge: Sequence[Path] = (), env: Mapping[str, str] = (), agi_dir: Optional[Path] = None,
              strict: bool = True) -> Asterisk:
        if self.source.binary is not None:
            root = self.dir / "root"
            (root / "sbin").mkdir(parents=True, exist_ok=True)
            (root / "lib/asterisk").mkdir(parents=True, exist_ok=True)
            (root / "share/asterisk").mkdir(parents=True, exist_ok=True)
            (root / "sbin/asterisk").symlink_to(self.source.binary)
            # the launcher puts only DIR/root/lib on LD_LIBRARY_PATH: lend it the build's own libasterisk*
            for lib in (self.source.binary.parent.parent / "lib").glob("libasterisk*.so*"):
                (root / "lib" / lib.name).symlink_to(lib)
            (root / "lib/asterisk/modules").symlink_to(self.source.modules or "")
            (root / "share/asterisk/documentation").symlink_to(self.source.docs or "")
        args = ["start", str(self.dir)]
        for flag, paths in (("--include", includes), ("--features", features), ("--confbridge", confbridge)):
            for path in paths:
                args += [flag, str(path)]
        for name, value in dict(env).items():
            args += ["--env", f"{name}={value}"]
        if agi_dir is not None:
            args += ["--agi-dir", str(agi_dir)]
        if strict:
            args.append("--strict")
        res = self._launcher(*args, timeout=120)
        if res.returncode != 0:
            raise AssertionError(f"asterisk-private start failed ({res.returncode}):\n"
                                 f"{res.stdout}\n{res.stderr}")
        self.info = _parse_env(res.stdout)
        self.ami = Ami(int(self.info["AMI_PORT"]))
        return self

    def stop(self) -> None:
        if self.ami is not None:
            try:
                self.ami.close()
            except Exception:  # noqa: BLE001 - the instance goes away anyway
                pass
            self.ami = None
        self._launcher("stop", str(self.dir))

    def hang_up_all(self) -> None:
        """Hang up every channel the calls of this instance started (between tests)."""
        if self.ami is None:
            return
        ours = {e.get("Channel", "") for e in self.ami.snapshot() if e.get("Event") == "Newchannel"}
        gone = {e.get("Channel", "") for e in self.ami.snapshot() if e.get("Event") == "Hangup"}
        for name in sorted(ours - gone):
            self.ami.action({"Action": "Hangup", "Channel": name})
        self.calls.clear()

    def cli(self, command: str) -> str:
        res = self._launcher("cli", str(self.dir), command)
        assert res.returncode == 0, res.stderr
        return res.stdout

    def channels(self, prefix: str) -> list[str]:
        """The live channels whose names start with ``prefix`` (``core show channels concise``)."""
        return [line.split("!", 1)[0] for line in self.cli("core show channels concise").splitlines()
                if line.startswith(prefix)]

    def sound(self, name: str, seconds: float = 1.0) -> Path:
        res = self._launcher("sound", str(self.dir), name, str(seconds))
        assert res.returncode == 0, res.stderr
        return Path(res.stdout.strip())

    def remove_sound(self, name: str) -> None:
        (self.dir / "data/sounds/en" / f"{name}.ulaw").unlink(missing_ok=True)

    @property
    def full_log(self) -> Path:
        return self.dir / "log/full"

    def log_text(self) -> str:
        parts = []
        for name in ("full", "console.log"):
            path = self.dir / "log" / name
            if path.exists():
                parts.append(f"--- {path}\n" + path.read_text(encoding="utf-8", errors="replace")[-20000:])
        return "\n".join(parts)

    def _originate(self, context: str, variables: Mapping[str, str], callerid: str,
                   caller: str = "vrtest-caller") -> Call:
        assert self.ami is not None
        self._calls += 1
        ids = (f"vrtest-{os.getpid()}-{self._calls}.1", f"vrtest-{os.getpid()}-{self._calls}.2")
        since = self.ami.mark()
        headers: dict[str, Any] = {
            "Action": "Originate", "Channel": f"Local/s@{caller}", "Context": context, "Exten": "s",
            "Priority": "1", "Async": "true", "ChannelId": ids[0], "OtherChannelId": ids[1],
            "Timeout": "10000",
        }
        if callerid:
            headers["CallerID"] = callerid
        if variables:
            headers["Variable"] = [f"{k}={v}" for k, v in variables.items()]
        response = self.ami.action(headers)
        assert response.get("Response") == "Success", response
        call = Call(self, ids, since)
        self.calls.append(call)
        origin = self.ami.wait_event(lambda e: e.get("Event") == "OriginateResponse"
                                     and e.get("Uniqueid") == ids[0], since=since, what="OriginateResponse")
        assert origin.get("Response") == "Success", origin
        return call

    def run(self, context: str, exten: str = "s", args: Sequence[str] = (), *, callerid: str = "",
            variables: Mapping[str, str] = ()) -> Call:
        """Originate a call whose tested channel Gosubs into ``context,exten,1(args)``."""
        values = {"VRT_CONTEXT": context, "VRT_EXTEN": exten}
        for n, arg in enumerate(args, start=1):
            values[f"VRT_ARG{n}"] = arg
        values.update(dict(variables))
        return self._originate("vrtest-run", values, callerid)

    def conference(self, room: str, menu: str = "default_menu", *, callerid: str = "",
                   variables: Mapping[str, str] = ()) -> Call:
        """Originate a call whose tested channel joins ConfBridge ``room`` with ``menu``."""
        return self._originate("vrtest-confbridge", {"VRT_ROOM": room, "VRT_MENU": menu, **dict(variables)},
                               callerid)


@dataclass
class Call:
    """One originated call: ``channel`` runs the dialplan under test, ``phone`` is the caller."""

    asterisk: Asterisk
    ids: tuple[str, str]
    since: int
    _names: dict[str, str] = field(default_factory=dict)

    @property
    def ami(self) -> Ami:
        assert self.asterisk.ami is not None
        return self.asterisk.ami

    def _name(self, uniqueid: str) -> str:
        if uniqueid not in self._names:
            event = self.ami.wait_event(lambda e: e.get("Event") == "Newchannel"
                                        and e.get("Uniqueid") == uniqueid,
                                        since=self.since, what=f"Newchannel {uniqueid}")
            self._names[uniqueid] = event["Channel"]
        return self._names[uniqueid]

    @property
    def channel(self) -> str:
        return self._name(self.ids[0])

    @property
    def phone(self) -> str:
        return self._name(self.ids[1])

    def events(self, name: Optional[str] = None, channel: Optional[str] = None) -> list[dict[str, str]]:
        return [e for e in self.ami.snapshot(self.since)
                if (name is None or e.get("Event") == name)
                and (channel is None or e.get("Channel") == channel)]

    def wait(self, predicate: Callable[[dict[str, str]], bool], timeout: float = EVENT_TIMEOUT,
             what: str = "event") -> dict[str, str]:
        return self.ami.wait_event(predicate, timeout, since=self.since, what=what)

    def wait_app(self, application: str, data_prefix: str = "", channel: Optional[str] = None,
                 context: Optional[str] = None, timeout: float = EVENT_TIMEOUT) -> dict[str, str]:
        """Until ``channel`` (default: the tested one) starts ``application`` (AppData prefix; in
        ``context`` if given)."""
        name = channel or self.channel
        return self.wait(lambda e: e.get("Event") == "Newexten" and e.get("Channel") == name
                         and e.get("Application") == application
                         and e.get("AppData", "").startswith(data_prefix)
                         and (context is None or e.get("Context") == context),
                         timeout, what=f"{application}({data_prefix}...) on {name}")

    def wait_context(self, context: str, channel: Optional[str] = None,
                     timeout: float = EVENT_TIMEOUT) -> dict[str, str]:
        """Until ``channel`` (default: the tested one) runs a priority of ``context``."""
        name = channel or self.channel
        return self.wait(lambda e: e.get("Event") == "Newexten" and e.get("Channel") == name
                         and e.get("Context") == context, timeout, what=f"[{context}] on {name}")

    def wait_done(self, timeout: float = EVENT_TIMEOUT) -> None:
        """Until the Gosub under test returned (the runner's UserEvent)."""
        name = self.channel
        self.wait(lambda e: e.get("Event") == "UserEvent" and e.get("UserEvent") == "VrtestDone"
                  and e.get("Channel") == name, timeout, what=f"VrtestDone on {name}")

    def wait_hangup(self, channel: Optional[str] = None, timeout: float = EVENT_TIMEOUT) -> None:
        name = channel or self.channel
        self.wait(lambda e: e.get("Event") == "Hangup" and e.get("Channel") == name, timeout,
                  what=f"Hangup of {name}")

    def press(self, digits: str, phone: Optional[str] = None) -> None:
        """The phone (default: this call's caller leg) sends ``digits`` with SendDTMF()."""
        name = phone or self.phone
        ok = self.ami.action({"Action": "Setvar", "Channel": name, "Variable": "VRT_DIGITS", "Value": digits})
        assert ok.get("Response") == "Success", ok
        moved = self.ami.action({"Action": "Redirect", "Channel": name, "Context": "vrtest-press",
                                 "Exten": "s", "Priority": "1"})
        assert moved.get("Response") == "Success", moved

    def getvar(self, name: str, channel: Optional[str] = None) -> str:
        """The value Asterisk holds now on the (live) channel."""
        res = self.ami.action({"Action": "Getvar", "Channel": channel or self.channel, "Variable": name})
        assert res.get("Response") == "Success", res
        return res.get("Value", "")

    def getvars(self, names: Iterable[str], channel: Optional[str] = None) -> dict[str, str]:
        return {name: self.getvar(name, channel) for name in names}

    def varsets(self, channel: Optional[str] = None) -> Iterator[tuple[str, str]]:
        """(variable, value) of every VarSet event on the channel, in order (also after a hangup)."""
        name = channel or self.channel
        for e in self.events("VarSet", name):
            yield e.get("Variable", ""), e.get("Value", "")

    def last_values(self, channel: Optional[str] = None) -> dict[str, str]:
        return dict(self.varsets(channel))

    def hangup(self, channel: Optional[str] = None) -> None:
        self.ami.action({"Action": "Hangup", "Channel": channel or self.phone})


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0, process: Optional[subprocess.Popen[bytes]] = None) -> None:
    """Until 127.0.0.1:``port`` accepts (fails at once when ``process``, its server, has exited)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            if process is not None and process.poll() is not None:
                raise AssertionError(f"the server for port {port} exited ({process.returncode})") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def warnings_in(log: Path, since: int = 0) -> list[str]:
    """WARNING/ERROR lines of an instance's log/full from byte offset ``since``."""
    if not log.exists():
        return []
    with log.open("rb") as fh:
        fh.seek(since)
        text = fh.read().decode("utf-8", errors="replace")
    return [line for line in text.splitlines() if "] WARNING[" in line or "] ERROR[" in line]


# ---------------------------------------------------------------------------------------------
# a lab: one Asterisk with the installed dialplan, one transport, one simulator
# ---------------------------------------------------------------------------------------------


@dataclass
class Lab:
    transport: str  # "process" or "fastagi"
    asterisk: Asterisk
    sim: VicidialSimulator
    daemon: Optional[subprocess.Popen[bytes]]
    daemon_port: int
    #: substrings of the WARNING/ERROR lines the running test expects in log/full
    expected_warnings: list[str] = field(default_factory=list)
    #: the MariaDB of a ``lookup = "mysql"`` lab (tests/mariadb_server.py), None for ``http``
    database: Any = None
    #: the running test's tests/sim_mirror.py ``SimulatorMirror`` in a ``mysql`` lab
    mirror: Any = None

    def starts(self) -> list[dict[str, str]]:
        """The START requests the simulator received (parameters as PHP saw them)."""
        return [r.params for r in self.sim.requests
                if r.params.get("function") == "recording" and r.params.get("value") == "START"]

    def recording_requests(self) -> list[str]:
        """The ``value`` of every ``function=recording`` request, in order."""
        return [r.params.get("value", "") for r in self.sim.requests
                if r.params.get("function") == "recording"]


@contextlib.contextmanager
def serve_daemon(config: Path, port: int, python: Path = Path(sys.executable),
                 stderr: Optional[Path] = None) -> Iterator[subprocess.Popen[bytes]]:
    """``vicirec serve`` on 127.0.0.1:``port`` until the block ends (SIGTERM, unless already dead)."""
    command = [str(python), "-I", "-m", "vicirec", "serve", "--config", str(config),
               "--host", "127.0.0.1", "--port", str(port)]
    with open(stderr or os.devnull, "wb") as err:
        daemon = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                  start_new_session=True)
    try:
        wait_port(port, process=daemon)
        yield daemon
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=30)


def mysql_or_skip() -> Any:
    """The test process's MariaDB (tests/mariadb_server.py): skips without one, fails instead under
    ``VICIREC_TEST_MYSQL_REQUIRED=1``."""
    from mariadb_server import ENV_REQUIRED, ServerUnavailable, get_server  # noqa: PLC0415

    try:
        return get_server()
    except ServerUnavailable as exc:
        if os.environ.get(ENV_REQUIRED) == "1":
            pytest.fail(f"MySQL tests required but: {exc}")
        pytest.skip(str(exc))


def mysql_lookup(database: Any, work: Path, server_ip: str = "10.10.10.15") -> dict[str, TomlValue]:
    """The ``[agents]`` of ``lookup = "mysql"`` against ``database`` as the server ``server_ip``."""
    conf = database.astguiclient_conf(work / "astguiclient.conf", server_ip=server_ip)
    return {"lookup": "mysql", "astguiclient_conf": str(conf)}


class AsteriskRecordings:
    """VICIdial's recording channel pair, for real: ``Local/5<session>@vrtest-recording-…;1/;2`` in
    the Asterisk while a recording runs (tests/sim_mirror.py's ``recordings``)."""

    def __init__(self, asterisk: Asterisk) -> None:
        self.asterisk = asterisk
        self._up: set[tuple[str, int]] = set()

    @staticmethod
    def prefix(session: str) -> str:
        return f"Local/5{session}@vrtest-recording-"

    def is_up(self, session: str, recording_id: int) -> bool:
        return (session, recording_id) in self._up

    def up(self, session: str, recording_id: int) -> None:
        assert self.asterisk.ami is not None
        since = self.asterisk.ami.mark()
        channel = f"Local/5{session}@vrtest-recording"
        res = self.asterisk.ami.action({"Action": "Originate", "Channel": channel, "Application": "Wait",
                                        "Data": "120", "Async": "true"})
        assert res.get("Response") == "Success", res
        self.asterisk.ami.wait_event(lambda e: e.get("Event") == "Newchannel"
                                     and e.get("Channel", "").startswith(self.prefix(session)),
                                     since=since, what=f"the recording channel of {session}")
        self._up.add((session, recording_id))

    def down(self, session: str, recording_id: int) -> None:
        self._up.discard((session, recording_id))
        if self.asterisk.ami is None:
            return
        for name in self.asterisk.channels(self.prefix(session)):
            self.asterisk.ami.action({"Action": "Hangup", "Channel": name})


@contextlib.contextmanager
def open_lab(transport: str, source: AsteriskSource, staged: StagedInstall, sim: VicidialSimulator,
             work: Path, config: Optional[Mapping[str, Mapping[str, TomlValue]]] = None) -> Iterator[Lab]:
    """Start the transport's side (nothing, or ``vicirec serve``) and an Asterisk loading the staged
    install strictly; stop both on exit. Process AGI: ``vicirec.agi`` from the staged agi-bin.
    ``config``: sections merged into vicirec.toml (e.g. ``{"agents": mysql_lookup(...)}``)."""
    if transport not in ("process", "fastagi"):
        raise ValueError(f"transport {transport!r}")
    port = free_port()
    sections: dict[str, dict[str, TomlValue]] = {
        "agents": {"require_corroboration": False},  # the http lookup cannot corroborate outside a room
        "fastagi": {"port": port},
    }
    for name, values in (config or {}).items():
        sections.setdefault(name, {}).update(values)
    config_file = write_config(work, sim.api_url, overrides=sections)
    # the process lab names its target too: a library that tries a default daemon first must not
    # find (or miss) some other daemon on this machine's port 4573
    globals_ = {"VICIREC_AGI": "vicirec.agi"}
    asterisk = Asterisk(source, work / "a")
    with contextlib.ExitStack() as stack:
        daemon = None
        if transport == "fastagi":
            daemon = stack.enter_context(serve_daemon(config_file, port, staged.python, work / "daemon.err"))
            globals_["VICIREC_AGI"] = f"agi://127.0.0.1:{port}/vicirec"
        files = installed_dialplan(staged, work / "conf", globals_)
        stack.callback(asterisk.stop)
        asterisk.start(includes=[files.extensions], features=[files.features], confbridge=files.confbridge,
                       env={"VICIREC_CONFIG": str(config_file)}, agi_dir=staged.agi_bin, strict=True)
        for name, seconds in PROMPTS.items():
            asterisk.sound(name, seconds)
        yield Lab(transport, asterisk, sim, daemon, port)


# ---------------------------------------------------------------------------------------------
# an Asterisk with a test's own dialplan
# ---------------------------------------------------------------------------------------------


def write_agi_bin(directory: Path, scripts: Mapping[str, str] = ()) -> Path:
    """An agi-bin: ``vicirec.agi`` as deploy/install.sh writes it (an absolute interpreter, isolated:
    this test run's) and the test's own stand-in ``scripts`` (name: text)."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {"vicirec.agi": f"#!{sys.executable} -I\nfrom vicirec.process_agi import main\n"
                            "raise SystemExit(main())\n", **dict(scripts)}
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
        (directory / name).chmod(0o755)
    return directory


@contextlib.contextmanager
def private_asterisk(work: Path, includes: Sequence[Path], *, agi_dir: Optional[Path] = None,
                     env: Mapping[str, str] = (), strict: bool = True) -> Iterator[Asterisk]:
    """An Asterisk (found as :func:`asterisk_or_skip` says) loading ``includes`` and the test
    harness's contexts (``[vrtest-run]``, ``[vrtest-caller]``, ...), strictly by default; stopped
    when the block ends. ``work`` must be short: the control socket's path fits 107 bytes."""
    source = asterisk_or_skip()
    harness = work / "vrtest-harness.conf"
    work.mkdir(parents=True, exist_ok=True)
    harness.write_text(HARNESS_DIALPLAN, encoding="utf-8")
    asterisk = Asterisk(source, work / "a")
    try:
        asterisk.start(includes=[harness, *includes], env=env, agi_dir=agi_dir, strict=strict)
        yield asterisk
    finally:
        asterisk.stop()
