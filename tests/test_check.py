"""``vicirec check`` asks VICIdial, safely, and judges the install as Asterisk's group meets it.

Every failure mode an administrator meets on day one, against the simulator (real HTTP) and real
files: a wrong password (which costs exactly one failed login), an unreachable server, a host that
does not resolve, the unedited template, bad permissions, a missing ``vicirec.agi``, a resolver the
lookup cannot serve, and which path calls take (a running ``vicirec serve`` or the process AGI).
"""

# The fixture is imported by name (no pytest_plugins), so test parameters named after it "redefine" it.
# ruff: noqa: F811

from __future__ import annotations

import grp
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest

from mariadb_server import MariaDb, mariadb  # noqa: F401 - mariadb is a fixture
from test_retry_server import refused_port
from vicirec.commands.check_remote import PROBE_AGENT
from vicirec.testing.harness import TomlValue, write_config
from vicirec.testing.simulator import VicidialSimulator

ROOT = Path(__file__).resolve().parent.parent
WRONG = "Wr0ng-Pa55w0rd"
GROUP = grp.getgrgid(os.getgid()).gr_name


@pytest.fixture(scope="module")
def sim() -> Iterator[VicidialSimulator]:
    with VicidialSimulator(screen_delay=None) as simulator:
        yield simulator


@dataclass
class Install:
    """A telephony server's files in a private tree: what deploy/install.sh lays out."""

    root: Path
    sim: VicidialSimulator

    @property
    def agi_bin(self) -> Path:
        return self.root / "agi-bin"

    @property
    def etc(self) -> Path:
        return self.root / "asterisk"

    def config(self, api_url: Optional[str] = None, *, password: Optional[str] = None,
               overrides: Optional[dict[str, dict[str, TomlValue]]] = None) -> Path:
        sections: dict[str, dict[str, TomlValue]] = {
            "log": {"path": str(self.root / "log" / "vicirec.log")},
            "audit": {"path": str(self.root / "lib" / "audit.jsonl")},
        }
        for name, values in (overrides or {}).items():
            sections.setdefault(name, {}).update(values)
        extra: dict[str, Any] = {} if password is None else {"password": password}
        return write_config(self.root, api_url or self.sim.api_url, overrides=sections, **extra)

    def check(self, config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vicirec", "check", "--config", str(config), "--group", GROUP,
             "--agi-bin", str(self.agi_bin), "--asterisk-etc", str(self.etc), *extra],
            capture_output=True, text=True, timeout=60, check=False,
        )


@pytest.fixture()
def install(sim: VicidialSimulator) -> Iterator[Install]:
    sim.reset()
    # Not under pytest's 0700 tmp_path: the group must be able to reach the files.
    root = Path(tempfile.mkdtemp(prefix="vicirec-check-"))
    try:
        root.chmod(0o755)
        for name in ("log", "lib"):
            (root / name).mkdir()
            (root / name).chmod(0o2770)
        (root / "agi-bin").mkdir(mode=0o755)
        (root / "asterisk").mkdir(mode=0o755)
        script = root / "agi-bin" / "vicirec.agi"
        script.write_text("#!/opt/vicirec/venv/bin/python3 -I\nfrom vicirec.process_agi import main\n")
        script.chmod(0o755)
        yield Install(root, sim)
    finally:
        shutil.rmtree(root)


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def lines(run: subprocess.CompletedProcess[str], level: str) -> list[str]:
    text = run.stdout if level == "OK" else run.stderr
    return [line.split(f": {level}: ", 1)[1] for line in text.splitlines() if f": {level}: " in line]


def test_a_working_install_passes_with_one_harmless_request_each(install: Install) -> None:
    run = install.check(install.config())
    assert run.returncode == 0, run
    found = lines(run, "OK")
    assert any("agent API" in line and "recording function" in line for line in found), found
    assert any("logged_in_agents answered" in line for line in found), found
    if not listening(4573):  # another daemon on this machine's default port would take the calls
        assert any("calls take the process AGI" in line and "default" in line for line in found), found
    assert run.stdout.splitlines()[-1].endswith("OK: the AGI would work as configured")
    sim = install.sim
    assert [(r.path, r.params.get("function"), r.params.get("value")) for r in sim.requests] == [
        ("/agc/api.php", "recording", "STATUS"), ("/vicidial/non_agent_api.php", "logged_in_agents", None)]
    assert sim.requests[0].params["agent_user"] == PROBE_AGENT


