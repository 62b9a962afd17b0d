"""The command line: clear one-line errors with exit status 2, never a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from cli_run import run_cli


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The command line without an NVIDIA driver in reach."""
    env = {"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": "/nonexistent"}
    return run_cli(*args, timeout=timeout, env=env)


def _one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("migexporter: error:")]
    assert len(lines) == 1, done.stderr
    return lines[0]


def _has_nvml() -> bool:
    try:
        import pynvml  # noqa: PLC0415

        pynvml.nvmlInit()
    except Exception:
        return False
    return True


@pytest.mark.skipif(_has_nvml(), reason="this machine has an NVIDIA driver")
def test_no_driver_says_what_it_looked_for_and_suggests_simulate():
    """Without a driver and without --simulate: one line, exit 2."""
    line = _one_error_line(_run("--listen", "127.0.0.1:0"))
    assert "libnvidia-ml.so.1" in line
    assert "--simulate" in line


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--interval", "0"], "--interval"),
        (["--listen", "nowhere"], "--listen"),
        (["--bogus"], "unrecognized arguments"),
        (["--simulate", "h100-80gb:9g.99gb"], "--simulate"),
        (["--simulate", "/nonexistent/scenario.yaml"], "--simulate"),
        (["--dcgm-bindings", "/nonexistent"], "--dcgm-bindings"),
        (["--simulate", "--backend", "dcgm", "--dcgm-bindings", "/"], "no DCGM Python bindings"),
        # A value that starts with '-' reaches its option's parser, which says what is wrong.
        (["--interval", "-1s"], "--interval: '-1s' is not a duration"),
        (["--listen", "--"], "--listen: expected one argument"),  # not argparse's empty list
        (["--simulat"], "unrecognized arguments: --simulat"),  # no prefix abbreviations
        (["--pod-max-age", "5s"], "--pod-max-age 5s (on the command line) is shorter than"),
    ],
)  # fmt: skip
def test_bad_flags_exit_2_with_one_line(args, fragment):
    """Invalid flags and fleet specs are one line on stderr and exit status 2."""
    assert fragment in _one_error_line(_run(*args))


def test_port_in_use_is_a_clear_error():
    """A taken port is reported as such, not as a traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _run("--simulate", "--listen", f"127.0.0.1:{port}")
    line = _one_error_line(done)
    assert line == (
        f"migexporter: error: cannot listen on 127.0.0.1:{port}: the port is in use by another "
        "process (another exporter?); choose one with --listen"
    )
    assert "topology" not in done.stderr  # said before any GPU was enumerated


def test_version_and_help():
    """--version prints the version; --help documents every option."""
    version = _run("--version")
    assert version.returncode == 0
    assert version.stdout.startswith("migexporter ")
    text = _run("--help").stdout
    for flag in (
        "--listen",
        "--backend",
        "--simulate",
        "--interval",
        "--topology-refresh",
        "--log-level",
        "--config",
        "--compat",
    ):
        assert flag in text
    for subcommand in ("dashboards --out", "alerts --out", "kubernetes --out"):
        assert subcommand in text
    spelled = _run("help")
    assert spelled.returncode == 0
    assert spelled.stdout == text


def test_serving_imports_no_generator():
    """The exporter starts without the mixin's modules (grafanalib, matplotlib) loaded."""
    probe = (
        "import sys, migexporter.cli, migexporter.server, migexporter.collector;"
        "print(sorted(m for m in sys.modules"
        " if m.split('.')[0] in {'grafanalib', 'matplotlib'} or m.startswith('migexporter.mixin')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
