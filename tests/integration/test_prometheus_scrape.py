"""A real Prometheus scrapes the simulated fleet: instance series, MIG changes and XID counters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import pytest
from harness import Prometheus, Query, Sample, Service, sim_fleet, start_exporter, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

pytestmark = pytest.mark.integration

RATIOS = tuple(
    f"nvidia_gpu_instance_{name}_ratio"
    for name in ("gr_engine_active", "sm_active", "sm_occupancy", "tensor_active", "dram_active")
)
MEMORY_USED = "nvidia_gpu_instance_memory_used_bytes"
MEMORY_TOTAL = "nvidia_gpu_instance_memory_total_bytes"
INSTANCE_FAMILIES = (*RATIOS, MEMORY_USED, MEMORY_TOTAL)
SERIES_TIMEOUT_S = 20.0  # two exporter cycles, a topology refresh and a scrape, with room


@pytest.fixture(scope="module", params=["nvml", "dcgm"])
def backend(request: pytest.FixtureRequest) -> str:
    """Every test of this module runs against both backends, reading the same simulated fleet."""
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def exporter(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The simulated exporter (default fleet) on one backend, shared by the module's tests."""
    service = start_exporter(tmp_path_factory.mktemp("exporter"), "--backend", backend)
    yield service
    service.stop()


class InstanceKey(NamedTuple):
    """The identifying labels of a GPU-instance series."""

    gpu: str
    gpu_uuid: str
    gpu_instance_id: str
    profile: str


def fleet_keys(gpus: Iterable[dict[str, Any]], gpu: str | None = None) -> set[InstanceKey]:
    """The instance keys the simulator says exist, optionally on one GPU only."""
    return {
        InstanceKey(str(g["index"]), g["uuid"], str(gi["id"]), gi["profile"])
        for g in gpus
        if gpu is None or str(g["index"]) == gpu
        for gi in g["gpu_instances"]
    }


def series_keys(samples: Iterable[Sample]) -> set[InstanceKey]:
    """The instance keys of Prometheus samples."""
    return {
        InstanceKey(
            s.labels["gpu"], s.labels["gpu_uuid"], s.labels["gpu_instance_id"], s.labels["profile"]
        )
        for s in samples
    }


def keys_by_family(query: Query, selector: str = "") -> dict[str, set[InstanceKey]]:
    """For each per-instance family, the instance keys Prometheus has now."""
    return {name: series_keys(query(name + selector)) for name in INSTANCE_FAMILIES}


def by_key(samples: Iterable[Sample]) -> dict[InstanceKey, float]:
    """Sample values by instance key, failing on a duplicate series."""
    values: dict[InstanceKey, float] = {}
    for sample in samples:
        (key,) = series_keys([sample])
        assert key not in values, f"two series for {key}: {sample.labels}"
        values[key] = sample.value
    return values


def test_prometheus_scrapes_the_exporter(
    prometheus: Prometheus, query: Query, backend: str
) -> None:
    """Prometheus reports the exporter target as up and sees the chosen backend as up."""
    up = wait_for(lambda: query('up{job="migexporter"}'), until=lambda r: r and r[0].value == 1)
    assert len(up) == 1
    backend_up = wait_for(lambda: query("migexporter_backend_up"), what="migexporter_backend_up")
    assert [(s.labels["backend"], s.value) for s in backend_up] == [(backend, 1.0)]
    # The simulated H100s watch every profiling field, whichever backend reads them, but for
    # NVLink's (1011, 1012) on the GPUs in MIG mode, where NVLink is not reported.
    mig = {s.labels["gpu_uuid"] for s in query('nvidia_gpu_info{mig_mode="enabled"}')}
    supported = {
        (s.labels["gpu_uuid"], s.labels["field"]): s.value
        for s in query("migexporter_field_supported")
    }
    uuids = {s.labels["gpu_uuid"] for s in query("nvidia_gpu_info")}
    assert len(uuids) == 3
    assert len(mig) == 2
    assert supported == {
        (uuid, str(field)): float(not (uuid in mig and field in (1011, 1012)))
        for uuid in uuids
        for field in range(1001, 1013)
    }


def test_every_gpu_instance_has_ratios_and_memory(exporter: Service, query: Query) -> None:
    """Every simulated GI has 5 ratios in [0, 1] and memory used <= total; a full GPU has none."""
    gpus = sim_fleet(exporter)
    expected = fleet_keys(gpus)
    full_gpus = {str(g["index"]) for g in gpus if not g["mig_enabled"]}
    assert expected, "the default fleet has MIG instances"
    assert full_gpus, "the default fleet has a GPU with MIG disabled"

    # Exact equality: every instance has every family, and nothing else has any (GPU 2 included).
    wait_for(
        lambda: keys_by_family(query),
        SERIES_TIMEOUT_S,
        until=lambda seen: all(keys == expected for keys in seen.values()),
        what=f"exactly these instance series in every family: {sorted(expected)}",
    )
    for name in RATIOS:
        values = by_key(query(name))
        assert all(0.0 <= v <= 1.0 for v in values.values()), f"{name} outside [0, 1]: {values}"
    used, total = by_key(query(MEMORY_USED)), by_key(query(MEMORY_TOTAL))
    for key, size in total.items():
        assert size > 0, f"{key} has no memory"
        assert 0 <= used[key] <= size, f"{key} uses {used[key]} of {size} bytes"
    for gpu in full_gpus:  # present as a GPU, absent as instances, whatever the family
        assert query(f'nvidia_gpu_info{{gpu="{gpu}",mig_mode="disabled"}}'), f"GPU {gpu} missing"
        stray = query(f'{{__name__=~"nvidia_(gpu|compute)_instance_.+",gpu="{gpu}"}}')
        assert stray == [], f"full GPU {gpu} has instance series: {stray}"


