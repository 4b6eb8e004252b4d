"""``vicirec check``'s local findings: who can read and write the files the AGI needs, whether the
resolvers can work with the lookup, and which path calls take (FastAGI daemon or process AGI).

``check`` runs as root, who can open anything; the AGI runs as Asterisk's user and the daemon as
``vicirec`` in Asterisk's group. So access is judged from the mode bits as that user and group
would meet them (owner bits for Asterisk's user, else group bits for the group, else the others'),
on the file and on every directory above it.
"""

from __future__ import annotations

import enum
import os
import re
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

from vicirec.config import Config

#: What the dialplan library tries when no VICIREC_AGI global is set (it falls back to the process
#: AGI on a refused connect).
DEFAULT_DAEMON_URL = "agi://127.0.0.1:4573/vicirec"
DEFAULT_AGI_PORT = 4573
PROBE_SECONDS = 1.0
AGI_SCRIPT = "vicirec.agi"


class Level(str, enum.Enum):
    OK = "OK"
    WARNING = "WARNING"
    ERROR = "ERROR"


@dataclass(frozen=True)
class Finding:
    """One line of ``vicirec check``: what was found and, unless OK, what to do."""

    level: Level
    text: str


def ok(text: str) -> Finding:
    return Finding(Level.OK, text)


def warning(text: str) -> Finding:
    return Finding(Level.WARNING, text)


def error(text: str) -> Finding:
    return Finding(Level.ERROR, text)


@dataclass(frozen=True)
class Principal:
    """Asterisk's user (when it exists) and group, as the kernel would check their access."""

    group: str
    gid: int
    uid: Optional[int] = None

    def may(self, path: str, wanted: str) -> bool:
        """Would this user/group get ``wanted`` (some of ``rwx``) on ``path``, directories above included?"""
        target = Path(path)
        for directory in reversed(target.parents):
            if not self._bits(directory, "x"):
                return False
        return self._bits(target, wanted)

    def _bits(self, path: Path, wanted: str) -> bool:
        try:
            info = path.stat()
        except OSError:
            return False
        if self.uid is not None and info.st_uid == self.uid:
            masks = {"r": stat.S_IRUSR, "w": stat.S_IWUSR, "x": stat.S_IXUSR}
        elif info.st_gid == self.gid:
            masks = {"r": stat.S_IRGRP, "w": stat.S_IWGRP, "x": stat.S_IXGRP}
        else:
            masks = {"r": stat.S_IROTH, "w": stat.S_IWOTH, "x": stat.S_IXOTH}
        return all(info.st_mode & masks[bit] for bit in wanted)


def principal(group: str) -> Optional[Principal]:
    import grp
    import pwd

    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return None
    try:
        uid: Optional[int] = pwd.getpwnam(group).pw_uid
    except KeyError:
        uid = None
    return Principal(group, gid, None if uid == 0 else uid)


def file_findings(config: Config, who: Principal, agi_bin: str) -> list[Finding]:
    """The config, log, audit trail, lookup files and ``vicirec.agi``, as Asterisk's group meets them."""
    group = who.group
    found: list[Finding] = []
    source = config.source_path or ""
    if source:
        if who.may(source, "r"):
            found.append(ok(f"{source} is readable by group {group}"))
        else:
            found.append(error(f"{source} is not readable by group {group} (the AGI runs in it): "
                               f"chown root:{group} {source}; chmod 0640 {source}"))
    if config.log.target == "file":
        found.extend(_writable_place(who, config.log.path, "log file", 0o660))
    if config.audit.path:
        found.extend(_writable_place(who, config.audit.path, "audit trail", 0o660, read_too=True))
        key = config.audit.path + ".key"
        if os.path.exists(key) and not who.may(key, "r"):
            found.append(error(f"audit key {key} is not readable by group {group}: chgrp {group} {key}; "
                               f"chmod 0640 {key}"))
    if config.agents.lookup == "mysql":
        found.extend(_readable(who, config.agents.astguiclient_conf, "agents.astguiclient_conf"))
    if "static_map" in config.agents.resolvers and config.agents.map_file:
        found.extend(_readable(who, config.agents.map_file, "agents.map_file"))
    found.append(_agi_script(who, agi_bin))
    return found


def _writable_place(
    who: Principal, path: str, what: str, mode: int, *, read_too: bool = False
) -> list[Finding]:
    group = who.group
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        return [error(f"{what} directory {directory} does not exist: "
                      f"install -d -m 2770 -o root -g {group} {directory}")]
    if not who.may(directory, "wx"):
        return [error(f"{what} directory {directory} is not writable by group {group}: "
                      f"chgrp {group} {directory}; chmod 2770 {directory}")]
    wanted = "rw" if read_too else "w"
    if os.path.exists(path) and not who.may(path, wanted):
        return [error(f"{what} {path} is not writable by group {group}: chgrp {group} {path}; "
                      f"chmod {mode:04o} {path}")]
    return [ok(f"{what} {path}: writable by group {group}")]


