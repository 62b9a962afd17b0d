"""The DCGM backend against the simulator's fake DCGM bindings and host engine."""

from __future__ import annotations

import logging
import math

import pytest

from manual_clock import ManualClock
from migexporter import catalog
from migexporter.backends.base import BackendUnavailableError, EventKind
from migexporter.backends.dcgm import DcgmBackend
from migexporter.backends.dcgm_bindings import load
from migexporter.backends.nvml import SLOW_COUNTERS_PERIOD_S, NvmlBackend
from migexporter.sim import BINDINGS_DIR, FakeNvml, Fleet, SimHostEngine, dcgm_engine

MIB = 1 << 20
FE_GPU, FE_GPU_I, FE_GPU_CI = 1, 4, 5
ADDRESS = "127.0.0.1:5555"
SOCKET = "/run/nvidia/hostengine.sock"
DEFAULT_GROUPS = 2  # DCGM's all-GPUs and all-NVSwitches groups


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def fleet(clock: ManualClock) -> Fleet:
    return Fleet.default(clock=clock)


OPENED: list[DcgmBackend] = []


@pytest.fixture
def engine(fleet: Fleet):
    engine = SimHostEngine(fleet, addresses=[ADDRESS, SOCKET])
    dcgm_engine.install(engine)
    yield engine
    while OPENED:  # shut every handle down while its engine still exists
        OPENED.pop().close()
    dcgm_engine.uninstall()


@pytest.fixture
def bindings(engine):
    return load(str(BINDINGS_DIR), {})


def make_backend(bindings, fleet, clock, *, nvml=True, address=None, privileged=True, **kwargs):
    local = NvmlBackend(FakeNvml(fleet, privileged=privileged)) if nvml else None
    backend = DcgmBackend(bindings, address=address, nvml=local, clock=clock, **kwargs)
    OPENED.append(backend)
    backend.open()
    return backend


def topology(backend):
    return [backend.discover_gpu(i) for i in range(backend.gpu_count())]


def group_names(bindings, backend):
    raw = backend._handle.handle
    return [
        str(bindings.agent.dcgmGroupGetInfo(raw, group_id).groupName)
        for group_id in bindings.agent.dcgmGroupGetAllIds(raw)
    ]


def field_group_count(bindings, backend):
    return int(bindings.agent.dcgmFieldGroupGetAll(backend._handle.handle).numFieldGroups)


def test_one_group_per_gpu_instance_and_one_for_the_gpus(bindings, fleet, clock):
    """Groups are named by GPU UUID and GI id, so `dcgmi group -l` shows whose they are."""
    backend = make_backend(bindings, fleet, clock)
    gpus = topology(backend)
    names = group_names(bindings, backend)
    ours = [n for n in names if n.startswith("migexporter-")]
    instances = [(g.uuid, gi.id) for g in gpus for gi in g.gpu_instances]
    assert len(names) == DEFAULT_GROUPS + 1 + len(instances)
    assert sum(n.endswith("-gpus") for n in ours) == 1
    for uuid, gi_id in instances:
        assert sum(n.endswith(f"-{uuid}-gi{gi_id}") for n in ours) == 1
    backend.close()


def test_group_members_are_the_instance_entities(bindings, fleet, clock):
    """A GI group holds its DCGM GI entity and its CI entities, by DCGM (not NVML) ids."""
    fleet.reconfigure(0, ["7g.80gb/1c*7"])
    backend = make_backend(bindings, fleet, clock)
    topology(backend)
    raw = backend._handle.handle
    hierarchy = bindings.agent.dcgmGetGpuInstanceHierarchy(raw)
    entities = {
        (int(e.entity.entityGroupId), int(e.entity.entityId))
        for e in hierarchy.entityList[: hierarchy.count]
        if e.info.gpuUuid == fleet.gpus[0].uuid
    }
    (group_id,) = [
        g
        for g in bindings.agent.dcgmGroupGetAllIds(raw)
        if str(bindings.agent.dcgmGroupGetInfo(raw, g).groupName).endswith("-gi0")  # the 7g
        and fleet.gpus[0].uuid in str(bindings.agent.dcgmGroupGetInfo(raw, g).groupName)
    ]
    info = bindings.agent.dcgmGroupGetInfo(raw, group_id)
    members = {(int(e.entityGroupId), int(e.entityId)) for e in info.entityList[: info.count]}
    assert members == entities
    assert sum(kind == FE_GPU_CI for kind, _ in members) == 7


