"""A circuit breaker for the FastAGI daemon: when VICIdial is down, stop hammering it.

Closed (normal): every request goes out; UNREACHABLE / TIMEOUT failures in a row are counted and
any other outcome (VICIdial answered something, even an error) resets the count. After
``failure_threshold`` of them in a row the breaker opens: for ``cool_down`` seconds every request
is refused at once with :class:`~vicirec.errors.Unreachable` ("VICIdial unreachable; not retrying
for X s"), which is true (the request never left) and safe for START. Then it is half-open: one
request goes through as a probe while the others are still refused; success closes the breaker,
failure opens it for another ``cool_down``.

Pure logic: a lock, a clock (injectable) and counters; no I/O. One breaker per VICIdial client,
shared by every session thread of the daemon. The process AGI lives for one call and uses none.
"""

from __future__ import annotations

import enum
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

from vicirec.errors import ErrorCode, Unreachable, VicirecError

# A probe that never reports back (a bug, a killed thread) must not keep the breaker half-open for
# ever: after this long another request may probe. No request outlives call.deadline (<= 60 s).
DEFAULT_PROBE_TIMEOUT = 60.0

_FAILURE_CODES = frozenset({ErrorCode.UNREACHABLE, ErrorCode.TIMEOUT})


class BreakerState(str, enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class BreakerSnapshot:
    """The breaker at one instant, for logs and status pages."""

    state: BreakerState
    consecutive_failures: int
    retry_in: float  # seconds until a probe may go (0 unless open)


@dataclass(frozen=True)
class Permit:
    """Leave to send one request; hand it back to :meth:`CircuitBreaker.report`."""

    probe: bool


class CircuitBreaker:
    def __init__(
        self,
        failure_threshold: int = 5,
        cool_down: float = 5.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        probe_timeout: float = DEFAULT_PROBE_TIMEOUT,
        on_change: Optional[Callable[[BreakerState, BreakerState, str], None]] = None,
    ) -> None:
        """``failure_threshold=0`` makes a breaker that never opens. ``on_change(old, new, why)`` is
        called (outside the lock) on every state change, for logging."""
        if failure_threshold < 0 or cool_down < 0 or probe_timeout <= 0:
            raise ValueError("failure_threshold and cool_down must not be negative, probe_timeout positive")
        self.failure_threshold = failure_threshold
        self.cool_down = cool_down
        self._clock = clock
        self._probe_timeout = probe_timeout
        self._on_change = on_change
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_since: Optional[float] = None

    # --- observation ---------------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        return self.snapshot().state

    def snapshot(self) -> BreakerSnapshot:
        with self._lock:
            now = self._clock()
            state = self._state
            retry_in = 0.0
            if state is BreakerState.OPEN:
                retry_in = max(0.0, self._opened_at + self.cool_down - now)
                if retry_in == 0.0:
                    state = BreakerState.HALF_OPEN  # the next request will probe
            return BreakerSnapshot(state=state, consecutive_failures=self._failures, retry_in=retry_in)

    # --- the request cycle ---------------------------------------------------------------------

    def acquire(self) -> Permit:
        """A permit to send one request, or :class:`Unreachable` raised at once when open."""
        change: Optional[tuple[BreakerState, BreakerState, str]] = None
        with self._lock:
            now = self._clock()
            if self._state is BreakerState.CLOSED:
                return Permit(probe=False)
            if self._state is BreakerState.OPEN:
                wait = self._opened_at + self.cool_down - now
                if wait > 0:
                    raise Unreachable(f"VICIdial unreachable; not retrying for {_seconds(wait)} s")
                change = (BreakerState.OPEN, BreakerState.HALF_OPEN, "cool-down over; probing")
                self._state = BreakerState.HALF_OPEN
                self._probe_since = None
            if self._probe_since is not None and now - self._probe_since < self._probe_timeout:
                raise Unreachable("VICIdial unreachable; not retrying until the probe in flight answers")
            self._probe_since = now
        self._notify(change)
        return Permit(probe=True)

    def report(self, permit: Permit, error: Optional[BaseException]) -> None:
        """How the permitted request ended: ``None`` for an answer from VICIdial, else the error.

        UNREACHABLE and TIMEOUT count as failures; any other :class:`VicirecError` means VICIdial
        did answer (or the fault is ours), so it counts as a success for reachability. Anything
        else (a bug) tells nothing: a probe slot is given back, counters stay.
        """
        if error is None:
            self._success(permit)
        elif isinstance(error, VicirecError) and error.code in _FAILURE_CODES:
            self._failure(permit)
        elif isinstance(error, VicirecError):
            self._success(permit)
        else:
            self.release(permit)

    def release(self, permit: Permit) -> None:
        """The permit was not used to learn anything about VICIdial (e.g. no time was left)."""
        if permit.probe:
            with self._lock:
                self._probe_since = None

    # --- transitions ---------------------------------------------------------------------------

    def _success(self, permit: Permit) -> None:
        change: Optional[tuple[BreakerState, BreakerState, str]] = None
        with self._lock:
            self._failures = 0
            # Only the probe closes the breaker: a late answer to a request sent before it opened
            # says nothing about VICIdial now.
            if permit.probe and self._state is BreakerState.HALF_OPEN:
                change = (BreakerState.HALF_OPEN, BreakerState.CLOSED, "probe answered")
                self._state = BreakerState.CLOSED
                self._probe_since = None
        self._notify(change)

    def _failure(self, permit: Permit) -> None:
        change: Optional[tuple[BreakerState, BreakerState, str]] = None
        with self._lock:
            now = self._clock()
            self._failures += 1
            if self._state is BreakerState.HALF_OPEN and permit.probe:
                change = (BreakerState.HALF_OPEN, BreakerState.OPEN, "probe failed")
                self._open(now)
            elif (
                self._state is BreakerState.CLOSED
                and self.failure_threshold > 0
                and self._failures >= self.failure_threshold
            ):
                change = (BreakerState.CLOSED, BreakerState.OPEN, f"{self._failures} failures in a row")
                self._open(now)
        self._notify(change)

    def _open(self, now: float) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = now
        self._probe_since = None

    def _notify(self, change: Optional[tuple[BreakerState, BreakerState, str]]) -> None:
        if change is not None and self._on_change is not None:
            self._on_change(*change)


def _seconds(value: float) -> str:
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"