def test_instance_info_matches_the_fleet(exporter: Service, query: Query) -> None:
    """nvidia_gpu_instance_info carries each GI's profile id, placement, SMs and MIG UUID."""
    gpus = sim_fleet(exporter)
    info = wait_for(
        lambda: query("nvidia_gpu_instance_info"),
        SERIES_TIMEOUT_S,
        until=lambda samples: series_keys(samples) == fleet_keys(gpus),
        what="one nvidia_gpu_instance_info per simulated GI",
    )
    labels = {next(iter(series_keys([s]))): s.labels for s in info}
    for gpu in gpus:
        for gi in gpu["gpu_instances"]:
            got = labels[InstanceKey(str(gpu["index"]), gpu["uuid"], str(gi["id"]), gi["profile"])]
            assert got["profile_id"] == str(gi["profile_id"])
            assert got["placement_start"] == str(gi["placement"]["start"])
            assert got["placement_size"] == str(gi["placement"]["size"])
            assert got["sms"] == str(gi["sms"])
            mig_uuids = {ci["mig_uuid"] for ci in gi["compute_instances"]}
            if mig_uuids:
                assert got["mig_uuid"] in mig_uuids


def test_mig_reconfiguration_replaces_instance_series(exporter: Service, query: Query) -> None:
    """After GPU 0 becomes two 3g.40gb, its old GIs' series are gone and the new ones present."""
    old = fleet_keys(sim_fleet(exporter), gpu="0")
    others = fleet_keys(sim_fleet(exporter)) - old
    # Prometheus must hold the old series first, or their absence afterwards would prove nothing.
    wait_for(
        lambda: keys_by_family(query, '{gpu="0"}'),
        SERIES_TIMEOUT_S,
        until=lambda seen: all(keys == old for keys in seen.values()),
        what=f"GPU 0 series for the layout before the change: {sorted(old)}",
    )

    reply = exporter.post("/api/sim/mig", {"gpu": 0, "profiles": ["3g.40gb", "3g.40gb"]})
    assert reply.status == 200, reply.body[:500]
    new = fleet_keys(sim_fleet(exporter), gpu="0")
    assert sorted(k.profile for k in new) == ["3g.40gb", "3g.40gb"]
    assert old - new, "the old layout had GIs that the new one lacks"

    # A plain instant query drops a series once Prometheus has scraped a page without it
    # (a staleness marker); series the exporter kept serving would still be returned.
    seen = wait_for(
        lambda: keys_by_family(query, '{gpu="0"}'),
        SERIES_TIMEOUT_S,
        until=lambda seen: all(keys == new for keys in seen.values()),
        what=f"GPU 0 series for exactly {sorted(new)}",
    )
    assert all(not (keys & (old - new)) for keys in seen.values())
    untouched = keys_by_family(query, '{gpu!="0"}')
    assert all(keys == others for keys in untouched.values()), "other GPUs' series changed"


def test_impossible_mig_layout_is_refused(exporter: Service) -> None:
    """A layout that does not fit gets 400 with a reason and leaves the GPU as it was."""
    before = fleet_keys(sim_fleet(exporter), gpu="0")
    reply = exporter.post("/api/sim/mig", {"gpu": 0, "profiles": ["7g.80gb", "1g.10gb"]})
    assert reply.status == 400, reply.body[:500]
    reason = reply.json()["error"]
    assert isinstance(reason, str)
    assert reason.strip()
    assert fleet_keys(sim_fleet(exporter), gpu="0") == before


def test_injected_xid_is_counted_once(exporter: Service, query: Query) -> None:
    """One XID 48 on GPU 1 GI 7 shows as 1 in Prometheus and stays 1 over later scrapes."""
    gpu_uuid = next(g["uuid"] for g in sim_fleet(exporter) if g["index"] == 1)
    reply = exporter.post("/api/sim/xid", {"gpu": 1, "gpu_instance_id": 7, "xid": 48})
    assert 200 <= reply.status < 300, reply.body[:500]

    selector = 'nvidia_gpu_xid_errors_total{gpu="1",gpu_instance_id="7",xid="48"}'
    (sample,) = wait_for(lambda: query(selector), SERIES_TIMEOUT_S, what=selector)
    assert sample.value == 1
    assert sample.labels["gpu_uuid"] == gpu_uuid

    # Two scrapes later, with no new event, the counter must not have moved.
    later = wait_for(
        lambda: query(selector),
        SERIES_TIMEOUT_S,
        until=lambda r: len(r) == 1 and r[0].timestamp >= sample.timestamp + 2,
        what=f"two more scrapes of {selector}",
    )
    assert later[0].value == 1