def readings_of(sample):
    """Every value of a sample keyed by (entity, metric name, extra labels)."""
    out = {}
    for (metric, extra), value in sample.gpu.values.items():
        out[("gpu", metric.name, extra)] = value
    for gi_id, readings in sample.gpu_instances.items():
        for (metric, extra), value in readings.values.items():
            out[("gi", gi_id, metric.name, extra)] = value
    for key, readings in sample.compute_instances.items():
        for (metric, extra), value in readings.values.items():
            out[("ci", key, metric.name, extra)] = value
    return out


def test_same_instances_labels_and_values_as_the_nvml_backend(bindings, fleet, clock):
    """From one fleet state, DCGM and NVML report the same series with the same values."""
    fleet.reconfigure(1, ["3g.40gb/1c*3", "2g.20gb", "1g.10gb*2"])
    nvml = NvmlBackend(FakeNvml(fleet), clock=clock)
    nvml.open()
    dcgm = make_backend(bindings, fleet, clock, nvml=False)
    nvml_gpus, dcgm_gpus = topology(nvml), topology(dcgm)
    # Without NVML, DCGM cannot tell placements or SM counts; everything else matches.
    for a, b in zip(nvml_gpus, dcgm_gpus, strict=True):
        assert (a.index, a.uuid, a.name, a.mig_enabled, a.minor_number) == (
            b.index, b.uuid, b.name, b.mig_enabled, b.minor_number,
        )  # fmt: skip
        assert a.minor_number is not None
        assert a.mig_slices_total == b.mig_slices_total
        strip = [
            (gi.id, gi.profile, gi.slices, gi.memory_bytes, gi.profile_id, gi.mig_uuid)
            for gi in a.gpu_instances
        ]
        assert strip == [
            (gi.id, gi.profile, gi.slices, gi.memory_bytes, gi.profile_id, gi.mig_uuid)
            for gi in b.gpu_instances
        ]
        assert [
            [(ci.id, ci.mig_uuid, ci.profile, ci.slices) for ci in gi.compute_instances]
            for gi in a.gpu_instances
        ] == [
            [(ci.id, ci.mig_uuid, ci.profile, ci.slices) for ci in gi.compute_instances]
            for gi in b.gpu_instances
        ]
    for gpu in nvml_gpus:  # GPM and DCGM profiling both need one interval to produce a ratio
        nvml.sample(gpu)
        dcgm.sample(gpu)
    clock.now += SLOW_COUNTERS_PERIOD_S  # so that NVML reads its costly counters again too
    for gpu in nvml_gpus:
        want, got = readings_of(nvml.sample(gpu)), readings_of(dcgm.sample(gpu))
        # NVML's NVLink byte counters have no DCGM field (DCGM keeps 449 as a rate only).
        nvml_only = {k for k in want if k[-2] == catalog.GPU_NVLINK_BYTES.name}
        assert nvml_only or gpu.mig_enabled  # the MIG-disabled H100 has NVLink
        assert want.keys() - nvml_only == got.keys(), f"GPU {gpu.index}: {want.keys() ^ got.keys()}"
        for key in got:
            # DCGM reports frame buffer in whole MiB, rates in whole bytes per second, and
            # NVLink data (449) in whole KiB/s divided by 1000.
            tolerance = (
                MIB
                if "memory" in key[-2]
                else 1024 * 1000
                if key[-2] == catalog.GPU_NVLINK_DATA_RATE.name
                else 1.0
                if "per_second" in key[-2]
                else 1e-9
            )
            value = want[key]
            assert math.isclose(got[key], value, abs_tol=tolerance), (key, got[key], value)


