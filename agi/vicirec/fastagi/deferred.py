"""CONSENT: the caller consents before any agent exists; the daemon STARTs once an agent takes the call.

Dialplan, in a Call Menu's Custom Dialplan Entry (a route value keeps no ``:``, so no ``agi://`` URL
fits there, and VICIdial hangs the call up after an AGI route; dialplan/README.md has the recipe)::

    AGI(agi://127.0.0.1:4573/vicirec,CONSENT,_CONSENT)

The consenting session gets ``VICIREC_RESULT=OK``, ``VICIREC_ACTION=CONSENT``,
``VICIREC_DEFERRED=1`` once the consent is audited and held; then the Call Menu AGI returns and the
call goes on into the in-group. Nothing is recorded yet.

One poller thread asks VICIdial's database, every ``fastagi.consent_poll_interval`` seconds and
with one ``SELECT`` for all pending uniqueids (:class:`vicirec.agents.live_calls.LiveCallReader`),
where each consented call is. When exactly one agent of this server holds the call's uniqueid
(status ``QUEUE``/``INCALL``), the consent is taken out of the table (so it STARTs exactly once) and
a START for that agent runs through the same engine path as a dialplan START (``agent=`` argument),
on a small pool of threads so a slow VICIdial never delays the poll. Its audit record carries
``deferred: true`` and the consent's ``consent_id``.

A consent is forgotten (audited, not recorded) when the call was seen waiting in
``vicidial_auto_calls`` and is now in neither table (the caller hung up in the queue), after
``fastagi.consent_timeout`` seconds, or when the daemon stops. Pending consents live in this process
only: a restart loses them, and a lost consent means no recording (fail closed).
"""

from __future__ import annotations

import contextlib
import re
import secrets
import signal
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol

from vicirec import logs
from vicirec.agents.live_calls import CallPlaces
from vicirec.agents.resolvers import ArgumentResolver
from vicirec.asterisk.channel import AgiSession
from vicirec.asterisk.codec import AgiEnvironment
from vicirec.config import Config
from vicirec.deadline import Deadline
from vicirec.engine import RecordingService, Report, error_report
from vicirec.errors import BadRequest, ConfigError, ErrorCode, Unreachable, VicirecError
from vicirec.reporting import audit_failed_report
from vicirec.request import CONSENT, parse_consent
from vicirec.vicidial.stage import sanitize_stage

if TYPE_CHECKING:  # pragma: no cover
    from vicirec.audit.trail import AuditTrail

#: ``VICIREC_AGENT_SOURCE`` / the audit's ``agent_source`` of a deferred START.
CONSENT_SOURCE = "consent_uniqueid"
DEFERRED_VARIABLE = "VICIREC_DEFERRED"
#: Asterisk's uniqueid (``1795459430.20``, or ``name-1795459430.20`` with ``systemname``); VICIdial
#: keeps it in VARCHAR(20) columns.
UNIQUEID = re.compile(r"^[0-9A-Za-z._-]{1,20}$")
START_WORKERS = 16  # STARTs of one poll go out together; a worker also waits for its audit fsync
#: A poll that takes longer than this is given up (the next one tries again).
POLL_SECONDS = 2.0
POLL_ERROR_LOG_INTERVAL = 10.0
_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})


class CallPlacesReader(Protocol):
    @property
    def server_ip(self) -> str: ...

    def places(self, uniqueids: Sequence[str], deadline: Deadline) -> CallPlaces: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ConsentReport(Report):
    """A report that also sets ``VICIREC_DEFERRED``: ``1`` while a START waits for an agent."""

    deferred: bool = False

    def variables(self) -> list[tuple[str, str]]:
        return [*super().variables(), (DEFERRED_VARIABLE, "1" if self.deferred else "0")]


@dataclass
class PendingConsent:
    consent_id: str
    uniqueid: str
    environment: AgiEnvironment
    start_args: tuple[str, ...]  # the CONSENT's stage and options: the START's arguments
    stage: str                   # the label as it will be sent
    consented_at: float          # monotonic
    expires_at: float
    active: bool = False         # audited: the poller may act on it
    queued: bool = False         # seen in vicidial_auto_calls
    ambiguous: bool = False      # two agents seen on it (logged once)


@dataclass(frozen=True)
class Binding:
    """What one config generation acts with (a reload binds a new one; pending consents stay)."""

    config: Config
    service: RecordingService
    reader: CallPlacesReader
    audit: Optional[AuditTrail] = None


