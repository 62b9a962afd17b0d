"""Child processes for the hardware tests: the exporter on real NVML, the load helpers, XID faults.

Kept apart from ``tests/integration`` on purpose: these tests run on a GPU machine's own Python
(no virtualenv, no pytest-asyncio, no install), so they depend on nothing else under ``tests/``.
Everything is synchronous, and HTTP goes to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Self

import pytest
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from types import TracebackType

    from prometheus_client.samples import Sample

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"
LOOPBACK = "127.0.0.1"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
XID_ERRORS = "nvidia_gpu_xid_errors_total"
FAULT_TIMEOUT_S = 60.0  # a cold driver JIT-compiles the PTX and creates the context first

# No proxy, ever: an http_proxy variable must not send loopback requests elsewhere.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on at the moment of the call."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _stop(process: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within STOP_TIMEOUT_S."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT_S)


def _tail(path: Path, limit: int = 20_000) -> str:
    return path.read_text(encoding="utf-8", errors="replace")[-limit:] or "<no output>"


@dataclass(frozen=True)
class Gpu:
    """The GPU under test as NVML numbers it."""

    index: int
    uuid: str
    handle: Any  # pynvml's ctypes handle


@dataclass
class Exporter:
    """The exporter as a child process on the real driver, with its output in ``log_path``."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(cls, log_path: Path, interval: float, *extra_args: str) -> Exporter:
        """Start ``migexporter --backend nvml`` from this checkout; return once it is ready."""
        port = free_port()
        argv = [
            sys.executable, "-m", "migexporter", "--backend", "nvml", *extra_args,
            "--interval", str(interval), "--listen", f"{LOOPBACK}:{port}", "--log-level", "info",
        ]  # fmt: skip
        pythonpath = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "PYTHONPATH": pythonpath, "PYTHONUNBUFFERED": "1"}
        with log_path.open("wb") as log:  # the child keeps its own copy of the descriptor
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        exporter = cls(f"http://{LOOPBACK}:{port}", process, log_path)
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = "no answer yet"
        while (status := exporter.status("/-/ready")) != 200:
            if isinstance(status, int):
                last = f"HTTP {status}"
            if process.poll() is not None or time.monotonic() > deadline:
                exporter.stop()
                pytest.fail(
                    f"exporter not ready within {READY_TIMEOUT_S:g}s (exit status "
                    f"{process.returncode}, last /-/ready: {last})\ncommand: {' '.join(argv)}\n"
                    f"--- exporter log ---\n{exporter.log_tail()}"
                )
            time.sleep(0.2)
        return exporter

    def status(self, path: str) -> int | None:
        """The HTTP status of GET path, or None when nothing answers."""
        try:
            with _OPENER.open(self.url + path, timeout=1.0) as reply:
                return int(reply.status)
        except urllib.error.HTTPError as error:
            return error.code
        except OSError:
            return None

    def samples(self) -> list[Sample]:
        """Every sample of one plain-text scrape of /metrics."""
        with _OPENER.open(self.url + "/metrics", timeout=5.0) as reply:
            text = reply.read().decode()
        return [s for family in text_string_to_metric_families(text) for s in family.samples]

    def value(self, name: str, gpu_uuid: str) -> float | None:
        """The value of a per-GPU series in a fresh scrape, or None when it is absent."""
        found = [
            s.value
            for s in self.samples()
            if s.name == name and s.labels.get("gpu_uuid") == gpu_uuid
        ]
        assert len(found) <= 1, f"{len(found)} series {name} for {gpu_uuid}"
        return found[0] if found else None

    def get(self, path: str) -> bytes:
        """The body of GET path (a fresh connection each time)."""
        with _OPENER.open(self.url + path, timeout=5.0) as reply:
            body: bytes = reply.read()
            return body

    def json(self, path: str) -> Any:
        """GET path, parsed as JSON."""
        return json.loads(self.get(path))

    def xid_count(self, gpu_uuid: str, xid: int) -> float:
        """The whole-GPU XID counter (empty instance labels) in a fresh scrape; absent is 0."""
        # Only the XID lines are parsed: a whole scrape takes milliseconds, too slow to poll.
        prefix = XID_ERRORS + "{"
        lines = self.get("/metrics").decode().splitlines()
        text = "".join(f"{line}\n" for line in lines if line.startswith(prefix))
        wanted = {"gpu_uuid": gpu_uuid, "gpu_instance_id": "", "compute_instance_id": ""}
        wanted["xid"] = str(xid)
        found = [
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if all(s.labels.get(key, "") == value for key, value in wanted.items())
        ]
        assert len(found) <= 1, f"{len(found)} series {XID_ERRORS} for {wanted}"
        return found[0] if found else 0.0

    def wait_for_xid(
        self, gpu_uuid: str, xid: int, above: float, timeout: float, poll_s: float
    ) -> tuple[float, float] | None:
        """Scrape every ``poll_s`` until the XID counter exceeds ``above``.

        Returns (time.time() when that scrape's answer was read, the count it showed), or None
        after ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            count = self.xid_count(gpu_uuid, xid)
            if count > above:
                return time.time(), count
            time.sleep(poll_s)
        return None

    def log_tail(self) -> str:
        """The end of the exporter's output."""
        return _tail(self.log_path)

    def stop(self) -> None:
        """Terminate the exporter (SIGTERM, then SIGKILL)."""
        _stop(self.process)