def test_a_wrong_password_costs_exactly_one_login(install: Install) -> None:
    run = install.check(install.config(password=WRONG))
    assert run.returncode == 1, run
    errors = lines(run, "ERROR")
    assert any("rejected the API user or password" in line and "user and password" in line
               for line in errors), errors
    user = install.sim.state.user("6666")
    assert user is not None and user.failed_login_count == 1
    assert len(install.sim.requests) == 1  # never retried; the lookup is not asked with it
    assert WRONG not in run.stdout + run.stderr


def test_a_locked_out_user_is_told_to_wait(install: Install) -> None:
    user = install.sim.state.user("6666")
    assert user is not None
    user.failed_login_count, user.last_login_date = 10, int(time.time())
    run = install.check(install.config())
    assert run.returncode == 1
    assert any("locked out" in line and "15-minute lock-out to end" in line for line in lines(run, "ERROR"))
    assert len(install.sim.requests) == 1


def test_a_refused_server_is_an_error_at_once(install: Install) -> None:
    holder, port = refused_port()
    try:
        began = time.monotonic()
        run = install.check(install.config(f"http://127.0.0.1:{port}/agc/api.php"))
    finally:
        holder.close()
    assert run.returncode == 1
    errors = lines(run, "ERROR")
    assert any("connection refused" in line and "firewall" in line for line in errors), run.stderr
    assert time.monotonic() - began < 5.0


def test_port_1_is_unreachable(install: Install) -> None:
    run = install.check(install.config("http://127.0.0.1:1/agc/api.php"))
    assert run.returncode == 1
    assert any("cannot connect to VICIdial" in line for line in lines(run, "ERROR")), run.stderr


def test_a_host_that_does_not_resolve(install: Install) -> None:
    run = install.check(install.config("https://no-such-host.invalid/agc/api.php"))
    assert run.returncode == 1
    assert any("host name does not resolve" in line for line in lines(run, "ERROR")), run.stderr


def test_the_unedited_template_fails_without_asking_anyone(install: Install) -> None:
    config = install.root / "template.toml"
    shutil.copy(ROOT / "deploy" / "vicirec.toml.example", config)
    config.chmod(0o640)
    run = install.check(config)
    assert run.returncode == 1
    assert any("template's dialer.example.com" in line for line in lines(run, "ERROR")), run.stderr
    assert install.sim.requests == []


def test_a_log_directory_only_root_can_write(install: Install) -> None:
    (install.root / "log").chmod(0o2750)
    run = install.check(install.config())
    assert run.returncode == 1
    assert any(f"{install.root / 'log'} is not writable by group {GROUP}" in line and "chmod 2770" in line
               for line in lines(run, "ERROR")), run.stderr


def test_an_audit_file_the_group_cannot_write(install: Install) -> None:
    audit = install.root / "lib" / "audit.jsonl"
    audit.write_text("")
    audit.chmod(0o640)
    run = install.check(install.config())
    assert run.returncode == 1
    assert any(f"audit trail {audit} is not writable" in line for line in lines(run, "ERROR")), run.stderr


def test_a_config_only_root_can_read(install: Install) -> None:
    config = install.config()
    config.chmod(0o600)
    run = install.check(config)
    assert run.returncode == 1
    assert any(f"{config} is not readable by group" in line and "chmod 0640" in line
               for line in lines(run, "ERROR")), run.stderr


def test_a_missing_or_unexecutable_agi_script(install: Install) -> None:
    script = install.agi_bin / "vicirec.agi"
    script.chmod(0o644)
    run = install.check(install.config())
    assert run.returncode == 1
    assert any("is not executable" in line for line in lines(run, "ERROR")), run.stderr
    script.unlink()
    run = install.check(install.config())
    assert run.returncode == 1
    assert any("vicirec.agi does not exist" in line and "install.sh" in line
               for line in lines(run, "ERROR")), run.stderr


