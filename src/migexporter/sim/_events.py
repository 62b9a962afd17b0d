"""Event sets: per-set queues of driver events, drained one event per wait."""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass

from migexporter.backends.nvml import UNATTRIBUTED


@dataclass(frozen=True)
class Event:
    """One driver event, as ``c_nvmlEventData_t`` will carry it."""

    gpu: int  # index of the parent GPU; the event's device is that GPU's handle
    event_type: int  # nvmlEventType*
    data: int  # the XID for nvmlEventTypeXidCriticalError, else 0
    gpu_instance_id: int = UNATTRIBUTED
    compute_instance_id: int = UNATTRIBUTED


class EventQueue:
    """The state behind one ``nvmlEventSet_t``: registrations and undelivered events.

    Like NVML, only events that happen after a GPU's registration are recorded, and only
    whole-device events reach an unprivileged caller (nvml.h: "without privileges in MIG mode
    only whole-device events are reported").
    """

    def __init__(self, privileged: bool) -> None:
        self._privileged = privileged
        self._cond = threading.Condition()
        self._events: deque[Event] = deque()
        self._masks: dict[int, int] = {}
        self._closed = False

    def register(self, gpu: int, mask: int) -> None:
        """Record events of the types in ``mask`` from GPU ``gpu`` from now on."""
        with self._cond:
            self._masks[gpu] = self._masks.get(gpu, 0) | mask

    def offer(self, event: Event, count: int = 1) -> None:
        """Queue ``count`` copies of ``event`` if this set listens for it."""
        if not self._privileged and event.gpu_instance_id != UNATTRIBUTED:
            return
        with self._cond:
            if self._closed or not self._masks.get(event.gpu, 0) & event.event_type:
                return
            # One extend and one notify, however many: injecting 100,000 events stays cheap.
            self._events.extend(itertools.repeat(event, count))
            self._cond.notify_all()

    def wait(self, timeout_s: float) -> Event | None:
        """Take the oldest event, waiting up to ``timeout_s``; None on timeout or close."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._cond:
            while not self._events and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            return None if self._closed else self._events.popleft()

    def close(self) -> None:
        """Drop pending events and wake any waiter."""
        with self._cond:
            self._closed = True
            self._events.clear()
            self._cond.notify_all()
