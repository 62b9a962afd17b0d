"""The async collector: samples on its own clock, counts driver events, renders the exposition.

Blocking vendor calls never run on the event loop: each GPU has its own worker thread, the GPUs'
calls start one after another (each when the one before answered, or soon after), and a cycle
waits for a GPU at most half an interval from its start, so a hung GPU stalls only itself (its
last values stay until the GPU timeout, then it is down). Driver events are awaited in one more
thread that hands them to the loop. After every cycle and every burst of events the exposition
is rendered once into bytes; scrapes only pick up those bytes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TypeVar

from migexporter import catalog, dra, xids
from migexporter.backends.base import (
    ECC_ERROR_TYPES,
    BackendUnavailableError,
    DeviceEvent,
    EventKind,
    GpuSample,
    GpuUnavailableError,
)
from migexporter.compat import Views
from migexporter.exposition import (
    BuildInfo,
    EventCount,
    EventKey,
    Exposition,
    Snapshot,
    render,
)
from migexporter.pods import NO_OWNER, Labels, PodMap
from migexporter.topology import Gpu, Topology, diff
from migexporter.xids import Severity

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from migexporter.backends.base import Backend

log = logging.getLogger(__name__)
_T = TypeVar("_T")
_NO_PODS = PodMap()
_BACKEND_WORKER = -1  # the worker of backend-wide calls, beside one per GPU index

RECENT_EVENTS = 1000  # /api/events keeps this many; older ones stay counted in the counters
EVENT_WAIT_S = 0.5  # how long the event thread blocks in the driver before checking for stop
POD_ASK_S = 1.0  # how long a topology refresh with new instances waits for the kubelet


@dataclass(frozen=True)
class RecordedEvent:
    """A driver event with the labels it was counted under, for /api/events."""

    event: DeviceEvent
    gpu: str
    mig_uuid: str
    profile: str
    owner: Labels = NO_OWNER


class PodSource(Protocol):
    """Where pod attribution comes from (``pods.PodResourcesWatcher``)."""

    @property
    def current(self) -> PodMap:
        """The devices held by containers, as last known."""

    @property
    def up(self) -> bool | None:
        """Whether the last refresh answered; None when attribution is off."""

    async def refresh(self) -> None:
        """Ask now, out of turn; keeps the last answer when this one fails."""


LOG_BURST = 20  # XID lines logged per window; the rest are summed up at its end
LOG_WINDOW_S = 10.0
_LOG_LEVELS = {Severity.PAGE: logging.WARNING, Severity.TICKET: logging.INFO}


class XidLog:
    """One log line per page-severity (WARNING) or ticket-severity (INFO) XID.

    Under a storm, at most ``burst`` lines per ``window`` seconds; what is held back is summed
    up in one line when the window ends (``flush``, called every cycle), so nothing is silent.
    """

    def __init__(
        self,
        burst: int = LOG_BURST,
        window: float = LOG_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._burst = burst
        self._window = window
        self._clock = clock
        self._window_end = 0.0
        self._logged = 0
        self._held: collections.Counter[int] = collections.Counter()
        self._held_level = logging.INFO

    def event(self, code: int, where: str) -> None:
        """Log XID ``code`` at ``where`` (GPU, instance, holder), or count it held back."""
        row = xids.describe(code)
        level = _LOG_LEVELS.get(row.severity)
        if level is None:
            return  # info-severity XIDs are counted, not logged
        self.flush()
        if self._logged < self._burst:
            if self._logged == 0:
                self._window_end = self._clock() + self._window
            self._logged += 1
            log.log(level, "XID %d %s (%s) on %s", code, row.mnemonic or "?", row.severity.value,
                    where)  # fmt: skip
            return
        self._held[code] += 1
        self._held_level = max(self._held_level, level)

    def flush(self) -> None:
        """End the window if its time is up: one line for what it held back."""
        if self._logged == 0 or self._clock() < self._window_end:
            return
        if self._held:
            counts = ", ".join(f"XID {code} x{n}" for code, n in self._held.most_common())
            log.log(
                self._held_level,
                "%d more XID events in the last %gs, not logged one by one: %s",
                sum(self._held.values()), self._window, counts,
            )  # fmt: skip
        self._logged = 0
        self._held.clear()
        self._held_level = logging.INFO


@dataclass(frozen=True)
class Trouble:
    """Why the backend or a GPU is not reporting as it should, and since when (wall clock).

    ``state`` is "down" for the backend; for a GPU "lost" (the driver says it is gone),
    "hung" (a driver call has not answered) or "failing" (it answers with errors).
    """

    state: str
    reason: str
    since: float


class GpuHungError(GpuUnavailableError):
    """A GPU whose driver call has run longer than the GPU timeout."""


class LateError(Exception):
    """A GPU still at work on a call, within the GPU timeout."""

    def __init__(self, call: _Call) -> None:
        super().__init__("still at work on an earlier driver call")
        self.call = call


@dataclass(frozen=True)
class _Call:
    """A driver call handed to a GPU's thread, and when."""

    future: asyncio.Future[object]
    since: float


