"""The metric catalog: the single source of every exported metric name, type, unit and label set.

Backends refer to catalog entries (``catalog.GPU_TEMPERATURE``), never to name strings; the
exposition, the README metric table, dashboards and alerts are all generated from ``METRICS``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import pynvml  # for its constants only: NVML itself is loaded by nvmlInit, never here


class Scope(enum.Enum):
    """What a series describes; it fixes the identifying labels, never mixed in one family."""

    GPU = "physical GPU"
    GPU_INSTANCE = "GPU instance"
    COMPUTE_INSTANCE = "compute instance"
    EVENT = "driver event"
    EXPORTER = "exporter"


class Kind(enum.Enum):
    """Prometheus metric type."""

    GAUGE = "gauge"
    COUNTER = "counter"
    INFO = "info"


# Set from the kubelet's pod-resources API on Kubernetes (see ``pods``); a series shows them only
# while its instance is allocated to a container, so they are empty, hence absent, elsewhere.
POD_LABELS: tuple[str, ...] = ("namespace", "pod", "container")

SCOPE_LABELS: dict[Scope, tuple[str, ...]] = {
    Scope.GPU: ("gpu", "gpu_uuid"),
    Scope.GPU_INSTANCE: ("gpu", "gpu_uuid", "gpu_instance_id", "profile", *POD_LABELS),
    Scope.COMPUTE_INSTANCE: (
        "gpu",
        "gpu_uuid",
        "gpu_instance_id",
        "compute_instance_id",
        "profile",
        *POD_LABELS,
    ),
    # The profile and pod labels are those of the instance when the event arrived.
    Scope.EVENT: (
        "gpu",
        "gpu_uuid",
        "gpu_instance_id",
        "compute_instance_id",
        "profile",
        *POD_LABELS,
    ),
    Scope.EXPORTER: (),
}
# Labels left out of a series when empty, rather than printed as "": the same to Prometheus,
# and most series on a node outside Kubernetes would otherwise carry three empty labels. An
# event the driver did not attribute to an instance has no profile.
OPTIONAL_LABELS: frozenset[str] = frozenset((*POD_LABELS, "profile", "claim"))


@dataclass(frozen=True, eq=False)  # each family is one object: identity hashing is cheap
class Metric:
    """One metric family.

    Attributes:
        name: Prometheus name in base units; counters include ``_total``, infos ``_info``.
        kind: Prometheus type.
        scope: what one series describes; decides the identifying labels.
        help: the HELP text.
        unit: base unit, for the docs (``ratio``, ``bytes``, ``celsius``, ...).
        extra_labels: labels beyond the scope's identifying ones.
        dcgm_field: the DCGM field id this mirrors, where there is one.
        dcgm_fields: where each value of the first extra label mirrors a field of its own
            (``tx`` 1009, ``rx`` 1010), those pairs; ``dcgm_field`` is then the first.
    """

    name: str
    kind: Kind
    scope: Scope
    help: str
    unit: str = ""
    extra_labels: tuple[str, ...] = ()
    dcgm_field: int | None = None
    dcgm_fields: tuple[tuple[str, int], ...] = ()

    @property
    def labels(self) -> tuple[str, ...]:
        """All label names of the family, identifying labels first."""
        return SCOPE_LABELS[self.scope] + self.extra_labels


G, C, I = Kind.GAUGE, Kind.COUNTER, Kind.INFO  # noqa: E741  (short aliases keep the table readable)

# --- physical GPU -------------------------------------------------------------------------------
GPU_INFO = Metric(
    "nvidia_gpu_info",
    I,
    Scope.GPU,
    "Static facts about a physical GPU; value is always 1.",
    extra_labels=("name", "driver_version", "mig_mode", "pci_bus_id"),
)
GPU_UP = Metric(
    "nvidia_gpu_up",
    G,
    Scope.GPU,
    "1 when the GPU answered its last collection, 0 when it is lost, hung or failing.",
)
GPU_TEMPERATURE = Metric(
    "nvidia_gpu_temperature_celsius",
    G,
    Scope.GPU,
    "GPU die temperature.",
    "celsius",
    dcgm_field=150,
)
GPU_POWER = Metric(
    "nvidia_gpu_power_watts", G, Scope.GPU, "Power draw of the board.", "watts", dcgm_field=155
)
GPU_POWER_LIMIT = Metric(
    "nvidia_gpu_power_limit_watts",
    G,
    Scope.GPU,
    "Power limit enforced by the driver.",
    "watts",
    dcgm_field=164,
)
GPU_ENERGY = Metric(
    "nvidia_gpu_energy_joules_total",
    C,
    Scope.GPU,
    "Energy consumed since the driver was loaded. The NVML backend reads it every 10 s: one "
    "read costs the driver about 4 ms of CPU.",
    "joules",
    dcgm_field=156,
)
GPU_SM_CLOCK = Metric(
    "nvidia_gpu_sm_clock_hertz", G, Scope.GPU, "Current SM clock.", "hertz", dcgm_field=100
)
GPU_MEMORY_CLOCK = Metric(
    "nvidia_gpu_memory_clock_hertz", G, Scope.GPU, "Current memory clock.", "hertz", dcgm_field=101
)
GPU_MEMORY_USED = Metric(
    "nvidia_gpu_memory_used_bytes",
    G,
    Scope.GPU,
    "Frame buffer in use on the whole GPU (in MIG mode needs privileges).",
    "bytes",
    dcgm_field=252,
)
GPU_MEMORY_TOTAL = Metric(
    "nvidia_gpu_memory_total_bytes",
    G,
    Scope.GPU,
    "Frame buffer size of the whole GPU.",
    "bytes",
    dcgm_field=250,
)
GPU_MEMORY_FREE = Metric(
    "nvidia_gpu_memory_free_bytes",
    G,
    Scope.GPU,
    "Frame buffer neither in use nor reserved by the driver, whole GPU (in MIG mode needs "
    "privileges).",
    "bytes",
    dcgm_field=251,
)
GPU_MEMORY_RESERVED = Metric(
    "nvidia_gpu_memory_reserved_bytes",
    G,
    Scope.GPU,
    "Frame buffer the driver reserves for itself, whole GPU (in MIG mode needs privileges).",
    "bytes",
    dcgm_field=253,
)
GPU_ECC_ERRORS = Metric(
    "nvidia_gpu_ecc_errors_total",
    C,
    Scope.GPU,
    "ECC errors over the board's lifetime (aggregate counter), by error_type.",
    extra_labels=("error_type",),
    dcgm_field=312,
    dcgm_fields=(("corrected", 312), ("uncorrected", 313)),
)
GPU_REMAPPED_ROWS = Metric(
    "nvidia_gpu_remapped_rows",
    G,
    Scope.GPU,
    "Memory rows remapped, by the kind of error that caused it.",
    extra_labels=("error_type",),
    dcgm_field=393,
    dcgm_fields=(("uncorrected", 393), ("corrected", 394)),
)
GPU_ROW_REMAP_PENDING = Metric(
    "nvidia_gpu_row_remap_pending",
    G,
    Scope.GPU,
    "1 when a row remap is pending and the GPU needs a reset to apply it.",
    dcgm_field=396,
)
GPU_ROW_REMAP_FAILED = Metric(
    "nvidia_gpu_row_remap_failed",
    G,
    Scope.GPU,
    "1 when a row remap has failed (the GPU should be replaced).",
    dcgm_field=395,
)
GPU_RECOVERY_ACTION = Metric(
    "nvidia_gpu_recovery_action",
    G,
    Scope.GPU,
    "The recovery action the driver asks for now (NVML's nvmlDeviceGpuRecoveryAction_t), as a "
    "state set: 1 for the current action, 0 for every other action NVML names; an action "
    "these bindings do not name appears as its number. none means the GPU needs nothing.",
    extra_labels=("action",),
    # DCGM_FI_DEV_GET_GPU_RECOVERY_ACTION, DCGM_FI_DEV_GPU_RECOVERY_ACTION from DCGM 4.6 (its
    # dcgm_fields.py keeps the old name as a deprecated alias); go-dcgm const_fields.go: "GPU
    # Recovery Action (see nvmlDeviceGpuRecoveryAction_t for return values)".
    dcgm_field=1523,
)
GPU_MIG_SLICES_CAPACITY = Metric(
    "nvidia_gpu_mig_slices_capacity",
    G,
    Scope.GPU,
    "Compute slices the GPU offers to MIG instances (0 when MIG is disabled).",
)
GPU_MIG_SLICES_USED = Metric(
    "nvidia_gpu_mig_slices_used",
    G,
    Scope.GPU,
    "Compute slices held by GPU instances.",
)
GPU_GR_ENGINE_ACTIVE = Metric(
    "nvidia_gpu_gr_engine_active_ratio",
    G,
    Scope.GPU,
    "Fraction of time the graphics/compute engine was active, whole GPU.",
    "ratio",
    dcgm_field=1001,
)
GPU_SM_ACTIVE = Metric(
    "nvidia_gpu_sm_active_ratio",
    G,
    Scope.GPU,
    "Fraction of time at least one warp was resident per SM, averaged over SMs, whole GPU.",
    "ratio",
    dcgm_field=1002,
)
GPU_SM_OCCUPANCY = Metric(
    "nvidia_gpu_sm_occupancy_ratio",
    G,
    Scope.GPU,
    "Resident warps as a fraction of the maximum, averaged over SMs, whole GPU.",
    "ratio",
    dcgm_field=1003,
)
GPU_TENSOR_ACTIVE = Metric(
    "nvidia_gpu_tensor_active_ratio",
    G,
    Scope.GPU,
    "Fraction of cycles the tensor pipes were active, whole GPU.",
    "ratio",
    dcgm_field=1004,
)
GPU_DRAM_ACTIVE = Metric(
    "nvidia_gpu_dram_active_ratio",
    G,
    Scope.GPU,
    "Fraction of cycles the device memory interface was busy, whole GPU.",
    "ratio",
    dcgm_field=1005,
)

GPU_FP64_ACTIVE = Metric(
    "nvidia_gpu_fp64_active_ratio",
    G,
    Scope.GPU,
    "Fraction of cycles the FP64 pipes were active, whole GPU.",
    "ratio",
    dcgm_field=1006,
)
GPU_FP32_ACTIVE = Metric(
    "nvidia_gpu_fp32_active_ratio",
    G,
    Scope.GPU,
    "Fraction of cycles the FP32 pipes were active, whole GPU.",
    "ratio",
    dcgm_field=1007,
)
GPU_FP16_ACTIVE = Metric(
    "nvidia_gpu_fp16_active_ratio",
    G,
    Scope.GPU,
    "Fraction of cycles the FP16 pipes were active (tensor work excluded), whole GPU.",
    "ratio",
    dcgm_field=1008,
)
GPU_UTILIZATION = Metric(
    "nvidia_gpu_utilization_ratio",
    G,
    Scope.GPU,
    "Fraction of the driver's last sample period (1/6 s to 1 s by product) in which a kernel "
    "ran (NVML utilization.gpu, DCGM 203); coarser than the GR-engine ratio. Absent in MIG "
    "mode, where NVML does not measure it.",
    "ratio",
    dcgm_field=203,
)
GPU_MEMORY_COPY_UTILIZATION = Metric(
    "nvidia_gpu_memory_copy_utilization_ratio",
    G,
    Scope.GPU,
    "Fraction of the driver's last sample period in which device memory was read or written "
    "(NVML utilization.memory, DCGM 204). Absent in MIG mode.",
    "ratio",
    dcgm_field=204,
)
GPU_ENCODER_UTILIZATION = Metric(
    "nvidia_gpu_encoder_utilization_ratio",
    G,
    Scope.GPU,
    "Video encoder (NVENC) utilization over the driver's sampling period (100 ms on an "
    "H200); 0 on GPUs without encoders. Absent in MIG mode.",
    "ratio",
    dcgm_field=206,
)
GPU_DECODER_UTILIZATION = Metric(
    "nvidia_gpu_decoder_utilization_ratio",
    G,
    Scope.GPU,
    "Video decoder (NVDEC) utilization over the driver's sampling period. Absent in MIG mode.",
    "ratio",
    dcgm_field=207,
)
GPU_MEMORY_TEMPERATURE = Metric(
    "nvidia_gpu_memory_temperature_celsius",
    G,
    Scope.GPU,
    "Memory (HBM) temperature.",
    "celsius",
    dcgm_field=140,
)
GPU_CLOCK_EVENT = Metric(
    "nvidia_gpu_clock_event_active",
    G,
    Scope.GPU,
    "1 while the driver holds the clocks down (or idle) for this reason, else 0; one series "
    "per reason the GPU supports (DCGM 112's bits).",
    extra_labels=("reason",),
    dcgm_field=112,
)
GPU_THROTTLED = Metric(
    "nvidia_gpu_throttled_seconds_total",
    C,
    Scope.GPU,
    "Time the clocks were held below the requested ones by the power or the thermal limit, "
    "by cause, since the driver loaded (NVML violation counters; DCGM 240 and 241, in ns). "
    "The NVML backend reads the thermal one every 10 s, for its cost to the driver.",
    "seconds",
    extra_labels=("cause",),
    dcgm_field=240,
    dcgm_fields=(("power", 240), ("thermal", 241)),
)
GPU_PCIE_REPLAYS = Metric(
    "nvidia_gpu_pcie_replays_total",
    C,
    Scope.GPU,
    "PCIe packets the link had to send again (replays), since the driver loaded. The NVML "
    "backend reads it every 10 s, for its cost to the driver.",
    dcgm_field=202,
)
GPU_PCIE_THROUGHPUT = Metric(
    "nvidia_gpu_pcie_bytes_per_second",
    G,
    Scope.GPU,
    "PCIe traffic, headers included, by direction (tx leaves the GPU). NVML backend: the mean "
    "over the sample interval from GPM on Hopper and later, else the driver's own 20 ms "
    "window (nvmlDeviceGetPcieThroughput); DCGM backend: fields 1009 and 1010.",
    "bytes_per_second",
    extra_labels=("direction",),
    dcgm_field=1009,
    dcgm_fields=(("tx", 1009), ("rx", 1010)),
)
GPU_NVLINK_THROUGHPUT = Metric(
    "nvidia_gpu_nvlink_bytes_per_second",
    G,
    Scope.GPU,
    "NVLink traffic over all links, headers included, by direction, mean over the sample "
    "interval (GPM on Hopper and later; DCGM fields 1011 and 1012). Absent in MIG mode.",
    "bytes_per_second",
    extra_labels=("direction",),
    dcgm_field=1011,
    dcgm_fields=(("tx", 1011), ("rx", 1012)),
)
GPU_NVLINK_BYTES = Metric(
    "nvidia_gpu_nvlink_bytes_total",
    C,
    Scope.GPU,
    "NVLink payload over all links since the driver loaded, by direction (NVML throughput "
    "counters, the ones DCGM 449 turns into a rate). NVML backend only; absent in MIG mode.",
    "bytes",
    extra_labels=("direction",),
)
GPU_NVLINK_DATA_RATE = Metric(
    "nvidia_gpu_nvlink_data_bytes_per_second",
    G,
    Scope.GPU,
    "NVLink payload over all links, both directions together, per second between the last "
    "two reads of NVML's throughput counters (DCGM 449; with NVML, the growth of "
    "nvidia_gpu_nvlink_bytes_total). Payload only, unlike nvidia_gpu_nvlink_bytes_per_second. "
    "Absent in MIG mode.",
    "bytes_per_second",
    dcgm_field=449,
)

# --- GPU instance -------------------------------------------------------------------------------
GPU_INSTANCE_INFO = Metric(
    "nvidia_gpu_instance_info",
    I,
    Scope.GPU_INSTANCE,
    "A MIG GPU instance; value is always 1. mig_uuid is set when the instance holds exactly "
    "one compute instance; placement is empty without privileges; claim is the DRA "
    "ResourceClaim (namespace/name) the instance was allocated through, if any.",
    extra_labels=(
        "mig_uuid",
        "profile_id",
        "slices",
        "placement_start",
        "placement_size",
        "sms",
        "claim",
    ),
)
GI_GR_ENGINE_ACTIVE = Metric(
    "nvidia_gpu_instance_gr_engine_active_ratio",
    G,
    Scope.GPU_INSTANCE,
    "Fraction of time the instance's graphics/compute engine was active.",
    "ratio",
    dcgm_field=1001,
)
GI_SM_ACTIVE = Metric(
    "nvidia_gpu_instance_sm_active_ratio",
    G,
    Scope.GPU_INSTANCE,
    "Fraction of time at least one warp was resident, averaged over the instance's SMs.",
    "ratio",
    dcgm_field=1002,
)
GI_SM_OCCUPANCY = Metric(
    "nvidia_gpu_instance_sm_occupancy_ratio",
    G,
    Scope.GPU_INSTANCE,
    "Resident warps as a fraction of the maximum, averaged over the instance's SMs.",
    "ratio",
    dcgm_field=1003,
)
GI_TENSOR_ACTIVE = Metric(
    "nvidia_gpu_instance_tensor_active_ratio",
    G,
    Scope.GPU_INSTANCE,
    "Fraction of cycles the instance's tensor pipes were active.",
    "ratio",
    dcgm_field=1004,
)
GI_DRAM_ACTIVE = Metric(
    "nvidia_gpu_instance_dram_active_ratio",
    G,
    Scope.GPU_INSTANCE,
    "Fraction of cycles the instance's memory interface was busy.",
    "ratio",
    dcgm_field=1005,
)
GI_FP64_ACTIVE = Metric(
    "nvidia_gpu_instance_fp64_active_ratio",
    G,
    Scope.GPU_INSTANCE,
    "Fraction of cycles the instance's FP64 pipes were active.",
    "ratio",
    dcgm_field=1006,
)
GI_FP32_ACTIVE = Metric(
    "nvidia_gpu_instance_fp32_active_ratio",
    G,
    Scope.GPU_INSTANCE,
    "Fraction of cycles the instance's FP32 pipes were active.",
    "ratio",
    dcgm_field=1007,
)
GI_FP16_ACTIVE = Metric(
    "nvidia_gpu_instance_fp16_active_ratio",
    G,
    Scope.GPU_INSTANCE,
    "Fraction of cycles the instance's FP16 pipes were active (tensor work excluded).",
    "ratio",
    dcgm_field=1008,
)
GI_MEMORY_USED = Metric(
    "nvidia_gpu_instance_memory_used_bytes",
    G,
    Scope.GPU_INSTANCE,
    "Frame buffer in use inside the GPU instance.",
    "bytes",
    dcgm_field=252,
)
GI_MEMORY_TOTAL = Metric(
    "nvidia_gpu_instance_memory_total_bytes",
    G,
    Scope.GPU_INSTANCE,
    "Frame buffer size of the GPU instance.",
    "bytes",
    dcgm_field=250,
)

GI_MEMORY_FREE = Metric(
    "nvidia_gpu_instance_memory_free_bytes",
    G,
    Scope.GPU_INSTANCE,
    "Frame buffer of the GPU instance neither in use nor reserved by the driver.",
    "bytes",
    dcgm_field=251,
)
GI_MEMORY_RESERVED = Metric(
    "nvidia_gpu_instance_memory_reserved_bytes",
    G,
    Scope.GPU_INSTANCE,
    "Frame buffer of the GPU instance the driver reserves for itself.",
    "bytes",
    dcgm_field=253,
)

# --- compute instance ---------------------------------------------------------------------------
COMPUTE_INSTANCE_INFO = Metric(
    "nvidia_compute_instance_info",
    I,
    Scope.COMPUTE_INSTANCE,
    "A MIG compute instance (one MIG device); value is always 1.",
    extra_labels=("mig_uuid", "compute_profile", "slices", "sms"),
)
CI_GR_ENGINE_ACTIVE = Metric(
    "nvidia_compute_instance_gr_engine_active_ratio",
    G,
    Scope.COMPUTE_INSTANCE,
    "Fraction of time the compute instance's engine was active.",
    "ratio",
    dcgm_field=1001,
)
CI_SM_ACTIVE = Metric(
    "nvidia_compute_instance_sm_active_ratio",
    G,
    Scope.COMPUTE_INSTANCE,
    "Fraction of time at least one warp was resident, averaged over the compute instance's SMs.",
    "ratio",
    dcgm_field=1002,
)
CI_SM_OCCUPANCY = Metric(
    "nvidia_compute_instance_sm_occupancy_ratio",
    G,
    Scope.COMPUTE_INSTANCE,
    "Resident warps as a fraction of the maximum, over the compute instance's SMs.",
    "ratio",
    dcgm_field=1003,
)
CI_TENSOR_ACTIVE = Metric(
    "nvidia_compute_instance_tensor_active_ratio",
    G,
    Scope.COMPUTE_INSTANCE,
    "Fraction of cycles the compute instance's tensor pipes were active.",
    "ratio",
    dcgm_field=1004,
)

# --- events: counted one per driver event, never reset while the exporter runs ------------------
XID_ERRORS = Metric(
    "nvidia_gpu_xid_errors_total",
    C,
    Scope.EVENT,
    "XID errors reported by the driver, one per event; a series appears with its first event. "
    "Instance ids are empty when the driver did not attribute the event to a MIG instance; "
    "profile and pod labels are the instance's when it happened.",
    extra_labels=("xid",),
    dcgm_field=230,
)
XID_LAST = Metric(
    "nvidia_gpu_xid_last_seconds",
    G,
    Scope.EVENT,
    "Unix time of the latest XID event of the series; changes only when an event arrives, "
    "so alerts compare it with the time instead of reading the counter's history.",
    "seconds",
    extra_labels=("xid",),
)
ECC_EVENTS = Metric(
    "nvidia_gpu_ecc_error_events_total",
    C,
    Scope.EVENT,
    "ECC error events from the driver: single-bit (corrected) or double-bit (uncorrected).",
    extra_labels=("error_type",),
)
UNAVAILABLE_EVENTS = Metric(
    "nvidia_gpu_unavailable_events_total",
    C,
    Scope.EVENT,
    "GPU-unavailable events from the driver (the GPU became inaccessible).",
)
RECOVERY_ACTION_EVENTS = Metric(
    "nvidia_gpu_recovery_action_events_total",
    C,
    Scope.EVENT,
    "Recovery-action events from the driver, by the action it asked for (gpu_reset, "
    "node_reboot, drain_and_reset, ...; unknown when the GPU could not be asked).",
    extra_labels=("action",),
)

# --- the exporter itself ------------------------------------------------------------------------
BUILD_INFO = Metric(
    "migexporter_build_info",
    I,
    Scope.EXPORTER,
    "migexporter build; value is always 1.",
    extra_labels=("version", "python_version", "nvml_bindings_version"),
)
BACKEND_UP = Metric(
    "migexporter_backend_up",
    G,
    Scope.EXPORTER,
    "1 when the measurement backend is initialised and enumerating GPUs.",
    extra_labels=("backend",),
)
COLLECT_DURATION = Metric(
    "migexporter_collect_duration_seconds",
    G,
    Scope.EXPORTER,
    "Wall time of the latest collection cycle.",
    "seconds",
    extra_labels=("backend",),
)
COLLECT_ERRORS = Metric(
    "migexporter_collect_errors_total",
    C,
    Scope.EXPORTER,
    "Unexpected driver errors while collecting; gpu_uuid is empty for backend-wide errors.",
    extra_labels=("backend", "gpu_uuid"),
)
FIELD_SUPPORTED = Metric(
    "migexporter_field_supported",
    G,
    Scope.EXPORTER,
    "1 when the backend watches this DCGM profiling field on the GPU; 0 when the GPU cannot "
    "(not supported, or not watchable together with the others), and its series are absent.",
    extra_labels=("gpu_uuid", "field"),
)
XID_INFO = Metric(
    "migexporter_xid_info",
    I,
    Scope.EXPORTER,
    "The XID catalog: NVIDIA's mnemonic, description and immediate action, and our severity "
    "(page, ticket, info), for joining on the xid label; value is always 1.",
    extra_labels=("xid", "mnemonic", "description", "action", "severity"),
)
POD_RESOURCES_UP = Metric(
    "migexporter_pod_resources_up",
    G,
    Scope.EXPORTER,
    "1 when the kubelet's pod-resources API answered the latest refresh, 0 when it did not "
    "(pod labels go once its last answer is older than --pod-max-age); absent when pod "
    "attribution is off.",
)
LAST_COLLECT = Metric(
    "migexporter_last_collect_timestamp_seconds",
    G,
    Scope.EXPORTER,
    "Unix time at which the latest collection cycle finished.",
    "seconds",
    extra_labels=("backend",),
)

METRICS: tuple[Metric, ...] = tuple(v for v in globals().values() if isinstance(v, Metric))


# The family (and its extra label values) mirroring each DCGM field, per scope: what a backend
# reading a DCGM field, or NVML's equivalent of one, stores it as.
def _mirrored(metric: Metric) -> list[tuple[tuple[str, ...], int]]:
    """(extra label values, DCGM field) of each field ``metric`` mirrors."""
    if metric.dcgm_fields:
        return [((value,), number) for value, number in metric.dcgm_fields]
    return [((), metric.dcgm_field)] if metric.dcgm_field else []


DCGM_FIELDS: dict[Scope, dict[int, tuple[Metric, tuple[str, ...]]]] = {
    scope: {field: (m, extra) for m in METRICS if m.scope is scope for extra, field in _mirrored(m)}
    for scope in Scope
}
# DCGM's profiling fields (DCGM_FI_PROF_*) the exporter reads: activity ratios 1001-1008, then
# PCIe and NVLink rates 1009-1012; migexporter_field_supported reports these per GPU.
PROFILING_FIELDS: tuple[int, ...] = tuple(range(1001, 1013))
# Profiling ratios in DCGM field order, per scope: backends fill these from GPM or DCGM.
PROFILING: dict[Scope, dict[int, Metric]] = {
    scope: {
        m.dcgm_field: m
        for m in METRICS
        if m.scope is scope and m.unit == "ratio" and m.dcgm_field in PROFILING_FIELDS
    }
    for scope in (Scope.GPU, Scope.GPU_INSTANCE, Scope.COMPUTE_INSTANCE)
}
# NVLink's rates: NVLink is not supported in MIG mode (DCGM 2.0.15 release notes), so both
# backends leave them out there.
NVLINK_FIELDS: tuple[int, ...] = (1011, 1012)
# The activity fields every scope shows first (dashboards' "activity" views).
ACTIVITY_FIELDS: tuple[int, ...] = (1001, 1002, 1003, 1004, 1005)
# Bits of NVML's clock-event mask (nvmlClocksEventReason*, DCGM_CLOCKS_EVENT_REASON_*) and the
# reason label each gets; NVML's names in snake case.
CLOCK_EVENT_REASONS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}

# NVML's recovery actions (nvmlDeviceGpuRecoveryAction_t) by value, named as the installed
# bindings name them, lower case (NVML_GPU_RECOVERY_ACTION_GPU_RESET is "gpu_reset"): the
# action label of GPU_RECOVERY_ACTION and RECOVERY_ACTION_EVENTS. NVIDIA's meaning of each:
# docs.nvidia.com/deploy/a100-gpu-mem-error-mgmt/error-recovery-and-response-flags.html.
_RECOVERY_PREFIX = "NVML_GPU_RECOVERY_ACTION_"
RECOVERY_ACTIONS: dict[int, str] = dict(
    sorted(
        (value, name.removeprefix(_RECOVERY_PREFIX).lower())
        for name, value in vars(pynvml).items()
        if name.startswith(_RECOVERY_PREFIX) and type(value) is int
    )
)

# The actions that take the GPU out of service until done (a reset or a reboot): they page, the
# others (drain_p2p, recover_imex_domain, unnamed codes) open a ticket.
RECOVERY_ACTIONS_THAT_PAGE = ("gpu_reset", "node_reboot", "drain_and_reset", "bus_reset",
                              "system_reboot")  # fmt: skip


def recovery_action_name(code: int) -> str:
    """The action label of NVML recovery action ``code``: its name, or its number if unnamed."""
    return RECOVERY_ACTIONS.get(code, str(code))


def recovery_action_states(code: int) -> dict[str, bool]:
    """GPU_RECOVERY_ACTION's state set for ``code``: every named action, true for the current."""
    states = {name: value == code for value, name in RECOVERY_ACTIONS.items()}
    states[recovery_action_name(code)] = True
    return states


