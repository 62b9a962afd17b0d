"""Running the ``migexporter`` command line as a user would, in a child process."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping


def run_cli(
    *args: str, timeout: float = 60, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m migexporter ARGS``, its output captured; never raises on a failure status."""
    return subprocess.run(
        [sys.executable, "-m", "migexporter", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )
