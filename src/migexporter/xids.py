"""The XID catalog: what each XID means, what NVIDIA says to do, and how loudly we alert.

One table, the single source for `/api/events`, the XID info series, the README
table, the dashboards and the alert rules. Codes, mnemonics, descriptions and immediate actions
are NVIDIA's Xid catalog for Ampere and newer (``SOURCE``); the severity is ours:

- ``page``: someone must act on the GPU now (reset, reboot, drain). XID 43 pages although NVIDIA's
  bucket is IGNORE: on a MIG GPU shared by tenants, a GPU that stopped processing is how a
  wedged instance first shows, and the project's operators asked to be paged for it.
- ``ticket``: the hardware is degrading, or the XID should never appear on these GPUs.
- ``info``: an application fault; the workload's owner acts, not the GPU's.

An XID missing from the table is still counted; it is described with action ``unknown`` and
severity ``ticket`` so that someone looks it up.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

SOURCE = "https://docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html"
UNKNOWN_ACTION = "unknown"


class Severity(enum.Enum):
    """How the alert rules route an XID."""

    PAGE = "page"
    TICKET = "ticket"
    INFO = "info"


@dataclass(frozen=True)
class Xid:
    """One XID code.

    Attributes:
        code: the number the driver reports.
        mnemonic: NVIDIA's name for it.
        description: NVIDIA's short description.
        action: NVIDIA's immediate action (resolution bucket), e.g. RESTART_APP, RESET_GPU.
        severity: ours: page, ticket or info.
        source: where the row was read.
    """

    code: int
    mnemonic: str
    description: str
    action: str
    severity: Severity
    source: str = SOURCE


P, T, I = Severity.PAGE, Severity.TICKET, Severity.INFO  # noqa: E741  (keeps the table readable)

_ROWS = (
    Xid(8, "ROBUST_CHANNEL_FIFO_ERROR_IDLE_TIMEOUT", "GPU stopped processing", "RESTART_APP", I),
    Xid(13, "ROBUST_CHANNEL_GR_EXCEPTION", "Graphics Engine Exception", "RESTART_APP", I),
    Xid(31, "ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT", "GPU memory page fault", "RESTART_APP", I),
    Xid(
        32,
        "ROBUST_CHANNEL_PBDMA_ERROR",
        "Invalid or corrupted push buffer stream",
        "RESTART_APP",
        I,
    ),
    Xid(38, "ROBUST_CHANNEL_FECS_ERR_WATCHDOG_TIMEOUT", "Driver firmware error", "IGNORE", T),
    Xid(43, "ROBUST_CHANNEL_RESETCHANNEL_VERIF_ERROR", "GPU stopped processing", "IGNORE", P),
    Xid(
        45,
        "ROBUST_CHANNEL_PREEMPTIVE_REMOVAL",
        "Preemptive cleanup, due to previous errors",
        "WORKFLOW_XID_45",
        I,
    ),
    Xid(48, "ROBUST_CHANNEL_GPU_ECC_DBE", "Double Bit ECC Error", "WORKFLOW_XID_48", P),
    Xid(
        61, "PMU_BREAKPOINT", "Internal micro-controller breakpoint (unused)", "CONTACT_SUPPORT", T
    ),
    Xid(62, "PMU_HALT_ERROR", "Internal micro-controller halt", "RESET_GPU", P),
    Xid(63, "INFOROM_DRAM_RETIREMENT_EVENT", "GPU memory remapping event", "IGNORE", T),
    Xid(64, "INFOROM_DRAM_RETIREMENT_FAILURE", "GPU memory remapping failure", "RESET_GPU", P),
    Xid(68, "ROBUST_CHANNEL_NVDEC0_ERROR", "NVDEC0 Exception", "RESTART_APP", I),
    Xid(69, "ROBUST_CHANNEL_GR_CLASS_ERROR", "Graphics Engine class error", "RESTART_APP", I),
    Xid(74, "NVLINK_ERROR", "NVLINK Error", "WORKFLOW_NVLINK_ERR", P),
    Xid(
        79,
        "ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS",
        "GPU has fallen off the bus",
        "RESTART_BM",
        P,
    ),
    Xid(92, "EXCESSIVE_SBE_INTERRUPTS", "High single-bit ECC error rate", "IGNORE", T),
    Xid(94, "ROBUST_CHANNEL_CONTAINED_ERROR", "Contained memory error", "RESTART_APP", T),
    Xid(95, "ROBUST_CHANNEL_UNCONTAINED_ERROR", "Uncontained memory error", "RESET_GPU", P),
    Xid(109, "ROBUST_CHANNEL_CTXSW_TIMEOUT_ERROR", "Context Switch Timeout Error", "RESET_GPU", P),
    Xid(119, "GSP_RPC_TIMEOUT", "GSP RPC Timeout", "RESET_GPU", P),
    Xid(120, "GSP_ERROR", "GSP Error", "RESET_GPU", P),
    Xid(140, "UNRECOVERABLE_ECC_ERROR_ESCAPE", "ECC Unrecovered Error", "RESET_GPU", P),
    Xid(143, "GPU_INIT_ERROR", "GPU Initialization Error", "RESET_GPU", P),
    *(
        Xid(code, f"NVLINK_{unit}_ERROR", f"NVLINK: {unit} Error", "WORKFLOW_NVLINK5_ERR", P)
        for code, unit in zip(
            range(144, 151),
            ("SAW", "RLW", "TLW", "TREX", "NVLPW_CTRL", "NETIR", "MSE"),
            strict=True,
        )
    ),
    Xid(154, "GPU_RECOVERY_ACTION_CHANGED", "GPU Recovery Action Changed", "XID_154", T),
)

CATALOG: dict[int, Xid] = {row.code: row for row in _ROWS}
PAGE_XIDS: tuple[int, ...] = tuple(code for code, row in CATALOG.items() if row.severity is P)


def describe(code: int) -> Xid:
    """The catalog row of ``code``; an XID the table lacks gets action ``unknown``."""
    known = CATALOG.get(code)
    if known is not None:
        return known
    return Xid(code, "", "not in migexporter's XID catalog", UNKNOWN_ACTION, T, "")


def markdown_table() -> str:
    """The README's XID reference, generated so it cannot drift from the code."""
    rows = [
        "| XID | mnemonic | description | NVIDIA's action | severity |",
        "|---|---|---|---|---|",
    ]
    rows += [
        f"| {x.code} | `{x.mnemonic}` | {x.description} | {x.action} | {x.severity.value} |"
        for x in _ROWS
    ]
    return "\n".join(rows) + "\n"
