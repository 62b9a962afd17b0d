"""What every benchmark shares: the exporter (or the baseline) as a child process on loopback,
closed-loop load from separate processes, process CPU and memory, and the JSON report.

Standard library only, so that a benchmark needs nothing beyond the exporter's own install.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from collections.abc import Callable

LOOPBACK = "127.0.0.1"
HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
FLEET_8X7 = "8*h100-80gb:1g.10gb*7"  # the fleet: 8 GPUs x 7 GPU instances
CANNOT_RUN = 2  # a benchmark's exit status when it cannot run here (one line on stderr)
_LINE = re.compile(rb"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\} (\S+)$", re.MULTILINE)
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Labels = frozenset[tuple[str, str]]


class BenchmarkError(Exception):
    """A benchmark cannot run here; its message is the one line the user sees."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def child_env() -> dict[str, str]:
    """The environment for children: this checkout's sources first, no proxies."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH", "")]))
    return env


def get(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0) -> bytes:
    """One GET to loopback; raises on anything but 200."""
    request = urllib.request.Request(url, headers=headers or {})
    with _OPENER.open(request, timeout=timeout) as response:
        body: bytes = response.read()
        return body


def post_json(url: str, body: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """POST a JSON object to the simulation API; its JSON answer (raises on non-200)."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with _OPENER.open(request, timeout=timeout) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def series(body: bytes, metric: str) -> dict[Labels, float]:
    """Every labelled sample of ``metric`` in a text exposition, by its label set.

    Only lines of that metric are decoded, so a scrape of 8 x 7 instances parses in well under
    a millisecond whatever order the exporter writes labels in.
    """
    found: dict[Labels, float] = {}
    prefix = metric.encode() + b"{"
    start = body.find(prefix)
    while start != -1:
        match = _LINE.match(body, start)
        if match is not None and match.group(1) == prefix[:-1]:
            labels = frozenset(_LABEL.findall(match.group(2).decode()))
            found[labels] = float(match.group(3))
        start = body.find(b"\n" + prefix, start)
        start = start if start == -1 else start + 1
    return found


def labels(**values: str) -> Labels:
    """A label set to look up in what ``series`` returns."""
    return frozenset(values.items())


@dataclass
class Server:
    """A child process serving /metrics on loopback."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def metrics_url(self) -> str:
        return self.url + "/metrics"

    def cpu_seconds(self) -> float:
        """User plus system CPU time the process has used so far (Linux /proc)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_bytes(self) -> int:
        """Resident memory of the process now (Linux /proc)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise BenchmarkError(f"no VmRSS for {self.name}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def start(  # noqa: PLR0913 (the child's environment is the one keyword)
    name: str,
    argv: list[str],
    port: int,
    log_path: Path,
    ready_path: str,
    *,
    env: dict[str, str] | None = None,
) -> Server:
    """Start a child (in ``env``, by default child_env()) and return once ``ready_path``
    answers 200 (bounded wait)."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env() if env is None else env,
        )
    server = Server(name, process, f"http://{LOOPBACK}:{port}", log_path)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise BenchmarkError(f"{name} exited with status {process.returncode}: {tail}")
        try:
            get(server.url + ready_path, timeout=1.0)
        except OSError:
            time.sleep(0.1)
        else:
            return server
    server.stop()
    raise BenchmarkError(f"{name} was not ready within {READY_TIMEOUT_S:.0f}s")


def start_exporter(spec: str, log_dir: Path, *extra: str, interval: str = "1s") -> Server:
    """migexporter on a simulated fleet; NVML backend unless ``extra`` says otherwise."""
    port = free_port()
    argv = [
        sys.executable, "-m", "migexporter", "--simulate", spec, "--backend", "nvml",
        "--listen", f"{LOOPBACK}:{port}", "--interval", interval, "--log-level", "warning",
        *extra,
    ]  # fmt: skip
    if "--backend" in extra:  # the caller's choice wins
        at = argv.index("--backend")
        del argv[at : at + 2]
    return start("migexporter", argv, port, log_dir / "migexporter.log", "/-/ready")


def measure_exporter(
    name: str, interval: str, measure: Callable[[Server], dict[str, Any]]
) -> dict[str, Any] | None:
    """``measure`` against the exporter on FLEET_8X7 at ``interval``; None, after one line on
    stderr, when the exporter cannot run here."""
    try:
        with (
            tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp,
            start_exporter(FLEET_8X7, Path(tmp), interval=interval) as server,
        ):
            return measure(server)
    except (BenchmarkError, OSError) as error:
        print(f"{name}: {error}", file=sys.stderr)
        return None


def start_baseline(spec: str, log_dir: Path, interval: str = "1s") -> Server:
    """The same collector served the common way (benchmarks/baseline_server.py)."""
    port = free_port()
    argv = [sys.executable, str(HERE / "baseline_server.py"), spec, str(port), interval]
    return start("baseline", argv, port, log_dir / "baseline.log", "/metrics")


def load(url: str, clients: int, requests: int, *, gzip: bool = False) -> dict[str, Any]:
    """Closed-loop load from as many client processes as spare cores allow; merged figures."""
    processes = max(1, min(clients, (os.cpu_count() or 2) - 1, 8))
    shares = [clients // processes + (i < clients % processes) for i in range(processes)]
    argv = [sys.executable, str(HERE / "loadgen.py"), url]
    children = [
        subprocess.Popen(
            [
                *argv,
                "--clients", str(share),
                "--requests", str(max(share, requests * share // clients)),
                *(["--gzip"] if gzip else []),
            ],
            stdout=subprocess.PIPE,
            env=child_env(),
        )
        for share in shares
    ]  # fmt: skip
    results = []
    for child in children:
        out, _ = child.communicate()
        if child.returncode != 0:
            raise BenchmarkError(f"load generator failed with status {child.returncode}")
        results.append(json.loads(out))
    latencies = sorted(x for r in results for x in r["latencies_s"])
    wall = max(r["wall_s"] for r in results)
    return {
        "clients": clients,
        "requests": len(latencies),
        "client_processes": processes,
        **percentiles(latencies),
        "rps": round(len(latencies) / wall, 1),
        "bytes_per_response": sum(r["bytes"] for r in results) // max(len(latencies), 1),
        "errors": sum(r["errors"] for r in results),
    }


def percentiles(latencies_s: list[float]) -> dict[str, float]:
    """p50, p99 and max of sorted latencies, in milliseconds."""
    if not latencies_s:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    n = len(latencies_s)

    def at(q: float) -> float:
        return round(latencies_s[min(n - 1, int(q * n))] * 1e3, 3)

    return {"p50_ms": at(0.50), "p99_ms": at(0.99), "max_ms": round(latencies_s[-1] * 1e3, 3)}


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


def report(name: str, figures: dict[str, Any], summary: list[str]) -> None:
    """Print the JSON on stdout and a short human summary on stderr."""
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    json.dump({"benchmark": name, "machine": machine(), "command": command, **figures}, sys.stdout)
    sys.stdout.write("\n")
    for line in summary:
        print(f"{name}: {line}", file=sys.stderr)