def test_dcgm_entity_ids_map_back_to_nvml_ids_after_reconfiguration(bindings, fleet, clock):
    """Entity ids shift when the layout changes; readings still land on the right GI ids."""
    backend = make_backend(bindings, fleet, clock)
    before = {k: v.entity_id for k, v in (topology(backend), backend._hierarchy.by_nvml)[1].items()}
    fleet.reconfigure(1, ["4g.40gb", "2g.20gb", "1g.10gb"])
    gpus = topology(backend)
    after = {k: v.entity_id for k, v in backend._hierarchy.by_nvml.items()}
    assert before != after
    gpu = gpus[1]
    sample = backend.sample(gpu)
    assert set(sample.gpu_instances) == {gi.id for gi in gpu.gpu_instances}
    for gi in gpu.gpu_instances:
        total = sample.gpu_instances[gi.id].get(catalog.GI_MEMORY_TOTAL)
        assert total is not None
        assert abs(total - gi.memory_bytes) < MIB


def test_reconfiguring_500_times_leaks_no_groups(bindings, clock):
    """Groups and field groups of destroyed instances are destroyed with them."""
    fleet = Fleet.from_spec("h100-80gb:1g.10gb*7", clock=clock)
    engine = SimHostEngine(fleet)
    dcgm_engine.install(engine)
    backend = make_backend(bindings, fleet, clock)
    topology(backend)
    field_groups = field_group_count(bindings, backend)
    layouts = (["3g.40gb", "3g.40gb"], ["1g.10gb*7"], ["7g.80gb/1c*7"], ["2g.20gb*3", "1g.10gb"])
    for i in range(500):
        layout = layouts[i % len(layouts)]
        fleet.reconfigure(0, layout)
        gpus = topology(backend)
        groups = len(bindings.agent.dcgmGroupGetAllIds(backend._handle.handle))
        assert groups == DEFAULT_GROUPS + 1 + len(gpus[0].gpu_instances), (i, layout)
    assert field_group_count(bindings, backend) == field_groups
    backend.close()


@pytest.mark.parametrize(
    "case",
    [
        (-6, None),  # DCGM_ST_NOT_SUPPORTED
        (-14, None),  # DCGM_ST_NO_DATA
        (0, "blank"),  # OK, but the blank sentinel
        (0, "not_supported"),  # OK, but the NOT_SUPPORTED sentinel
    ],
)
def test_blanks_and_failed_statuses_give_no_series(bindings, fleet, clock, engine, case):
    """Never a 0 and never 9223372036854775792: the series is simply absent."""
    status, payload = case
    backend = make_backend(bindings, fleet, clock)
    gpus = topology(backend)
    gpu = gpus[1]
    gi = gpu.gpu_instances[0]
    gi_entity = backend._hierarchy.by_nvml[(gpu.uuid, gi.id, None)].entity_id
    value_module = bindings.value
    sentinel = {
        None: None,
        "blank": value_module.DCGM_INT64_BLANK,
        "not_supported": value_module.DCGM_INT64_BLANK + 2,
    }[payload]
    engine.override(FE_GPU, 1, 150, status, sentinel)  # temperature of GPU 1
    engine.override(FE_GPU_I, gi_entity, 252, status, sentinel)  # that GI's memory used
    sample = backend.sample(gpu)
    assert sample.gpu.get(catalog.GPU_TEMPERATURE) is None
    assert sample.gpu_instances[gi.id].get(catalog.GI_MEMORY_USED) is None
    assert sample.gpu_instances[gi.id].get(catalog.GI_MEMORY_TOTAL) is not None
    assert sample.gpu.get(catalog.GPU_POWER) is not None


def xids(events):
    return [(e.gpu_uuid, e.gpu_instance_id, e.compute_instance_id, e.xid) for e in events]


