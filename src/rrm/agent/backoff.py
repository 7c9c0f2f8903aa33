"""Exponential backoff with full jitter, so a fleet that lost its director does not come back in lockstep."""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, initial: float = 0.5, cap: float = 30.0) -> None:
        self.initial = initial
        self.cap = cap
        self._attempt = 0

    def next_delay(self, cap: float | None = None) -> float:
        """A uniform draw from [0, min(cap, initial * 2**attempt)]; each call doubles the ceiling. `cap`: a
        lower ceiling for this draw than the backoff's own."""
        ceiling = min(self.cap if cap is None else min(cap, self.cap), self.initial * 2**self._attempt)
        self._attempt = min(self._attempt + 1, 32)
        return random.uniform(0, ceiling)

    def reset(self) -> None:
        self._attempt = 0
