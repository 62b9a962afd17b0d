"""A small hand-written backend for collector and server tests: state in, values out."""

from __future__ import annotations

import collections
import queue
import threading
import time
from dataclasses import dataclass, field

from migexporter import catalog
from migexporter.backends.base import (
    BackendUnavailableError,
    DeviceEvent,
    GpuSample,
    GpuUnavailableError,
    Readings,
)
from migexporter.topology import ComputeInstance, Gpu, GpuInstance


def gpu_instance(gi_id: int, profile: str = "1g.10gb") -> GpuInstance:
    ci = ComputeInstance(0, f"MIG-{gi_id:04d}", profile, 1, 16)
    return GpuInstance(gi_id, profile, 1, 10 << 30, 16, compute_instances=(ci,))


@dataclass
class StubBackend:
    """GPUs are listed in ``gpus``; ``lost`` GPUs raise; ``hung`` GPUs block until released;
    ``slow`` GPUs take that many seconds per call. ``sampled`` counts samples taken per GPU;
    ``readings`` adds (metric, value, extra labels) to a GPU's samples."""

    gpus: list[Gpu] = field(default_factory=list)
    lost: set[int] = field(default_factory=set)
    hung: set[int] = field(default_factory=set)
    slow: dict[int, float] = field(default_factory=dict)
    sampled: collections.Counter[int] = field(default_factory=collections.Counter)
    down: bool = False
    name: str = "stub"
    driver_version: str = "999.0"
    release: threading.Event = field(default_factory=threading.Event)
    events: queue.Queue[DeviceEvent] = field(default_factory=queue.Queue)
    closed: bool = False
    readings: dict[int, list[tuple[catalog.Metric, float, tuple[str, ...]]]] = field(
        default_factory=dict
    )

    def open(self) -> None:
        if self.down:
            raise BackendUnavailableError("stub: no driver")

    def gpu_count(self) -> int:
        if self.down:
            raise BackendUnavailableError("stub: driver gone")
        return len(self.gpus)

    def _check(self, index: int) -> None:
        if index in self.hung:
            self.release.wait(30)
        if index in self.slow:
            time.sleep(self.slow[index])
        if index in self.lost:
            raise GpuUnavailableError(f"GPU {index} is lost")

    def discover_gpu(self, index: int) -> Gpu:
        self._check(index)
        return self.gpus[index]

    def sample(self, gpu: Gpu) -> GpuSample:
        self._check(gpu.index)
        self.sampled[gpu.index] += 1
        result = GpuSample()
        result.gpu.set(catalog.GPU_TEMPERATURE, 40 + gpu.index)
        for metric, value, labels in self.readings.get(gpu.index, ()):
            result.gpu.set(metric, value, *labels)
        for gi in gpu.gpu_instances:
            readings = result.gpu_instances.setdefault(gi.id, Readings())
            readings.set(catalog.GI_SM_ACTIVE, gi.id / 10)
        return result

    def wait_events(self, timeout_s: float) -> list[DeviceEvent]:
        try:
            first = self.events.get(timeout=timeout_s)
        except queue.Empty:
            return []
        batch = [first]
        while not self.events.empty():
            batch.append(self.events.get_nowait())
        return batch

    def close(self) -> None:
        self.closed = True
