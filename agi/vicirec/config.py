"""Configuration: a TOML file (or any mapping) read into frozen dataclasses, checked once.

Unknown keys are errors: a typo in a live dialer's config should fail ``vicirec check`` loudly,
not silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TypeVar
from urllib.parse import urlsplit, urlunsplit

from vicirec.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/vicirec/vicirec.toml")
CONFIG_ENV = "VICIREC_CONFIG"

RESOLVER_NAMES = (
    "argument", "channel_variable", "call_id", "session", "lead_id", "bridge_peer", "static_map",
)


@dataclass(frozen=True)
class VicidialSettings:
    api_url: str = ""
    non_agent_api_url: str = ""
    user: str = ""
    password: str = field(default="", repr=False)
    source: str = "vicirec"
    connect_timeout: float = 1.5
    read_timeout: float = 3.0
    verify_tls: bool = True
    ca_bundle: str = ""
    max_response_bytes: int = 65536
    # Circuit breaker (FastAGI daemon only): after this many UNREACHABLE/TIMEOUT failures in a row,
    # answer UNREACHABLE at once for cool_down seconds, then let one probe through. 0 = no breaker.
    failure_threshold: int = 5
    cool_down: float = 5.0


@dataclass(frozen=True)
class CallSettings:
    deadline: float = 6.0
    confirm: float = 0.0
    confirm_poll_interval: float = 0.5
    agent_variable: str = "VICIREC_AGENT"


@dataclass(frozen=True)
class AgentSettings:
    resolvers: tuple[str, ...] = ("argument", "channel_variable", "call_id", "session")
    lookup: str = "http"
    astguiclient_conf: str = "/etc/astguiclient.conf"
    map_file: str = ""
    cache_seconds: float = 1.0
    require_corroboration: bool = True
    room_variable: str = "VICIREC_ROOM"


@dataclass(frozen=True)
class LogSettings:
    target: str = "file"
    path: str = "/var/log/vicirec/vicirec.log"
    level: str = "info"
    syslog_address: str = "/dev/log"
    syslog_facility: str = "local0"


@dataclass(frozen=True)
class AuditSettings:
    path: str = ""
    caller_number: str = "hash"
    # HMAC key for caller_number = "hash". Empty: a random key kept in "<path>.key" (mode 0640),
    # made on first use. Set it (the same on every server) to compare hashes across servers.
    hash_key: str = field(default="", repr=False)


@dataclass(frozen=True)
class FastAgiSettings:
    host: str = "127.0.0.1"
    port: int = 4573
    max_sessions: int = 64
    session_deadline: float = 10.0
    env_timeout: float = 2.0
    max_line_bytes: int = 8192
    allow: tuple[str, ...] = ()
    grace_seconds: float = 10.0
    # CONSENT (fastagi/deferred.py): one read of VICIdial's database per interval for every pending
    # consent; a consent no agent took within consent_timeout seconds is forgotten (not recorded).
    consent_poll_interval: float = 0.25
    consent_timeout: float = 600.0
    consent_max_pending: int = 1000


@dataclass(frozen=True)
class Config:
    vicidial: VicidialSettings = field(default_factory=VicidialSettings)
    call: CallSettings = field(default_factory=CallSettings)
    agents: AgentSettings = field(default_factory=AgentSettings)
    log: LogSettings = field(default_factory=LogSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    fastagi: FastAgiSettings = field(default_factory=FastAgiSettings)
    source_path: Optional[str] = None
    warnings: tuple[str, ...] = ()

    @property
    def non_agent_api_url(self) -> str:
        """Explicit, or the same scheme and host as the agent API with VICIdial's own path."""
        if self.vicidial.non_agent_api_url:
            return self.vicidial.non_agent_api_url
        parts = urlsplit(self.vicidial.api_url)
        return urlunsplit((parts.scheme, parts.netloc, "/vicidial/non_agent_api.php", "", ""))


_SECTIONS: dict[str, type[Any]] = {
    "vicidial": VicidialSettings,
    "call": CallSettings,
    "agents": AgentSettings,
    "log": LogSettings,
    "audit": AuditSettings,
    "fastagi": FastAgiSettings,
}

_T = TypeVar("_T")


#: Keys whose values are secrets: no message ever repeats them.
SECRET_KEYS = frozenset({"password", "hash_key"})

