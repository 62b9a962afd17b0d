"""Every benchmark runs in its quick mode and prints one JSON object with a summary.

Not timing tests: figures are never compared with targets here, only the benchmarks' contract
(one command each, JSON on stdout, a human summary on stderr, one line and status 2 where one
cannot run) is checked, so that a change that breaks a benchmark is caught by the normal run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
QUICK = ("scrape", "sampling", "memory", "event_latency", "slow_driver", "paging", "soak", "fleet")
TIMEOUT_S = 120  # a bound on a hang, far above a quick run's few seconds
# fleet's quick run waits for real Prometheus scrapes and evaluations (15 s apart), twice:
# about 2 min 45 s on two cores.
TIMEOUTS_S = {"fleet": 360}
CANNOT_RUN = 2

pytestmark = pytest.mark.integration  # they start exporter processes on loopback


def _run(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python NAME.py ARGS`` in benchmarks/, with this checkout's sources importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, f"{name}.py", *args],
        cwd=BENCHMARKS,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUTS_S.get(name, TIMEOUT_S),
        check=False,
    )


def _nvidia_driver_present() -> bool:
    """Whether NVML initialises here, as xid_latency.py itself asks."""
    try:
        import pynvml  # noqa: PLC0415

        pynvml.nvmlInit()
    except Exception:
        return False
    pynvml.nvmlShutdown()
    return True


@pytest.mark.parametrize("name", QUICK)
def test_quick_run_prints_one_json_object_and_a_summary(name: str) -> None:
    result = _run(name, "--quick")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout[-3000:]
    figures = json.loads(lines[0])
    assert isinstance(figures, dict)
    assert figures["benchmark"] == name
    assert "machine" in figures
    assert any(line.startswith(f"{name}: ") for line in result.stderr.splitlines()), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(
    _nvidia_driver_present(), reason="an NVIDIA driver is present: these would measure it"
)
@pytest.mark.parametrize(
    ("name", "args"),
    [("xid_latency", ("--quick",)), ("process_cpu", ("--seconds", "1")), ("fidelity", ())],
)
def test_gpu_benchmarks_without_a_driver_exit_2_with_one_line(
    name: str, args: tuple[str, ...]
) -> None:
    result = _run(name, *args)
    assert result.returncode == CANNOT_RUN, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{name}: ")
    assert "Traceback" not in result.stderr


def test_fidelity_against_the_simulator_finds_every_call_alike() -> None:
    result = _run("fidelity", "--against-simulator")
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = result.stdout.splitlines()
    figures = json.loads(line)
    assert figures["benchmark"] == "fidelity"
    assert figures["alike"] == figures["calls"] > 0
    summary = (
        f"fidelity: {figures['calls']} of {figures['calls']} calls behave alike, "
        "0 differ by nature or deployment (explained), 0 differ otherwise"
    )
    assert result.stderr.splitlines() == [summary]


def test_scrape_with_compat_judges_the_compat_run_against_the_same_baseline() -> None:
    result = _run("scrape", "--quick", "--compat", "dcgm-exporter")
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout)
    servers = {row["server"] for row in figures["results"]}
    assert servers == {"migexporter", "migexporter --compat", "baseline"}
    targets = figures["targets"]
    assert {"plain", "gzip", "compat_plain", "compat_gzip"} <= targets.keys()
    assert targets["compat_gzip"]["p99_ms"] > 0
