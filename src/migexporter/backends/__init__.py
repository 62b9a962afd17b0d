"""Measurement backends: each turns one vendor library into topology, samples and events."""

from migexporter.backends.base import (
    Backend,
    BackendUnavailableError,
    DeviceEvent,
    EventKind,
    GpuSample,
    GpuUnavailableError,
    Readings,
)

__all__ = [
    "Backend",
    "BackendUnavailableError",
    "DeviceEvent",
    "EventKind",
    "GpuSample",
    "GpuUnavailableError",
    "Readings",
]
