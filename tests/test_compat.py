"""The dcgm-exporter compat views: its exposition for a fixed fleet, and conversions of our own.

``tests/data/dcgm-exporter-golden.txt`` is written by hand from dcgm-exporter's renderer
(``gpuMetricsFormat`` in internal/pkg/rendermetrics/render_metrics.go and ``toMetric``/``toString``
in internal/pkg/collector/gpu_collector.go, NVIDIA/dcgm-exporter at d5e5f51): label order, the
MIG shape (one entity per GPU instance, GPU-level fields repeated on each), ``%d``/``%f`` values,
families in field-id order, blank fields absent.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from migexporter import catalog, compat
from migexporter.backends.base import GpuSample, Readings
from migexporter.config import ConfigError, parse_config
from migexporter.exposition import BuildInfo, EventCount, EventKey, Snapshot, render
from migexporter.pods import Owner, PodMap
from migexporter.topology import ComputeInstance, Gpu, GpuInstance, Topology

GOLDEN = Path(__file__).parent / "data" / "dcgm-exporter-golden.txt"
MIB = 2**20
OWNER = ("tenant", "serve-0", "server")
V48, V49, V410 = "dcgm-exporter", "dcgm-exporter-4.9", "dcgm-exporter-4.10"


def _readings(
    *values: tuple[catalog.Metric, float] | tuple[catalog.Metric, float, str],
) -> Readings:
    readings = Readings()
    for metric, value, *extra in values:
        readings.set(metric, value, *extra)
    return readings


def fixed_snapshot(views: compat.Views | None = None) -> Snapshot:
    """An H100 with two GPU instances (the second held by a pod) and a whole A100."""
    gi1 = GpuInstance(
        1,
        "3g.40gb",
        3,
        40 * 1024 * MIB,
        60,
        compute_instances=(ComputeInstance(0, "MIG-1111", "3g.40gb", 3, 60),),
    )
    gi2 = GpuInstance(
        2,
        "1g.10gb",
        1,
        10 * 1024 * MIB,
        16,
        compute_instances=(ComputeInstance(0, "MIG-2222", "1g.10gb", 1, 16),),
    )
    h100 = Gpu(0, "GPU-0000aaaa", "NVIDIA H100 80GB HBM3", "00000000:18:00.0", True, 7, (gi1, gi2))
    a100 = Gpu(1, "GPU-0000bbbb", "NVIDIA A100-SXM4-40GB", "00000000:3B:00.0")
    c = catalog
    h100_sample = GpuSample(
        gpu=_readings(
            (c.GPU_SM_CLOCK, 1980e6),
            (c.GPU_MEMORY_CLOCK, 2619e6),
            (c.GPU_MEMORY_TEMPERATURE, 50),
            (c.GPU_TEMPERATURE, 45),
            (c.GPU_POWER, 312.5),
            (c.GPU_ENERGY, 1234.567),
            (c.GPU_PCIE_REPLAYS, 3),
            (c.GPU_MEMORY_USED, 3000 * MIB),
            (c.GPU_GR_ENGINE_ACTIVE, 0.5),
            (c.GPU_REMAPPED_ROWS, 0, "uncorrected"),
            (c.GPU_REMAPPED_ROWS, 2, "corrected"),
            (c.GPU_ROW_REMAP_FAILED, 0),
            (c.GPU_PCIE_THROUGHPUT, 1000, "tx"),
            (c.GPU_PCIE_THROUGHPUT, 2000, "rx"),
        ),
        gpu_instances={
            1: _readings(
                (c.GI_MEMORY_FREE, 39000 * MIB),
                (c.GI_MEMORY_USED, 1024 * MIB),
                (c.GI_MEMORY_RESERVED, 0),
                (c.GI_GR_ENGINE_ACTIVE, 0.25),
                (c.GI_TENSOR_ACTIVE, 0.125),
                (c.GI_DRAM_ACTIVE, 0.0625),
            ),
            2: _readings((c.GI_MEMORY_USED, 512 * MIB + 100), (c.GI_GR_ENGINE_ACTIVE, 1 / 3)),
        },
    )
    a100_sample = GpuSample(
        gpu=_readings(
            (c.GPU_SM_CLOCK, 1410e6), (c.GPU_MEMORY_CLOCK, 1215e6), (c.GPU_TEMPERATURE, 33),
            (c.GPU_POWER, 60.25), (c.GPU_ENERGY, 10), (c.GPU_UTILIZATION, 0.37),
            (c.GPU_MEMORY_COPY_UTILIZATION, 0.05), (c.GPU_ENCODER_UTILIZATION, 0),
            (c.GPU_DECODER_UTILIZATION, 0.01), (c.GPU_MEMORY_FREE, 38000 * MIB),
            (c.GPU_MEMORY_USED, 2048 * MIB), (c.GPU_MEMORY_RESERVED, 456 * MIB),
            (c.GPU_GR_ENGINE_ACTIVE, 0.7), (c.GPU_DRAM_ACTIVE, 0.1),
            (c.GPU_NVLINK_DATA_RATE, 5e9),
        )
    )  # fmt: skip
    xid = catalog.XID_ERRORS
    events = {
        EventKey(xid, h100.uuid, 2, 0, "31", "1g.10gb", OWNER): EventCount("0", 2, 100.0),
        EventKey(xid, h100.uuid, 2, 0, "13", "1g.10gb", OWNER): EventCount("0", 1, 50.0),
        EventKey(xid, h100.uuid, 1, None, "43", "3g.40gb"): EventCount("0", 1, 60.0),
        EventKey(xid, a100.uuid, None, None, "79"): EventCount("1", 1, 70.0),
    }
    return Snapshot(
        build=BuildInfo("0.0.0"),
        backend="nvml",
        backend_up=True,
        topology=Topology((h100, a100), "580.159.04"),
        driver_version="580.159.04",
        samples={h100.uuid: h100_sample, a100.uuid: a100_sample},
        events=events,
        pods=PodMap({"MIG-2222": frozenset({Owner(*OWNER)})}),
        compat_views=views or compat.Views((compat.PROFILES["dcgm-exporter"],), "node-a"),
    )


def _text(snapshot: Snapshot, *, openmetrics: bool = False) -> str:
    families = compat.render(snapshot, snapshot.compat_views)
    return "".join(f.text(openmetrics=openmetrics) for f in families)


def test_compat_output_is_what_dcgm_exporter_prints_for_the_fleet() -> None:
    assert _text(fixed_snapshot()) == GOLDEN.read_text()


def test_the_exposition_serves_native_then_compat_families_and_both_parse() -> None:
    exposition = render(fixed_snapshot())
    text = exposition.text.decode()
    assert text.index("nvidia_gpu_temperature_celsius") < text.index("DCGM_FI_DEV_GPU_TEMP")
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"DCGM_FI_DEV_GPU_TEMP", "DCGM_EXP_XID_ERRORS_TOTAL", "nvidia_gpu_up"} <= names
    om = exposition.openmetrics.decode()
    assert om.endswith("# EOF\n")
    # Counters keep dcgm-exporter's names in OpenMetrics: declared unknown, not renamed.
    assert "# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION unknown\n" in om
    assert "# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter\n" in text


def test_without_compat_the_exposition_has_no_dcgm_names() -> None:
    text = render(fixed_snapshot(compat.Views())).text.decode()
    assert "DCGM_" not in text
    assert "nvidia_gpu_temperature_celsius" in text


def _values(text: str, name: str) -> dict[tuple[str, str], float]:
    """Values of one family by (gpu, GPU_I_ID), read off its lines."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            key = labels["gpu"], labels.get("GPU_I_ID", labels.get("gpu_instance_id", ""))
            out[key] = float(line.rsplit(" ", 1)[1])
    return out


