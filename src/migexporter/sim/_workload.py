"""Seeded, phase-wise workloads whose activity integrals are exact, like hardware counters."""

from __future__ import annotations

import random

# Positions in an activity vector. The first five are the GPM/DCGM profiling activities
# (graphics engine, SM active, SM occupancy, tensor pipes, DRAM); MEMORY is the fraction of the
# instance's memory in use, which is not integrated by hardware but is kept alongside.
GR, SM, OCCUPANCY, TENSOR, DRAM, MEMORY = range(6)
# Appended later, drawn from a second random stream so that the six above keep their values:
# the FP64/FP32/FP16 pipes, video decode (a fraction of the decoders busy), and PCIe and
# NVLink traffic per direction as fractions of the model's per-direction link bandwidth.
FP64, FP32, FP16, DECODE, PCIE_TX, PCIE_RX, NVLINK_TX, NVLINK_RX = range(6, 14)
WIDTH = 14

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
    ``dram <= gr``, each FP pipe ``<= sm``. Time only moves forward: ``advance`` integrates the
    levels from the last call to ``now``, so differences of ``totals`` are exact averages over
    any window.
    """

    def __init__(self, seed: str, start: float) -> None:
        self._rng = random.Random(seed)  # noqa: S311 (reproducible simulation, not secrets)
        # The levels added after the first six: their own stream leaves those six unchanged.
        self._io_rng = random.Random(f"{seed}:io")  # noqa: S311 (as above)
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

    @property
    def phase_end(self) -> float:
        """When the current levels end: they are constant until then."""
        return self._phase_end

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
            self._levels = (0.0, 0.0, 0.0, 0.0, 0.0, rng.uniform(0.0, 0.3), *self._idle_io())
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
            *self._busy_io(sm),
        )

    def _idle_io(self) -> Vector:
        # An idle H200 still moved about 1 MiB/s each way over PCIe (GPM 20/21: 1.27 and
        # 0.98 MiB/s), some 2e-5 of a Gen5 x16 link; nothing else runs.
        rng = self._io_rng
        tx, rx = rng.uniform(1e-5, 3e-5), rng.uniform(1e-5, 3e-5)
        return (0.0, 0.0, 0.0, 0.0, tx, rx, 0.0, 0.0)

    def _busy_io(self, sm: float) -> Vector:
        rng = self._io_rng
        # Most phases are tensor-bound (a bf16 matmul on an H200 kept FP64/32/16 at 0 %);
        # some use the FP32 or FP16 pipes, few use FP64 (HPC).
        fp64 = sm * rng.uniform(0.2, 0.9) if rng.random() < 0.15 else 0.0
        fp32 = sm * rng.uniform(0.0, 0.6)
        fp16 = sm * rng.uniform(0.0, 0.4)
        decode = rng.uniform(0.2, 0.9) if rng.random() < 0.15 else 0.0  # video inference
        # PCIe: data loading, a few percent to ~30 % of the link; NVLink: sometimes high
        # (collectives of a multi-GPU job), otherwise a trickle.
        pcie_tx, pcie_rx = rng.uniform(0.02, 0.3), rng.uniform(0.02, 0.3)
        high = rng.random() < 0.3
        nvlink_tx = rng.uniform(0.3, 0.9) if high else rng.uniform(0.0, 0.03)
        nvlink_rx = nvlink_tx * rng.uniform(0.7, 1.0)
        return (fp64, fp32, fp16, decode, pcie_tx, pcie_rx, nvlink_tx, nvlink_rx)