@dataclass
class DeferredStats:
    consents: int = 0
    refused: int = 0
    started: int = 0
    start_failed: int = 0
    ended: int = 0
    expired: int = 0
    dropped: int = 0
    polls: int = 0
    poll_errors: int = 0


@dataclass(frozen=True)
class StartOutcome:
    """One deferred START, for the log and for tests: when the poll saw the agent, when it ran."""

    consent_id: str
    uniqueid: str
    agent: str
    report: Report
    seen_at: float       # monotonic: the poll that found the agent
    sent_at: float       # monotonic: the START handed to the engine
    audited: Optional[bool] = None


class _NoChannel:
    """The consenting channel is gone by the time of the START: the agent comes from ``agent=``."""

    def variable(self, name: str) -> Optional[str]:
        return None

    def expression(self, expression: str, channel: Optional[str] = None) -> str:
        return ""


class DeferredStarts:
    """The pending consents of this daemon, its poller thread and the pool that STARTs."""

    def __init__(self, binding: Binding, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._binding = binding
        self._clock = clock
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._pending: dict[str, PendingConsent] = {}
        self._thread: Optional[threading.Thread] = None
        self._starts = ThreadPoolExecutor(START_WORKERS, thread_name_prefix="vicirec-deferred")
        self._last_poll_error = -1e9
        self.stats = DeferredStats()
        #: Called with every deferred START's outcome (after its audit record), on a pool thread.
        self.on_start: Optional[Callable[[StartOutcome], None]] = None

    # --- configuration ---------------------------------------------------------------------------

    def bind(self, binding: Binding) -> None:
        """A reload: later polls and STARTs use the new config, service, reader and audit trail."""
        old, self._binding = self._binding, binding
        if old.reader is not binding.reader:
            old.reader.close()  # a poll still using it reconnects once and is then dropped

    @property
    def binding(self) -> Binding:
        return self._binding

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def pending_ids(self) -> dict[str, str]:
        """uniqueid -> consent id of every consent held (audited or being audited)."""
        with self._lock:
            return {uid: entry.consent_id for uid, entry in self._pending.items()}

    # --- the consenting session (a worker thread) ----------------------------------------------------

    def consent(self, session: AgiSession, log: Any) -> tuple[Report, Optional[bool]]:
        """Hold the consent of ``session``'s call; the report to set and whether it was audited
        (None: no audit trail). Fail closed: a consent that is not audited is not held."""
        env = session.environment
        binding = self._binding
        report = ConsentReport(ok=False, action=CONSENT)
        try:
            entry, existing = self._admit(env, binding)
        except VicirecError as error:
            with self._lock:
                self.stats.refused += 1
            return self._audited(error_report(error, report), env, binding, log, consent_id="")
        report = replace(report, stage=entry.stage)
        if existing:
            held = f"consent {entry.consent_id} already held; START when an agent takes the call"
            report = replace(report, ok=True, deferred=True, message=held)
            return self._audited(report, env, binding, log, consent_id=entry.consent_id)
        report = replace(report, ok=True, deferred=True,
                         message=f"consent {entry.consent_id} held; START when an agent takes the call")
        report_, audited = self._audited(report, env, binding, log, consent_id=entry.consent_id)
        with self._lock:
            if audited is False:
                if self._pending.get(entry.uniqueid) is entry:
                    del self._pending[entry.uniqueid]
            else:
                entry.active = True
                self.stats.consents += 1
                self._work.notify()
        if audited is not False:
            self._ensure_poller()
            log.info("consent_held", consent_id=entry.consent_id, stage=entry.stage, pending=self.pending())
        return report_, audited

    def _admit(self, env: AgiEnvironment, binding: Binding) -> tuple[PendingConsent, bool]:
        invocation = parse_consent(env.args)
        if invocation.agent is not None:
            raise BadRequest("CONSENT takes no agent=: the agent is whoever takes the call")
        if not binding.reader.server_ip:
            raise ConfigError("CONSENT needs VARserver_ip in astguiclient.conf (this server as VICIdial "
                              "names it): nothing will be recorded")
        uniqueid = env.uniqueid
        if not UNIQUEID.match(uniqueid):
            raise BadRequest("CONSENT needs the channel's uniqueid (agi_uniqueid) to follow the call")
        now = self._clock()
        settings = binding.config.fastagi
        with self._lock:
            if self._stop.is_set():
                raise Unreachable("vicirec daemon stopping: consent not held, nothing will be recorded")
            held = self._pending.get(uniqueid)
            if held is not None:
                return held, True
            if len(self._pending) >= settings.consent_max_pending:
                raise Unreachable(f"vicirec daemon already holds {len(self._pending)} consents "
                                  "(fastagi.consent_max_pending): nothing will be recorded")
            entry = PendingConsent(
                consent_id="c-" + secrets.token_hex(8), uniqueid=uniqueid, environment=env,
                start_args=tuple(env.args[1:]), stage=sanitize_stage(invocation.stage).sent,
                consented_at=now, expires_at=now + settings.consent_timeout,
            )
            self._pending[uniqueid] = entry
        return entry, False

    # --- the poller --------------------------------------------------------------------------------

    def _ensure_poller(self) -> None:
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(target=self._run, name="vicirec-consent-poll", daemon=True)
            # Signals belong to the main thread; the START pool's threads inherit this mask too.
            previous = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
            try:
                self._thread.start()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._stop.is_set() and not any(e.active for e in self._pending.values()):
                    self._work.wait()
                if self._stop.is_set():
                    return
            began = self._clock()
            try:
                self.poll_once()
            except Exception as error:  # noqa: BLE001 - the poller must outlive any bug in one poll
                with contextlib.suppress(Exception):
                    logs.get_logger().exception("consent_poll_failed", error_type=error.__class__.__name__)
            interval = self._binding.config.fastagi.consent_poll_interval
            self._stop.wait(max(0.0, began + interval - self._clock()))

    def poll_once(self) -> None:
        """One poll: START the consents an agent took, forget the ended and the expired ones."""
        binding = self._binding
        with self._lock:
            batch = [entry for entry in self._pending.values() if entry.active]
        if not batch:
            return
        self.stats.polls += 1
        places: Optional[CallPlaces] = None
        try:
            places = binding.reader.places([entry.uniqueid for entry in batch], Deadline(POLL_SECONDS))
        except VicirecError as error:
            self._poll_failed(error)
        seen_at = self._clock()
        for entry in batch:
            if places is not None:
                agents = places.taken.get(entry.uniqueid, ())
                if len(agents) == 1:
                    if self._claim(entry):
                        self._starts.submit(self._start, entry, agents[0].user, seen_at, binding)
                    continue
                if len(agents) > 1:
                    # Two agents with one call: never a guess; wait (it may settle) until the timeout.
                    if not entry.ambiguous:
                        entry.ambiguous = True
                        logs.get_logger(uniqueid=entry.uniqueid).warning(
                            "consent_ambiguous", consent_id=entry.consent_id, agents=[a.user for a in agents])
                elif entry.uniqueid in places.queued:
                    entry.queued = True
                elif entry.queued:
                    self._forget(entry, "ended", "the call ended before an agent took it", binding)
                    continue
            if seen_at >= entry.expires_at:
                timeout = binding.config.fastagi.consent_timeout
                self._forget(entry, "expired", f"no agent took the call within {timeout:g} s", binding)

    def _poll_failed(self, error: VicirecError) -> None:
        self.stats.poll_errors += 1
        now = self._clock()
        if now - self._last_poll_error >= POLL_ERROR_LOG_INTERVAL:
            self._last_poll_error = now
            logs.get_logger().warning("consent_poll_error", error=error.code.value, message=error.message,
                                      pending=self.pending())

    def _claim(self, entry: PendingConsent) -> bool:
        """Take ``entry`` out of the table: whoever does so is the only one to act on it."""
        with self._lock:
            if self._pending.get(entry.uniqueid) is entry:
                del self._pending[entry.uniqueid]
                return True
        return False

    # --- acting ------------------------------------------------------------------------------------

    def _start(self, entry: PendingConsent, agent: str, seen_at: float, binding: Binding) -> None:
        log = logs.get_logger(uniqueid=entry.uniqueid, channel=entry.environment.channel)
        sent_at = self._clock()
        args = ["START", *entry.start_args, f"agent={agent}"]
        try:
            report = _start_service(binding).handle(
                args, entry.environment, _NoChannel(), Deadline(binding.config.call.deadline))
        except Exception as error:  # noqa: BLE001 - audited and logged like any failed START
            log.exception("internal_error", error_type=error.__class__.__name__)
            report = error_report(VicirecError(f"internal error ({error.__class__.__name__})"))
        report = replace(report, agent_source=CONSENT_SOURCE if report.agent else report.agent_source)
        report, audited = self._audited(report, entry.environment, binding, log,
                                        consent_id=entry.consent_id, deferred=True)
        with self._lock:  # pool threads count concurrently
            if report.ok:
                self.stats.started += 1
            else:
                self.stats.start_failed += 1
        log.info("deferred_start", consent_id=entry.consent_id, **report.log_fields(), audited=audited,
                 waited_s=round(sent_at - entry.consented_at, 3),
                 after_poll_ms=round((sent_at - seen_at) * 1000, 1),
                 duration_ms=round((self._clock() - sent_at) * 1000, 1))
        callback = self.on_start
        if callback is not None:
            callback(StartOutcome(entry.consent_id, entry.uniqueid, agent, report, seen_at, sent_at, audited))

    def _forget(self, entry: PendingConsent, reason: str, message: str, binding: Binding) -> None:
        if not self._claim(entry):
            return
        with self._lock:
            if reason == "ended":
                self.stats.ended += 1
            elif reason == "expired":
                self.stats.expired += 1
            else:
                self.stats.dropped += 1
        log = logs.get_logger(uniqueid=entry.uniqueid, channel=entry.environment.channel)
        report = ConsentReport(ok=False, error=ErrorCode.NO_AGENT, action=CONSENT, stage=entry.stage,
                               message=f"consent {entry.consent_id} forgotten: {message}; nothing recorded")
        self._audited(report, entry.environment, binding, log, consent_id=entry.consent_id)
        log.info("consent_forgotten", consent_id=entry.consent_id, reason=reason,
                 held_s=round(self._clock() - entry.consented_at, 3))

    def _audited(
        self, report: Report, env: AgiEnvironment, binding: Binding, log: Any, *, consent_id: str,
        deferred: bool = False,
    ) -> tuple[Report, Optional[bool]]:
        audit = binding.audit
        if audit is None:
            return report, None
        try:
            audit.record(report, env, transport="fastagi", consent_id=consent_id, deferred=deferred)
        except Exception as error:  # noqa: BLE001 - any failure: fail closed, like every invocation
            log.exception("audit_write_failed", path=audit.path, error=str(error), action=report.action,
                          consent_id=consent_id, original_result="OK" if report.ok else "ERROR")
            failed = audit_failed_report(report, error)
            if isinstance(failed, ConsentReport):
                failed = replace(failed, deferred=False)
            return failed, False
        return report, True

    # --- stopping ----------------------------------------------------------------------------------

    def stop(self, reason: str = "the daemon stopped", timeout: float = 10.0) -> int:
        """Stop polling, let STARTs in flight finish, forget (audited) what is still held; how many."""
        with self._lock:
            self._stop.set()
            self._work.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        self._starts.shutdown(wait=True)
        with self._lock:
            left = list(self._pending.values())
        binding = self._binding
        for entry in left:
            self._forget(entry, "dropped", reason, binding)
        binding.reader.close()
        if left:
            logs.get_logger().warning("consents_dropped", count=len(left), reason=reason)
        return len(left)


def _start_service(binding: Binding) -> RecordingService:
    """The binding's engine with only the ``argument`` resolver: the agent is the one the database
    showed on the call, whatever chain the dialplan's own STARTs use (same client, pool, breaker)."""
    return binding.service.with_resolvers([ArgumentResolver()])


def build_deferred(
    config: Config, service: RecordingService, audit: Optional[AuditTrail],
    previous: Optional[DeferredStarts] = None,
) -> Optional[DeferredStarts]:
    """The daemon's deferred STARTs for ``config`` (``agents.lookup = "mysql"`` only), kept across
    reloads with the new binding. Raises ConfigError when astguiclient.conf cannot be read."""
    if config.agents.lookup != "mysql":
        if previous is not None:
            previous.stop('reload: agents.lookup is no longer "mysql"')
        return None
    from vicirec.agents.astguiclient import load_astguiclient_conf
    from vicirec.agents.live_calls import LiveCallReader
    from vicirec.agents.mysql_directory import MysqlDirectory
    from vicirec.redaction import Redactor

    database = load_astguiclient_conf(config.agents.astguiclient_conf)
    directory = MysqlDirectory(database, config,
                               redactor=Redactor([database.password, config.vicidial.password]))
    binding = Binding(config=config, service=service, reader=LiveCallReader(directory), audit=audit)
    if previous is not None:
        previous.bind(binding)
        return previous
    return DeferredStarts(binding)