class Collector:
    """Owns the backend, the latest topology and samples, the event counters and the exposition.

    Args:
        backend: where topology, samples and events come from.
        build: what the build-info series reports.
        interval: seconds between sampling cycles.
        topology_refresh: seconds between re-enumerations when no MIG event asks for one.
        pods: who holds which device, for the pod labels; None outside Kubernetes.
        compat_views: other exporters' names the exposition also shows (``--compat``).
        clock: wall clock for timestamps (injectable for tests).
    """

    def __init__(  # noqa: PLR0913  (the settings after build are keyword-only)
        self,
        backend: Backend,
        build: BuildInfo,
        *,
        interval: float = 1.0,
        topology_refresh: float = 10.0,
        pods: PodSource | None = None,
        compat_views: Views | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self._pods = pods
        self._compat_views = compat_views or Views()
        self._xid_log = XidLog()
        self._build = build
        self._interval = interval
        self._topology_refresh = topology_refresh
        # A GPU call running this long makes the GPU count as hung (down) until it answers.
        self._gpu_timeout = max(2 * interval, 2.0)
        self._clock = clock
        self.topology = Topology()
        self.events: collections.deque[RecordedEvent] = collections.deque(maxlen=RECENT_EVENTS)
        self.backend_up = False
        self.backend_trouble: Trouble | None = None
        self.gpu_trouble: dict[str, Trouble] = {}  # by GPU uuid
        self._dra_unmatched: set[str] = set()  # DRA names matching nothing at the last refresh
        self._dra_reported: set[str] = set()
        self._first_cycle_done = False
        self._samples: dict[str, GpuSample] = {}
        self._errors: collections.Counter[str] = collections.Counter()
        self._counts: dict[EventKey, EventCount] = {}
        self._collect_duration: float | None = None
        self._last_collect: float | None = None
        self.exposition: Exposition = render(self.snapshot())
        self._workers: dict[int, ThreadPoolExecutor] = {}
        self._in_flight: dict[int, _Call] = {}
        self._refresh_now = asyncio.Event()
        self._stop = threading.Event()
        self._dirty = False
        self._render_task: asyncio.Task[None] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._event_thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the backend, run a first full cycle, then keep sampling in the background.

        Raises:
            BackendUnavailableError: when the vendor library cannot be opened at all.
        """
        await asyncio.to_thread(self.backend.open)
        self.backend_up = True
        await self._refresh_topology(self._gpu_timeout)  # at start, give every GPU its time
        await self._collect()
        self._first_cycle_done = True
        await self._render()
        loop = asyncio.get_running_loop()
        self._event_thread = threading.Thread(
            target=self._pump_events, args=(loop,), name="migexporter-events", daemon=True
        )
        self._event_thread.start()
        self._loop_task = asyncio.create_task(self._run(), name="migexporter-collector")

    @property
    def ready(self) -> bool:
        """True after the first full collection, for as long as the backend is up."""
        return self._first_cycle_done and self.backend_up

    @property
    def samples(self) -> Mapping[str, GpuSample]:
        """The latest sample of every GPU that answered, by UUID."""
        return self._samples

    async def stop(self) -> None:
        """Stop sampling and release the backend."""
        self._stop.set()
        for task in (self._loop_task, self._render_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._event_thread is not None:
            await asyncio.to_thread(self._event_thread.join, EVENT_WAIT_S * 4)
        for worker in self._workers.values():
            worker.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self.backend.close)

    async def _run(self) -> None:
        next_refresh = time.monotonic() + self._topology_refresh
        while True:
            started = time.monotonic()
            # While the backend is down every cycle asks it again; it applies its own backoff.
            if self._refresh_now.is_set() or started >= next_refresh or not self.backend_up:
                self._refresh_now.clear()
                await self._refresh_topology(self._interval)
                next_refresh = time.monotonic() + self._topology_refresh
            await self._collect()
            self._render_soon()
            self._xid_log.flush()
            delay = max(started + self._interval - time.monotonic(), 0.0)
            with contextlib.suppress(TimeoutError):  # a MIG event cuts the wait short
                await asyncio.wait_for(self._refresh_now.wait(), delay)

    # --- per-GPU work ---------------------------------------------------------------------------
    async def _on_gpu(self, index: int, call: Callable[[], _T], wait: float) -> _T:
        """Run ``call`` on GPU ``index``'s own thread and wait for it at most ``wait`` seconds.

        ``_BACKEND_WORKER`` as the index runs a backend-wide call the same way.

        Raises:
            LateError: the GPU is still working, on this call or an earlier one, within the GPU
                timeout; the call goes on and ``LateError.call`` says when it is done.
            GpuUnavailableError: its call has been running longer than the GPU timeout.
        """
        previous = self._in_flight.get(index)
        if previous is not None and not previous.future.done():
            self._raise_late(index, previous)
        worker = self._workers.get(index)
        if worker is None:
            name = "migexporter-backend" if index == _BACKEND_WORKER else f"migexporter-gpu{index}"
            worker = self._workers[index] = ThreadPoolExecutor(1, name)
        future = asyncio.get_running_loop().run_in_executor(worker, call)
        # A call may end, failed, after its cycle stopped waiting: its error is looked at here,
        # so asyncio never logs it as unretrieved (with a traceback kept alive until then).
        future.add_done_callback(_retrieved)
        this = self._in_flight[index] = _Call(future, time.monotonic())  # type: ignore[arg-type]
        try:
            return await asyncio.wait_for(asyncio.shield(future), min(wait, self._gpu_timeout))
        except TimeoutError:
            self._raise_late(index, this)

    async def _one_after_another(
        self, calls: list[tuple[int, Callable[[], _T]]], wait: float
    ) -> list[_T | BaseException]:
        """Each ``(index, call)`` through ``_on_gpu``, started in turn; results or errors.

        GPU calls started all at once fight over the interpreter lock: with the simulator's
        8 GPUs on a 16-core host, switching between their threads every millisecond doubled
        the backend's CPU per cycle. So each call starts when the one before it has answered,
        or after ``wait / (2 * len(calls))`` at the latest: a GPU that hangs, or whose driver
        call blocks (with the lock released), holds the next one back by that much only. Each
        call still gets ``wait`` from its own start, so a cycle ends within 1.5 * ``wait``.
        """
        slot = wait / (2 * max(len(calls), 1))
        tasks: list[asyncio.Task[_T]] = []
        for index, call in calls:
            if tasks:
                await asyncio.wait({tasks[-1]}, timeout=slot)
            tasks.append(asyncio.ensure_future(self._on_gpu(index, call, wait)))
        return await asyncio.gather(*tasks, return_exceptions=True)

    def _raise_late(self, index: int, call: _Call) -> NoReturn:
        if time.monotonic() - call.since >= self._gpu_timeout:
            raise GpuHungError(f"GPU {index} did not answer within {self._gpu_timeout:g}s")
        raise LateError(call)

    async def _count_gpus(self) -> int:
        """``backend.gpu_count`` on a worker of its own, under the same deadline as a GPU's calls.

        A call that hangs (a host engine stuck behind a hung GPU) makes the backend down
        instead of stalling every cycle; it is not asked again until that call returns.

        Raises:
            BackendUnavailableError: the backend said so, or did not answer in time.
        """
        try:
            return await self._on_gpu(_BACKEND_WORKER, self.backend.gpu_count, self._gpu_timeout)
        except (LateError, GpuUnavailableError):
            raise BackendUnavailableError(
                f"{self.backend.name} did not list the GPUs within {self._gpu_timeout:g}s"
            ) from None

    async def _refresh_topology(self, wait: float) -> None:
        """Enumerate every GPU, waiting for each at most ``wait`` seconds.

        A GPU that is late or down keeps what the last enumeration knew of it.
        """
        try:
            count = await self._count_gpus()
        except BackendUnavailableError as error:
            self._backend_down(error)
            return
        old = {gpu.index: gpu for gpu in self.topology.gpus}
        results = await self._one_after_another(
            [(i, partial(self.backend.discover_gpu, i)) for i in range(count)], wait
        )
        gpus: list[Gpu] = []
        for index, result in enumerate(results):
            if isinstance(result, Gpu):
                gpus.append(result)
            elif index in old:
                # Keep what we knew so its up series can say it is down; the sampling pass
                # of this cycle counts the failure, once.
                log.debug("GPU %d kept from the last enumeration: %s", index, result)
                gpus.append(old[index])
            else:
                log.warning("GPU %d cannot be enumerated: %s", index, result)
        new = Topology(tuple(gpus), self.backend.driver_version)
        changes = diff(self.topology, new)
        if changes:
            log.info(
                "topology: %d GPUs; instances +%d -%d",
                len(gpus),
                len(changes.instances_added),
                len(changes.instances_removed),
            )
        if changes.instances_added and self._pods is not None:
            # An instance made for a pod (DRA's dynamic MIG) names its pod from its first
            # sample: ask the kubelet now rather than at its next turn.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._pods.refresh(), POD_ASK_S)
        self.topology = new
        self.backend_up = True
        self.backend_trouble = None
        self._say_unmatched_dra()

    def _say_unmatched_dra(self) -> None:
        """Log once each DRA device that matched nothing at two topology refreshes in a row.

        A MIG device the DRA driver creates for a pod is listed by the kubelet before the
        next refresh finds it: one refresh without a match is no news.
        """
        pods = self._pod_map()
        unmatched = set(pods.dra_unmatched(self.topology))
        for name in sorted(unmatched & self._dra_unmatched - self._dra_reported):
            device = pods.dra_devices[name]
            why = (
                "a GPU bound to vfio-pci for a VM, which NVML does not see"
                if isinstance(device, dra.PassthroughGpu)
                else f"no GPU or GPU instance of {self.backend.name} has this name"
            )
            log.warning("DRA device %s (claim %s): %s; no pod labels from it",
                        name, ",".join(sorted(pods.claims.get(name, ()))) or "?", why)  # fmt: skip
            self._dra_reported.add(name)
        self._dra_unmatched = unmatched

    async def _collect(self) -> None:
        if not self.backend_up:
            return
        started = time.monotonic()
        gpus = self.topology.gpus
        # A GPU gets half an interval (its late answer is still used): one that hangs must not
        # hold the others back, so their values are at most 3/4 of an interval later than due.
        results = await self._one_after_another(
            [(gpu.index, partial(self.backend.sample, gpu)) for gpu in gpus], self._interval / 2
        )
        lost = next((r for r in results if isinstance(r, BackendUnavailableError)), None)
        if lost is not None:  # the library itself went away (a host engine lost, ...)
            self._backend_down(lost)
            return
        for gpu, result in zip(gpus, results, strict=True):
            self._take(gpu, result, started)
        known = {gpu.uuid for gpu in gpus}
        for uuid in set(self._samples) - known:
            del self._samples[uuid]
        for uuid in set(self.gpu_trouble) - known:
            del self.gpu_trouble[uuid]
        self._collect_duration = time.monotonic() - started
        self._last_collect = self._clock()

    def _take(self, gpu: Gpu, result: GpuSample | BaseException, started: float) -> None:
        """What one GPU's sampling call gave this cycle: a sample, lateness or an error."""
        if isinstance(result, GpuSample):
            if gpu.uuid not in self._samples:
                log.info("GPU %d (%s) is reporting", gpu.index, gpu.uuid)
            self._samples[gpu.uuid] = result
            if result.errors:
                self._errors[gpu.uuid] += result.errors
                self._trouble(gpu, "failing", f"{result.errors} readings failed")
            else:
                self.gpu_trouble.pop(gpu.uuid, None)
        elif isinstance(result, LateError):
            # Its last values stand; what the call returns, whenever it does, is newest. Slow
            # is not hung: that is a call past the GPU timeout (GpuHungError).
            if result.call.since >= started:  # calls of earlier cycles are already watched
                result.call.future.add_done_callback(partial(self._late_sample, gpu.uuid))
        else:
            self._gpu_failed(gpu, result)

    def _late_sample(self, uuid: str, future: asyncio.Future[object]) -> None:
        """Keep a sample that arrived after its cycle, if its GPU is still known and up."""
        if future.cancelled() or future.exception() is not None:
            return  # the next cycle finds out what went wrong
        result = future.result()
        if isinstance(result, GpuSample) and uuid in self._samples:
            self._samples[uuid] = result
            self._render_soon()

    def _trouble(self, gpu: Gpu, state: str, reason: str) -> None:
        """Record what is wrong with a GPU; the time is when it went into that state."""
        known = self.gpu_trouble.get(gpu.uuid)
        since = known.since if known is not None and known.state == state else self._clock()
        self.gpu_trouble[gpu.uuid] = Trouble(state, reason, since)

    def _gpu_failed(self, gpu: Gpu, error: BaseException) -> None:
        if isinstance(error, GpuHungError):
            self._trouble(gpu, "hung", str(error))
        elif isinstance(error, GpuUnavailableError):
            self._trouble(gpu, "lost", str(error))
        else:
            self._trouble(gpu, "failing", str(error) or repr(error))
        if not isinstance(error, (GpuUnavailableError, BackendUnavailableError)):
            log.error("GPU %d: unexpected error: %r", gpu.index, error)
        if self._samples.pop(gpu.uuid, None) is not None:
            log.warning("GPU %d (%s) stopped reporting: %s", gpu.index, gpu.uuid, error)
        self._errors[gpu.uuid] += 1

    def _backend_down(self, error: BaseException) -> None:
        if self.backend_up:
            log.error("backend %s is down: %s", self.backend.name, error)
        known = self.backend_trouble
        since = known.since if known is not None else self._clock()
        self.backend_trouble = Trouble("down", str(error) or repr(error), since)
        self.backend_up = False
        self._samples.clear()
        self.gpu_trouble.clear()  # nothing is known of the GPUs while the backend is down
        self._errors[""] += 1

    # --- events ---------------------------------------------------------------------------------
    def _pump_events(self, loop: asyncio.AbstractEventLoop) -> None:
        """Thread body: wait in the driver, hand each batch of events to the loop."""
        while not self._stop.is_set():
            try:
                events = self.backend.wait_events(EVENT_WAIT_S)
            except Exception as error:  # keep the thread alive whatever the driver does
                log.warning("waiting for driver events failed: %s", error)
                self._stop.wait(1.0)
                continue
            if events and not self._stop.is_set():
                with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
                    loop.call_soon_threadsafe(self.handle_events, events)

    def handle_events(self, events: list[DeviceEvent]) -> None:
        """Count events on the loop thread, then re-render so the count is visible at once."""
        for event in events:
            if event.kind is EventKind.MIG_CONFIG_CHANGE:
                self._refresh_now.set()
            else:
                self._count(event)
        self._render_soon()

    def _count(self, event: DeviceEvent) -> None:
        """One more on the event's series, and a line in /api/events."""
        metric, detail = _series(event)
        gpu = self.topology.gpu(event.gpu_uuid)
        gi = (
            gpu.gpu_instance(event.gpu_instance_id)
            if gpu and event.gpu_instance_id is not None
            else None
        )
        cis = gi.compute_instances if gi else ()
        ci = next((c for c in cis if c.id == event.compute_instance_id), None)
        # Whoever holds the instance now, when the event arrives, is charged with it for good.
        owner = self._pod_map().labels(gpu, gi, ci) if gpu else NO_OWNER
        key = EventKey(
            metric,
            event.gpu_uuid,
            event.gpu_instance_id,
            event.compute_instance_id,
            detail,
            gi.profile if gi else "",
            owner,
        )
        seen = self._counts.get(key)
        index = seen.gpu if seen else (str(gpu.index) if gpu else "")
        self._counts[key] = EventCount(index, (seen.count if seen else 0) + 1, event.time)
        self.events.appendleft(
            RecordedEvent(event, index, gi.mig_uuid if gi else "", gi.profile if gi else "", owner)
        )
        if event.kind is EventKind.XID and event.xid is not None:
            self._xid_log.event(event.xid, _where(event, index, gi.profile if gi else "", owner))

    def _pod_map(self) -> PodMap:
        return self._pods.current if self._pods is not None else _NO_PODS

    # --- exposition -----------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """Everything the exposition shows, now; call it on the event loop, where counts change."""
        return Snapshot(
            build=self._build,
            backend=self.backend.name,
            backend_up=self.backend_up,
            topology=self.topology,
            driver_version=self.topology.driver_version,
            samples=dict(self._samples),
            collect_duration=self._collect_duration,
            last_collect=self._last_collect,
            errors=dict(self._errors),
            events=dict(self._counts),
            pods=self._pod_map(),
            pod_resources_up=self._pods.up if self._pods is not None else None,
            compat_views=self._compat_views,
        )

    def _render_soon(self) -> None:
        """Ask for a render; bursts of requests coalesce into one render at a time."""
        self._dirty = True
        if self._render_task is None or self._render_task.done():
            self._render_task = asyncio.create_task(self._render(), name="migexporter-render")

    async def _render(self) -> None:
        self._dirty = True
        while self._dirty:
            self._dirty = False
            snapshot = self.snapshot()  # taken on the loop: consistent with the counters
            # Gzip what scrapers asked of the last exposition, in the render thread.
            asked = self.exposition.gzipped_formats()
            self.exposition = await asyncio.to_thread(render, snapshot, asked)


def _where(event: DeviceEvent, index: str, profile: str, owner: Labels) -> str:
    """Where an event happened, for a log line: GPU, instance and holder."""
    where = f"GPU {index or '?'} ({event.gpu_uuid})"
    if event.gpu_instance_id is not None:
        where += f" GPU instance {event.gpu_instance_id}"
        if profile:
            where += f" ({profile})"
    if event.compute_instance_id is not None:
        where += f" compute instance {event.compute_instance_id}"
    namespace, pod, container = owner
    if pod:
        where += f", held by {namespace}/{pod} container {container}"
    return where


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _series(event: DeviceEvent) -> tuple[catalog.Metric, str]:
    """The family an event is counted in, and the value of that family's extra label."""
    if event.kind is EventKind.XID:
        return catalog.XID_ERRORS, str(event.xid)
    if event.kind in ECC_ERROR_TYPES:
        return catalog.ECC_EVENTS, ECC_ERROR_TYPES[event.kind]
    if event.kind is EventKind.GPU_UNAVAILABLE:
        return catalog.UNAVAILABLE_EVENTS, ""
    return catalog.RECOVERY_ACTION_EVENTS, event.recovery_action or "unknown"