def config_path(explicit: Optional[str] = None, environ: Optional[Mapping[str, str]] = None) -> Path:
    environ = os.environ if environ is None else environ
    if explicit:
        return Path(explicit)
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV])
    return DEFAULT_CONFIG_PATH


def read_named_file(path: str, what: str, *, limit: Optional[int] = None, missing_hint: str = "") -> bytes:
    """The bytes of a file the config names (``what``: how messages call it), or a ConfigError
    saying why not; more than ``limit`` bytes is an error too."""
    try:
        with open(path, "rb") as handle:
            data = handle.read() if limit is None else handle.read(limit + 1)
    except FileNotFoundError as exc:
        raise ConfigError(f"{what} {path} does not exist{missing_hint}") from exc
    except PermissionError as exc:
        raise ConfigError(f"{what} {path} is not readable by uid {os.getuid()}") from exc
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror}") from exc
    if limit is not None and len(data) > limit:
        raise ConfigError(f"{what} {path} is larger than {limit} bytes")
    return data


def load_config(path: Optional[str] = None, environ: Optional[Mapping[str, str]] = None) -> Config:
    """Read and check the config file named by ``path``, ``$VICIREC_CONFIG`` or the default."""
    file = config_path(path, environ)
    data = read_named_file(str(file), "config file")
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on the Debian 11 / VICIbox Pythons
        import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]
    try:
        mapping = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {file} is not valid TOML: {exc}") from exc
    config = config_from_mapping(mapping, source_path=str(file))
    warnings = list(config.warnings)
    warnings.extend(_permission_warnings(file, config))
    return dataclasses.replace(config, warnings=tuple(warnings))


def config_from_mapping(mapping: Mapping[str, Any], *, source_path: Optional[str] = None) -> Config:
    """Build and check a :class:`Config` from plain data (a parsed TOML document)."""
    unknown = sorted(set(mapping) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"unknown config section(s): {', '.join(unknown)}")
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        raw = mapping.get(name, {})
        if not isinstance(raw, Mapping):
            raise ConfigError(f"[{name}] must be a table")
        sections[name] = _build_section(name, cls, raw)
    config = Config(**sections, source_path=source_path)
    return dataclasses.replace(config, warnings=tuple(_validate(config)))


