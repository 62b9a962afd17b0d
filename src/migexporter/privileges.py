"""What the exporter can do with the privileges it runs with, said once at start.

NVML's "privileged user" is root or a process with CAP_SYS_ADMIN; DCGM refuses MIG GPUs to a
host engine that is not root. The README's Privileges section lists the same features.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

CAP_SYS_ADMIN = 21  # linux/capability.h
STATUS = Path("/proc/self/status")

# Feature -> what is lost without root or CAP_SYS_ADMIN.
NEED_ADMIN = (
    "placement and profile ids of GPU instances (their info labels stay empty)",
    "whole-GPU memory of MIG-enabled GPUs",
    "attribution of XIDs to MIG instances (they are counted per GPU)",
)
DCGM_NEEDS_ROOT = "DCGM's embedded host engine on MIG-enabled GPUs (root only)"


def has_sys_admin(status: str | None = None, euid: int | None = None) -> bool:
    """Whether this process is root or holds CAP_SYS_ADMIN in its effective set."""
    if (os.geteuid() if euid is None else euid) == 0:
        return True
    try:
        text = STATUS.read_text() if status is None else status
    except OSError:
        return False
    match = re.search(r"^CapEff:\s*([0-9a-fA-F]+)$", text, re.MULTILINE)
    return bool(match and int(match[1], 16) >> CAP_SYS_ADMIN & 1)


def features_off(
    status: str | None = None, euid: int | None = None, *, embedded_dcgm: bool = True
) -> list[str]:
    """The features this process lacks the privileges for; empty when it has them all.

    ``embedded_dcgm``: whether the exporter may start DCGM's host engine itself (a remote one,
    or the NVML backend, holds no root requirement here).
    """
    root = (os.geteuid() if euid is None else euid) == 0
    off = [] if has_sys_admin(status, euid) else list(NEED_ADMIN)
    if embedded_dcgm and not root:
        off.append(DCGM_NEEDS_ROOT)
    return off
