"""The FastAGI daemon run the way deploy/vicirec-fastagi.service runs it, without systemd.

deploy/install.sh stages a tree under a temporary --root; the unit file it installed there is
parsed and obeyed as far as a root shell can: ``ExecStart`` (its paths moved under the staged
root) runs as ``User=`` / ``Group=`` / ``SupplementaryGroups=`` (unused numeric ids through
``setpriv``, no entry in /etc/passwd), with no capabilities (``CapabilityBoundingSet=``),
``NoNewPrivileges=yes``, ``UMask=``, the unit's ``Environment=``, ``/`` as working directory,
stdin from /dev/null and a ``$NOTIFY_SOCKET`` of ours that, like systemd with the default
``NotifyAccess=main``, checks every message comes from the main PID. ``ExecReload`` is run with
``$MAINPID``, stop is SIGTERM to the main process (``KillMode=mixed``), and a broken config must
end with a status that ``RestartPreventExitStatus=`` lists.

The `installed` fixture of test_install is not reused: pytest's base temporary directory is 0700
root, which the service user could not traverse; the installer is run (with its helpers) into a
0755 directory of our own instead. ``ProtectSystem=``, ``PrivateTmp=``, the system call filter
and the other namespace settings need systemd and are not reproduced.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shlex
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest

from test_fastagi import NotifySocket
from test_install import run_installer, unit_settings
from vicirec.testing.fake_asterisk import AgiRun, FakeAsterisk
from vicirec.testing.harness import LAB_API_PASSWORD, LAB_API_USER, caller_channel, toml_text
from vicirec.testing.simulator import VicidialSimulator

HOST = "127.0.0.1"
UNIT_PATH = "etc/systemd/system/vicirec-fastagi.service"
SETPRIV = shutil.which("setpriv")
#: systemd's default $PATH for system services
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ASTERISK = FakeAsterisk()

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: runs the daemon as another uid (setpriv)"),
    pytest.mark.skipif(SETPRIV is None, reason="setpriv (util-linux) is not installed"),
]


# --- the staged install and its unit ----------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    exec_start: list[str]
    exec_reload: list[str]
    user: str
    group: str
    supplementary_groups: list[str]
    umask: int
    environment: dict[str, str]
    restart_prevent_exit_status: list[str]


def parse_unit(text: str) -> Unit:
    settings = unit_settings(text)

    def one(key: str) -> str:
        values = settings.get(key, [])
        assert len(values) == 1, f"{key}= should be set once in the unit, got {values}"
        return values[0]

    environment: dict[str, str] = {}
    for line in settings.get("Environment", []):
        for assignment in shlex.split(line):
            key, sep, value = assignment.partition("=")
            assert sep, f"Environment={line}: {assignment!r} is not KEY=VALUE"
            environment[key] = value
    exec_start = shlex.split(one("ExecStart"))
    exec_reload = shlex.split(one("ExecReload"))
    for command in (exec_start, exec_reload):  # no systemd prefixes (-, @, +, !) that we would ignore
        assert command[0].startswith("/"), command
    return Unit(
        exec_start=exec_start,
        exec_reload=exec_reload,
        user=one("User"),
        group=one("Group"),
        supplementary_groups=one("SupplementaryGroups").split(),
        umask=int(one("UMask"), 8),
        environment=environment,
        restart_prevent_exit_status=one("RestartPreventExitStatus").split(),
    )


def unused_id(taken: set[int], start: int = 61000) -> int:
    """A number that is neither a user id nor a group id here (nor in ``taken``)."""
    for candidate in range(start, start + 4000):
        if candidate in taken:
            continue
        try:
            pwd.getpwuid(candidate)
            continue
        except KeyError:
            pass
        try:
            grp.getgrgid(candidate)
            continue
        except KeyError:
            return candidate
    raise AssertionError("no unused id found")


@dataclass(frozen=True)
class Staged:
    base: Path
    root: Path
    unit: Unit
    uid: int
    gid: int
    asterisk_gid: int

    def path(self, final: str) -> Path:
        """The staged copy of a final absolute path."""
        assert final.startswith("/"), final
        return self.root / final.lstrip("/")

    @property
    def config(self) -> Path:
        config = self.unit.exec_start[self.unit.exec_start.index("--config") + 1]
        return self.path(config)

    @property
    def python(self) -> Path:
        """The staged venv's interpreter (beside ExecStart's script)."""
        return self.path(self.unit.exec_start[0]).with_name("python3")

    @property
    def log_dir(self) -> Path:
        return self.path("/var/log/vicirec")

    @property
    def state_dir(self) -> Path:
        return self.path("/var/lib/vicirec")

    def exec_start(self) -> list[str]:
        """ExecStart with every absolute path moved under the staged root."""
        return [str(self.path(word)) if word.startswith("/") else word for word in self.unit.exec_start]

    def as_service(self, argv: Sequence[str], *, supplementary: bool = True) -> list[str]:
        """``argv`` as User= / Group= / SupplementaryGroups= with UMask=, no capabilities and
        NoNewPrivileges=yes. Exec chains keep the PID: the process started is the main PID."""
        groups = ["--groups", str(self.asterisk_gid)] if supplementary else ["--clear-groups"]
        assert SETPRIV is not None
        return [SETPRIV, "--reuid", str(self.uid), "--regid", str(self.gid), *groups,
                "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--",
                "/bin/sh", "-c", f'umask {self.unit.umask:04o}; exec "$@"', "sh", *argv]

    def environment(self, notify: Optional[Path]) -> dict[str, str]:
        """What systemd puts in the environment of a system service with User= (+ Environment=)."""
        env = {"PATH": SYSTEMD_PATH, "HOME": "/var/lib/vicirec", "USER": self.unit.user,
               "LOGNAME": self.unit.user, "SHELL": "/usr/sbin/nologin", "LANG": "C.UTF-8"}
        if notify is not None:
            env["NOTIFY_SOCKET"] = str(notify)
        env.update(self.unit.environment)
        return env


def _set_group_as_the_installer_does(staged_root: Path, gid: int) -> None:
    """install.sh's ``set_group`` + chmod, for the 'asterisk' group this machine does not have."""
    for relative, mode in (("etc/vicirec", 0o750), ("etc/vicirec/vicirec.toml", 0o640),
                           ("var/log/vicirec", 0o2770), ("var/lib/vicirec", 0o2770)):
        path = staged_root / relative
        os.chown(path, 0, gid)
        path.chmod(mode)


