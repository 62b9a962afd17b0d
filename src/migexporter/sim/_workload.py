"""Seeded, phase-wise workloads whose activity integrals are exact, like hardware counters."""

from __future__ import annotations

import random

# Positions in an activity vector. The first five are the GPM/DCGM profiling activities
# (graphics engine, SM active, SM occupancy, tensor pipes, DRAM); MEMORY is the fraction of the
# instance's memory in use, which is not integrated by hardware but is kept alongside.
GR, SM, OCCUPANCY, TENSOR, DRAM, MEMORY = range(6)
WIDTH = 6

Vector = tuple[float, ...]
ZERO: Vector = (0.0,) * WIDTH


def scale(vector: Vector, factor: float) -> Vector:
    """``vector * factor``."""
    return tuple(v * factor for v in vector)


def add(a: Vector, b: Vector) -> Vector:
    """``a + b``."""
    return tuple(x + y for x, y in zip(a, b, strict=True))


class Workload:
    """One entity's activity: constant levels within phases of 3-20 s, drawn from a seed.

    Every level lies in [0, 1] and ``tensor <= sm <= gr``, ``occupancy <= sm``,
    ``dram <= gr``. Time only moves forward: ``advance`` integrates the levels from the last
    call to ``now``, so differences of ``totals`` are exact averages over any window.
    """

    def __init__(self, seed: str, start: float) -> None:
        self._rng = random.Random(seed)  # noqa: S311 (reproducible simulation, not secrets)
        # Some instances are mostly idle, some mostly busy, as on a real shared cluster.
        self._idle_chance = self._rng.choice((0.05, 0.2, 0.4, 0.8))
        self._time = start
        self._phase_end = start
        self._levels = ZERO
        self.totals: Vector = ZERO
        self._next_phase()

    @property
    def levels(self) -> Vector:
        """The current instantaneous levels."""
        return self._levels

    def advance(self, now: float) -> Vector:
        """Integrate up to ``now`` and return the increment (activity-seconds per metric)."""
        increment = ZERO
        while now > self._time:
            until = min(now, self._phase_end)
            increment = add(increment, scale(self._levels, until - self._time))
            self._time = until
            if self._time >= self._phase_end:
                self._next_phase()
        self.totals = add(self.totals, increment)
        return increment

    def _next_phase(self) -> None:
        rng = self._rng
        self._phase_end = self._time + rng.uniform(3.0, 20.0)
        if rng.random() < self._idle_chance:
            # Idle: nothing runs, but a process may still hold memory.
            self._levels = (0.0, 0.0, 0.0, 0.0, 0.0, rng.uniform(0.0, 0.3))
            return
        gr = rng.uniform(0.3, 1.0)
        sm = gr * rng.uniform(0.5, 1.0)
        self._levels = (
            gr,
            sm,
            sm * rng.uniform(0.1, 0.7),
            sm * rng.uniform(0.0, 1.0),
            gr * rng.uniform(0.1, 0.9),
            rng.uniform(0.2, 0.95),
        )
