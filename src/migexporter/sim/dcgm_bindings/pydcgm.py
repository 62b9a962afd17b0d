"""Simulator stand-in for DCGM 4.6's ``pydcgm``: the bindings' classes in one namespace.

Like the real module it star-imports ``DcgmHandle``; the group, field group and system
wrappers are not simulated.
"""

from __future__ import annotations

from DcgmHandle import *  # noqa: F403 (the real module's namespace)


class DcgmException(Exception):  # noqa: N818 (NVIDIA's name)
    """Raised by the bindings' wrappers for their own errors."""
