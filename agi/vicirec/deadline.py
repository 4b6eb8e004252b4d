"""One clock for one invocation: every wait and timeout is cut from what is left of it."""

from __future__ import annotations

import time
from typing import Callable, Optional


class Deadline:
    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.started = clock()
        self.at = self.started + max(0.0, seconds)

    def remaining(self) -> float:
        return max(0.0, self.at - self._clock())

    @property
    def expired(self) -> bool:
        return self._clock() >= self.at

    def elapsed(self) -> float:
        return self._clock() - self.started

    def cut(self, seconds: Optional[float]) -> float:
        """``seconds`` bounded by what is left (``None`` means: all that is left)."""
        left = self.remaining()
        return left if seconds is None else max(0.0, min(seconds, left))
