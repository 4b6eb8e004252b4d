"""A short-lived, shared answer of a lookup backend, for the FastAGI daemon.

A burst of key presses (a campaign's callers reaching the same IVR prompt) would otherwise ask
VICIdial once each. :class:`CachedDirectory` keeps the list of logged-in agents for
``agents.cache_seconds`` (about a second: VICIdial's own agent screens refresh that often), and lets
only one fetch per backend run at a time: whoever arrives while it runs waits for its outcome
(bounded by their own deadline) instead of asking too.

* The age is counted from when the fetch *started*, so no answer is served older than the limit.
* An error is never kept: the callers waiting on that fetch share it (each gets its own copy), the
  next caller fetches again. A miss (an agent not in the list) lasts only as long as the list.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Sequence
from typing import Callable, Optional

from vicirec.agents.chain import AgentDirectory, LiveAgent
from vicirec.deadline import Deadline
from vicirec.errors import VicidialTimeout, VicirecError


class _Fetch:
    """One fetch in flight: its outcome, once ``done`` is set."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.agents: Optional[tuple[LiveAgent, ...]] = None
        self.error: Optional[VicirecError] = None


class CachedDirectory:
    """An :class:`AgentDirectory` in front of another one; thread-safe."""

    def __init__(
        self,
        inner: AgentDirectory,
        max_age: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._agents: Optional[tuple[LiveAgent, ...]] = None
        self._fetched_at = 0.0
        self._in_flight: Optional[_Fetch] = None
        self.fetches = 0  # how many times the backend was asked (for tests and the benchmark)

    def logged_in_agents(self, deadline: Deadline) -> Sequence[LiveAgent]:
        with self._lock:
            if self._agents is not None and self._clock() - self._fetched_at < self.max_age:
                return self._agents
            fetch = self._in_flight
            leader = fetch is None
            if fetch is None:
                fetch = self._in_flight = _Fetch()
                self.fetches += 1
        if leader:
            return self._lead(fetch, deadline)
        if not fetch.done.wait(deadline.remaining()):
            raise VicidialTimeout("timed out waiting for another caller's lookup of the logged-in agents")
        if fetch.error is not None:
            raise _copy_error(fetch.error)
        assert fetch.agents is not None
        return fetch.agents

    def _lead(self, fetch: _Fetch, deadline: Deadline) -> tuple[LiveAgent, ...]:
        started = self._clock()
        try:
            agents = tuple(self.inner.logged_in_agents(deadline))
        except VicirecError as error:
            fetch.error = error
            raise
        except BaseException as error:
            fetch.error = VicirecError(f"lookup failed ({error.__class__.__name__})")
            raise
        else:
            fetch.agents = agents
            with self._lock:
                self._agents = agents
                self._fetched_at = started
            return agents
        finally:
            with self._lock:
                self._in_flight = None
            fetch.done.set()

    def clear(self) -> None:
        with self._lock:
            self._agents = None


def _copy_error(error: VicirecError) -> VicirecError:
    """A private copy for each waiting thread: handlers rewrite ``message`` and tracebacks grow."""
    duplicate = copy.copy(error)
    duplicate.__traceback__ = None
    return duplicate
