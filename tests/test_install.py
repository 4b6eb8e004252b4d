"""deploy/install.sh, run for real into temporary roots, and the files it installs.

The installer is run twice into one root (the second run must change nothing an admin owns), once
more with non-default paths, and once with --no-systemd. The venv is built offline: the test picks
an interpreter whose base installation has setuptools>=61 and wheel (Debian's /usr/bin/python3 with
python3-wheel is the usual one; the test runner's own venv has no ``wheel``), creates the venv with
--venv-system-site-packages and installs with ``--no-deps --no-build-isolation --no-index``.
"""

from __future__ import annotations

import functools
import grp
import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "deploy" / "install.sh"
UNIT = REPO / "deploy" / "vicirec-fastagi.service"
TEMPLATE = REPO / "deploy" / "vicirec.toml.example"
OFFLINE_PIP = "--no-deps --no-build-isolation --no-index"

pytestmark = pytest.mark.slow

_BACKEND_CHECK = (
    "import ensurepip, venv, setuptools, wheel, sys; "
    "sys.exit(int(setuptools.__version__.split('.')[0]) < 61)"
)


def _base_interpreter(python: str) -> Optional[str]:
    res = subprocess.run(
        [python, "-c", "import sys; print(getattr(sys, '_base_executable', sys.executable))"],
        check=False, capture_output=True, text=True, timeout=30,
    )
    return res.stdout.strip() if res.returncode == 0 else None


@functools.cache
def pick_python() -> tuple[str, tuple[str, ...]]:
    """(interpreter for --python, extra installer options) that build the package offline."""
    for candidate in (sys.executable, "/usr/bin/python3", shutil.which("python3") or ""):
        if not candidate or not os.path.exists(candidate):
            continue
        base = _base_interpreter(candidate)
        if not base:
            continue
        ok = subprocess.run([base, "-I", "-c", _BACKEND_CHECK], check=False, capture_output=True, timeout=30)
        if ok.returncode == 0:
            return candidate, ("--venv-system-site-packages", "--pip-args", OFFLINE_PIP)
    # No offline build backend anywhere: let pip fetch setuptools/wheel for the isolated build.
    return sys.executable, ("--pip-args", "--no-deps")


@dataclass
class Run:
    root: Path
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_installer(root: Path, *options: str, check: bool = True, tmpdir: Optional[Path] = None) -> Run:
    python, py_options = pick_python()
    args = ["bash", str(INSTALL), "--root", str(root), "--python", python, *py_options, *options]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV", "PYTHON"))}
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    started = time.monotonic()
    res = subprocess.run(args, check=False, capture_output=True, text=True, timeout=300, env=env)
    run = Run(root, res.returncode, res.stdout, res.stderr, time.monotonic() - started)
    if check:
        assert run.returncode == 0, f"installer failed ({res.returncode}):\n{run.output}"
    return run


def current_group() -> str:
    return grp.getgrgid(os.getgid()).gr_name


@dataclass
class Installed:
    first: Run
    second: Run
    marker: str
    agi_after_first: bytes

    @property
    def root(self) -> Path:
        return self.first.root


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("root")
    first = run_installer(root)  # default --group asterisk (absent here: a warning, no chgrp)
    agi = (root / "var/lib/asterisk/agi-bin/vicirec.agi").read_bytes()
    marker = "# admin edit: must survive a re-install\n"
    with (root / "etc/vicirec/vicirec.toml").open("a", encoding="utf-8") as fh:
        fh.write(marker)
    second = run_installer(root)
    return Installed(first, second, marker, agi)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def shebang(path: Path) -> list[str]:
    first = path.read_bytes().split(b"\n", 1)[0].decode()
    assert first.startswith("#!")
    return first[2:].split()


# ---------------------------------------------------------------------------------------------


