"""HTTP edge to VICIdial: POST forms to ``agc/api.php`` and ``non_agent_api.php``.

One ``requests.Session`` (a shared pool in the FastAGI daemon), form bodies so the password stays
out of web-server access logs, TLS verified, every timeout cut from the invocation's deadline, the
body read with a byte cap, and a retry policy that never risks a second recording:

* a failed login is never retried (ten failures lock the API user out for 15 minutes);
* START is retried only when the request provably never reached VICIdial (connection refused,
  name resolution failure, connect timeout): each START that arrives can start one more recording;
* STATUS, STOP and the lookups are retried on any transient fault while time remains;
* a refused connection or a host name that does not resolve is certain and immediate: it is tried
  once more (a daemon restarting) and then reported, never retried until the deadline.

The FastAGI daemon passes a :class:`~vicirec.vicidial.breaker.CircuitBreaker`: every attempt asks it first,
and while VICIdial is known to be down the answer is an immediate ``Unreachable``.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import threading
import time
from collections.abc import Mapping
from typing import Any, Callable, Optional, TypeVar
from urllib.parse import urlencode

import requests
import urllib3
import urllib3.connection
import urllib3.exceptions

from vicirec import __version__
from vicirec.config import Config
from vicirec.deadline import Deadline
from vicirec.errors import BadResponse, Unreachable, VicidialError, VicidialTimeout, VicirecError
from vicirec.redaction import Redactor
from vicirec.vicidial import responses
from vicirec.vicidial.breaker import CircuitBreaker
from vicirec.vicidial.responses import (
    PARK_CALL_VALUES,
    Action,
    AgentStatus,
    LoggedInAgent,
    ParkCallReply,
    RecordingReply,
)

# Below this much time left, another attempt cannot finish: report instead of trying.
_MIN_ATTEMPT_SECONDS = 0.05
_BACKOFF_SECONDS = (0.05, 0.2, 0.5, 1.0)
# Retries after a refused connection or a name that does not resolve: one (a web server restarting).
_CERTAIN_RETRIES = 1
_REFUSED = "connection refused"
_NO_SUCH_HOST = "host name does not resolve"
_CERTAIN_REASONS = (_REFUSED, _NO_SUCH_HOST)
_R = TypeVar("_R")
# Lines kept in errors and logs are cut to this, always after the password has been masked.
RAW_MAX_CHARS = 300
# The form goes out pre-encoded (what requests would make of the dict, see _encode_form); these
# two headers, in the order requests adds them, keep the request byte for byte what it was.
_FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


class Retry(enum.Enum):
    NEVER = "never"
    BEFORE_SEND = "before-send"  # only when the request provably never left
    TRANSIENT = "transient"      # any transient fault


class _Attempt(Exception):
    """A failed attempt: the error to report, and whether the request may have reached VICIdial."""

    def __init__(
        self, error: VicidialError, *, maybe_sent: bool, transient: bool = True, attempted: bool = True,
        certain: bool = False,
    ) -> None:
        super().__init__(error.message)
        self.error = error
        self.maybe_sent = maybe_sent
        self.transient = transient
        self.attempted = attempted  # False: given up before trying (tells nothing about VICIdial)
        self.certain = certain  # refused / no such host: the answer came at once and will not change

    def retryable(self, rule: Retry) -> bool:
        if rule is Retry.NEVER or not self.transient:
            return False
        if rule is Retry.BEFORE_SEND:
            return not self.maybe_sent
        return True


class _OneWrite:
    """An HTTP connection that sends a request's head and a body of bytes in one ``send``.

    urllib3 writes the head (``endheaders``) and then the body in a second ``sendall``: with
    ``TCP_NODELAY`` that is two segments and two wake-ups of the server for a 100-byte form. Here
    the head is held back until the body (or ``getresponse``, for a request without one) comes;
    the bytes on the wire are the same, and the connection is already open when the head is
    held (urllib3 connects before ``request``), so every error is raised as before, by the send."""

    _holding = False
    _held: Optional[bytes] = None

    def endheaders(self, message_body: Any = None, *, encode_chunked: bool = False) -> None:
        self._holding = True
        try:
            super().endheaders(message_body, encode_chunked=encode_chunked)  # type: ignore[misc]
        finally:
            self._holding = False

    def send(self, data: Any) -> None:
        if self._holding and self._held is None and isinstance(data, bytes):
            self._held = data  # the head, from http.client's _send_output
            return
        held, self._held = self._held, None
        if held is not None:
            if isinstance(data, (bytes, bytearray)):
                data = held + bytes(data)
            else:
                super().send(held)  # type: ignore[misc]
        super().send(data)  # type: ignore[misc]

    def getresponse(self) -> Any:
        held, self._held = self._held, None
        if held is not None:
            super().send(held)  # type: ignore[misc]
        return super().getresponse()  # type: ignore[misc]

    def close(self) -> None:
        self._held = None
        super().close()  # type: ignore[misc]


class _OneWriteHTTPConnection(_OneWrite, urllib3.connection.HTTPConnection):
    pass


class _OneWriteHTTPSConnection(_OneWrite, urllib3.connection.HTTPSConnection):
    pass


class _OneWriteHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _OneWriteHTTPConnection


class _OneWriteHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _OneWriteHTTPSConnection


class _Adapter(requests.adapters.HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _OneWriteHTTPPool, "https": _OneWriteHTTPSPool}


def make_session(pool_size: int = 1) -> requests.Session:
    session = requests.Session()
    # No proxies or .netrc from Asterisk's environment: the API call goes where the config says.
    session.trust_env = False
    session.headers["User-Agent"] = f"vicirec/{__version__}"
    adapter = _Adapter(pool_connections=2, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class VicidialClient:
    def __init__(
        self,
        config: Config,
        *,
        session: Optional[requests.Session] = None,
        redactor: Optional[Redactor] = None,
        sleep: Callable[[float], None] = time.sleep,
        breaker: Optional[CircuitBreaker] = None,
    ) -> None:
        self._settings = config.vicidial
        self._breaker = breaker
        self._api_url = config.vicidial.api_url
        self._non_agent_api_url = config.non_agent_api_url
        self._session = session or make_session()
        self._redactor = redactor or Redactor([config.vicidial.password])
        self._sleep = sleep
        if self._settings.ca_bundle:
            self._verify: object = self._settings.ca_bundle
        else:
            self._verify = self._settings.verify_tls
        self.requests_sent = 0
        # per URL: the prepared request every call copies, and the settings session.send gets
        self._templates: dict[str, tuple[requests.PreparedRequest, dict[str, Any]]] = {}

    def _credentials(self) -> dict[str, str]:
        return {"source": self._settings.source, "user": self._settings.user, "pass": self._settings.password}

    # --- agent API ----------------------------------------------------------------------------

    def recording(
        self, action: Action, agent: str, deadline: Deadline, stage: str = "", *, once: bool = False
    ) -> RecordingReply:
        """``once``: exactly one request, whatever happens (``vicirec check``'s probe)."""
        form = self._credentials()
        form.update({"agent_user": agent, "function": "recording", "value": action.value})
        if action is Action.START and stage:
            form["stage"] = stage
        rule = Retry.BEFORE_SEND if action is Action.START else Retry.TRANSIENT
        if once:
            rule = Retry.NEVER
        body = self._post(self._api_url, form, deadline, rule)
        return self._parse(lambda: responses.parse_recording_reply(body, action))

    def park_call(self, value: str, agent: str, deadline: Deadline) -> ParkCallReply:
        """``function=park_call``: writing ``external_park`` again is harmless, so retried like STATUS."""
        if value not in PARK_CALL_VALUES:
            raise ValueError(f"not a park_call value: {value!r}")
        form = self._credentials()
        form.update({"agent_user": agent, "function": "park_call", "value": value})
        body = self._post(self._api_url, form, deadline, Retry.TRANSIENT)
        return self._parse(lambda: responses.parse_park_call_reply(body))

    # --- non-agent API ------------------------------------------------------------------------

    def logged_in_agents(self, deadline: Deadline, *, once: bool = False) -> list[LoggedInAgent]:
        form = self._credentials()
        form["function"] = "logged_in_agents"
        body = self._post(self._non_agent_api_url, form, deadline, Retry.NEVER if once else Retry.TRANSIENT)
        return self._parse(lambda: responses.parse_logged_in_agents(body))

    def agent_status(self, agent: str, deadline: Deadline) -> AgentStatus:
        form = self._credentials()
        form.update({"function": "agent_status", "agent_user": agent})
        body = self._post(self._non_agent_api_url, form, deadline, Retry.TRANSIENT)
        return self._parse(lambda: responses.parse_agent_status(body))

    # --- transport ----------------------------------------------------------------------------

    def _parse(self, parse: Callable[[], _R]) -> _R:
        try:
            return parse()
        except VicirecError as error:  # NoAgent (CALL NOT FOUND) is no VicidialError but carries raw too
            # The parsers mask the echo shapes they know; mask the literal password on top.
            error.message = self._redactor.text(error.message)
            error.args = (error.message,)
            error.raw = self._redactor.text(error.raw)[:RAW_MAX_CHARS] if error.raw is not None else None
            raise

    def _post(self, url: str, form: Mapping[str, str], deadline: Deadline, rule: Retry) -> bytes:
        attempt = 0
        certain = 0
        last: Optional[_Attempt] = None
        while True:
            try:
                return self._post_guarded(url, form, deadline)
            except _Attempt as failed:
                if not failed.attempted and last is not None:
                    # The back-off overran what was left: report the fault that made us retry
                    # (UNREACHABLE stays UNREACHABLE), not "no time left".
                    raise last.error from None
                last = failed
                pause = _BACKOFF_SECONDS[min(attempt, len(_BACKOFF_SECONDS) - 1)]
                attempt += 1
                certain += failed.certain
                if certain > _CERTAIN_RETRIES:
                    raise failed.error from None
                if not failed.retryable(rule) or deadline.remaining() < pause + _MIN_ATTEMPT_SECONDS:
                    raise failed.error from None
                self._sleep(pause)

    def _post_guarded(self, url: str, form: Mapping[str, str], deadline: Deadline) -> bytes:
        """One attempt, past the circuit breaker when there is one (it raises Unreachable when open)."""
        breaker = self._breaker
        if breaker is None:
            return self._post_once(url, form, deadline)
        permit = breaker.acquire()
        try:
            body = self._post_once(url, form, deadline)
        except _Attempt as failed:
            if failed.attempted:
                breaker.report(permit, failed.error)
            else:
                breaker.release(permit)
            raise
        except BaseException:
            breaker.release(permit)
            raise
        breaker.report(permit, None)
        return body

    def _post_once(self, url: str, form: Mapping[str, str], deadline: Deadline) -> bytes:
        connect = deadline.cut(self._settings.connect_timeout)
        read = deadline.cut(self._settings.read_timeout)
        if connect < _MIN_ATTEMPT_SECONDS:
            raise _Attempt(VicidialTimeout("no time left to ask VICIdial"), maybe_sent=False, transient=False,
                           attempted=False)
        self.requests_sent += 1
        try:
            response = self._send_form(url, form, (connect, read))
        except requests.exceptions.ConnectTimeout as exc:
            raise _Attempt(Unreachable(f"VICIdial did not accept a connection within {connect:.1f} s"),
                           maybe_sent=False) from exc
        except requests.exceptions.ReadTimeout as exc:
            raise _Attempt(VicidialTimeout(f"VICIdial did not answer within {read:.1f} s"),
                           maybe_sent=True) from exc
        except requests.exceptions.SSLError as exc:
            raise _Attempt(Unreachable("TLS handshake with VICIdial failed (certificate?)"),
                           maybe_sent=False, transient=False) from exc
        except requests.exceptions.ConnectionError as exc:
            if _never_sent(exc):
                reason = _connect_reason(exc)
                raise _Attempt(Unreachable(f"cannot connect to VICIdial: {reason}"), maybe_sent=False,
                               certain=reason in _CERTAIN_REASONS) from exc
            raise _Attempt(BadResponse("the connection to VICIdial broke after the request was sent"),
                           maybe_sent=True) from exc
        except requests.exceptions.RequestException as exc:
            raise _Attempt(BadResponse(f"HTTP request failed: {exc.__class__.__name__}"),
                           maybe_sent=True, transient=False) from exc
        with response:
            body = self._read_body(response, deadline)
            if response.status_code != 200:
                raise _Attempt(
                    BadResponse(f"VICIdial answered HTTP {response.status_code}",
                                raw=self._redactor.text(body.decode("utf-8", "replace"))[:RAW_MAX_CHARS]),
                    maybe_sent=True, transient=response.status_code >= 500,
                )
            return body

    def _send_form(
        self, url: str, form: Mapping[str, str], timeout: tuple[float, float]
    ) -> requests.Response:
        """``session.post(url, data=form, stream=True, allow_redirects=False, ...)`` with the same
        bytes on the wire, minus most of requests' per-call preparation: the request is prepared
        once per URL (headers merged, URL parsed, environment settings resolved) and every call
        sends a copy with its own body. Whenever the session holds cookies (never with VICIdial's
        API) the full path runs, so that the jar is merged in as requests would."""
        session = self._session
        if len(session.cookies):
            return session.post(
                url, data=dict(form), timeout=timeout, stream=True,
                verify=self._verify, allow_redirects=False,  # type: ignore[arg-type]
            )
        body = _encode_form(form)
        cached = self._templates.get(url)
        if cached is None:
            template = session.prepare_request(
                requests.Request("POST", url, data=b"", headers=_form_headers(b"")))
            settings: dict[str, Any] = dict(session.merge_environment_settings(
                template.url, {}, True, self._verify, None))  # type: ignore[arg-type]
            self._templates[url] = (template, settings)
        else:
            template, settings = cached
        prepared = requests.PreparedRequest()
        prepared.method = template.method
        prepared.url = template.url
        prepared.headers = template.headers.copy()
        prepared.headers["Content-Length"] = str(len(body))
        # read-only for a request that is not redirected
        prepared._cookies = template._cookies  # type: ignore[attr-defined]
        prepared.body = body
        prepared.hooks = template.hooks
        return session.send(prepared, timeout=timeout, allow_redirects=False, **settings)

    def _read_body(self, response: requests.Response, deadline: Deadline) -> bytes:
        cap = self._settings.max_response_bytes
        # A peer that drips bytes resets the read timeout on every packet; the deadline does not
        # move, so the watchdog shuts the socket down when it passes and the blocked read returns.
        watchdog = WATCHDOG.arm(time.monotonic() + deadline.remaining(), lambda: _shutdown(response))
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_content(chunk_size=16384):
                chunks.append(chunk)
                size += len(chunk)
                if size > cap:
                    raise _Attempt(BadResponse(f"VICIdial's answer is larger than {cap} bytes"),
                                   maybe_sent=True, transient=False)
                if deadline.expired:
                    raise _Attempt(VicidialTimeout("VICIdial's answer did not finish in time"),
                                   maybe_sent=True)
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            if deadline.expired or _is_read_timeout(exc):
                raise _Attempt(VicidialTimeout("VICIdial's answer did not finish in time"),
                               maybe_sent=True) from exc
            raise _Attempt(BadResponse("VICIdial's answer was cut off"), maybe_sent=True) from exc
        finally:
            watchdog.cancel()
        return b"".join(chunks)


def _form_headers(body: bytes) -> dict[str, str]:
    # Content-Length first (requests rewrites its value in place), then Content-Type: the order
    # requests itself gives them for a dict body.
    return {"Content-Length": str(len(body)), "Content-Type": _FORM_CONTENT_TYPE}


def _encode_form(form: Mapping[str, str]) -> bytes:
    """The body requests makes of ``data=dict(form)`` (every value a str): each pair UTF-8 and
    ``quote_plus``-encoded, in the form's order. Done here because requests' own path spends more
    CPU than the rest of a request in its ``runtime_checkable`` Protocol checks."""
    return urlencode([(key.encode("utf-8"), value.encode("utf-8")) for key, value in form.items()],
                     doseq=True).encode("ascii")


def _nothing() -> None:
    return None


class WatchdogGuard:
    """One armed deadline: :meth:`cancel` it once the guarded read is over."""

    __slots__ = ("_action", "_lock", "cancelled")

    def __init__(self, action: Callable[[], None]) -> None:
        self._action = action
        self._lock = threading.Lock()
        self.cancelled = False

    def cancel(self) -> None:
        """After this returns the action has either run to its end already or never will."""
        with self._lock:
            self.cancelled = True
            # The entry waits in the heap until its time: do not keep the response alive with it.
            self._action = _nothing

    def fire(self) -> None:
        with self._lock:  # a cancel() that comes now waits for the action to end
            if self.cancelled:
                return
            self.cancelled = True
            self._action()


class Watchdog:
    """Deadlines of every request in the process, kept by one thread (started on first use).

    A ``threading.Timer`` per request meant a thread created, started (a hand-shake through an
    Event), cancelled and ended for every HTTP call: under load that was a tenth of the FastAGI
    daemon's CPU and a dozen GIL hand-offs per call. Here arming is a heap push under a lock, and
    the thread is woken only when a new deadline is earlier than every one it waits for (almost
    never: deadlines come in roughly in order). A cancelled deadline stays in the heap until its
    time or until it reaches the top, whichever comes first.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, WatchdogGuard]] = []
        self._order = itertools.count()
        self._thread: Optional[threading.Thread] = None
        self.fired = 0

    def arm(self, at: float, action: Callable[[], None]) -> WatchdogGuard:
        """Run ``action`` at ``at`` (the clock's time) unless the guard is cancelled first."""
        guard = WatchdogGuard(action)
        entry = (at, next(self._order), guard)
        with self._cond:
            heapq.heappush(self._heap, entry)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="vicirec-http-watchdog", daemon=True)
                self._thread.start()
            elif self._heap[0] is entry:
                self._cond.notify()
        return guard

    def pending(self) -> int:
        """Deadlines armed and not cancelled yet (for tests)."""
        with self._cond:
            return sum(1 for _at, _n, guard in self._heap if not guard.cancelled)

    def _run(self) -> None:
        heap = self._heap
        while True:
            with self._cond:
                while True:
                    while heap and heap[0][2].cancelled:
                        heapq.heappop(heap)
                    if not heap:
                        self._cond.wait()
                        continue
                    wait = heap[0][0] - self._clock()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                _at, _n, guard = heapq.heappop(heap)
            try:
                guard.fire()
            except Exception:  # noqa: BLE001, S112 - the thread outlives any one failed shutdown
                continue
            self.fired += 1


WATCHDOG = Watchdog()


def _shutdown(response: requests.Response) -> None:
    shutdown = getattr(response.raw, "shutdown", None)
    if shutdown is not None:
        shutdown()
    else:  # pragma: no cover - urllib3 < 2.3
        response.close()


def _never_sent(exc: requests.exceptions.ConnectionError) -> bool:
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)
    return isinstance(reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError))


def _connect_reason(exc: requests.exceptions.ConnectionError) -> str:
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)
    if isinstance(reason, getattr(urllib3.exceptions, "NameResolutionError", ())):
        return _NO_SUCH_HOST
    text = str(reason)
    if "Connection refused" in text:
        return _REFUSED
    return reason.__class__.__name__


def _is_read_timeout(exc: BaseException) -> bool:
    seen: Optional[BaseException] = exc
    for _ in range(6):
        if seen is None:
            return False
        if isinstance(seen, (urllib3.exceptions.ReadTimeoutError, TimeoutError)):
            return True
        inner = seen.args[0] if seen.args and isinstance(seen.args[0], BaseException) else None
        seen = inner or seen.__cause__ or seen.__context__
    return False