def drain(backend, clock, rounds=3):
    events = []
    for _ in range(rounds):
        clock.now += 1.0
        events += backend.wait_events(0.01)
    return events


def test_xids_come_from_nvml_when_it_attributes_them(bindings, fleet, clock):
    """Privileged local NVML is the XID source; DCGM's field 230 is not counted too."""
    backend = make_backend(bindings, fleet, clock)
    topology(backend)
    fleet.inject_xid(1, 43, gpu_instance_id=7, compute_instance_id=0, count=2)
    events = [e for e in drain(backend, clock) if e.kind is EventKind.XID]
    uuid = fleet.gpus[1].uuid
    assert xids(events) == [(uuid, 7, 0, 43), (uuid, 7, 0, 43)]


@pytest.mark.parametrize("nvml", ["absent", "unprivileged"])
def test_xids_come_from_dcgm_otherwise_every_sample_counted(bindings, fleet, clock, nvml):
    """Every XID sample since the last read, attributed to NVML's instance ids, exactly once."""
    backend = make_backend(
        bindings, fleet, clock, nvml=nvml == "unprivileged", privileged=nvml == "absent"
    )
    gpus = topology(backend)
    drain(backend, clock)
    fleet.inject_xid(1, 43, gpu_instance_id=7, compute_instance_id=0, count=2)
    fleet.inject_xid(1, 48, gpu_instance_id=8)
    fleet.inject_xid(0, 79)
    events = [e for e in drain(backend, clock) if e.kind is EventKind.XID]
    one, zero = gpus[1].uuid, gpus[0].uuid
    assert sorted(xids(events), key=str) == sorted(
        [(one, 7, 0, 43), (one, 7, 0, 43), (one, 8, None, 48), (zero, None, None, 79)], key=str
    )
    assert drain(backend, clock) == []


def test_rebuilt_groups_do_not_count_old_xids_again(bindings, fleet, clock):
    """Another DCGM client keeps 230 watched: a group rebuilt on the same GPUs starts after
    the samples already counted, not at the start of DCGM's keep window."""
    other = bindings.pydcgm.DcgmHandle(opMode=bindings.structs.DCGM_OPERATION_MODE_AUTO)
    a, raw = bindings.agent, other.handle
    watched = a.dcgmGroupCreate(raw, bindings.structs.DCGM_GROUP_EMPTY, "dcgm-exporter")
    for gpu_id in range(len(fleet.gpus)):
        a.dcgmGroupAddEntity(raw, watched, FE_GPU, gpu_id)
    xid_only = a.dcgmFieldGroupCreate(raw, [230], "xid")
    a.dcgmWatchFields(raw, watched, xid_only, 100_000, 3600.0, 0)
    try:
        backend = make_backend(bindings, fleet, clock, nvml=False)
        gpus = topology(backend)
        drain(backend, clock)
        fleet.inject_xid(0, 79)
        assert xids(drain(backend, clock)) == [(gpus[0].uuid, None, None, 79)]
        # GPU 0 loses a profiling field: the GPUs' groups are rebuilt with new field sets.
        backend._profiling[gpus[0].uuid] = (1001,)
        topology(backend)
        assert drain(backend, clock) == []
    finally:
        other.Shutdown()


def test_an_xid_storm_is_counted_in_full(bindings, fleet, clock):
    """10,000 XIDs between two reads are 10,000 events."""
    backend = make_backend(bindings, fleet, clock, nvml=False)
    topology(backend)
    drain(backend, clock)
    fleet.inject_xid(1, 13, gpu_instance_id=7, compute_instance_id=0, count=10_000)
    events = drain(backend, clock)
    assert len(events) == 10_000
    assert {(e.gpu_instance_id, e.compute_instance_id, e.xid) for e in events} == {(7, 0, 13)}