def _bridge_dependencies(staged: Staged) -> None:
    """The staged venv was installed with --no-deps: lend it this run's site-packages (as
    test_install does) for requests and structlog."""
    out = subprocess.run([str(staged.python), "-I", "-c", "import sys, sysconfig; print(sysconfig.get_paths()"
                          "['purelib']); print('{}.{}'.format(*sys.version_info[:2]))"],
                         check=True, capture_output=True, text=True, timeout=60).stdout.split()
    if out[1] != "{}.{}".format(*sys.version_info[:2]):
        pytest.skip(f"the staged venv is Python {out[1]}, this test run {sys.version_info[:2]}")
    (Path(out[0]) / "zz_test_bridge.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")


@pytest.fixture(scope="module")
def staged() -> Iterator[Staged]:
    base = Path(tempfile.mkdtemp(prefix="vicirec-unit-"))
    try:
        base.chmod(0o755)  # the service user must reach the staged tree
        root = base / "root"
        run = run_installer(root)  # default paths, --group asterisk
        unit = parse_unit((root / UNIT_PATH).read_text(encoding="utf-8"))
        assert unit.supplementary_groups == ["asterisk"], unit
        try:
            asterisk_gid = grp.getgrnam("asterisk").gr_gid  # the installer chowned to it
        except KeyError:
            assert "group 'asterisk' does not exist" in run.stderr, run.stderr
            asterisk_gid = unused_id(set())
            _set_group_as_the_installer_does(root, asterisk_gid)
        uid = unused_id({asterisk_gid})
        staged = Staged(base, root, unit, uid=uid, gid=uid, asterisk_gid=asterisk_gid)
        assert staged.config.stat().st_gid == asterisk_gid
        _bridge_dependencies(staged)
        probe = run_as_service(staged, [str(staged.python), "-I", "-c", "pass"])
        if probe.returncode != 0:
            pytest.skip(f"uid {uid} cannot run the staged venv's interpreter "
                        f"({os.path.realpath(staged.python)}): {probe.stderr.strip()[-300:]}")
        yield staged
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def sim() -> Iterator[VicidialSimulator]:
    with VicidialSimulator(screen_delay=None, keep_alive=True) as simulator:
        yield simulator


# --- systemd's side -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Notification:
    fields: list[str]
    pid: int
    uid: int
    gid: int