@dataclass
class Helper:
    """A helper script run with this interpreter on one GPU, driven line by line.

    Each line the script prints is kept with the time it arrived, so a test can tell when the
    script said something, not only when the test looked.
    """

    script: str
    args: tuple[str, ...]
    log_path: Path
    gpu_uuid: str
    heard: dict[str, float] = field(default_factory=dict)
    _lines: queue.Queue[tuple[float, str | None]] = field(default_factory=queue.Queue)
    _process: subprocess.Popen[str] | None = None

    def __enter__(self) -> Self:
        # CUDA may number GPUs otherwise than NVML: naming the UUID puts the load on the GPU
        # whose series the test reads.
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": self.gpu_uuid, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("w", encoding="utf-8") as log:
            self._process = subprocess.Popen(
                [sys.executable, str(HERE / self.script), *self.args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=env,
            )
        threading.Thread(target=self._pump, args=(self._process.stdout,), daemon=True).start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._process is not None
        if self._process.stdin:
            self._process.stdin.close()  # the scripts end when stdin closes
        _stop(self._process)

    def _pump(self, stdout: IO[str]) -> None:
        for line in stdout:
            self._lines.put((time.monotonic(), line.strip()))
        self._lines.put((time.monotonic(), None))

    def _take(self, timeout: float) -> bool:
        """Move one line into ``heard``; False when none came within timeout."""
        try:
            when, line = self._lines.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return False
        if line is None:
            assert self._process is not None
            self._process.wait(STOP_TIMEOUT_S)
            pytest.fail(
                f"{self.script} exited with status {self._process.returncode}; heard "
                f"{sorted(self.heard)}\n--- {self.script} stderr ---\n{_tail(self.log_path)}"
            )
        self.heard.setdefault(line, when)
        return True

    def said(self, word: str) -> float | None:
        """When the script printed ``word``, without waiting; None if it has not yet."""
        while word not in self.heard and self._take(0.0):
            pass
        return self.heard.get(word)

    def expect(self, word: str, timeout: float) -> float:
        """Wait until the script prints ``word``; return when it did."""
        deadline = time.monotonic() + timeout
        while word not in self.heard:
            if not self._take(deadline - time.monotonic()):
                pytest.fail(
                    f"{self.script} did not print {word!r} within {timeout:g}s\n"
                    f"--- {self.script} stderr ---\n{_tail(self.log_path)}"
                )
        return self.heard[word]

    def send(self, line: str = "go") -> None:
        """Write one line to the script's stdin."""
        assert self._process is not None
        assert self._process.stdin is not None
        self._process.stdin.write(line + "\n")
        self._process.stdin.flush()


@dataclass(frozen=True)
class Fault:
    """What xid_fault.py reported about the fault it raised."""

    time: float  # time.time() right after cuCtxSynchronize returned the error
    error: int  # the CUresult: 700, CUDA_ERROR_ILLEGAL_ADDRESS
    pid: int


def start_fault(gpu_uuid: str) -> subprocess.Popen[str]:
    """Start xid_fault.py on one GPU; it raises XID 31 in its own process and exits."""
    # As for Helper: CUDA may number GPUs otherwise than NVML, the UUID names the right one.
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu_uuid, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, str(HERE / "xid_fault.py")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def fault_report(process: subprocess.Popen[str]) -> Fault:
    """Wait for xid_fault.py; its report, or a test failure when it did not fault as expected."""
    try:
        out, err = process.communicate(timeout=FAULT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _stop(process)
        pytest.fail(f"xid_fault.py did not finish within {FAULT_TIMEOUT_S:g}s")
    if process.returncode != 0:
        pytest.fail(
            f"xid_fault.py exited with status {process.returncode}\nstdout: {out.strip()}\n"
            f"stderr: {err.strip() or '<none>'}"
        )
    report = json.loads(out)
    return Fault(float(report["time"]), int(report["error"]), int(report["pid"]))


PROMETHEUS_ENV = "MIGEXPORTER_PROMETHEUS"  # a Prometheus binary carried to the GPU machine


@dataclass
class PrometheusServer:
    """A real Prometheus scraping one target every second, on a free loopback port."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(cls, workdir: Path, target: str) -> PrometheusServer:
        """Start the binary named by $MIGEXPORTER_PROMETHEUS, or `prometheus` on PATH."""
        binary = os.environ.get(PROMETHEUS_ENV) or shutil.which("prometheus")
        if not binary:
            pytest.fail(
                f"no Prometheus: set {PROMETHEUS_ENV} to a prometheus binary or put one on PATH",
                pytrace=False,
            )
        port = free_port()
        config = {  # JSON is YAML
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [
                {"job_name": "migexporter", "static_configs": [{"targets": [target]}]}
            ],
        }
        config_path = workdir / "prometheus.yml"
        config_path.write_text(json.dumps(config), encoding="utf-8")
        log_path = workdir / "prometheus.log"
        argv = [
            binary, f"--config.file={config_path}", f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address={LOOPBACK}:{port}",
        ]  # fmt: skip
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        server = cls(f"http://{LOOPBACK}:{port}", process, log_path)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not server._ready():
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                pytest.fail(f"Prometheus not ready within {READY_TIMEOUT_S:g}s\n{_tail(log_path)}")
            time.sleep(0.2)
        return server

    def _ready(self) -> bool:
        try:
            with _OPENER.open(self.url + "/-/ready", timeout=1.0) as reply:
                return int(reply.status) == 200
        except OSError:
            return False

    def log_tail(self) -> str:
        """The end of Prometheus's output."""
        return _tail(self.log_path)

    def stop(self) -> None:
        """Terminate Prometheus (SIGTERM, then SIGKILL)."""
        _stop(self.process)
