"""``migexporter sim run``: other programs' ``import pynvml`` answered by a simulated fleet.

Each test runs the real command line in a child process: a Python program, gpustat's own
console script, and a program whose fleet is changed through ``--control`` while it runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from nvitop import bytes2human

from migexporter.sim import FakeNvml, Fleet

FLEET = "h100-80gb:3g.40gb+1g.10gb*2,a100-40gb"
TIMEOUT_S = 120
LOOPBACK = "127.0.0.1"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _sim_run(*args: str) -> list[str]:
    return [sys.executable, "-m", "migexporter", "sim", "run", *args]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _sim_run(*args), capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )


PROGRAM = """
    import pynvml
    pynvml.nvmlInit()
    for index in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        print(pynvml.nvmlDeviceGetName(handle), pynvml.nvmlDeviceGetMigMode(handle)[0])
    print(type(pynvml).__name__, pynvml.__name__)
"""


def test_a_python_program_sees_the_simulated_fleet() -> None:
    result = _run("--fleet", FLEET, "--", sys.executable, "-c", textwrap.dedent(PROGRAM))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "NVIDIA H100 80GB HBM3 1",
        "NVIDIA A100-SXM4-40GB 0",
        "module pynvml",
    ]


def test_gpustats_command_prints_every_gpu() -> None:
    gpustat = shutil.which("gpustat", path=str(Path(sys.executable).parent))
    assert gpustat is not None, "gpustat (a dev dependency) is not installed beside this Python"
    result = _run("--fleet", FLEET, "--", gpustat, "--no-color")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    assert lines[1].startswith("[0] NVIDIA H100 80GB HBM3 |")
    assert lines[2].startswith("[1] NVIDIA A100-SXM4-40GB |")


def _mig_rows(spec: str) -> list[str]:
    """The row nvitop prints for each MIG device of the fleet that ``sim run --fleet spec`` builds
    (the same seed): index, profile, GI/CI ids and the GPU instance's memory, in nvitop's units.
    """
    rows = []
    for gpu in Fleet.from_spec(spec).describe()["gpus"]:
        for gi in gpu["gpu_instances"]:
            for ci in gi["compute_instances"]:
                total = re.escape(bytes2human(gi["memory_mb"] << 20))
                rows.append(
                    rf"│ {gpu['index']}:{ci['mig_index']} +{re.escape(ci['profile'])} "
                    rf"@ GI/CI: {gi['id']}/{ci['id']} │ +\S+ / +{total} │"
                )
    return rows


def test_nvitop_once_prints_every_gpu_and_mig_device() -> None:
    nvitop = shutil.which("nvitop", path=str(Path(sys.executable).parent))
    assert nvitop is not None, "nvitop (a dev dependency) is not installed beside this Python"
    result = _run("--fleet", FLEET, "--", nvitop, "--once")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    out = result.stdout
    assert "H100 80GB HBM3" in out
    assert "A100-SXM4-40GB" in out
    rows = _mig_rows(FLEET)
    assert len(rows) == 3
    for row in rows:
        assert re.search(row, out), (row, out)
    # Each MIG device's process in the process table, under the device's index.
    nv = FakeNvml(Fleet.from_spec(FLEET))
    nv.nvmlInit()
    gpu = nv.nvmlDeviceGetHandleByIndex(0)
    for index in range(3):
        mig = nv.nvmlDeviceGetMigDeviceHandleByIndex(gpu, index)
        (process,) = nv.nvmlDeviceGetComputeRunningProcesses(mig)
        assert re.search(rf"│ 0:{index} +{process.pid} C ", out), out


# An operator destroys the MIG device in the middle (nvidia-smi mig -dci, then -dgi): NVML then
# answers NOT_FOUND at its index and keeps the others where they were (indices are sparse,
# shared/facts/nvml-mig.md). nvitop stops listing MIG devices at the first index that fails
# (nvitop/api/device.py, PhysicalDevice.mig_devices), so it shows only the device before the
# hole until one is created there again.
HOLE_PROGRAM = """
    import sys, pynvml
    from nvitop.cli import main
    pynvml.nvmlInit()
    gpu = pynvml.nvmlDeviceGetHandleByIndex(0)
    middle = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(gpu, 1)
    gi = pynvml.nvmlDeviceGetGpuInstanceById(gpu, pynvml.nvmlDeviceGetGpuInstanceId(middle))
    ci_id = pynvml.nvmlDeviceGetComputeInstanceId(middle)
    pynvml.nvmlComputeInstanceDestroy(pynvml.nvmlGpuInstanceGetComputeInstanceById(gi, ci_id))
    pynvml.nvmlGpuInstanceDestroy(gi)
    for index in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(gpu)):
        try:
            mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(gpu, index)
        except pynvml.NVMLError_NotFound:
            print(index, "NotFound")
            continue
        print(index, pynvml.nvmlDeviceGetName(mig), pynvml.nvmlDeviceGetIndex(mig))
    sys.stdout.flush()
    sys.argv = ["nvitop", "--once"]
    sys.exit(main())
