"""``migexporter sim run``: other programs' ``import pynvml`` answered by a simulated fleet.

Each test runs the real command line in a child process: a Python program, gpustat's own
console script, and a program whose fleet is changed through ``--control`` while it runs.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

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


def test_nvitop_once_prints_every_gpu_and_mig_device() -> None:
    nvitop = shutil.which("nvitop", path=str(Path(sys.executable).parent))
    assert nvitop is not None, "nvitop (a dev dependency) is not installed beside this Python"
    result = _run("--fleet", FLEET, "--", nvitop, "--once")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    out = result.stdout
    assert "H100 80GB HBM3" in out
    assert "A100-SXM4-40GB" in out
    for device, profile, ids in (
        ("0:0", "3g.40gb", "1/0"),
        ("0:1", "1g.10gb", "2/0"),
        ("0:2", "1g.10gb", "3/0"),
    ):
        assert f"{device}      {profile} @ GI/CI: {ids}" in out, out


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