def test_values_are_conversions_of_the_native_samples() -> None:
    snapshot = fixed_snapshot(compat.Views(tuple(compat.PROFILES.values()), "node-a"))
    text = _text(snapshot)
    assert _values(text, "DCGM_FI_DEV_FB_USED")[("0", "1")] * MIB == 1024 * MIB
    # DCGM divides NVML's bytes into whole MiB, rounding down.
    assert _values(text, "DCGM_FI_DEV_FB_USED")[("0", "2")] == 512
    assert _values(text, "DCGM_FI_DEV_SM_CLOCK_HERTZ")[("1", "")] == 1410e6
    assert _values(text, "DCGM_FI_DEV_GPU_ENERGY_JOULES_TOTAL")[("0", "1")] == 1234.567
    assert _values(text, "DCGM_FI_DEV_GPU_UTIL_RATIO")[("1", "")] == 0.37
    assert _values(text, "DCGM_FI_PROF_GR_ENGINE_UTIL_RATIO")[("0", "1")] == 0.25
    assert _values(text, "DCGM_FI_PROF_PCIE_TX_BYTES_PER_SECOND")[("0", "2")] == 1000
    # 449 as DCGM stores it: KiB/s divided by 1000, truncated (5e9 B/s is 4882.8).
    assert _values(text, "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL")[("1", "")] == 4882
    assert _values(text, "DCGM_FI_DEV_NVLINK_THROUGHPUT_TOTAL")[("1", "")] == 4882
    # Names both profiles have are served once, with the first profile's labels.
    assert text.count("# TYPE DCGM_FI_DEV_ENC_UTIL ") == 1
    assert text.count("# TYPE DCGM_EXP_XID_ERRORS_TOTAL ") == 1
    assert 'DCGM_FI_SYSTEM_DRIVER_VERSION="580.159.04"' in text