class CheckedNotifySocket(NotifySocket):
    """test_fastagi's notification socket, world-connectable (the service user sends to it, as to
    /run/systemd/notify) and reading the sender's credentials (SO_PASSCRED) like systemd does."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        path.chmod(0o777)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.received: list[Notification] = []

    def wait_for(self, field: str, timeout: float = 10.0) -> list[Notification]:
        """Notifications up to and including the first holding ``field`` (e.g. ``READY=1``)."""
        give_up = time.monotonic() + timeout
        seen: list[Notification] = []
        credentials = struct.Struct("iII")  # struct ucred
        while True:
            self.sock.settimeout(max(0.01, give_up - time.monotonic()))
            try:
                data, ancillary, _flags, _address = self.sock.recvmsg(
                    4096, socket.CMSG_SPACE(credentials.size))
            except socket.timeout:
                raise AssertionError(f"no {field} within {timeout} s; got {seen}") from None
            pid = uid = gid = -1
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid, uid, gid = credentials.unpack(payload[:credentials.size])
            note = Notification(data.decode().split("\n"), pid, uid, gid)
            seen.append(note)
            self.received.append(note)
            if field in note.fields:
                return seen


def proc_status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as status:
        return dict(line.rstrip("\n").split(":\t", 1) for line in status if ":\t" in line)


def write_config(staged: Staged, sim: VicidialSimulator, port: int, *, source: str = "vicirec") -> Path:
    """The staged config, rewritten in place: it stays 0640 root:asterisk as installed."""
    text = toml_text({
        "vicidial": {"api_url": sim.api_url, "user": LAB_API_USER, "password": LAB_API_PASSWORD,
                     "source": source},
        "log": {"target": "file", "path": str(staged.log_dir / "vicirec.log"), "level": "info"},
        "audit": {"path": str(staged.state_dir / "audit.jsonl")},
        "fastagi": {"host": HOST, "port": port},
    })
    staged.config.write_text(text, encoding="utf-8")
    return staged.config


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def start_service(
    staged: Staged, notify: Path, stderr: Path, *, supplementary: bool = True
) -> subprocess.Popen[bytes]:
    with stderr.open("wb") as err:
        return subprocess.Popen(staged.as_service(staged.exec_start(), supplementary=supplementary),
                                env=staged.environment(notify), cwd="/", stdin=subprocess.DEVNULL,
                                stdout=err, stderr=err)


def run_as_service(staged: Staged, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(staged.as_service(argv), check=False, capture_output=True, text=True, timeout=30,
                          cwd="/", env=staged.environment(None))


def log_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def owner_and_mode(path: Path) -> tuple[int, int, int]:
    info = path.stat()
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


def agi(port: int, args: list[str]) -> AgiRun:
    return ASTERISK.run_fastagi(HOST, port, "vicirec", args, caller_channel(), timeout=10.0)


def variables(run: AgiRun) -> Mapping[str, str]:
    return {k: v for k, v in run.channel.variables.items() if k.startswith("VICIREC_")}


# --- the tests ----------------------------------------------------------------------------------


def test_unit_runs_the_daemon_as_its_user_and_reloads_and_stops(
    staged: Staged, sim: VicidialSimulator
) -> None:
    sim.reset()
    port = free_port()
    config = write_config(staged, sim, port, source="first")
    assert owner_and_mode(config) == (0, staged.asterisk_gid, 0o640)
    log = staged.log_dir / "vicirec.log"
    audit = staged.state_dir / "audit.jsonl"
    argv = staged.exec_start()
    assert Path(argv[0]).is_file() and os.access(argv[0], os.X_OK), argv

    notify = CheckedNotifySocket(staged.base / "notify.sock")
    stderr = staged.base / "serve.stderr"
    process = start_service(staged, notify.path, stderr)
    try:
        ready = notify.wait_for("READY=1")
        main_pid = process.pid
        # NotifyAccess=main: systemd ignores messages from any other process
        assert {(n.pid, n.uid) for n in ready} == {(main_pid, staged.uid)}, ready

        status = proc_status(main_pid)
        assert status["Uid"].split() == [str(staged.uid)] * 4
        assert status["Gid"].split() == [str(staged.gid)] * 4
        assert status["Groups"].split() == [str(staged.asterisk_gid)]
        assert status["Umask"] == f"{staged.unit.umask:04o}"
        assert status["NoNewPrivs"] == "1"
        assert int(status["CapEff"], 16) == int(status["CapBnd"], 16) == 0
        assert os.readlink(f"/proc/{main_pid}/cwd") == "/"
        environ = dict(item.partition("=")[::2] for item in
                       Path(f"/proc/{main_pid}/environ").read_text().split("\0") if item)
        assert staged.unit.environment and staged.unit.environment.items() <= environ.items()
        listening = [e for e in log_events(log) if e["event"] == "fastagi_listening"]
        assert listening and listening[-1]["pid"] == main_pid and listening[-1]["port"] == port
        assert listening[-1]["config"] == str(config)

        start = agi(port, ["START", "agent=1000"])
        assert start.agistatus == "SUCCESS", start.dump()
        assert (variables(start)["VICIREC_RESULT"], variables(start)["VICIREC_AGENT"]) == ("OK", "1000"), \
            start.dump()
        assert sim.starts_for("1000") == 1
        sim.run_screen()  # the agent screen carries out the START
        state = agi(port, ["STATUS", "agent=1000"])
        assert state.agistatus == "SUCCESS", state.dump()
        assert (variables(state)["VICIREC_RESULT"], variables(state)["VICIREC_RECORDING"]) == ("OK", "1"), \
            state.dump()
        assert sim.requests[-1].params["source"] == "first"

        # what the daemon made in its ReadWritePaths: shared with the process AGI (group asterisk)
        for made, mode in ((log, 0o660), (audit, 0o660), (Path(f"{audit}.key"), 0o640)):
            assert owner_and_mode(made) == (staged.uid, staged.asterisk_gid, mode), made
        records = [json.loads(line) for line in audit.read_text().splitlines()]
        assert [(r["action"], r["outcome"], r["transport"], r["agent"]) for r in records] == [
            ("START", "OK", "fastagi", "1000"), ("STATUS", "OK", "fastagi", "1000")]

        # the service user reads its config but can neither change it nor add files beside it
        assert run_as_service(staged, ["/bin/cat", str(config)]).returncode == 0
        before = config.read_bytes()
        for target in (config, config.with_name("vicirec.toml.new")):
            denied = run_as_service(staged, ["/bin/sh", "-c", 'exec 3>>"$1"', "sh", str(target)])
            assert denied.returncode != 0 and "denied" in denied.stderr.lower(), (target, denied)
        assert config.read_bytes() == before and not config.with_name("vicirec.toml.new").exists()

        # logrotate (create 0660 asterisk asterisk), then its postrotate `systemctl reload`:
        # ExecReload with $MAINPID, run as the service user as systemd does
        log.rename(log.with_name("vicirec.log.1"))
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o660)
        os.fchown(fd, 0, staged.asterisk_gid)
        os.fchmod(fd, 0o660)
        os.close(fd)
        write_config(staged, sim, port, source="second")
        reload = [word.replace("$MAINPID", str(main_pid)) for word in staged.unit.exec_reload]
        assert run_as_service(staged, reload).returncode == 0
        reloaded = notify.wait_for("READY=1")
        assert "RELOADING=1" in reloaded[0].fields, reloaded
        assert any(f.startswith("MONOTONIC_USEC=") for f in reloaded[0].fields)
        assert {n.pid for n in reloaded} == {main_pid}
        assert process.poll() is None
        after = agi(port, ["STATUS", "agent=1000"])
        assert variables(after)["VICIREC_RESULT"] == "OK", after.dump()
        assert sim.requests[-1].params["source"] == "second"
        assert "fastagi_reloaded" in [e["event"] for e in log_events(log)]  # written to the new file
        assert owner_and_mode(log) == (0, staged.asterisk_gid, 0o660)

        # systemctl stop: SIGTERM to the main process (KillMode=mixed), exit 0 is a clean stop
        process.send_signal(signal.SIGTERM)
        stopping = notify.wait_for("STOPPING=1")
        assert {n.pid for n in stopping} == {main_pid}
        assert process.wait(timeout=15.0) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5.0)
        notify.close()
    assert log_events(log)[-1]["event"] == "fastagi_stopped"
    errors = stderr.read_bytes()
    assert b"Traceback" not in errors and b"Permission denied" not in errors, errors.decode(errors="replace")


@pytest.mark.parametrize("case", ["broken-config", "no-supplementary-group"])
def test_config_errors_exit_with_a_status_the_unit_does_not_restart(
    staged: Staged, sim: VicidialSimulator, case: str
) -> None:
    config = write_config(staged, sim, free_port())
    if case == "broken-config":
        config.write_text("[vicidial\nnot toml\n", encoding="utf-8")
        expected = "is not valid TOML"
    else:
        expected = f"is not readable by uid {staged.uid}"  # what SupplementaryGroups= is there for
    assert owner_and_mode(config) == (0, staged.asterisk_gid, 0o640)
    notify = CheckedNotifySocket(staged.base / f"notify-{case}.sock")
    stderr = staged.base / f"serve-{case}.stderr"
    try:
        process = start_service(staged, notify.path, stderr, supplementary=case == "broken-config")
        try:
            code = process.wait(timeout=20.0)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=5.0)
        said = _drain(notify)
    finally:
        notify.close()
    assert code == 78, stderr.read_text(errors="replace")
    assert str(code) in staged.unit.restart_prevent_exit_status
    errors = stderr.read_text(errors="replace")
    assert "vicirec serve: " in errors and expected in errors, errors
    assert "Traceback" not in errors
    fields = [f for n in said for f in n.fields]
    assert "READY=1" not in fields
    assert any(f.startswith("STATUS=config error:") and expected in f for f in fields), said
    assert {n.pid for n in said} == {process.pid}


def _drain(notify: CheckedNotifySocket) -> list[Notification]:
    """Every notification already queued (the sender has exited)."""
    try:
        notify.wait_for("\0never\0", timeout=0.2)
    except AssertionError:
        pass
    return list(notify.received)
