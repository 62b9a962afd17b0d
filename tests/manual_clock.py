"""A clock that moves only when a test says so; simulated time follows it."""

from __future__ import annotations


class ManualClock:
    """Callable like ``time.monotonic``; ``now`` is set or advanced by the test."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