def test_profiling_fields_that_multiplex_are_left_out(bindings, fleet, clock, engine, caplog):
    """Fields needing a second pass are not watched, marked unsupported, and logged once."""
    # 1002 and 1003 in two groups of the same hardware unit: they cannot be watched together.
    engine.metric_groups[1] = [
        (0, 1, (1002, 1004)),
        (0, 2, (1003,)),
        (1, 0, (1005,)),
        (3, 0, (1001,)),
    ]
    caplog.set_level(logging.WARNING)
    backend = make_backend(bindings, fleet, clock)
    gpus = topology(backend)
    topology(backend)
    clock.now += 1.0
    sample = backend.sample(gpus[1])
    clock.now += 1.0
    sample = backend.sample(gpus[1])
    offered = {1001: True, 1002: True, 1003: False, 1004: True, 1005: True}
    assert sample.fields_supported == offered | dict.fromkeys(range(1006, 1013), False)
    gi_id = gpus[1].gpu_instances[0].id
    assert sample.gpu_instances[gi_id].get(catalog.GI_SM_OCCUPANCY) is None
    assert sample.gpu_instances[gi_id].get(catalog.GI_SM_ACTIVE) is not None
    assert sum("1003" in r.getMessage() for r in caplog.records) == 1
    assert backend.sample(gpus[0]).fields_supported[1003] is True  # other GPUs keep it
    whole_gpu = backend.sample(gpus[2])  # no MIG: its device-level ratios are all it has
    assert whole_gpu.gpu.get(catalog.GPU_SM_OCCUPANCY) is not None
    assert backend.sample(gpus[1]).gpu.get(catalog.GPU_SM_OCCUPANCY) is None
    gpu_groups = [n for n in group_names(bindings, backend) if n.endswith(("-gpus", "-gpus1"))]
    assert len(gpu_groups) == 2  # the GPUs that can watch 1003, and the one that cannot


def test_interval_under_dcgm_floor_is_raised_with_one_warning(bindings, fleet, clock, caplog):
    """DCGM cannot watch profiling faster than every 100 ms."""
    caplog.set_level(logging.WARNING)
    backend = make_backend(bindings, fleet, clock, interval=0.02)
    topology(backend)
    warnings = [r.getMessage() for r in caplog.records if "100 ms" in r.getMessage()]
    assert len(warnings) == 1
    assert backend._interval == pytest.approx(0.1)


@pytest.mark.parametrize("address", [ADDRESS, SOCKET])
def test_connects_to_a_standalone_host_engine(bindings, fleet, clock, address):
    """TCP host:port and unix socket paths both reach the engine."""
    backend = make_backend(bindings, fleet, clock, address=address)
    assert backend.where == f"nv-hostengine at {address}"
    assert len(topology(backend)) == 3


def test_unreachable_host_engine_fails_open_with_its_address(bindings, fleet, clock):
    """A wrong address is one clear error naming it."""
    backend = DcgmBackend(bindings, address="127.0.0.1:1", clock=clock)
    with pytest.raises(BackendUnavailableError, match=r"nv-hostengine at 127\.0\.0\.1:1"):
        backend.open()


def test_host_engine_loss_reconnects_with_backoff(bindings, fleet, clock):
    """Lost: unavailable, then retries after 1 s, 2 s, 4 s ...; back: groups rebuilt."""
    backend = make_backend(bindings, fleet, clock, address=ADDRESS)
    gpus = topology(backend)
    groups = len(group_names(bindings, backend))
    fleet.fault(None, "hostengine_down")
    with pytest.raises(BackendUnavailableError):
        backend.sample(gpus[0])
    attempts = []
    for _ in range(12):  # 0.5 s steps over 6 s
        try:
            backend.gpu_count()
        except BackendUnavailableError as error:
            attempts.append("next attempt" not in str(error))
        clock.now += 0.5
    # Real attempts at +1 s, +3 s (after 2 s) and nothing else before +7 s (after 4 s).
    assert attempts.count(True) == 2
    fleet.fault(None, "hostengine_up")
    clock.now += 30
    gpus = topology(backend)
    assert len(group_names(bindings, backend)) == groups
    clock.now += 1.0
    assert backend.sample(gpus[1]).gpu_instances


