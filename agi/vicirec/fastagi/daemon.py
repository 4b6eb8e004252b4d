"""``vicirec serve``: the FastAGI daemon for busy dialers.

Dialplan calls it exactly like the process AGI, with the same arguments::

    AGI(agi://127.0.0.1:4573/vicirec,START,_CONSENT)

The daemon pays Python's start-up and imports once instead of on every key press. It runs the same
code path as the process AGI (``runtime.build_service`` → ``RecordingService.handle`` →
``reporting.finish_invocation``) over one shared HTTP connection pool to VICIdial.

Life cycle (systemd ``Type=notify``): ``READY=1`` once listening; SIGHUP reloads the config (a bad
one is logged and the old one kept) and reopens the log file; SIGTERM / SIGINT stop accepting and
give the sessions in flight ``fastagi.grace_seconds`` to finish. Exit codes: 0 clean stop,
78 (EX_CONFIG) config error at start, 69 (EX_UNAVAILABLE) the port cannot be bound, 70 (EX_SOFTWARE)
a crash, 2 bad command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, Optional

import requests

from vicirec import logs
from vicirec.config import Config, exposure_warning, load_config
from vicirec.errors import ConfigError
from vicirec.fastagi.deferred import build_deferred
from vicirec.fastagi.sdnotify import Notifier
from vicirec.fastagi.server import FastAgiServer, bind_listener, listening_address
from vicirec.fastagi.session import DaemonRuntime, parse_allowlist
from vicirec.runtime import build_service
from vicirec.vicidial.client import make_session

EX_OK = 0
EX_USAGE = 2
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_CONFIG = 78


def main(argv: Optional[Sequence[str]] = None) -> int:
    options = _parse_options(argv)
    logs.configure_fallback()
    notifier = Notifier()
    try:
        return _start(options, notifier)
    except ConfigError as error:
        # Before the config is read the log is stderr: one plain line, not a JSON object.
        sys.stderr.write(f"vicirec serve: {error.message} (fix it, run `vicirec check`, start again)\n")
        notifier.status(f"config error: {error.message}")
        return EX_CONFIG
    except Exception as error:  # the last line of defence: log it, tell systemd, exit 70
        log = logs.get_logger()
        log.exception("fastagi_crashed", error_type=error.__class__.__name__)
        notifier.stopping(f"crashed: {error.__class__.__name__}")
        return EX_SOFTWARE


def _start(options: argparse.Namespace, notifier: Notifier) -> int:
    config = load_daemon_config(options)
    logs.configure_for(config)
    log = logs.get_logger()
    for warning in config.warnings:
        log.warning("config_warning", warning=warning)
    http = make_session(pool_size=config.fastagi.max_sessions)
    runtime = build_runtime(config, http)
    try:
        listener = bind_listener(config.fastagi.host, config.fastagi.port)
    except OSError as error:
        message = f"cannot listen on {config.fastagi.host}:{config.fastagi.port}: {error.strerror or error}"
        log.error("fastagi_bind_failed", host=config.fastagi.host, port=config.fastagi.port, error=message)
        sys.stderr.write(f"vicirec serve: {message}\n")
        notifier.status(message)
        return EX_UNAVAILABLE
    return _serve(options, listener, runtime, http, notifier)


def _serve(options: argparse.Namespace, listener: Any, runtime: DaemonRuntime,
           http: requests.Session, notifier: Notifier) -> int:
    max_sessions = runtime.config.fastagi.max_sessions

    def reload(current: DaemonRuntime) -> Optional[DaemonRuntime]:
        return reload_runtime(options, current, http, notifier)

    server = FastAgiServer(listener, runtime, max_sessions=max_sessions, notifier=notifier, reloader=reload)
    install_signal_handlers(server)
    host, port = listening_address(listener)
    logs.get_logger().info(
        "fastagi_listening", host=host, port=port, max_sessions=max_sessions, pid=os.getpid(),
        config=runtime.config.source_path,
    )
    notifier.ready(f"listening on {host}:{port}, at most {max_sessions} sessions")
    sys.stderr.write(f"vicirec serve: listening on {host}:{port}, config {runtime.config.source_path}, "
                     f"pid {os.getpid()}\n")
    sys.stderr.flush()
    server.run()
    if server.runtime.deferred is not None:  # consents still held are forgotten (audited): not recorded
        server.runtime.deferred.stop()
    logs.get_logger().info("fastagi_stopped", **dataclasses.asdict(server.stats))
    notifier.status("stopped")
    return EX_OK


def _parse_options(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="vicirec serve", description="FastAGI daemon: AGI(agi://127.0.0.1:4573/vicirec,START,...)")
    parser.add_argument("--config", help="config file (default: $VICIREC_CONFIG, /etc/vicirec/vicirec.toml)")
    parser.add_argument("--host", help="address to listen on (overrides fastagi.host; default 127.0.0.1)")
    parser.add_argument("--port", type=_port, help="TCP port (overrides fastagi.port; default 4573)")
    return parser.parse_args(list(argv) if argv is not None else None)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port < 65536:
        raise argparse.ArgumentTypeError("port must be 0-65535 (0: any free port)")
    return port


def load_daemon_config(options: argparse.Namespace) -> Config:
    """The config file with the command line's ``--host`` / ``--port`` on top."""
    config = load_config(options.config)
    overrides: dict[str, Any] = {}
    if options.host:
        overrides["host"] = options.host
    if options.port is not None:
        overrides["port"] = options.port
    if not overrides:
        return config
    fastagi = dataclasses.replace(config.fastagi, **overrides)
    warnings = list(config.warnings)
    exposure = exposure_warning(fastagi, "--host") if options.host else ""
    if exposure:
        warnings.append(exposure)
    return dataclasses.replace(config, fastagi=fastagi, warnings=tuple(warnings))