"""


def test_a_destroyed_mig_device_in_the_middle_leaves_a_hole_that_nvitop_stops_at() -> None:
    spec = "h100-80gb:3g.40gb+1g.10gb*2"
    result = _run("--fleet", spec, "--", sys.executable, "-c", textwrap.dedent(HOLE_PROGRAM))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:7] == [
        "0 NVIDIA H100 80GB HBM3 MIG 3g.40gb 0",
        "1 NotFound",
        "2 NVIDIA H100 80GB HBM3 MIG 1g.10gb 2",
        "3 NotFound",
        "4 NotFound",
        "5 NotFound",
        "6 NotFound",
    ]
    nvitop = "\n".join(lines[7:])
    before, _, after = _mig_rows(spec)
    assert re.search(before, nvitop), nvitop
    assert not re.search(after, nvitop), nvitop  # behind the hole: nvitop does not list it
    assert "0:2" not in nvitop


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--fleet", "bogus", "--", "true"), "unknown GPU model 'bogus'"),
        (("--",), "give the command to run after --"),
        (("--", "no-such-program-here"), "cannot run no-such-program-here"),
        (("--control", "nowhere", "--", "true"), "is not HOST:PORT"),
    ],
)
def test_bad_input_is_one_line_and_status_2(args: tuple[str, ...], message: str) -> None:
    result = _run(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("migexporter sim run: error: ")
    assert message in line


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _request(url: str, body: object | None = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    with _OPENER.open(urllib.request.Request(url, data=data), timeout=5) as reply:
        return json.loads(reply.read())


def test_the_control_api_changes_the_fleet_the_program_sees() -> None:
    port = _free_port()
    program = """
        import sys, pynvml
        pynvml.nvmlInit()
        device = pynvml.nvmlDeviceGetHandleByIndex(1)
        for line in sys.stdin:  # one answer per line asked
            print(pynvml.nvmlDeviceGetMigMode(device)[0], flush=True)
    """
    command = _sim_run(
        "--fleet", FLEET, "--control", f"{LOOPBACK}:{port}", "--",
        sys.executable, "-c", textwrap.dedent(program),
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    ) as child:
        assert child.stdin is not None
        assert child.stdout is not None
        try:
            child.stdin.write("?\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "0"  # the A100: MIG disabled
            deadline = time.monotonic() + TIMEOUT_S
            while True:  # the control API starts with the program's first import of pynvml
                try:
                    fleet = _request(f"http://{LOOPBACK}:{port}/api/sim/fleet")
                    break
                except OSError:
                    assert time.monotonic() < deadline, "the control API never answered"
                    time.sleep(0.1)
            assert isinstance(fleet, dict)
            assert len(fleet["gpus"]) == 2
            _request(f"http://{LOOPBACK}:{port}/api/sim/mig", {"gpu": 1, "profiles": ["3g.20gb"]})
            child.stdin.write("?\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "1"  # MIG enabled through the API
        finally:
            child.stdin.close()
            child.wait(TIMEOUT_S)
    assert child.returncode == 0