# --- device families ------------------------------------------------------------------------
def test_device_fields_convert_dcgm_units(bindings, fleet, clock, engine):
    """Percent to ratios, ns to seconds, MiB to bytes, the clock-event mask to 0/1 per reason."""
    backend = make_backend(bindings, fleet, clock)
    gpu = topology(backend)[2]  # MIG disabled
    # What an H200 answered through NVML under load (benchmarks/results/nvml_calls-h200.json),
    # as DCGM stores it: percent, C, ns, MiB, bytes/s; the mask is power cap | SW thermal.
    literals = {203: 99, 204: 23, 206: 0, 207: 17, 140: 40, 202: 3, 240: 3_528_648_768, 241: 0}
    literals |= {112: 0x24, 251: 142_078, 253: 615, 1009: 3_999_615_860}
    for field_id, value in literals.items():
        engine.override(FE_GPU, gpu.index, field_id, 0, value)
    got = backend.sample(gpu).gpu
    assert got.get(catalog.GPU_UTILIZATION) == pytest.approx(0.99)
    assert got.get(catalog.GPU_MEMORY_COPY_UTILIZATION) == pytest.approx(0.23)
    assert got.get(catalog.GPU_ENCODER_UTILIZATION) == 0.0
    assert got.get(catalog.GPU_DECODER_UTILIZATION) == pytest.approx(0.17)
    assert got.get(catalog.GPU_MEMORY_TEMPERATURE) == 40
    assert got.get(catalog.GPU_PCIE_REPLAYS) == 3
    assert got.get(catalog.GPU_THROTTLED, "power") == pytest.approx(3.528648768)
    assert got.get(catalog.GPU_THROTTLED, "thermal") == 0.0
    assert got.get(catalog.GPU_MEMORY_FREE) == 142_078 * MIB
    assert got.get(catalog.GPU_MEMORY_RESERVED) == 615 * MIB
    assert got.get(catalog.GPU_PCIE_THROUGHPUT, "tx") == 3_999_615_860
    reasons = {k[1][0]: v for k, v in got.values.items() if k[0] is catalog.GPU_CLOCK_EVENT}
    active = {"sw_power_cap", "sw_thermal_slowdown"}
    assert reasons == {r: float(r in active) for r in catalog.CLOCK_EVENT_REASONS.values()}


def recovery_actions(readings) -> dict[str, float]:
    """The recovery-action state set of a GPU's readings, by action."""
    return {
        extra[0]: value
        for (metric, extra), value in readings.values.items()
        if metric is catalog.GPU_RECOVERY_ACTION
    }


def test_the_recovery_action_is_field_1523_as_a_state_set(bindings, fleet, clock, engine):
    """DCGM's recovery-action field on the GPU entity: none on a healthy GPU, gpu_reset after
    the driver asks for it, a code the bindings do not name as its number, a blank as nothing."""
    backend = make_backend(bindings, fleet, clock, nvml=False)
    gpus = topology(backend)
    named = catalog.RECOVERY_ACTIONS.values()
    for gpu in gpus:  # MIG or not: the action is the GPU's
        assert recovery_actions(backend.sample(gpu).gpu) == {a: float(a == "none") for a in named}
    fleet.inject_recovery_action(1, "gpu_reset")
    clock.now += 1.0  # the next watch update
    assert recovery_actions(backend.sample(gpus[1]).gpu) == {
        a: float(a == "gpu_reset") for a in named
    }
    assert recovery_actions(backend.sample(gpus[0]).gpu)["none"] == 1.0
    engine.override(FE_GPU, gpus[2].index, 1523, 0, 42)
    assert recovery_actions(backend.sample(gpus[2]).gpu) == {
        **dict.fromkeys(named, 0.0),
        "42": 1.0,
    }
    engine.override(FE_GPU, gpus[2].index, 1523, 0, bindings.value.DCGM_INT64_BLANK + 2)
    assert recovery_actions(backend.sample(gpus[2]).gpu) == {}
    # The 4.5 name still resolves, as in DCGM 4.6.
    with pytest.warns(DeprecationWarning, match="DCGM_FI_DEV_GET_GPU_RECOVERY_ACTION"):
        assert bindings.fields.DCGM_FI_DEV_GET_GPU_RECOVERY_ACTION == 1523


