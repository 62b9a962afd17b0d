"""Exposition: snapshot literals in, Prometheus text out; nothing stale, nothing double-scoped."""

from __future__ import annotations

import gzip
import shutil
import subprocess

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.parser import text_string_to_metric_families

from migexporter import catalog, xids
from migexporter.backends.base import GpuSample, Readings
from migexporter.exposition import BuildInfo, EventCount, EventKey, Snapshot, render
from migexporter.topology import ComputeInstance, Gpu, GpuInstance, Placement, Topology

GI = GpuInstance(
    id=2,
    profile="3g.40gb",
    slices=3,
    memory_bytes=40448 << 20,
    sms=60,
    profile_id=9,
    placement=Placement(4, 4),
    compute_instances=(ComputeInstance(0, "MIG-aaaa", "3g.40gb", 3, 60),),
)
MIG_GPU = Gpu(0, "GPU-0000", "NVIDIA H100 80GB HBM3", "0000:01:00.0", True, 7, (GI,))
FULL_GPU = Gpu(1, "GPU-1111", "NVIDIA H100 80GB HBM3", "0000:02:00.0", False, 0, ())


def _sample() -> GpuSample:
    gpu = Readings()
    gpu.set(catalog.GPU_TEMPERATURE, 41)
    gpu.set(catalog.GPU_ECC_ERRORS, 3, "corrected")
    gi = Readings()
    gi.set(catalog.GI_SM_ACTIVE, 0.25)
    gi.set(catalog.GI_MEMORY_USED, 1 << 30)
    return GpuSample(gpu=gpu, gpu_instances={2: gi})


def _snapshot(**changes: object) -> Snapshot:
    values: dict[str, object] = {
        "build": BuildInfo("1.2.3", "13.615.71", "3.11.7"),
        "backend": "nvml",
        "backend_up": True,
        "topology": Topology((MIG_GPU, FULL_GPU), "580.159.04"),
        "driver_version": "580.159.04",
        "samples": {"GPU-0000": _sample(), "GPU-1111": GpuSample()},
        "events": {
            EventKey(catalog.XID_ERRORS, "GPU-0000", 2, None, "48"): EventCount("0", 2, 1.7e9),
        },
    }
    values.update(changes)
    return Snapshot(**values)  # type: ignore[arg-type]


def _series(snapshot: Snapshot) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = render(snapshot).text.decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def test_instance_series_carry_instance_labels():
    """GPU-instance values are labelled with gpu, gpu_uuid, gpu_instance_id and profile."""
    series = _series(_snapshot())
    labels, value = series["nvidia_gpu_instance_sm_active_ratio"][0]
    assert labels == {
        "gpu": "0",
        "gpu_uuid": "GPU-0000",
        "gpu_instance_id": "2",
        "profile": "3g.40gb",
    }
    assert value == 0.25
    info = series["nvidia_gpu_instance_info"][0][0]
    assert info["mig_uuid"] == "MIG-aaaa"
    assert info["placement_start"] == "4"


def test_gpu_values_appear_once_per_gpu_not_per_instance():
    """Device readings stay on the physical GPU; instances never repeat them."""
    series = _series(_snapshot())
    assert len(series["nvidia_gpu_temperature_celsius"]) == 1
    assert series["nvidia_gpu_ecc_errors_total"][0][0]["error_type"] == "corrected"
    assert not any(name.startswith("nvidia_gpu_instance_temperature") for name in series)


def test_unmeasured_values_are_absent_not_zero():
    """A metric missing from the sample has no series at all."""
    series = _series(_snapshot())
    assert "nvidia_gpu_instance_tensor_active_ratio" not in series
    assert "nvidia_gpu_power_watts" not in series


def test_gpu_that_cannot_be_read_keeps_only_info_and_up():
    """A lost GPU reports up 0 and loses every other series, including its instances."""
    series = _series(_snapshot(samples={"GPU-1111": GpuSample()}))
    up = {labels["gpu_uuid"]: value for labels, value in series["nvidia_gpu_up"]}
    assert up == {"GPU-0000": 0.0, "GPU-1111": 1.0}
    assert "nvidia_gpu_instance_info" not in series
    assert len(series["nvidia_gpu_info"]) == 2


def test_backend_down_keeps_only_exporter_and_event_series():
    """With the backend down nothing about GPUs is served, but XID counters stay."""
    series = _series(_snapshot(backend_up=False))
    assert series["migexporter_backend_up"][0][1] == 0.0
    assert "nvidia_gpu_info" not in series
    assert series["nvidia_gpu_xid_errors_total"][0][1] == 2.0


def test_xid_labels_are_empty_when_unattributed():
    """Instance ids of an unattributed or partly attributed XID are empty strings."""
    series = _series(_snapshot())
    labels, value = series["nvidia_gpu_xid_errors_total"][0]
    assert labels == {
        "gpu": "0",
        "gpu_uuid": "GPU-0000",
        "gpu_instance_id": "2",
        "compute_instance_id": "",
        "xid": "48",
    }
    assert value == 2.0