def test_the_4_9_profile_leaves_out_what_no_source_names() -> None:
    names = {f.name for f in compat.PROFILES["dcgm-exporter-4.9"].fields}
    assert not {n for n in names if "FB_" in n}
    assert "DCGM_FI_PROF_PCIE_TX_BYTES" in names
    assert "DCGM_FI_PROF_PCIE_TX_BYTES_PER_SECOND" in {
        f.name for f in compat.PROFILES["dcgm-exporter-4.10"].fields
    }


def test_an_xid_moves_the_compat_series_in_the_same_render() -> None:
    snapshot = fixed_snapshot()
    key = EventKey(catalog.XID_ERRORS, "GPU-0000aaaa", 1, None, "48", "3g.40gb")
    events = {**snapshot.events, key: EventCount("0", 1, 200.0)}
    text = render(Snapshot(**{**snapshot.__dict__, "events": events})).text.decode()
    assert _values(text, "DCGM_FI_DEV_XID_ERRORS")[("0", "1")] == 48
    assert 'DCGM_EXP_XID_ERRORS_TOTAL{gpu="0"' in text
    totals = [line for line in text.splitlines() if 'xid="48"' in line]
    assert [line.rsplit(" ", 1)[1] for line in totals if line.startswith("DCGM_EXP")] == ["1"]
    native = [line for line in totals if line.startswith("nvidia_gpu_xid_errors_total")]
    assert [float(line.rsplit(" ", 1)[1]) for line in native] == [1.0]


def test_the_xid_gauge_shows_what_dcgm_keeps_on_each_entity() -> None:
    """An XID of a compute instance moves no gauge (DCGM keeps it on the compute instance);
    one of a GPU instance moves that instance's; nothing is shown before the first XID."""
    gauge = _values(_text(fixed_snapshot()), "DCGM_FI_DEV_XID_ERRORS")
    assert gauge == {("0", "1"): 43, ("1", ""): 79}


def test_a_gpu_without_a_sample_has_no_compat_series() -> None:
    snapshot = fixed_snapshot()
    samples = {k: v for k, v in snapshot.samples.items() if k != "GPU-0000bbbb"}
    text = _text(Snapshot(**{**snapshot.__dict__, "samples": samples}))
    assert ("1", "") not in _values(text, "DCGM_FI_DEV_GPU_TEMP")
    # Its XID counter is not stale data: a count never goes away while the process lives.
    assert _values(text, "DCGM_EXP_XID_ERRORS_TOTAL")[("1", "")] == 1


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        (["--compat", "dcgm-exporter"], {}, ("dcgm-exporter",)),
        (["--compat", "dcgm-exporter", "--compat", "DCGM-exporter-4.9"], {}, (V48, V49)),
        ([], {"MIGEXPORTER_COMPAT": "dcgm-exporter-4.10, dcgm-exporter"}, (V410, V48)),
        (["--compat", "off"], {"MIGEXPORTER_COMPAT": "dcgm-exporter"}, ()),
        ([], {}, ()),
    ],
)  # fmt: skip
def test_compat_is_a_flag_an_environment_variable_or_both(
    argv: list[str], environ: dict[str, str], expected: tuple[str, ...]
) -> None:
    assert parse_config(argv, environ).compat == expected


def test_compat_in_the_config_file_is_a_list_or_a_comma_list(tmp_path: Path) -> None:
    listed = tmp_path / "list.yaml"
    listed.write_text("compat: [dcgm-exporter, dcgm-exporter-4.9]\n")
    assert parse_config(["--config", str(listed)], {}).compat == (
        "dcgm-exporter",
        "dcgm-exporter-4.9",
    )
    comma = tmp_path / "comma.yaml"
    comma.write_text("compat: dcgm-exporter\n")
    assert parse_config(["--config", str(comma)], {}).compat == ("dcgm-exporter",)


def test_an_unknown_profile_is_one_line_naming_the_known_ones() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(["--compat", "dcgm-exporter,nvidia-smi"], {})
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("--compat: 'nvidia-smi' is not one of dcgm-exporter,")