@pytest.mark.parametrize("source", ["nvml", "dcgm"])
def test_simulated_fleet_serves_every_device_family(bindings, fleet, clock, source):
    """Each new family has plausible values on the MIG-disabled GPU; MIG GPUs lack NVML's."""
    if source == "nvml":
        backend = NvmlBackend(FakeNvml(fleet))
        backend.open()
    else:
        backend = make_backend(bindings, fleet, clock, nvml=False)
    gpus = topology(backend)
    for gpu in gpus:
        backend.sample(gpu)
    clock.now += 1.0
    mig, whole = backend.sample(gpus[1]), backend.sample(gpus[2]).gpu
    ratios = [
        *((m, ()) for m in catalog.PROFILING[catalog.Scope.GPU].values()),
        (catalog.GPU_UTILIZATION, ()),
        (catalog.GPU_MEMORY_COPY_UTILIZATION, ()),
        (catalog.GPU_ENCODER_UTILIZATION, ()),
        (catalog.GPU_DECODER_UTILIZATION, ()),
        *((catalog.GPU_CLOCK_EVENT, (r,)) for r in catalog.CLOCK_EVENT_REASONS.values()),
    ]
    for metric, extra in ratios:
        assert 0.0 <= whole.get(metric, *extra) <= 1.0, (metric.name, extra)
    assert 20 <= whole.get(catalog.GPU_MEMORY_TEMPERATURE) <= 100
    assert whole.get(catalog.GPU_PCIE_REPLAYS) >= 0
    for cause in ("power", "thermal"):
        assert whole.get(catalog.GPU_THROTTLED, cause) >= 0
    for direction in ("tx", "rx"):
        assert 0 <= whole.get(catalog.GPU_PCIE_THROUGHPUT, direction) < 64e9
        assert 0 <= whole.get(catalog.GPU_NVLINK_THROUGHPUT, direction) < 450e9
    total = whole.get(catalog.GPU_MEMORY_TOTAL)
    parts = (catalog.GPU_MEMORY_USED, catalog.GPU_MEMORY_FREE, catalog.GPU_MEMORY_RESERVED)
    assert sum(whole.get(m) for m in parts) == pytest.approx(total, abs=3 * MIB)
    assert whole.get(catalog.GPU_ENCODER_UTILIZATION) == 0.0  # no NVENC on an H100
    # MIG mode: no NVML utilizations and no NVLink; per-instance memory and pipes instead.
    for metric in (catalog.GPU_UTILIZATION, catalog.GPU_DECODER_UTILIZATION):
        assert mig.gpu.get(metric) is None
    assert mig.gpu.get(catalog.GPU_NVLINK_THROUGHPUT, "tx") is None
    assert mig.gpu.get(catalog.GPU_NVLINK_BYTES, "tx") is None
    assert mig.gpu.get(catalog.GPU_MEMORY_TEMPERATURE) is not None
    for readings in mig.gpu_instances.values():
        gi_total = readings.get(catalog.GI_MEMORY_TOTAL)
        gi_parts = (catalog.GI_MEMORY_USED, catalog.GI_MEMORY_FREE, catalog.GI_MEMORY_RESERVED)
        assert sum(readings.get(m) for m in gi_parts) == pytest.approx(gi_total, abs=3 * MIB)
        for metric in (catalog.GI_FP64_ACTIVE, catalog.GI_FP32_ACTIVE, catalog.GI_FP16_ACTIVE):
            assert 0.0 <= readings.get(metric) <= 1.0