def markdown_table() -> str:
    """The README's metric reference, generated so it cannot drift from the code."""
    rows = [
        "| metric | type | unit | labels | DCGM field | help |",
        "|---|---|---|---|---|---|",
    ]
    for m in METRICS:
        labels = ", ".join(f"`{label}`" for label in m.labels)
        field = str(m.dcgm_field) if m.dcgm_field else ""
        if m.dcgm_fields:
            field = ", ".join(f"{number} ({value})" for value, number in m.dcgm_fields)
        rows.append(f"| `{m.name}` | {m.kind.value} | {m.unit} | {labels} | {field} | {m.help} |")
    return "\n".join(rows) + "\n"


def update_readme(path: str) -> bool:
    """Rewrite the metric and XID tables between the README's markers; True when changed."""
    from pathlib import Path  # noqa: PLC0415  (only the docs build needs it)

    from migexporter import xids  # noqa: PLC0415

    readme = Path(path)
    text = updated = readme.read_text(encoding="utf-8")
    for name, table in (("metrics", markdown_table()), ("xids", xids.markdown_table())):
        start, end = f"<!-- {name}:start -->\n", f"<!-- {name}:end -->"
        head, rest = updated.split(start, 1)
        _, tail = rest.split(end, 1)
        updated = head + start + table + end + tail
    readme.write_text(updated, encoding="utf-8")
    return updated != text


if __name__ == "__main__":
    import sys

    update_readme(sys.argv[1] if len(sys.argv) > 1 else "README.md")