def test_event_families_carry_their_own_label_and_xids_their_last_time():
    """ECC events by error type, recovery events by action; XIDs also their latest time."""
    events = {
        EventKey(catalog.ECC_EVENTS, "GPU-1111", None, None, "uncorrected"): EventCount(
            "1", 3, 1.7e9
        ),
        EventKey(catalog.UNAVAILABLE_EVENTS, "GPU-1111", None, None): EventCount("1", 1, 1.7e9),
        EventKey(catalog.RECOVERY_ACTION_EVENTS, "GPU-1111", None, None, "gpu_reset"): EventCount(
            "1", 1, 1.7e9
        ),
        EventKey(catalog.XID_ERRORS, "GPU-1111", None, None, "79"): EventCount("1", 1, 1.6e9),
    }
    series = _series(_snapshot(events=events))
    where = {"gpu": "1", "gpu_uuid": "GPU-1111", "gpu_instance_id": "", "compute_instance_id": ""}
    assert series["nvidia_gpu_ecc_error_events_total"] == [
        ({**where, "error_type": "uncorrected"}, 3.0)
    ]
    assert series["nvidia_gpu_unavailable_events_total"] == [(where, 1.0)]
    assert series["nvidia_gpu_recovery_action_events_total"] == [
        ({**where, "action": "gpu_reset"}, 1.0)
    ]
    assert series["nvidia_gpu_xid_errors_total"] == [({**where, "xid": "79"}, 1.0)]
    assert series["nvidia_gpu_xid_last_seconds"] == [({**where, "xid": "79"}, 1.6e9)]


def test_an_attributed_event_carries_the_profile_it_was_counted_with():
    """The profile of an event series is the one its instance had when the event came."""
    key = EventKey(catalog.XID_ERRORS, "GPU-0000", 5, 0, "43", profile="3g.40gb")
    series = _series(_snapshot(events={key: EventCount("0", 1, 1.7e9)}))
    ((labels, _),) = series["nvidia_gpu_xid_errors_total"]
    assert labels["profile"] == "3g.40gb"
    assert labels["gpu_instance_id"] == "5"


def test_xid_info_has_one_series_per_catalog_row():
    """migexporter_xid_info joins the catalog onto XID series by the xid label."""
    rows = {labels["xid"]: labels for labels, _ in _series(_snapshot())["migexporter_xid_info"]}
    assert set(rows) == {str(code) for code in xids.CATALOG}
    assert rows["48"]["mnemonic"] == "ROBUST_CHANNEL_GPU_ECC_DBE"
    assert rows["48"]["severity"] == "page"
    assert rows["31"]["action"] == "RESTART_APP"


def test_mig_slices_only_for_mig_gpus():
    """Slice capacity is reported for MIG GPUs only."""
    series = _series(_snapshot())
    assert [labels["gpu"] for labels, _ in series["nvidia_gpu_mig_slices_capacity"]] == ["0"]
    assert series["nvidia_gpu_mig_slices_used"][0][1] == 3.0


def test_bodies_agree_across_formats_and_encodings():
    """OpenMetrics ends with EOF; the gzip bodies decompress to the plain ones and are
    compressed once per snapshot, not once per request."""
    exposition = render(_snapshot())
    assert exposition.openmetrics.endswith(b"# EOF\n")
    for om in (False, True):
        plain = exposition.body(openmetrics=om, gzipped=False)
        gzipped = exposition.body(openmetrics=om, gzipped=True)
        assert gzip.decompress(gzipped) == plain
        assert exposition.body(openmetrics=om, gzipped=True) is gzipped
    assert exposition.body(openmetrics=True, gzipped=False) is exposition.openmetrics


ODD_GPU = Gpu(2, "GPU-2222", 'NVIDIA "odd" \\ name\nline two', "0000:03:00.0", False, 0, ())


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"backend_up": False},
        {
            "topology": Topology((MIG_GPU, FULL_GPU, ODD_GPU), 'driver "5\\8"'),
            "samples": {"GPU-0000": _sample(), "GPU-2222": GpuSample()},
        },
    ],
    ids=["fleet", "backend-down", "escaping"],
)
def test_render_is_byte_for_byte_what_prometheus_client_writes(changes):
    """The fast renderer and prometheus-client's generate_latest agree on every byte."""
    snapshot = _snapshot(**changes)
    exposition = render(snapshot)
    assert exposition.text == generate_latest(snapshot)
    assert exposition.openmetrics == openmetrics.generate_latest(snapshot)


def test_render_gzips_only_the_formats_asked_for():
    snapshot = _snapshot()
    assert render(snapshot).gzipped_formats() == frozenset()
    exposition = render(snapshot, [True])
    assert exposition.gzipped_formats() == {True}
    assert (
        gzip.decompress(exposition.body(openmetrics=True, gzipped=True)) == exposition.openmetrics
    )


def test_values_changing_between_renders_are_printed_anew():
    """Lines kept from the last render are reused only for an identical value: a change, a
    signed zero and NaN are each printed as prometheus-client prints them."""
    for value in (0.25, 0.25, 0.5, 0.0, -0.0, 0.0, float("nan"), float("nan"), float("inf"), 1e21):
        gi = Readings()
        gi.set(catalog.GI_SM_ACTIVE, value)
        snapshot = _snapshot(samples={"GPU-0000": GpuSample(gpu_instances={2: gi})})
        assert render(snapshot).text == generate_latest(snapshot), value


@pytest.mark.skipif(shutil.which("promtool") is None, reason="needs Debian's prometheus package")
def test_promtool_accepts_the_exposition():
    """promtool check metrics finds no lint problems in the text format."""
    text = render(_snapshot()).text
    done = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, check=False
    )
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