def test_help_lists_every_option() -> None:
    res = subprocess.run(["bash", str(INSTALL), "--help"], check=False, capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == 0
    for option in ("--root", "--prefix", "--python", "--agi-bin", "--asterisk-etc", "--config-dir", "--group",
                   "--source", "--pip-args", "--with-mysql", "--no-systemd", "--venv-system-site-packages",
                   "--asterisk-user", "--astguiclient-conf", "--lookup", "--log-dir", "--state-dir",
                   "--logrotate-dir", "--no-logrotate", "--systemd-dir", "--bin-dir", "--no-bin-link"):
        assert option in res.stdout, option


@pytest.mark.parametrize("args", [["--bogus"], ["--prefix"], ["--prefix", "relative/path"],
                                  ["--source", "/nonexistent-vicirec-src"],
                                  ["--prefix", "/opt/with space"], ["--log-dir", "/var/log/a|b"],
                                  ["--lookup", "ldap"], ["--group", "wheel;rm"]])
def test_bad_options_fail_before_touching_anything(tmp_path: Path, args: list[str]) -> None:
    res = subprocess.run(["bash", str(INSTALL), "--root", str(tmp_path / "r"), *args], check=False,
                         capture_output=True, text=True, timeout=30)
    assert res.returncode != 0
    assert "error" in res.stderr
    assert not (tmp_path / "r").exists()


def test_installer_is_strict_bash() -> None:
    head = INSTALL.read_text(encoding="utf-8").splitlines()[:10]
    assert head[0] == "#!/usr/bin/env bash"
    assert "set -euo pipefail" in head
    assert os.access(INSTALL, os.X_OK)


def test_shellcheck_clean() -> None:
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    res = subprocess.run(["shellcheck", str(INSTALL)], check=False, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_venv_created_with_the_package(installed: Installed) -> None:
    venv = installed.root / "opt/vicirec/venv"
    assert (venv / "pyvenv.cfg").is_file()
    assert (venv / "bin/python3").exists()
    assert (venv / "bin/vicirec").is_file()
    assert (venv / "bin/vicirec-agi").is_file()
    assert "creating the virtualenv" in installed.first.stdout


def test_agi_wrapper_has_an_absolute_interpreter_and_no_env(installed: Installed) -> None:
    agi = installed.root / "var/lib/asterisk/agi-bin/vicirec.agi"
    assert mode(agi) == 0o755
    words = shebang(agi)
    assert words == ["/opt/vicirec/venv/bin/python3", "-I"]
    assert "env" not in Path(words[0]).name
    body = agi.read_text(encoding="utf-8")
    assert "from vicirec.process_agi import main\nraise SystemExit(main())\n" in body
    compile(body, str(agi), "exec")
    assert not (installed.root / "usr/bin/env").exists()


def test_shebang_interpreter_runs_import_vicirec(installed: Installed) -> None:
    interp = installed.root / shebang(installed.root / "var/lib/asterisk/agi-bin/vicirec.agi")[0].lstrip("/")
    code = "import vicirec, sys; print(vicirec.__file__); print(sys.prefix)"
    res = subprocess.run([str(interp), "-I", "-c", code],
                         check=False, capture_output=True, text=True, timeout=60, cwd="/")
    assert res.returncode == 0, res.stderr
    module_file, prefix = res.stdout.split()
    # the installed copy, not the repository's source tree
    assert Path(module_file).is_relative_to(installed.root / "opt/vicirec/venv")
    assert Path(prefix) == installed.root / "opt/vicirec/venv"
    ok = subprocess.run([str(interp), "-I", "-c", "import vicirec.process_agi"], check=False,
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr


ENV_BLOCK = [
    ("agi_request", "vicirec.agi"), ("agi_channel", "PJSIP/1000-00000001"), ("agi_language", "en"),
    ("agi_type", "PJSIP"), ("agi_uniqueid", "1795459445.24"), ("agi_version", "22.10.1"),
    ("agi_callerid", "5551234"), ("agi_calleridname", "V1123181500000000001"), ("agi_callingpres", "0"),
    ("agi_callingani2", "0"), ("agi_callington", "0"), ("agi_callingtns", "0"), ("agi_dnid", "unknown"),
    ("agi_rdnis", "unknown"), ("agi_context", "vicirec"), ("agi_extension", "run"), ("agi_priority", "20"),
    ("agi_enhanced", "0.0"), ("agi_accountcode", ""), ("agi_threadid", "1"),
    ("agi_arg_1", "START"), ("agi_arg_2", "_CONSENT"), ("agi_arg_3", "confirm=3"),
]


def run_staged_agi(root: Path, agi: Path, env: dict[str, str]) -> dict[str, str]:
    """Run a staged vicirec.agi the way Asterisk does (argv + env block on stdin, a reply to each
    command) and return the variables it set. The staged venv was installed with --no-deps; a .pth
    file lends it this test run's own site-packages for the dependencies."""
    venv = root / Path(shebang(agi)[0]).parent.parent.relative_to("/")  # the staged venv of its shebang
    purelib = subprocess.run([str(venv / "bin/python3"), "-I", "-c",
                              "import sysconfig, sys; print(sysconfig.get_paths()['purelib']); "
                              "print('{}.{}'.format(*sys.version_info[:2]))"],
                             check=True, capture_output=True, text=True, timeout=60).stdout.split()
    if purelib[1] != "{}.{}".format(*sys.version_info[:2]):
        pytest.skip(f"the staged venv is Python {purelib[1]}, this test run {sys.version_info[:2]}")
    bridge = Path(purelib[0]) / "zz_test_bridge.pth"
    bridge.write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    try:
        proc = subprocess.Popen([str(venv / "bin/python3"), "-I", str(agi), "START", "_CONSENT", "confirm=3"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=env, cwd="/")
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(("".join(f"{k}: {v}\n" for k, v in ENV_BLOCK) + "\n").encode())
        proc.stdin.flush()
        commands = []
        for line in proc.stdout:
            commands.append(line.decode().rstrip("\n"))
            proc.stdin.write(b"200 result=1\n")
            proc.stdin.flush()
            assert len(commands) < 200
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
    finally:
        bridge.unlink()
    return dict(re.findall(r'^SET VARIABLE (\w+) "(.*)"$', "\n".join(commands), re.MULTILINE))


def test_installed_agi_speaks_agi_end_to_end(installed: Installed, tmp_path: Path) -> None:
    """With no config file the AGI must still report, and exit 0."""
    agi = installed.root / "var/lib/asterisk/agi-bin/vicirec.agi"
    env = {"PATH": "/usr/bin:/bin", "VICIREC_CONFIG": str(tmp_path / "missing.toml"),
           "AST_AGI_DIR": str(agi.parent)}
    sets = run_staged_agi(installed.root, agi, env)
    assert sets.get("VICIREC_RESULT") == "ERROR", sets
    assert sets.get("VICIREC_ERROR") == "CONFIG", sets
    assert "missing.toml" in sets["VICIREC_MESSAGE"]  # Asterisk's VICIREC_CONFIG still wins


def test_config_installed_private_and_complete(installed: Installed) -> None:
    conf_dir = installed.root / "etc/vicirec"
    conf = conf_dir / "vicirec.toml"
    assert mode(conf_dir) == 0o750
    assert mode(conf) == 0o640
    assert conf.stat().st_uid == os.getuid()
    try:
        asterisk_gid: Optional[int] = grp.getgrnam("asterisk").gr_gid
    except KeyError:
        asterisk_gid = None
    if os.getuid() == 0 and asterisk_gid is not None:
        assert conf.stat().st_gid == asterisk_gid
    else:
        assert conf.stat().st_gid == os.getgid()
        assert "group ownership" in installed.first.stderr or "group 'asterisk' does not exist" in \
            installed.first.stderr
    assert conf.read_text(encoding="utf-8").startswith(TEMPLATE.read_text(encoding="utf-8"))
    assert (conf_dir / "vicirec.toml.example").read_bytes() == TEMPLATE.read_bytes()
    assert "vicirec.toml from the template" in installed.first.stdout


def test_second_run_keeps_the_admins_config_and_is_idempotent(installed: Installed) -> None:
    conf = installed.root / "etc/vicirec/vicirec.toml"
    assert conf.read_text(encoding="utf-8").endswith(installed.marker)
    assert mode(conf) == 0o640
    assert "kept the existing" in installed.second.stdout
    assert "using the existing virtualenv" in installed.second.stdout
    agi = installed.root / "var/lib/asterisk/agi-bin/vicirec.agi"
    assert agi.read_bytes() == installed.agi_after_first
    lib = installed.root / "etc/asterisk"
    assert not list(lib.glob("extensions_vicirec.conf.*.bak"))  # unchanged library: no backup


def test_dialplan_library_and_examples_installed_and_include_printed(installed: Installed) -> None:
    etc = installed.root / "etc/asterisk"
    library = (REPO / "dialplan/extensions_vicirec.conf").read_bytes()
    assert (etc / "extensions_vicirec.conf").read_bytes() == library
    shipped = sorted(p.name for p in (REPO / "dialplan/examples").iterdir() if p.is_file())
    assert sorted(p.name for p in (etc / "vicirec-examples").iterdir()) == shipped
    assert "#include extensions_vicirec.conf" in installed.first.stdout
    assert not (etc / "extensions.conf").exists()  # printed, never edited


def test_rerun_with_no_systemd_and_an_existing_include(installed: Installed) -> None:
    ext = installed.root / "etc/asterisk/extensions.conf"
    ext.write_text("[globals]\n#include extensions_vicirec.conf\n", encoding="utf-8")
    unit = installed.root / "etc/systemd/system/vicirec-fastagi.service"
    unit_mtime = unit.stat().st_mtime_ns
    try:
        run = run_installer(installed.root, "--no-systemd")
    finally:
        ext.unlink()
    assert "already includes extensions_vicirec.conf" in run.stdout
    assert "vicirec-fastagi.service" not in run.output
    assert "systemctl" not in run.stdout
    assert unit.stat().st_mtime_ns == unit_mtime


def test_log_and_state_dirs_and_logrotate(installed: Installed) -> None:
    for d in ("var/log/vicirec", "var/lib/vicirec"):
        assert mode(installed.root / d) == 0o2770, d
    rotate = (installed.root / "etc/logrotate.d/vicirec").read_text(encoding="utf-8")
    assert "/var/log/vicirec/*.log" in rotate
    assert re.search(r"^\s*create 06[64]0 asterisk asterisk$", rotate, re.MULTILINE)
    assert "systemctl reload vicirec-fastagi.service" in rotate
    audit_stanza = rotate[rotate.index("/var/lib/vicirec/*.jsonl"):]
    assert not re.search(r"^\s*copytruncate", rotate, re.MULTILINE) and "rotate 84" in audit_stanza


def unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


HARDENING = {
    "Type": "notify",
    "ExecStart": "/opt/vicirec/venv/bin/vicirec serve --config /etc/vicirec/vicirec.toml",
    "ExecReload": "/bin/kill -HUP $MAINPID",
    "User": "vicirec",
    "Group": "vicirec",
    "SupplementaryGroups": "asterisk",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "ReadWritePaths": "/var/log/vicirec /var/lib/vicirec",
    "CapabilityBoundingSet": "",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "RestrictRealtime": "yes",
    "SystemCallArchitectures": "native",
    "Restart": "on-failure",
    "RestartPreventExitStatus": "78",
    "RestartSec": "2",
    "TimeoutStopSec": "20",
    "KillMode": "mixed",
    "LimitNOFILE": "65536",
}


def test_unit_installed_with_the_hardening(installed: Installed) -> None:
    unit = installed.root / "etc/systemd/system/vicirec-fastagi.service"
    assert unit.read_bytes() == UNIT.read_bytes()  # default paths: installed as shipped
    settings = unit_settings(unit.read_text(encoding="utf-8"))
    for key, value in HARDENING.items():
        assert settings.get(key) == [value], f"{key}: {settings.get(key)}"
    assert settings["WantedBy"] == ["multi-user.target"]
    # never started or enabled by the installer
    assert not (installed.root / "etc/systemd/system/multi-user.target.wants").exists()
    assert "systemctl enable --now vicirec-fastagi.service" in installed.first.stdout


def test_unit_passes_systemd_analyze_verify(installed: Installed) -> None:
    tool = shutil.which("systemd-analyze")
    if not tool:
        pytest.skip("systemd-analyze is not installed")
    unit = installed.root / "etc/systemd/system/vicirec-fastagi.service"
    res = subprocess.run([tool, "verify", str(unit)], check=False, capture_output=True, text=True, timeout=60)
    complaints = []
    for line in (res.stdout + res.stderr).splitlines():
        # the daemon's binary lives at the final path, which does not exist on this machine
        m = re.search(r"Command (\S+) is not executable: No such file or directory", line)
        if m and not Path(m.group(1)).exists():
            continue
        if line.strip():
            complaints.append(line)
    assert complaints == [], "\n".join(complaints)
    security = subprocess.run([tool, "security", "--offline=yes", str(unit)], check=False,
                              capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", security.stdout + security.stderr)
    if m:  # systemd >= 250
        assert float(m.group(1)) <= 3.0, security.stdout[-2000:]


def test_template_names_every_key_with_a_comment() -> None:
    try:
        import tomllib  # noqa: PLC0415
    except ImportError:  # Python < 3.11
        import tomli as tomllib  # type: ignore[no-redef]  # noqa: PLC0415

    data = tomllib.loads(TEMPLATE.read_text(encoding="utf-8"))
    # every key the loader knows, so a new setting cannot be left out of the template
    from dataclasses import fields  # noqa: PLC0415

    from vicirec.config import Config  # noqa: PLC0415

    defaults = Config()
    expected = {section: {f.name for f in fields(getattr(defaults, section))}
                for section in ("vicidial", "call", "agents", "log", "audit", "fastagi")}
    assert {k: set(v) for k, v in data.items()} == expected
    # every group of key lines is preceded by a comment explaining it
    lines = TEMPLATE.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^\w+ = ", line) and not re.match(r"^\w+ = ", lines[i - 1]):
            assert lines[i - 1].startswith("#"), f"line {i + 1} {line!r} has no comment above it"
    try:
        from vicirec.config import config_from_mapping  # noqa: PLC0415
    except ImportError:  # pragma: no cover - the package is not importable in this environment
        return
    config_from_mapping(data)  # the template is a valid config as shipped


def test_custom_paths_reach_the_shebang_the_unit_and_the_layout(tmp_path: Path) -> None:
    run = run_installer(tmp_path, "--prefix", "/srv/vicirec", "--config-dir", "/etc/vr",
                        "--agi-bin", "/usr/share/asterisk/agi-bin", "--asterisk-etc", "/etc/ast",
                        "--group", current_group())
    agi = tmp_path / "usr/share/asterisk/agi-bin/vicirec.agi"
    assert shebang(agi) == ["/srv/vicirec/venv/bin/python3", "-I"]
    assert (tmp_path / "srv/vicirec/venv/bin/python3").exists()
    assert mode(tmp_path / "etc/vr/vicirec.toml") == 0o640
    assert (tmp_path / "etc/vr/vicirec.toml").stat().st_gid == os.getgid()
    assert (tmp_path / "etc/ast/extensions_vicirec.conf").is_file()
    unit = tmp_path / "etc/systemd/system/vicirec-fastagi.service"
    settings = unit_settings(unit.read_text(encoding="utf-8"))
    assert settings["ExecStart"] == ["/srv/vicirec/venv/bin/vicirec serve --config /etc/vr/vicirec.toml"]
    assert settings["SupplementaryGroups"] == [current_group()]
    assert "vicirec check --config /etc/vr/vicirec.toml" in run.stdout
    # the process AGI reads the same config as the unit and `check` (it used to read /etc/vicirec)
    wrapper = agi.read_text(encoding="utf-8")
    assert 'os.environ.setdefault("VICIREC_CONFIG", "/etc/vr/vicirec.toml")' in wrapper
    sets = run_staged_agi(tmp_path, agi, {"PATH": "/usr/bin:/bin"})
    assert sets["VICIREC_ERROR"] == "CONFIG"
    assert "/etc/vr/vicirec.toml" in sets["VICIREC_MESSAGE"], sets
    assert "/etc/vicirec/" not in sets["VICIREC_MESSAGE"]


# --- the agent lookup, who Asterisk runs as, and what the installer may write -----------------


def test_without_astguiclient_conf_the_lookup_stays_http_and_the_installer_says_what_it_misses(
    installed: Installed,
) -> None:
    conf = (installed.root / "etc/vicirec/vicirec.toml").read_text(encoding="utf-8")
    assert re.search(r'^lookup = "http"$', conf, re.MULTILINE)
    out = installed.first.stdout
    assert "agent lookup: http (no /etc/astguiclient.conf here)" in out
    assert "NO_AGENT" in out and "cannot be corroborated" in out
    assert "Asterisk runs as asterisk:asterisk" in out


def test_the_vicirec_command_is_linked_onto_path(installed: Installed) -> None:
    link = installed.root / "usr/local/bin/vicirec"
    assert link.is_symlink()
    assert os.readlink(link) == "/opt/vicirec/venv/bin/vicirec"  # the final path, not the staged one
    assert "vicirec check --config /etc/vicirec/vicirec.toml" in installed.first.stdout
    assert "sudo -u asterisk vicirec check" in installed.first.stdout


def test_daemon_is_the_default_and_an_upgrade_says_to_restart_it(installed: Installed) -> None:
    first, second = installed.first.stdout, installed.second.stdout
    assert "systemctl enable --now vicirec-fastagi.service" in first
    assert "agi://127.0.0.1:4573/vicirec" in first and "vicirec.agi" in first
    assert "systemctl try-restart vicirec-fastagi.service" in second  # the unit was there already


VICIDIAL_ASTERISK_CONF = """\
[directories]
astetcdir => /etc/asterisk
[options]
;runuser = asterisk        ; VICIdial starts Asterisk as root (start_asterisk_boot.pl, no -U/-G)
;rungroup = asterisk
verbose = 3
"""


@pytest.fixture(scope="module")
def vicidial_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Run]:
    """A staged VICIdial telephony server: astguiclient.conf present, Asterisk as root."""
    root = tmp_path_factory.mktemp("vicidial")
    (root / "etc/asterisk").mkdir(parents=True)
    (root / "etc/asterisk/asterisk.conf").write_text(VICIDIAL_ASTERISK_CONF, encoding="utf-8")
    (root / "srv/vici").mkdir(parents=True)
    astguiclient = root / "srv/vici/astguiclient.conf"
    astguiclient.write_text("VARserver_ip => 10.10.10.15\nVARDB_server => localhost\n", encoding="utf-8")
    astguiclient.chmod(0o644)
    (root / "usr/local/bin").mkdir(parents=True)
    (root / "usr/local/bin/vicirec").write_text("#!/bin/sh\n# the admin's own\n", encoding="utf-8")
    return root, run_installer(root, "--astguiclient-conf", "/srv/vici/astguiclient.conf")


def test_vicidial_server_gets_the_mysql_lookup_in_a_new_config(vicidial_root: tuple[Path, Run]) -> None:
    root, run = vicidial_root
    conf = (root / "etc/vicirec/vicirec.toml").read_text(encoding="utf-8")
    assert re.search(r'^lookup = "mysql"$', conf, re.MULTILINE)
    assert re.search(r'^astguiclient_conf = "/srv/vici/astguiclient.conf"$', conf, re.MULTILINE)
    assert "agent lookup: mysql" in run.stdout
    from vicirec.config import config_from_mapping  # noqa: PLC0415

    try:
        import tomllib  # noqa: PLC0415
    except ImportError:  # Python < 3.11
        import tomli as tomllib  # type: ignore[no-redef]  # noqa: PLC0415
    assert config_from_mapping(tomllib.loads(conf)).agents.lookup == "mysql"
    # the mysql extra was asked for (offline here, PyMySQL may not come along: then a warning)
    venv_python = str(root / "opt/vicirec/venv/bin/python3")
    assert "PyMySQL is not importable" in run.stderr or subprocess.run(
        [venv_python, "-I", "-c", "import pymysql"], check=False).returncode == 0


def test_asterisk_as_root_reaches_every_file_and_message(vicidial_root: tuple[Path, Run]) -> None:
    root, run = vicidial_root
    assert "Asterisk runs as root:root (from VICIdial" in run.stdout
    rotate = (root / "etc/logrotate.d/vicirec").read_text(encoding="utf-8")
    directives = [line.strip() for line in rotate.splitlines()
                  if line.strip() and not line.lstrip().startswith("#")]
    assert directives.count("su root root") == 2
    assert directives.count("create 0660 root root") == 2
    assert not [line for line in directives if "asterisk" in line]
    unit = unit_settings((root / "etc/systemd/system/vicirec-fastagi.service").read_text(encoding="utf-8"))
    assert unit["SupplementaryGroups"] == ["root"]
    assert "sudo -u" not in run.stdout
    assert "Asterisk user (root):\n        /opt/vicirec/venv/bin/vicirec check --config" in run.stdout
    # an admin's own /usr/local/bin/vicirec is left alone
    assert "exists and is not a symlink: left alone" in run.stderr
    assert (root / "usr/local/bin/vicirec").read_text(encoding="utf-8").endswith("the admin's own\n")


def test_an_existing_config_is_never_switched_to_mysql(vicidial_root: tuple[Path, Run]) -> None:
    root, _run = vicidial_root
    conf = root / "etc/vicirec/vicirec.toml"
    before = conf.read_text(encoding="utf-8")
    conf.write_text(before.replace('lookup = "mysql"', 'lookup = "http"'), encoding="utf-8")
    run = run_installer(root, "--astguiclient-conf", "/srv/vici/astguiclient.conf", "--no-systemd")
    assert 'lookup = "http"' in conf.read_text(encoding="utf-8")
    assert "keeps lookup = \"http\"" in run.stdout and 'Set lookup = "mysql" there' in run.stdout


@pytest.mark.parametrize(
    ("asterisk_conf", "options", "expected"),
    [
        ("[options]\nrunuser = asterisk\nrungroup = asterisk\n", [],
         "asterisk:asterisk (from runuser/rungroup"),
        ("[options]\nrunuser => pbx ; comment\n", [], "pbx:pbx (from runuser/rungroup"),
        ("[files]\nrunuser = nope\n", ["--group", "root"], "root:root (from --group root)"),
        ("", ["--asterisk-user", "root", "--group", "root"], "root:root (from --asterisk-user/--group)"),
    ],
)
def test_asterisk_identity_detection(
    tmp_path: Path, asterisk_conf: str, options: list[str], expected: str
) -> None:
    etc = tmp_path / "etc/asterisk"
    etc.mkdir(parents=True)
    (etc / "asterisk.conf").write_text(asterisk_conf, encoding="utf-8")
    run = run_installer(tmp_path, "--no-systemd", "--no-bin-link", *options)
    assert f"Asterisk runs as {expected}" in run.stdout


PATH_OPTIONS = {
    "--prefix": "/p/opt", "--agi-bin": "/p/agi", "--asterisk-etc": "/p/ast", "--config-dir": "/p/conf",
    "--log-dir": "/p/log", "--state-dir": "/p/state", "--logrotate-dir": "/p/logrotate",
    "--systemd-dir": "/p/systemd", "--bin-dir": "/p/bin", "--astguiclient-conf": "/p/none/astguiclient.conf",
}


@pytest.mark.parametrize("switches", [[], ["--no-systemd", "--no-logrotate", "--no-bin-link"]],
                         ids=["all", "minimal"])
def test_the_installer_writes_only_below_the_paths_it_is_given(tmp_path: Path, switches: list[str]) -> None:
    root, temp = tmp_path / "root", tmp_path / "tmp"
    root.mkdir()
    temp.mkdir()
    options = [item for pair in PATH_OPTIONS.items() for item in pair]
    run = run_installer(root, *options, "--group", current_group(), *switches, tmpdir=temp)
    assert sorted(p.name for p in root.iterdir()) == ["p"]  # nothing in /var, /etc, /usr
    expected = {"opt", "agi", "ast", "conf", "log", "state"}
    if not switches:
        expected |= {"logrotate", "systemd", "bin"}
    assert {p.name for p in (root / "p").iterdir()} == expected
    assert list(temp.iterdir()) == []  # its scratch directory is gone
    conf = (root / "p/conf/vicirec.toml").read_text(encoding="utf-8")
    assert 'path = "/p/log/vicirec.log"' in conf and 'path = "/p/state/audit.jsonl"' in conf
    agi = (root / "p/agi/vicirec.agi").read_text(encoding="utf-8")
    assert '"/p/conf/vicirec.toml"' in agi and agi.startswith("#!/p/opt/venv/bin/python3 -I\n")
    if not switches:
        rotate = (root / "p/logrotate/vicirec").read_text(encoding="utf-8")
        assert "\n/p/log/*.log {" in rotate and "\n/p/state/*.jsonl {" in rotate
        assert "/var/" not in "".join(line for line in rotate.splitlines(True) if not line.startswith("#"))
        unit = unit_settings((root / "p/systemd/vicirec-fastagi.service").read_text(encoding="utf-8"))
        assert unit["ReadWritePaths"] == ["/p/log /p/state"]
        assert unit["ExecStart"] == ["/p/opt/venv/bin/vicirec serve --config /p/conf/vicirec.toml"]
        assert os.readlink(root / "p/bin/vicirec") == "/p/opt/venv/bin/vicirec"
    else:
        assert "VICIREC_AGI=vicirec.agi" in run.stdout  # no daemon: how to skip trying it