def _build_section(section: str, cls: type[_T], raw: Mapping[str, Any]) -> _T:
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) in [{section}]: {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        values[key] = _coerce(f"{section}.{key}", value, fields[key].default)
    return cls(**values)


def _coerce(name: str, value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number")
        if value < 0:
            raise ConfigError(f"{name} must not be negative")
        return float(value)
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be a whole number")
        if value < 0:
            raise ConfigError(f"{name} must not be negative")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ConfigError(f"{name} must be a list of strings")
        return tuple(value)
    if not isinstance(value, str):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            key = name.rpartition(".")[2]
            shown = "…" if key in SECRET_KEYS else value  # a secret is never repeated, even a wrong one
            raise ConfigError(f'{name} must be a string: put it in quotes ({key} = "{shown}")')
        raise ConfigError(f"{name} must be a string")
    return value


def _validate(config: Config) -> list[str]:
    """Raise on what cannot work; return warnings for what works but is unwise."""
    warnings: list[str] = []
    vicidial = config.vicidial
    url = urlsplit(vicidial.api_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError("vicidial.api_url must be an http(s) URL such as https://dialer/agc/api.php")
    if url.scheme == "http" and not _is_local_host(url.hostname):
        warnings.append(
            f"vicidial.api_url uses plain http to {url.hostname}: the API password crosses the network "
            "in clear text; use https"
        )
    if vicidial.non_agent_api_url:
        other = urlsplit(vicidial.non_agent_api_url)
        if other.scheme not in ("http", "https") or not other.hostname:
            raise ConfigError("vicidial.non_agent_api_url must be an http(s) URL")
    if not vicidial.user:
        raise ConfigError("vicidial.user is empty")
    if not vicidial.password:
        raise ConfigError("vicidial.password is empty")
    if not (2 <= len(vicidial.source) <= 20 and vicidial.source.isascii() and vicidial.source.isalnum()):
        raise ConfigError("vicidial.source must be 2-20 letters or digits (VICIdial drops anything else)")
    if vicidial.connect_timeout <= 0 or vicidial.read_timeout <= 0:
        raise ConfigError("vicidial.connect_timeout and read_timeout must be above zero")
    if vicidial.max_response_bytes < 1024:
        raise ConfigError("vicidial.max_response_bytes must be at least 1024")
    call = config.call
    if not 0 < call.deadline <= 60:
        raise ConfigError("call.deadline must be above 0 and at most 60 seconds")
    if call.confirm > call.deadline:
        warnings.append("call.confirm is longer than call.deadline: the deadline wins")
    if call.confirm_poll_interval <= 0:
        raise ConfigError("call.confirm_poll_interval must be above zero")
    if not _is_variable_name(call.agent_variable):
        raise ConfigError("call.agent_variable must be a channel variable name")
    agents = config.agents
    bad = [name for name in agents.resolvers if name not in RESOLVER_NAMES]
    if bad:
        raise ConfigError(f"agents.resolvers: unknown resolver(s) {', '.join(bad)}; known: "
                          f"{', '.join(RESOLVER_NAMES)}")
    if agents.lookup not in ("http", "mysql"):
        raise ConfigError('agents.lookup must be "http" or "mysql"')
    if "static_map" in agents.resolvers and not agents.map_file:
        raise ConfigError("agents.resolvers names static_map but agents.map_file is empty")
    if not _is_variable_name(agents.room_variable):
        raise ConfigError("agents.room_variable must be a channel variable name")
    if agents.cache_seconds > 10:
        raise ConfigError("agents.cache_seconds must be at most 10 (about 1 is right)")
    duplicated = sorted({name for name in agents.resolvers if agents.resolvers.count(name) > 1})
    if duplicated:
        raise ConfigError(f"agents.resolvers names {', '.join(duplicated)} more than once")
    if config.log.target not in ("file", "syslog", "stderr", "none"):
        raise ConfigError('log.target must be "file", "syslog", "stderr" or "none"')
    if config.log.level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError('log.level must be "debug", "info", "warning" or "error"')
    if config.audit.caller_number not in ("hash", "mask", "clear", "omit"):
        raise ConfigError('audit.caller_number must be "hash", "mask", "clear" or "omit"')
    if config.audit.hash_key and len(config.audit.hash_key) < 16:
        raise ConfigError("audit.hash_key must be at least 16 characters (e.g. openssl rand -hex 32)")
    fastagi = config.fastagi
    if not 0 < fastagi.port < 65536:
        raise ConfigError("fastagi.port must be 1-65535")
    if fastagi.max_sessions < 1:
        raise ConfigError("fastagi.max_sessions must be at least 1")
    for entry in fastagi.allow:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError as exc:
            raise ConfigError(f"fastagi.allow: {entry!r} is not an address or network") from exc
    if not 0.05 <= fastagi.consent_poll_interval <= 5:
        raise ConfigError("fastagi.consent_poll_interval must be 0.05-5 seconds")
    if not 0 < fastagi.consent_timeout <= 3600:
        raise ConfigError("fastagi.consent_timeout must be above 0 and at most 3600 seconds")
    if not 1 <= fastagi.consent_max_pending <= 10000:
        raise ConfigError("fastagi.consent_max_pending must be 1-10000")
    exposure = exposure_warning(fastagi)
    if exposure:
        warnings.append(exposure)
    return warnings


def exposure_warning(fastagi: FastAgiSettings, setting: str = "fastagi.host") -> str:
    """A warning when the daemon would listen beyond loopback with no allowlist, else ``""``."""
    if _is_local_host(fastagi.host) or fastagi.allow:
        return ""
    return (f"{setting} {fastagi.host} listens beyond this machine and fastagi.allow is empty: "
            "any host that reaches the port can start recordings")


def _is_variable_name(name: str) -> bool:
    """An Asterisk channel variable name vicirec may read with GET VARIABLE: ASCII word characters."""
    return name.isascii() and name.replace("_", "").isalnum()


def _is_local_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _permission_warnings(file: Path, config: Config) -> list[str]:
    try:
        mode = file.stat().st_mode
    except OSError:
        return []
    if config.vicidial.password and mode & stat.S_IROTH:
        return [
            f"{file} holds the VICIdial API password and is readable by every user "
            f"(mode {stat.S_IMODE(mode):04o}); run: chmod 0640 {file}"
        ]
    return []