def _readable(who: Principal, path: str, what: str) -> list[Finding]:
    if os.path.exists(path) and not who.may(path, "r"):
        return [error(f"{what} {path} is not readable by group {who.group}: chgrp {who.group} {path}; "
                      f"chmod g+r {path}")]
    return []


def _agi_script(who: Principal, agi_bin: str) -> Finding:
    script = os.path.join(agi_bin, AGI_SCRIPT)
    if not os.path.isfile(script):
        return error(f"{script} does not exist: run deploy/install.sh (or give --agi-bin, Asterisk's "
                     "astagidir from asterisk.conf)")
    if not who.may(script, "rx"):
        return error(f"{script} is not executable by group {who.group}: chmod 0755 {script}")
    return ok(f"{script} is present and executable")


def resolver_findings(config: Config) -> list[Finding]:
    """Resolvers that can never match with the configured lookup."""
    found: list[Finding] = []
    if "bridge_peer" in config.agents.resolvers and config.agents.lookup == "http":
        found.append(warning('agents.resolvers names bridge_peer, which never matches with lookup = "http" '
                             '(the non-agent API reports no phones): use lookup = "mysql", or static_map, '
                             "or remove bridge_peer"))
    return found


# --- which path calls take --------------------------------------------------------------------

_GLOBAL = re.compile(r"^\s*VICIREC_AGI\s*=>?\s*([^;\s]*)")
_SECTION = re.compile(r"^\s*\[([^\]]*)\]")


def dialplan_agi_global(asterisk_etc: str) -> Optional[tuple[str, str]]:
    """``(value, where)`` of the last ``VICIREC_AGI=`` in the ``[globals]`` of extensions*.conf."""
    found: Optional[tuple[str, str]] = None
    for path in sorted(Path(asterisk_etc).glob("extensions*.conf")):
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        section = ""
        for number, line in enumerate(lines, 1):
            header = _SECTION.match(line)
            if header:
                section = header.group(1).strip().lower()
                continue
            match = _GLOBAL.match(line)
            if match and section == "globals":
                found = (match.group(1), f"{path}:{number}")
    return found


def _probe(host: str, port: int) -> str:
    """``"accepted"``, ``"refused"`` or why not: the only thing Asterisk's fallback looks at."""
    try:
        with socket.create_connection((host, port), timeout=PROBE_SECONDS):
            return "accepted"
    except ConnectionRefusedError:
        return "refused"
    except socket.timeout:
        return f"no answer within {PROBE_SECONDS:g} s"
    except OSError as exc:
        return exc.strerror or exc.__class__.__name__


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or DEFAULT_AGI_PORT


def path_findings(config: Config, asterisk_etc: str, agi_bin: str) -> list[Finding]:
    """Where calls go: the daemon the dialplan library tries, or the process AGI it falls back to."""
    setting = dialplan_agi_global(asterisk_etc)
    process = os.path.join(agi_bin, AGI_SCRIPT)
    explicit = setting is not None and setting[0] != ""
    url = setting[0] if explicit and setting is not None else DEFAULT_DAEMON_URL
    named = f"VICIREC_AGI={url} ({setting[1]})" if explicit and setting is not None else "the default"
    found: list[Finding] = []
    if url.startswith("hagi://"):
        return [ok(f"calls take the FastAGI daemons of {url} ({named}; DNS SRV, not probed)")]
    if not url.startswith("agi://"):
        return [ok(f"calls take the process AGI {url} ({named})")]
    host, port = _address(url)
    answer = _probe(host, port)
    if answer == "accepted":
        found.append(ok(f"calls take the FastAGI daemon at {host}:{port} ({named}): it accepts "
                        "connections (this probe connects and closes: the daemon logs it as "
                        "fastagi_environment_unreadable)"))
    elif answer == "refused":
        if explicit:
            found.append(warning(f"{named} names a FastAGI daemon but nothing listens at {host}:{port}: "
                                 f"calls fall back to the process AGI {process}; start "
                                 "vicirec-fastagi.service, or remove the global"))
        else:
            found.append(ok(f"calls take the process AGI {process} (no FastAGI daemon at {host}:{port}, "
                            "the dialplan library's default)"))
    else:
        found.append(warning(f"the FastAGI daemon at {host}:{port} ({named}) did not answer: {answer}; "
                             "Asterisk waits for it on every call before falling back: start the daemon "
                             "or point VICIREC_AGI elsewhere"))
    daemon = (config.fastagi.host, config.fastagi.port)
    if answer != "accepted" and daemon != (host, port) and _probe(*daemon) == "accepted":
        found.append(warning(f"a FastAGI daemon answers at {daemon[0]}:{daemon[1]} ([fastagi] of the "
                             f"config) but the dialplan tries {host}:{port}: set "
                             f"VICIREC_AGI=agi://{daemon[0]}:{daemon[1]}/vicirec in [globals]"))
    return found