def test_bridge_peer_with_the_http_lookup_is_named(install: Install) -> None:
    run = install.check(install.config(overrides={"agents": {"resolvers": ["argument", "bridge_peer"]}}))
    assert run.returncode == 0, run  # the AGI works; that resolver never matches
    assert any("bridge_peer" in line and 'lookup = "http"' in line for line in lines(run, "WARNING"))


def test_the_lookup_needs_view_reports(install: Install) -> None:
    user = install.sim.state.user("6666")
    assert user is not None
    user.view_reports = False
    run = install.check(install.config())
    assert run.returncode == 1
    errors = lines(run, "ERROR")
    assert any("logged_in_agents" in line and "view_reports=1" in line for line in errors), run.stderr


def test_offline_asks_no_one(install: Install) -> None:
    run = install.check(install.config("http://127.0.0.1:1/agc/api.php"), "--offline")
    assert run.returncode == 0, run
    assert install.sim.requests == []


def test_calls_take_the_daemon_the_dialplan_names_when_it_answers(install: Install) -> None:
    config = install.config()
    command = [sys.executable, "-m", "vicirec", "serve", "--config", str(config), "--port", "0"]
    serve = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        assert serve.stderr is not None
        started = serve.stderr.readline()  # vicirec serve: listening on 127.0.0.1:PORT, ...
        port = int(started.split("listening on 127.0.0.1:")[1].split(",")[0])
        (install.etc / "extensions.conf").write_text(
            f"[globals]\n; VICIREC_AGI=vicirec.agi\nVICIREC_AGI=agi://127.0.0.1:{port}/vicirec\n\n[default]\n")
        run = install.check(config)
    finally:
        serve.terminate()
        serve.wait(timeout=20)
    assert run.returncode == 0, run
    assert any(f"calls take the FastAGI daemon at 127.0.0.1:{port}" in line and "extensions.conf:3" in line
               for line in lines(run, "OK")), run.stdout
    run = install.check(config)  # the daemon is gone: Asterisk falls back to the process AGI
    assert any("nothing listens" in line and "fall back to the process AGI" in line
               for line in lines(run, "WARNING")), run.stderr


def test_a_daemon_on_another_address_than_the_dialplan_tries(install: Install) -> None:
    holder, refused = refused_port()
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        port = spare.getsockname()[1]
    config = install.config(overrides={"fastagi": {"port": port}})
    (install.etc / "extensions_custom.conf").write_text(
        f"[globals]\nVICIREC_AGI => agi://127.0.0.1:{refused}/vicirec\n")
    serve = subprocess.Popen([sys.executable, "-m", "vicirec", "serve", "--config", str(config)],
                             stderr=subprocess.PIPE, text=True)
    try:
        assert serve.stderr is not None and "listening on" in serve.stderr.readline()
        run = install.check(config)
    finally:
        serve.terminate()
        serve.wait(timeout=20)
        holder.close()
    assert run.returncode == 0, run  # calls still work: the process AGI takes them
    warnings = lines(run, "WARNING")
    assert any(f"nothing listens at 127.0.0.1:{refused}" in line for line in warnings), warnings
    hint = f"VICIREC_AGI=agi://127.0.0.1:{port}/vicirec"
    assert any(f"answers at 127.0.0.1:{port}" in line and hint in line for line in warnings), warnings


@pytest.mark.mysql
def test_the_mysql_lookup_runs_its_select_once(install: Install, mariadb: MariaDb) -> None:
    conf = mariadb.astguiclient_conf(install.root / "astguiclient.conf")
    run = install.check(install.config(overrides={"agents": {"lookup": "mysql",
                                                             "astguiclient_conf": str(conf)}}))
    assert run.returncode == 0, run
    assert any("SELECT on vicidial_live_agents ran" in line for line in lines(run, "OK")), run.stdout
    assert install.sim.count(function="logged_in_agents") == 0
    bad = mariadb.astguiclient_conf(install.root / "bad.conf", password=WRONG)
    run = install.check(install.config(overrides={"agents": {"lookup": "mysql",
                                                             "astguiclient_conf": str(bad)}}))
    assert run.returncode == 1
    assert any("refused user" in line and "VARDB_" in line for line in lines(run, "ERROR")), run.stderr
    assert WRONG not in run.stdout + run.stderr
