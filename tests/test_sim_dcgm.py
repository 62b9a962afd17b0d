"""The simulated DCGM host engine through its fake bindings, used as the exporter uses them."""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import itertools
import json
import subprocess
import sys
import threading
import time
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pynvml
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from manual_clock import ManualClock
from migexporter.sim import (
    BINDINGS_DIR,
    FakeNvml,
    Fleet,
    SimHostEngine,
    add_routes,
    install_dcgm,
    uninstall_dcgm,
)
from migexporter.sim._workload import FP16, FP32, FP64, NVLINK_RX, NVLINK_TX, PCIE_RX, PCIE_TX

if TYPE_CHECKING:
    from collections.abc import Iterator

GPU, GI, CI = 1, 4, 5  # DCGM_FE_GPU, DCGM_FE_GPU_I, DCGM_FE_GPU_CI
MIB = 1 << 20
TCP, SOCKET = "127.0.0.1:5555", "/tmp/nv-hostengine"  # noqa: S108 (an address, not a file)
_NAMES = itertools.count()  # field group names must be unique per engine


@pytest.fixture(scope="module")
def dcgm() -> SimpleNamespace:
    """The fake bindings, imported afresh from their directory as NVIDIA's are."""
    if str(BINDINGS_DIR) not in sys.path:
        sys.path.insert(0, str(BINDINGS_DIR))
    names = ("pydcgm", "DcgmHandle", "dcgm_agent", "dcgm_structs", "dcgm_fields", "dcgmvalue")
    for name in names:  # whatever order others imported them in, pydcgm comes first here
        sys.modules.pop(name, None)
    modules = {name: importlib.import_module(name) for name in names}
    return SimpleNamespace(
        pydcgm=modules["pydcgm"],
        handles=modules["DcgmHandle"].DcgmHandle,
        agent=modules["dcgm_agent"],
        structs=modules["dcgm_structs"],
        fields=modules["dcgm_fields"],
        value=modules["dcgmvalue"],
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def fleet(clock: ManualClock) -> Fleet:
    """GPU 0: 3g+2g+1g+1g, GPU 1: seven 1g.10gb, GPU 2: no MIG; all H100 (GPM)."""
    return Fleet.default(clock=clock)


@contextlib.contextmanager
def serving(dcgm: SimpleNamespace, engine: SimHostEngine) -> Iterator[SimHostEngine]:
    """Install the engine; afterwards close every DcgmHandle and uninstall it."""
    install_dcgm(engine)
    try:
        yield engine
    finally:
        for handle in list(dcgm.handles.handles):
            with contextlib.suppress(dcgm.structs.DCGMError):
                handle.Shutdown()
            handle._handleCreated = False  # so its __del__ does not try again
        dcgm.handles.handles.clear()
        uninstall_dcgm()


@pytest.fixture
def engine(fleet: Fleet, dcgm: SimpleNamespace) -> Iterator[SimHostEngine]:
    with serving(dcgm, SimHostEngine(fleet, addresses=[TCP, SOCKET])) as engine:
        yield engine


@pytest.fixture
def handle(engine: SimHostEngine, dcgm: SimpleNamespace) -> Any:
    """The raw handle of an embedded host engine."""
    return dcgm.pydcgm.DcgmHandle().handle


@pytest.fixture
def nv(fleet: Fleet) -> FakeNvml:
    """What NVML says about the same fleet, to compare DCGM's values with."""
    fake = FakeNvml(fleet)
    fake.nvmlInit()
    return fake


def watch(
    dcgm: SimpleNamespace,
    handle: Any,
    entities: list[tuple[int, int]],
    fields: list[int],
    *,
    every_s: float = 1.0,
    keep_s: float = 3600.0,
    keep: int = 0,
) -> tuple[Any, Any]:
    """Group the entities, make a field group, watch it; (group, field group)."""
    agent = dcgm.agent
    group = agent.dcgmGroupCreate(handle, dcgm.structs.DCGM_GROUP_EMPTY, "test")
    for entity in entities:
        agent.dcgmGroupAddEntity(handle, group, *entity)
    field_group = agent.dcgmFieldGroupCreate(handle, fields, f"test_{next(_NAMES)}")
    agent.dcgmWatchFields(handle, group, field_group, int(every_s * 1e6), keep_s, keep)
    return group, field_group


def _payload(fv: Any) -> Any:
    kind = chr(fv.fieldType)
    return fv.value.dbl if kind == "d" else fv.value.str if kind == "s" else fv.value.i64


def latest(
    dcgm: SimpleNamespace, handle: Any, entities: list[tuple[int, int]], fields: list[int]
) -> dict[tuple[int, int, int], tuple[int, Any]]:
    """{(entity group, entity id, field): (status, value)} from dcgmEntitiesGetLatestValues."""
    pairs = [dcgm.structs.c_dcgmGroupEntityPair_t(*entity) for entity in entities]
    values = dcgm.agent.dcgmEntitiesGetLatestValues(handle, pairs, fields, 0)
    assert len(values) == len(entities) * len(fields)
    return {(v.entityGroupId, v.entityId, v.fieldId): (v.status, _payload(v)) for v in values}


def since(
    dcgm: SimpleNamespace, handle: Any, group: Any, field_group: Any, ts: int = 0
) -> tuple[list[tuple[int, int, int, Any, int]], int]:
    """((entity group, entity id, field, value, ts) per value, next since-timestamp)."""
    found: list[tuple[int, int, int, Any, int]] = []

    def collect(entity_group: int, entity_id: int, values: Any, count: int, _: Any) -> int:
        found.extend(
            (entity_group, entity_id, v.fieldId, _payload(v), v.ts)
            for v in (values[i] for i in range(count))
        )
        return 0

    callback = dcgm.agent.dcgmFieldValueEntityEnumeration_f(collect)
    following = dcgm.agent.dcgmGetValuesSince_v2(handle, group, field_group, ts, callback, None)
    return found, following


def hierarchy(dcgm: SimpleNamespace, handle: Any) -> list[Any]:
    info = dcgm.agent.dcgmGetGpuInstanceHierarchy(handle)
    return [info.entityList[i] for i in range(info.count)]


# --- connecting ---


def test_the_embedded_engine_and_tcp_and_unix_connections_work(engine, dcgm):
    """DcgmHandle connects embedded, over TCP (default port 5555) and over a unix socket."""
    embedded = dcgm.pydcgm.DcgmHandle()
    assert embedded.isEmbedded
    assert embedded.GetIpAddress() is None
    for kwargs in ({"ipAddress": TCP}, {"ipAddress": "127.0.0.1"}, {"unixSocketPath": SOCKET}):
        remote = dcgm.pydcgm.DcgmHandle(**kwargs)
        assert not remote.isEmbedded
        assert dcgm.agent.dcgmGetAllSupportedDevices(remote.handle) == [0, 1, 2]
        remote.Shutdown()
        remote.Shutdown()  # idempotent
    assert "version:4.6.0;" in dcgm.agent.dcgmVersionInfo().rawBuildInfoString


def test_bad_addresses_are_refused_quickly(engine, dcgm):
    """Both addresses: BADPARAM; nobody listening: CONNECTION_NOT_VALID within 50 ms."""
    with pytest.raises(dcgm.structs.DCGMError_Badparam):
        dcgm.pydcgm.DcgmHandle(ipAddress=TCP, unixSocketPath=SOCKET)
    started = time.monotonic()
    with pytest.raises(dcgm.structs.DCGMError_ConnectionNotValid):
        dcgm.pydcgm.DcgmHandle(ipAddress="10.0.0.9:5555", timeoutMs=2000)
    assert time.monotonic() - started < 0.5
    engine.listen("10.0.0.9:5555")
    assert dcgm.pydcgm.DcgmHandle(ipAddress="10.0.0.9:5555").handle


def test_without_an_installed_engine_the_library_is_not_found(dcgm):
    """As when libdcgm.so.4 is missing: DCGM_ST_LIBRARY_NOT_FOUND."""
    with pytest.raises(dcgm.structs.DCGMError_LibraryNotFound):
        dcgm.pydcgm.DcgmHandle()
    with pytest.raises(dcgm.structs.DCGMError) as caught:
        dcgm.structs._dcgmInit()
    assert caught.value.value == dcgm.structs.DCGM_ST_LIBRARY_NOT_FOUND
    assert "library could not be found" in str(caught.value)


def test_importing_dcghandle_before_pydcgm_leaves_pydcgm_without_it():
    """Faithful to NVIDIA's import cycle: import pydcgm first (or only)."""
    code = (
        f"import sys; sys.path.insert(0, {str(BINDINGS_DIR)!r}); "
        "import DcgmHandle, pydcgm; print(hasattr(pydcgm, 'DcgmHandle'))"
    )
    result = subprocess.run(  # a fresh interpreter: the order of first imports matters
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


# --- devices and the MIG hierarchy ---


def test_device_attributes_match_nvml(handle, dcgm, nv):
    """Name, UUID, bus id, driver, memory in MiB and MIG mode of each GPU."""
    for gpu in (0, 2):
        attributes = dcgm.agent.dcgmGetDeviceAttributes(handle, gpu)
        device = nv.nvmlDeviceGetHandleByIndex(gpu)
        assert attributes.identifiers.deviceName == nv.nvmlDeviceGetName(device)
        assert attributes.identifiers.uuid == nv.nvmlDeviceGetUUID(device)
        assert attributes.identifiers.pciBusId == nv.nvmlDeviceGetPciInfo(device).busId
        assert attributes.identifiers.driverVersion == nv.nvmlSystemGetDriverVersion()
        memory = nv.nvmlDeviceGetMemoryInfo(device)
        assert attributes.memoryUsage.fbTotal == memory.total // MIB
        assert attributes.settings.migModeEnabled == nv.nvmlDeviceGetMigMode(device)[0]


def test_hierarchy_lists_instances_with_dcgm_ids_that_change_on_reconfiguration(
    handle, dcgm, fleet, nv
):
    """GI/CI entity ids are gpu * maxGpcs + position, not NVML ids, and move with the layout."""
    entries = hierarchy(dcgm, handle)
    gpu1 = [e for e in entries if e.info.nvmlGpuIndex == 1]
    gis = [e for e in gpu1 if e.entity.entityGroupId == GI]
    assert [e.entity.entityId for e in gis] == list(range(7, 14))
    assert [e.info.nvmlInstanceId for e in gis] == [7, 8, 9, 11, 12, 13, 14]  # NVML's, in order
    first_ci = next(e for e in gpu1 if e.entity.entityGroupId == CI)
    assert (first_ci.parent.entityGroupId, first_ci.parent.entityId) == (GI, 7)
    assert first_ci.info.nvmlComputeInstanceId == 0
    assert gis[0].info.nvmlComputeInstanceId == 0xFFFFFFFF
    assert gis[0].info.gpuUuid == nv.nvmlDeviceGetUUID(nv.nvmlDeviceGetHandleByIndex(1))
    assert (gis[0].parent.entityGroupId, gis[0].parent.entityId) == (GPU, 1)
    assert (gis[0].info.nvmlMigProfileId, gis[0].info.nvmlProfileSlices) == (19, 1)
    assert not [e for e in entries if e.info.nvmlGpuIndex == 2]  # MIG disabled: not listed

    fleet.reconfigure(1, ["3g.40gb", "3g.40gb"])
    gpu1 = [e for e in hierarchy(dcgm, handle) if e.info.nvmlGpuIndex == 1]
    assert [(e.entity.entityGroupId, e.entity.entityId) for e in gpu1] == [
        (GI, 7),
        (CI, 7),
        (GI, 8),
        (CI, 8),
    ]
    assert {e.info.nvmlMigProfileId for e in gpu1 if e.entity.entityGroupId == GI} == {9}


# --- groups and field groups ---


def test_the_hierarchy_names_every_instance_as_nvml_does(handle, dcgm, fleet, nv):
    """Every MIG device NVML lists is one CI entry with its GPU, GI/CI ids and GI profile."""
    fleet.reconfigure(2, ["3g.40gb", "2g.20gb/1c*2", "1g.10gb"])
    from_nvml = set()
    for index in range(nv.nvmlDeviceGetCount()):
        gpu = nv.nvmlDeviceGetHandleByIndex(index)
        for slot in range(nv.nvmlDeviceGetMaxMigDeviceCount(gpu)):
            try:
                mig = nv.nvmlDeviceGetMigDeviceHandleByIndex(gpu, slot)
            except pynvml.NVMLError_NotFound:
                continue
            gi_id, ci_id = (
                nv.nvmlDeviceGetGpuInstanceId(mig),
                nv.nvmlDeviceGetComputeInstanceId(mig),
            )
            gi = nv.nvmlGpuInstanceGetInfo(nv.nvmlDeviceGetGpuInstanceById(gpu, gi_id))
            from_nvml.add((nv.nvmlDeviceGetUUID(gpu), gi_id, ci_id, gi.profileId))
    entries = hierarchy(dcgm, handle)
    gis = {e.entity.entityId: e.info for e in entries if e.entity.entityGroupId == GI}
    from_dcgm = {
        (e.info.gpuUuid, e.info.nvmlInstanceId, e.info.nvmlComputeInstanceId,
         gis[e.parent.entityId].nvmlMigProfileId)
        for e in entries
        if e.entity.entityGroupId == CI
    }  # fmt: skip
    assert len(from_nvml) == 4 + 7 + 4
    assert from_dcgm == from_nvml


def test_groups_start_at_2_and_are_limited_to_64_with_the_defaults(handle, dcgm):
    """Ids 0 and 1 are the default groups; the 63rd user group is MAX_LIMIT."""
    agent, structs = dcgm.agent, dcgm.structs
    assert agent.dcgmGroupGetAllIds(handle) == [0, 1]
    ids = [agent.dcgmGroupCreate(handle, structs.DCGM_GROUP_EMPTY, "same").value for _ in range(62)]
    assert ids == list(range(2, 64))
    with pytest.raises(structs.DCGMError_MaxLimit):
        agent.dcgmGroupCreate(handle, structs.DCGM_GROUP_EMPTY, "one too many")
    agent.dcgmGroupDestroy(handle, 5)  # an int works where a c_void_p is expected
    assert agent.dcgmGroupCreate(handle, structs.DCGM_GROUP_EMPTY, "x").value == 64
    with pytest.raises(structs.DCGMError_NotConfigured):
        agent.dcgmGroupDestroy(handle, 5)


def test_groups_hold_entities_that_exist(handle, dcgm):
    """Adding a GPU, GI and CI works; an entity that does not exist is BADPARAM."""
    agent, structs = dcgm.agent, dcgm.structs
    group = agent.dcgmGroupCreate(handle, structs.DCGM_GROUP_EMPTY, "mig")
    for entity in ((GPU, 0), (GI, 3), (CI, 13)):
        agent.dcgmGroupAddEntity(handle, group, *entity)
    for missing in ((GPU, 3), (GI, 4), (CI, 14), (GI, 14)):
        with pytest.raises(structs.DCGMError_Badparam):
            agent.dcgmGroupAddEntity(handle, group, *missing)
    info = agent.dcgmGroupGetInfo(handle, group)
    assert info.groupName == "mig"
    listed = [(info.entityList[i].entityGroupId, info.entityList[i].entityId) for i in range(3)]
    assert (info.count, listed) == (3, [(GPU, 0), (GI, 3), (CI, 13)])
    everything = agent.dcgmGroupCreate(handle, structs.DCGM_GROUP_DEFAULT_COMPUTE_INSTANCES, "")
    assert agent.dcgmGroupGetInfo(handle, everything).count == 11


def test_field_group_names_are_unique(handle, dcgm):
    """A second field group of the same name is DUPLICATE_KEY; at most 64 exist."""
    agent, structs = dcgm.agent, dcgm.structs
    first = agent.dcgmFieldGroupCreate(handle, [150, 155], "exporter")
    with pytest.raises(structs.DCGMError_DuplicateKey):
        agent.dcgmFieldGroupCreate(handle, [150], "exporter")
    for n in range(63):
        agent.dcgmFieldGroupCreate(handle, [150], f"fg{n}")
    with pytest.raises(structs.DCGMError_MaxLimit):
        agent.dcgmFieldGroupCreate(handle, [150], "one too many")
    every = agent.dcgmFieldGroupGetAll(handle)
    assert every.numFieldGroups == 64
    assert every.fieldGroups[0].fieldGroupId == first.value
    assert every.fieldGroups[0].fieldGroupName == "exporter"
    assert list(every.fieldGroups[0].fieldIds[:2]) == [150, 155]


def test_a_connection_that_closes_takes_its_objects_unless_it_persists(engine, dcgm):
    """persistAfterDisconnect=False: groups, field groups and watches go on disconnect."""
    agent = dcgm.agent
    passing = dcgm.pydcgm.DcgmHandle(ipAddress=TCP)
    lasting = dcgm.pydcgm.DcgmHandle(ipAddress=TCP, persistAfterDisconnect=True)
    watch(dcgm, passing.handle, [(GPU, 0)], [150])
    kept, _ = watch(dcgm, lasting.handle, [(GPU, 1)], [155])
    assert agent.dcgmGroupGetAllIds(lasting.handle) == [0, 1, 2, 3]
    passing.Shutdown()
    lasting.Shutdown()
    observer = dcgm.pydcgm.DcgmHandle(unixSocketPath=SOCKET)
    assert agent.dcgmGroupGetAllIds(observer.handle) == [0, 1, kept.value]
    assert agent.dcgmFieldGroupGetAll(observer.handle).numFieldGroups == 1
    values = latest(dcgm, observer.handle, [(GPU, 0), (GPU, 1)], [150, 155])
    assert values[GPU, 0, 150][0] == dcgm.structs.DCGM_ST_NOT_WATCHED
    assert values[GPU, 1, 155][0] == dcgm.structs.DCGM_ST_OK


# --- values ---


def test_device_values_equal_nvmls_in_dcgm_units(handle, dcgm, nv, fleet, clock):
    """Temperature, W, mJ, MHz, ECC counts and MiB are NVML's, converted as DCGM does."""
    fields = [150, 155, 156, 164, 100, 101, 310, 312, 313, 250, 251, 252, 253, 254, 50, 54, 69]
    watch(dcgm, handle, [(GPU, 0), (GPU, 2)], fields)
    fleet.inject_ecc(2, count=3)
    clock.advance(5)
    got = latest(dcgm, handle, [(GPU, 0), (GPU, 2)], fields)
    for gpu in (0, 2):
        device = nv.nvmlDeviceGetHandleByIndex(gpu)
        memory = nv.nvmlDeviceGetMemoryInfo(device, version=pynvml.nvmlMemory_v2)
        expected = {
            150: nv.nvmlDeviceGetTemperature(device, pynvml.NVML_TEMPERATURE_GPU),
            155: nv.nvmlDeviceGetPowerUsage(device) / 1000,
            156: nv.nvmlDeviceGetTotalEnergyConsumption(device),
            164: nv.nvmlDeviceGetEnforcedPowerLimit(device) / 1000,
            100: nv.nvmlDeviceGetClockInfo(device, pynvml.NVML_CLOCK_SM),
            101: nv.nvmlDeviceGetClockInfo(device, pynvml.NVML_CLOCK_MEM),
            310: 3 if gpu == 2 else 0,
            312: 3 if gpu == 2 else 0,
            313: 0,
            250: memory.total // MIB,
            251: memory.free // MIB,
            252: memory.used // MIB,
            253: memory.reserved // MIB,
            254: memory.used / (memory.total - memory.reserved),
            50: nv.nvmlDeviceGetName(device),
            54: nv.nvmlDeviceGetUUID(device),
            69: 7,  # MIG slices of an H100, MIG mode or not
        }
        assert {f: got[GPU, gpu, f] for f in fields} == {f: (0, v) for f, v in expected.items()}
    assert got[GPU, 0, 155][1] > 60.0  # watts, not milliwatts


def test_instance_values_come_from_the_mig_device_or_the_parent_gpu(handle, dcgm, nv, clock):
    """FB and names per instance; GPU-level fields on a GI or CI are the GPU's values."""
    fields = [250, 252, 254, 50, 54, 150, 155]
    entities = [(GPU, 0), (GI, 0), (CI, 0), (GI, 1), (CI, 1)]
    watch(dcgm, handle, entities, fields)
    clock.advance(1)
    got = latest(dcgm, handle, entities, fields)
    gpu = nv.nvmlDeviceGetHandleByIndex(0)
    migs = {}
    for slot in range(nv.nvmlDeviceGetMaxMigDeviceCount(gpu)):
        with contextlib.suppress(pynvml.NVMLError_NotFound):
            mig = nv.nvmlDeviceGetMigDeviceHandleByIndex(gpu, slot)
            migs[nv.nvmlDeviceGetGpuInstanceId(mig)] = mig
    for position, (gi_id, name) in enumerate([(2, "3g.40gb"), (3, "2g.20gb")]):
        mig = migs[gi_id]
        memory = nv.nvmlDeviceGetMemoryInfo(mig, version=pynvml.nvmlMemory_v2)
        for kind in (GI, CI):
            assert got[kind, position, 250] == (0, memory.total // MIB)
            assert got[kind, position, 252] == (0, memory.used // MIB)
            assert got[kind, position, 254][1] == pytest.approx(memory.used / memory.total)
            assert got[kind, position, 50] == (0, name)
            assert got[kind, position, 54] == (0, nv.nvmlDeviceGetUUID(mig))
            assert got[kind, position, 150] == got[GPU, 0, 150]
            assert got[kind, position, 155] == got[GPU, 0, 155]
    assert got[GI, 0, 250][1] != got[GPU, 0, 250][1]


def test_an_id_that_names_another_instance_after_reconfiguration_drops_its_values(
    handle, dcgm, fleet
):
    """GI 7 was a 1g.10gb, now a 4g.40gb: the old one's values go, even within the interval."""
    watch(dcgm, handle, [(GI, 7), (CI, 7)], [250, 50], every_s=3600)
    before = latest(dcgm, handle, [(GI, 7)], [250, 50])
    fleet.reconfigure(1, ["4g.40gb", "2g.20gb", "1g.10gb"])
    after = latest(dcgm, handle, [(GI, 7), (CI, 7)], [250, 50])
    assert before[GI, 7, 50] == (0, "1g.10gb")
    assert after[GI, 7, 50] == after[CI, 7, 50] == (0, "4g.40gb")
    assert after[GI, 7, 250][1] > 4 * before[GI, 7, 250][1] > 0


def _gpm_ratio(nv: FakeNvml, first: Any, second: Any, metric: int) -> float:
    request = pynvml.c_nvmlGpmMetricsGet_t()
    request.version = pynvml.NVML_GPM_METRICS_GET_VERSION
    request.numMetrics = 1
    request.sample1, request.sample2 = first, second
    request.metrics[0].metricId = metric
    nv.nvmlGpmMetricsGet(request)
    return float(request.metrics[0].value) / 100


def test_profiling_on_gpm_gpus_is_blank_first_then_nvmls_gpm_ratio(handle, dcgm, nv, clock):
    """First sample after the watch is blank; then GPM's ratio over the interval."""
    entities = [(GPU, 0), (GI, 0), (CI, 0)]
    watch(dcgm, handle, entities, [1001, 1002, 1005])
    dcgm.agent.dcgmUpdateAllFields(handle, 1)
    gpu = nv.nvmlDeviceGetHandleByIndex(0)
    mig = nv.nvmlDeviceGetMigDeviceHandleByIndex(gpu, 0)  # GI 2 / CI 0: DCGM's GI 0 and CI 0
    assert nv.nvmlDeviceGetGpuInstanceId(mig) == 2
    takes = {
        GPU: lambda s: nv.nvmlGpmSampleGet(gpu, s),
        GI: lambda s: nv.nvmlGpmMigSampleGet(gpu, 2, s),
        CI: lambda s: nv.nvmlGpmSampleGet(mig, s),
    }
    before = {kind: take(nv.nvmlGpmSampleAlloc()) for kind, take in takes.items()}
    first = latest(dcgm, handle, entities, [1001, 1002, 1005])
    assert set(first.values()) == {(0, dcgm.value.DCGM_FP64_BLANK)}
    clock.advance(7.5)
    after = {kind: take(nv.nvmlGpmSampleAlloc()) for kind, take in takes.items()}
    got = latest(dcgm, handle, entities, [1001, 1002, 1005])
    metrics = {1001: pynvml.NVML_GPM_METRIC_GRAPHICS_UTIL, 1002: pynvml.NVML_GPM_METRIC_SM_UTIL}
    for (kind, _), field in [(e, f) for e in entities for f in metrics]:
        expected = _gpm_ratio(nv, before[kind], after[kind], metrics[field])
        assert got[kind, 0, field] == (0, pytest.approx(expected))
    dram = _gpm_ratio(nv, before[GI], after[GI], pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL)
    assert got[GI, 0, 1005] == (0, pytest.approx(dram))
    assert got[CI, 0, 1005] == got[GI, 0, 1005]  # GPU_I level: a CI reads its GI's
    assert any(got[k, 0, 1001][1] > 0 for k, _ in entities)


def test_profiling_on_ampere_uses_the_activity_integrals(dcgm, clock):
    """A100 (no GPM): the profiling module's ratios from the same counters, blank first."""
    fleet = Fleet.from_spec("a100-80gb:3g.40gb+2g.20gb", clock=clock, seed=3)
    with serving(dcgm, SimHostEngine(fleet)):
        handle = dcgm.pydcgm.DcgmHandle().handle
        entities = [(GPU, 0), (GI, 0), (CI, 0)]
        watch(dcgm, handle, entities, [1002, 1004])
        first = latest(dcgm, handle, entities, [1002])
        gpu = fleet.gpus[0]
        gi = gpu.gpu_instances[1]
        ci = gi.compute_instances[0]
        before = (gpu.totals, gi.totals, ci.workload.totals)
        clock.advance(4)
        got = latest(dcgm, handle, entities, [1002, 1004])
        after = (gpu.totals, gi.totals, ci.workload.totals)
    assert set(first.values()) == {(0, dcgm.value.DCGM_FP64_BLANK)}
    for position, (kind, _) in enumerate(entities):
        for field, where in ((1002, 1), (1004, 3)):  # SM, TENSOR in the activity vector
            expected = (after[position][where] - before[position][where]) / 4
            assert got[kind, 0, field] == (0, pytest.approx(expected))
    assert got[CI, 0, 1002][1] > 0


def test_blank_answers_say_why(handle, dcgm, engine, fleet, clock):
    """NOT_WATCHED, NO_DATA, blank FB of a GI without CIs, NVML sentinels, lost GPUs."""
    structs, value = dcgm.structs, dcgm.value
    nv = FakeNvml(fleet)
    nv.nvmlInit()
    gpu = nv.nvmlDeviceGetHandleByIndex(0)
    gi = nv.nvmlDeviceGetGpuInstanceById(gpu, 10)  # the second 1g.10gb: DCGM GI 3
    nv.nvmlComputeInstanceDestroy(nv.nvmlGpuInstanceGetComputeInstanceById(gi, 0))
    fields = [250, 254, 1002, 230, 393, 150]
    watch(dcgm, handle, [(GI, 3), (GPU, 0), (GPU, 2)], fields)
    clock.advance(2)
    got = latest(dcgm, handle, [(GI, 3), (GPU, 0), (GPU, 2), (GPU, 1)], fields)
    assert got[GI, 3, 250] == (structs.DCGM_ST_OK, value.DCGM_INT64_BLANK)
    assert got[GI, 3, 254] == (structs.DCGM_ST_OK, value.DCGM_FP64_BLANK)
    assert got[GI, 3, 1002] == (structs.DCGM_ST_NO_DATA, value.DCGM_FP64_BLANK)
    assert got[GI, 3, 230] == (structs.DCGM_ST_NO_DATA, value.DCGM_INT64_BLANK)
    assert got[GPU, 0, 393] == (structs.DCGM_ST_OK, value.DCGM_INT64_NOT_SUPPORTED)  # MIG on
    assert got[GPU, 2, 393] == (structs.DCGM_ST_OK, 0)
    assert got[GPU, 1, 150] == (structs.DCGM_ST_NOT_WATCHED, value.DCGM_INT64_BLANK)

    fleet.fault(2, "fall_off_bus")
    clock.advance(2)
    got = latest(dcgm, handle, [(GPU, 2)], [150, 250])
    assert got[GPU, 2, 150] == (structs.DCGM_ST_GPU_IS_LOST, value.DCGM_INT64_BLANK)
    assert got[GPU, 2, 250][0] == structs.DCGM_ST_GPU_IS_LOST

    engine.override(GPU, 0, 150, structs.DCGM_ST_OK, value.DCGM_INT64_NOT_PERMISSIONED)
    assert latest(dcgm, handle, [(GPU, 0)], [150])[GPU, 0, 150][1] == (
        value.DCGM_INT64_NOT_PERMISSIONED
    )
    engine.clear_overrides()
    assert latest(dcgm, handle, [(GPU, 0)], [150])[GPU, 0, 150][1] < 100


def test_a_hung_gpu_blocks_reads_until_it_recovers(handle, dcgm, fleet, clock):
    """Sampling a hung GPU waits in NVML, as DCGM's cache manager would; recover releases it."""
    watch(dcgm, handle, [(GPU, 2)], [150])
    fleet.fault(2, "hang")
    clock.advance(2)
    results: list[dict[tuple[int, int, int], tuple[int, Any]]] = []
    reader = threading.Thread(
        target=lambda: results.append(latest(dcgm, handle, [(GPU, 2)], [150]))
    )
    reader.start()
    reader.join(0.2)
    assert reader.is_alive()
    fleet.fault(2, "recover")
    reader.join(2)
    assert not reader.is_alive()
    assert results[0][GPU, 2, 150][0] == dcgm.structs.DCGM_ST_OK


def test_live_data_reads_nvml_without_a_watch(handle, dcgm, nv):
    """DCGM_FV_FLAG_LIVE_DATA: no watch needed, but not for profiling fields."""
    pairs = [dcgm.structs.c_dcgmGroupEntityPair_t(GPU, 2)]
    flags = dcgm.structs.DCGM_FV_FLAG_LIVE_DATA
    values = dcgm.agent.dcgmEntitiesGetLatestValues(handle, pairs, [150, 1002], flags)
    device = nv.nvmlDeviceGetHandleByIndex(2)
    assert (values[0].status, values[0].value.i64) == (
        0,
        nv.nvmlDeviceGetTemperature(device, pynvml.NVML_TEMPERATURE_GPU),
    )
    assert values[1].status == dcgm.structs.DCGM_ST_FIELD_UNSUPPORTED_BY_API


def test_samples_are_kept_for_the_retention_only(handle, dcgm, clock):
    """maxKeepAge (whole seconds) and maxKeepSamples bound what values-since returns."""
    by_age = watch(dcgm, handle, [(GPU, 2)], [150], keep_s=5.9)
    for _ in range(10):
        clock.advance(1)
        dcgm.agent.dcgmUpdateAllFields(handle, 1)
    values, following = since(dcgm, handle, *by_age)
    assert len(values) == 6  # now and the 5 s before
    stamps = [v[4] for v in values]
    assert stamps == sorted(set(stamps))
    assert following == stamps[-1] + 1
    assert since(dcgm, handle, *by_age, ts=following) == ([], following)

    by_count = watch(dcgm, handle, [(GPU, 0)], [155], keep_s=0, keep=2)
    for _ in range(5):
        clock.advance(1)
        dcgm.agent.dcgmUpdateAllFields(handle, 1)
    assert len(since(dcgm, handle, *by_count)[0]) == 2


# --- XIDs ---


def test_xids_are_recorded_on_the_entity_nvml_attributes_them_to(handle, dcgm, fleet):
    """CI if the event has a CI id, else GI, else GPU; only where field 230 is watched."""
    entities = [(GPU, 1), (GI, 7), (CI, 7)]  # GPU 1's NVML GI 7 / CI 0
    group, field_group = watch(dcgm, handle, entities, [230])
    fleet.inject_xid(1, 43, gpu_instance_id=7, compute_instance_id=0, count=2)
    fleet.inject_xid(1, 45, gpu_instance_id=7)
    fleet.inject_xid(1, 48)
    fleet.inject_xid(1, 31, gpu_instance_id=8, compute_instance_id=0)  # CI 8: not watched
    values, _ = since(dcgm, handle, group, field_group)
    assert [(v[0], v[1], v[3]) for v in values] == [
        (GPU, 1, 48),
        (GI, 7, 45),
        (CI, 7, 43),
        (CI, 7, 43),  # two identical events are two samples
    ]
    got = latest(dcgm, handle, [(CI, 8), (CI, 7)], [230])
    assert got[CI, 8, 230][0] == dcgm.structs.DCGM_ST_NOT_WATCHED
    assert got[CI, 7, 230] == (0, 43)


def test_ten_thousand_xids_at_once_are_all_returned(handle, dcgm, fleet):
    """Event samples are bounded by retention only."""
    group, field_group = watch(dcgm, handle, [(CI, 7)], [230])
    fleet.inject_xid(1, 13, gpu_instance_id=7, compute_instance_id=0, count=10_000)
    values, following = since(dcgm, handle, group, field_group)
    assert len(values) == 10_000
    assert {v[3] for v in values} == {13}
    fleet.inject_xid(1, 31, gpu_instance_id=7, compute_instance_id=0)
    assert [v[3] for v in since(dcgm, handle, group, field_group, following)[0]] == [31]


# --- profiling metric groups ---


def test_metric_groups_per_gpu_model(handle, dcgm):
    """GPM GPUs have one group with every profiling field; overrides replace a GPU's."""
    groups = dcgm.agent.dcgmProfGetSupportedMetricGroups(handle, 0)
    assert groups.gpuId == 0
    assert groups.numMetricGroups == 1
    only = groups.metricGroups[0]
    assert (only.majorId, only.minorId) == (0, 0)
    assert list(only.fieldIds[: only.numFieldIds]) == list(range(1001, 1013))


def test_two_minor_groups_of_one_major_are_multi_pass_and_watch_nothing(handle, dcgm, engine):
    """1002 and 1003 split over A.1 and A.2: PROFILING_MULTI_PASS, no watch at all."""
    structs = dcgm.structs
    engine.metric_groups[0] = [(0, 1, (1002,)), (0, 2, (1003,)), (1, 0, (1005,))]
    assert dcgm.agent.dcgmProfGetSupportedMetricGroups(handle, 0).numMetricGroups == 3
    with pytest.raises(structs.DCGMError_ProfilingMultiPass):
        watch(dcgm, handle, [(GPU, 0), (CI, 0)], [1002, 1003, 150])
    got = latest(dcgm, handle, [(GPU, 0)], [1002, 1003, 150])
    assert {status for status, _ in got.values()} == {structs.DCGM_ST_NOT_WATCHED}
    watch(dcgm, handle, [(GPU, 0)], [1002, 1005])  # different majors are fine
    with pytest.raises(structs.DCGMError_ProfilingMultiPass):
        watch(dcgm, handle, [(GI, 0)], [1003])  # conflicts with the watch already there
    watch(dcgm, handle, [(GPU, 1)], [1003])  # another GPU has its own counters


def test_ampere_metric_groups_and_unsupported_profiling_fields(dcgm, clock):
    """A100: the A10's groups; a field in none of them is watched but NOT_SUPPORTED."""
    fleet = Fleet.from_spec("a100-80gb:7g.80gb", clock=clock)
    with serving(dcgm, SimHostEngine(fleet)) as engine:
        handle = dcgm.pydcgm.DcgmHandle().handle
        groups = dcgm.agent.dcgmProfGetSupportedMetricGroups(handle, 0)
        found = [
            (g.majorId, g.minorId, list(g.fieldIds[: g.numFieldIds]))
            for g in groups.metricGroups[: groups.numMetricGroups]
        ]
        with pytest.raises(dcgm.structs.DCGMError_ProfilingMultiPass):
            watch(dcgm, handle, [(GPU, 0)], [1002, 1006])  # A.1 and A.2
        engine.metric_groups[0] = [(0, 0, (1002,))]
        watch(dcgm, handle, [(GPU, 0)], [1004])
        got = latest(dcgm, handle, [(GPU, 0)], [1004])
    assert found == [
        (0, 1, [1002, 1003, 1004, 1007]),
        (0, 2, [1006]),
        (0, 3, [1008]),
        (1, 0, [1005]),
        (2, 0, [1009, 1010]),
        (3, 0, [1001]),
        (4, 0, [1011, 1012]),
    ]
    assert got[GPU, 0, 1004] == (dcgm.structs.DCGM_ST_NOT_SUPPORTED, dcgm.value.DCGM_FP64_BLANK)


# --- the host engine going down and coming back ---


def test_a_restarted_host_engine_forgets_everything(engine, dcgm, fleet):
    """Down: old handles and new connections fail; up: a fresh engine with nothing kept."""
    structs, agent = dcgm.structs, dcgm.agent
    old = dcgm.pydcgm.DcgmHandle(ipAddress=TCP)
    group, field_group = watch(dcgm, old.handle, [(CI, 7)], [230])
    assert group.value == 2
    fleet.fault(kind="hostengine_down")
    with pytest.raises(structs.DCGMError_ConnectionNotValid):
        agent.dcgmGroupGetAllIds(old.handle)
    with pytest.raises(structs.DCGMError_ConnectionNotValid):
        dcgm.pydcgm.DcgmHandle(ipAddress=TCP)
    with pytest.raises(structs.DCGMError_InitError):
        dcgm.pydcgm.DcgmHandle()
    fleet.inject_xid(1, 43, gpu_instance_id=7, compute_instance_id=0)  # nobody records it

    assert fleet.fault(kind="hostengine_up") == {"hostengine": "up", "generation": 1}
    with pytest.raises(structs.DCGMError_ConnectionNotValid):
        agent.dcgmGroupGetAllIds(old.handle)
    old.Shutdown()  # closing a dead connection is a client-side matter: no error
    new = dcgm.pydcgm.DcgmHandle(ipAddress=TCP).handle
    assert agent.dcgmGroupGetAllIds(new) == [0, 1]
    assert agent.dcgmFieldGroupGetAll(new).numFieldGroups == 0
    group, field_group = watch(dcgm, new, [(CI, 7)], [230])
    assert group.value == 2
    assert since(dcgm, new, group, field_group)[0] == []
    fleet.inject_xid(1, 45, gpu_instance_id=7, compute_instance_id=0)
    assert [v[3] for v in since(dcgm, new, group, field_group)[0]] == [45]
    assert fleet.describe()["hostengine"] == "up"


async def test_the_control_api_stops_and_starts_the_host_engine(fleet):
    """POST /api/sim/fault takes the host engine kinds without a GPU."""
    app = web.Application()
    add_routes(app, fleet)
    async with TestClient(TestServer(app)) as client:
        for kind, state in (("hostengine_down", "down"), ("hostengine_up", "up")):
            response = await client.post("/api/sim/fault", data=json.dumps({"kind": kind}))
            assert response.status == 200
            assert (await response.json())["hostengine"] == state
        response = await client.post("/api/sim/fault", data=json.dumps({"kind": "hang"}))
        assert response.status == 400
        assert "needs a GPU index" in (await response.json())["error"]
    assert (fleet.hostengine_up, fleet.hostengine_generation) == (True, 1)


# --- field metadata ---


def test_field_metadata_and_the_pre_4_6_names(engine, dcgm):
    """4.6 names are constants; old names warn; metadata gives types and entity levels."""
    fields, structs = dcgm.fields, dcgm.structs
    structs._dcgmInit()
    with pytest.warns(DeprecationWarning, match="DCGM_FI_DEV_POWER_USAGE is deprecated"):
        assert fields.DCGM_FI_DEV_POWER_USAGE == fields.DCGM_FI_DEV_BOARD_POWER_WATTS == 155
    dram = fields.DcgmFieldGetById(fields.DCGM_FI_PROF_DRAM_UTIL_RATIO)
    assert (dram.fieldType, dram.entityLevel) == (fields.DCGM_FT_DOUBLE, fields.DCGM_FE_GPU_I)
    assert fields.DcgmFieldGetById(9999) is None
    pair = structs.c_dcgmGroupEntityPair_t(GI, 3)
    assert pair == structs.c_dcgmGroupEntityPair_t(GI, 3)
    assert ctypes.sizeof(structs.c_dcgmMigHierarchy_v2) > 448 * ctypes.sizeof(
        structs.c_dcgmMigHierarchyInfo_v2
    )


def test_profiling_multipass_fault_splits_sm_occupancy_until_recovery(fleet: Fleet) -> None:
    """The fault moves 1003 to a minor group of its own on that GPU only; recover undoes it."""
    engine = SimHostEngine(fleet)
    before = engine.profiling_groups(0)
    fleet.fault(0, "profiling_multipass")
    split = engine.profiling_groups(0)
    alone = [(major, minor) for major, minor, fields in split if fields == (1003,)]
    assert len(alone) == 1
    major, minor = alone[0]
    shared = [m for j, m, fields in split if j == major and 1002 in fields]
    assert len(shared) == 1
    assert shared[0] != minor  # same hardware unit, another pass
    assert engine.profiling_groups(1) == before
    fleet.fault(0, "recover")
    assert engine.profiling_groups(0) == before


# --- clocks events, memory temperature, PCIe, codecs, violations, NVLink ---


def test_more_device_fields_equal_nvmls_and_gpu_level_fields_reach_instances(
    handle, dcgm, nv, fleet, clock
):
    """112, 140, 202, 206, 207, 240, 241 are NVML's; 200/201 are NOT_SUPPORTED in DCGM 4.6."""
    fields = [112, 140, 200, 201, 202, 206, 207, 240, 241]
    entities = [(GPU, 0), (GPU, 2), (GI, 0), (CI, 0)]
    watch(dcgm, handle, entities, fields)
    fleet.inject_pcie_replays(2, 3)
    fleet.fault(2, "overheat")
    clock.advance(5)
    got = latest(dcgm, handle, entities, fields)
    unsupported = (0, dcgm.value.DCGM_INT64_NOT_SUPPORTED)
    for gpu in (0, 2):
        device = nv.nvmlDeviceGetHandleByIndex(gpu)
        memory = nv.nvmlDeviceGetFieldValues(device, [pynvml.NVML_FI_DEV_MEMORY_TEMP])[0]
        violations = [
            nv.nvmlDeviceGetViolationStatus(device, policy).violationTime
            for policy in (pynvml.NVML_PERF_POLICY_POWER, pynvml.NVML_PERF_POLICY_THERMAL)
        ]
        expected = {
            112: (0, nv.nvmlDeviceGetCurrentClocksEventReasons(device)),
            140: (0, memory.value.uiVal),
            200: unsupported,
            201: unsupported,
            202: (0, 3 if gpu == 2 else 0),
            240: (0, violations[0]),
            241: (0, violations[1]),
        }
        if gpu == 2:
            decoder = nv.nvmlDeviceGetDecoderUtilization(device)[0]
            expected |= {206: (0, 0), 207: (0, decoder)}
        else:  # MIG mode: NVML says NotSupported
            expected |= {206: unsupported, 207: unsupported}
        assert {f: got[GPU, gpu, f] for f in fields} == expected
    assert got[GPU, 2, 112][1] & dcgm.fields.DCGM_CLOCKS_EVENT_REASON_SW_THERMAL
    assert got[GPU, 2, 241][1] == pytest.approx(5e9, abs=1e3)  # ns since the fault
    for kind in (GI, CI):
        assert {f: got[kind, 0, f] for f in fields} == {f: got[GPU, 0, f] for f in fields}


def test_nvlink_throughput_total_is_the_counters_growth_in_dcgms_mb_per_s(dcgm, clock):
    """(RX + TX KiB now - before) / seconds / 1000; 0 first; NOT_SUPPORTED in MIG mode."""
    fleet = Fleet.from_spec("h100-80gb,h100-80gb:7g.80gb", clock=clock)
    nv = FakeNvml(fleet)
    nv.nvmlInit()
    device = nv.nvmlDeviceGetHandleByIndex(0)
    every = 0xFFFFFFFF
    ids = [
        (pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX, every),
        (pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX, every),
    ]

    def kib() -> int:
        return sum(v.value.ullVal for v in nv.nvmlDeviceGetFieldValues(device, ids))

    with serving(dcgm, SimHostEngine(fleet)):
        handle = dcgm.pydcgm.DcgmHandle().handle
        with pytest.warns(DeprecationWarning, match="NVLINK_BANDWIDTH_TOTAL is deprecated"):
            assert dcgm.fields.DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL == 449
        entities = [(GPU, 0), (GPU, 1), (GI, 7)]  # GPU 1's GI: DCGM id 1 * 7 + 0
        watch(dcgm, handle, entities, [449])
        clock.advance(30)
        first = latest(dcgm, handle, entities, [449])
        assert first[GPU, 0, 449] == (0, 0)
        not_supported = (dcgm.structs.DCGM_ST_NOT_SUPPORTED, dcgm.value.DCGM_INT64_BLANK)
        assert first[GPU, 1, 449] == first[GI, 7, 449] == not_supported
        before, rates = kib(), []
        for _ in range(20):
            clock.advance(10)
            now = kib()
            got = latest(dcgm, handle, [(GPU, 0)], [449])
            rates.append(got[GPU, 0, 449][1])
            assert got[GPU, 0, 449] == (0, int((now - before) / 10 / 1000))
            before = now
    assert max(rates) > 100_000  # some phases move over 100 GB/s
    assert min(rates) >= 0


def test_profiling_fp_pipes_and_traffic_on_gpm_gpus_are_nvmls_gpm(handle, dcgm, nv, clock):
    """1006-1008 are GPM ratios, 1009-1012 GPM MiB/s in bytes/s; instances read their GPU's."""
    fields = list(range(1006, 1013))
    entities = [(GPU, 2), (GPU, 0), (CI, 0)]
    watch(dcgm, handle, entities, fields)
    dcgm.agent.dcgmUpdateAllFields(handle, 1)
    samples = {gpu: nv.nvmlGpmSampleAlloc() for gpu in (0, 2)}
    for gpu, sample in samples.items():
        nv.nvmlGpmSampleGet(nv.nvmlDeviceGetHandleByIndex(gpu), sample)
    clock.advance(7.5)
    got = latest(dcgm, handle, entities, fields)
    for gpu, before in samples.items():
        after = nv.nvmlGpmSampleAlloc()
        nv.nvmlGpmSampleGet(nv.nvmlDeviceGetHandleByIndex(gpu), after)
        for field, metric in zip(fields, range(11, 14), strict=False):  # FP64, FP32, FP16
            expected = _gpm_ratio(nv, before, after, metric)
            assert got[GPU, gpu, field] == (0, pytest.approx(expected))
        for field, metric in ((1009, 20), (1010, 21), (1011, 61), (1012, 60)):
            expected = _gpm_ratio(nv, before, after, metric) * 100 * MIB  # MiB/s -> bytes/s
            assert got[GPU, gpu, field] == (0, pytest.approx(expected, abs=1))
    assert got[GPU, 2, 1009][1] > 0
    assert got[GPU, 0, 1011] == got[GPU, 0, 1012] == (0, 0)  # no NVLink in MIG mode
    for field in (1009, 1010, 1011, 1012):  # GPU level: the CI reads its GPU's
        assert got[CI, 0, field] == got[GPU, 0, field]


def test_profiling_fp_pipes_and_traffic_on_ampere_come_from_the_integrals(dcgm, clock):
    """A100: ratios of the FP levels, bytes/s of the traffic levels times the link speeds."""
    fleet = Fleet.from_spec("a100-80gb,a100-80gb:3g.40gb", clock=clock, seed=5)
    fields = list(range(1006, 1013))
    with serving(dcgm, SimHostEngine(fleet)) as engine:
        engine.metric_groups[0] = [(0, 0, (1006, 1007, 1008)), (2, 0, (1009, 1010, 1011, 1012))]
        handle = dcgm.pydcgm.DcgmHandle().handle
        entities = [(GPU, 0), (GPU, 1), (GI, 7)]  # GPU 1's GI: DCGM id 1 * 7 + 0
        watch(dcgm, handle, [(GPU, 0)], fields)
        watch(dcgm, handle, [(GPU, 1), (GI, 7)], [1009, 1011])
        first = latest(dcgm, handle, [(GPU, 0)], fields)
        before = [gpu.totals for gpu in fleet.gpus]
        clock.advance(6)
        got = latest(dcgm, handle, entities, fields)
        after = [gpu.totals for gpu in fleet.gpus]
    assert first[GPU, 0, 1006] == (0, dcgm.value.DCGM_FP64_BLANK)
    assert first[GPU, 0, 1009] == (0, dcgm.value.DCGM_INT64_BLANK)
    model = fleet.gpus[0].model
    links = {
        1009: (PCIE_TX, model.pcie_bytes_per_s),
        1010: (PCIE_RX, model.pcie_bytes_per_s),
        1011: (NVLINK_TX, model.nvlink_bytes_per_s),
        1012: (NVLINK_RX, model.nvlink_bytes_per_s),
    }
    for gpu, watched in ((0, (1009, 1010, 1011, 1012)), (1, (1009, 1011))):
        for field in watched:
            where, bandwidth = links[field]
            average = (after[gpu][where] - before[gpu][where]) / 6
            assert got[GPU, gpu, field] == (0, int(average * bandwidth))
    for field, where in ((1006, FP64), (1007, FP32), (1008, FP16)):
        expected = (after[0][where] - before[0][where]) / 6
        assert got[GPU, 0, field] == (0, pytest.approx(expected))
    assert got[GPU, 0, 1009][1] > 0
    assert got[GPU, 1, 1011] == (0, 0)  # MIG mode: no NVLink traffic
    assert got[GI, 7, 1009] == got[GPU, 1, 1009]