def build_runtime(
    config: Config, http: requests.Session, previous: Optional[DaemonRuntime] = None
) -> DaemonRuntime:
    """The service every session of this config generation shares (raises ConfigError)."""
    service = build_service(config, session=http, logger=logs.get_logger(), daemon=True)
    audit = _audit_trail(config, previous)
    deferred = build_deferred(config, service, audit, previous.deferred if previous is not None else None)
    return DaemonRuntime(config=config, service=service, allow=parse_allowlist(config.fastagi.allow),
                         audit=audit, deferred=deferred)


def _audit_trail(config: Config, previous: Optional[DaemonRuntime]) -> Any:
    """One trail for every thread (it locks and appends itself); kept across reloads while its
    settings stay the same, reopened (log rotation) otherwise."""
    if previous is not None and previous.audit is not None:
        if previous.config.audit == config.audit:
            previous.audit.reopen()
            return previous.audit
        previous.audit.close()  # a session still using it opens the path again for its record
    if not config.audit.path:
        return None
    from vicirec.audit.trail import AuditTrail

    return AuditTrail(config.audit)


#: Settings a reload cannot change: the socket, the worker pool and the HTTP pool are built once.
RESTART_ONLY = ("host", "port", "max_sessions")


def reload_runtime(
    options: argparse.Namespace, current: DaemonRuntime, http: requests.Session, notifier: Notifier
) -> Optional[DaemonRuntime]:
    """SIGHUP: reopen the log, read the config again; the new runtime, or None to keep the old."""
    notifier.reloading()
    logs.reopen()
    try:
        config = load_daemon_config(options)
        runtime = build_runtime(config, http, current)
    except ConfigError as error:
        logs.get_logger().error("fastagi_reload_failed", error=error.message, kept=current.config.source_path)
        notifier.ready(f"reload failed, previous config kept: {error.message}")
        return None
    old = current.config
    if config.log != old.log or config.vicidial.password != old.vicidial.password:
        logs.configure_for(config)
    log = logs.get_logger()
    for warning in config.warnings:
        log.warning("config_warning", warning=warning)
    ignored = [name for name in RESTART_ONLY if getattr(config.fastagi, name) != getattr(old.fastagi, name)]
    if ignored:
        log.warning("fastagi_reload_needs_restart", settings=ignored)
    log.info("fastagi_reloaded", config=config.source_path)
    notifier.ready("configuration reloaded")
    return runtime


def install_signal_handlers(server: FastAgiServer) -> None:
    """Main thread only. The handlers just set flags; the server's loop does the work."""

    def stop(_signum: int, _frame: Any) -> None:
        server.request_stop()

    def reload(_signum: int, _frame: Any) -> None:
        server.request_reload()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)
    # A signal caught while another thread runs still wakes the selector at once.
    signal.set_wakeup_fd(server.wakeup_fd, warn_on_full_buffer=False)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
