"""Child processes on loopback (the exporter, Prometheus), HTTP to them, and bounded polling.

Everything here is synchronous and uses only the standard library for HTTP, so a failure points
at the exporter or Prometheus rather than at a test client.
"""

from __future__ import annotations

import contextlib
import json
import os
import pprint
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    import ssl

T = TypeVar("T")

LOOPBACK = "127.0.0.1"
SRC = Path(__file__).resolve().parents[2] / "src"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
LOG_TAIL_CHARS = 8_000
INSTALL_PROMETHEUS = (
    "Prometheus is not installed, and the integration tests scrape the exporter with a real one. "
    "Install it with `sudo apt-get install --no-install-recommends prometheus` "
    "(`make deps` does this when run as root), or put a `prometheus` binary on PATH."
)

# No proxy, ever: an http_proxy variable in CI must not send loopback requests elsewhere.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on at the moment of the call."""
    # Another process could take the port before the child binds it; the child then exits and
    # start_service fails showing its log, which names the port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Response:
    """One HTTP answer; header names are lower-case."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


def http(
    method: str,
    url: str,
    *,
    json_body: object = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
    context: ssl.SSLContext | None = None,
) -> Response:
    """One request to 127.0.0.1 (https with ``context``); error statuses are returned."""
    if urllib.parse.urlsplit(url).hostname != LOOPBACK:
        raise ValueError(f"tests only talk to {LOOPBACK}, not {url}")
    data = None if json_body is None else json.dumps(json_body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    opener = _OPENER
    if context is not None:
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )
    try:
        with opener.open(request, timeout=timeout) as reply:
            return Response(reply.status, _lower(reply.headers.items()), reply.read())
    except urllib.error.HTTPError as error:
        with error:
            return Response(error.code, _lower(error.headers.items()), error.read())


def _lower(items: Any) -> dict[str, str]:
    return {str(name).lower(): str(value) for name, value in items}


def wait_for(
    probe: Callable[[], T],
    timeout: float = 15.0,
    *,
    until: Callable[[T], object] = bool,
    interval: float = 0.2,
    what: str = "",
) -> T:
    """Call ``probe`` until ``until(value)`` holds and return that value.

    A probe that raises ``OSError`` (connection refused or reset) counts as "not yet". After
    ``timeout`` seconds the test fails, showing the last value or error seen.
    """
    deadline = time.monotonic() + timeout
    last: object = "<nothing: the probe never returned>"
    while True:
        try:
            value = probe()
        except OSError as error:
            last = error
        else:
            if until(value):
                return value
            last = value
        if time.monotonic() >= deadline:
            seen = pprint.pformat(last, width=100)[:4000]
            pytest.fail(f"waited {timeout:g}s for {what or 'the condition'}; last seen:\n{seen}")
        time.sleep(interval)


@dataclass
class Service:
    """A child process serving HTTP on 127.0.0.1, with its combined output in ``log_path``."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    context: ssl.SSLContext | None = None  # how to trust it, where it serves https

    def get(self, path: str, headers: dict[str, str] | None = None) -> Response:
        """GET a path of this service."""
        return http("GET", self.url + path, headers=headers, context=self.context)

    def post(self, path: str, json_body: object) -> Response:
        """POST a JSON body to a path of this service."""
        return http("POST", self.url + path, json_body=json_body, context=self.context)

    def log_tail(self) -> str:
        """The end of the child's output."""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return text[-LOG_TAIL_CHARS:] or "<no output>"

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if the child has not exited within STOP_TIMEOUT_S."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_S)


def start_service(
    name: str,
    argv: list[str],
    *,
    port: int,
    log_path: Path,
    ready_path: str,
    env: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> Service:
    """Start ``argv`` and return once ``ready_path`` answers 200, or fail showing the log;
    over https, trusting what ``context`` trusts, when it is given."""
    with log_path.open("wb") as log:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
        )
    scheme = "http" if context is None else "https"
    service = Service(name, f"{scheme}://{LOOPBACK}:{port}", process, log_path, context)

    def ready() -> int:
        if process.poll() is not None:
            pytest.fail(f"{name} exited with status {process.returncode} before it was ready")
        return http("GET", service.url + ready_path, timeout=1.0, context=context).status

    failure = None
    try:
        wait_for(ready, READY_TIMEOUT_S, until=lambda status: status == 200, what=name + ready_path)
    except (Exception, pytest.fail.Exception) as error:
        failure = getattr(error, "msg", None) or repr(error)
    except BaseException:  # Ctrl-C: leave no child behind
        service.stop()
        raise
    if failure is not None:
        service.stop()
        tail = service.log_tail()
        command = " ".join(argv)
        pytest.fail(f"{failure}\ncommand: {command}\n--- {name} log ---\n{tail}", pytrace=False)
    return service


def scraped(service: Service, name: str) -> list[dict[str, str]]:
    """Each sample called ``name`` in one plain-text scrape: its labels, and "value"."""
    reply = service.get("/metrics")
    assert reply.status == 200, reply.status
    return [
        {**s.labels, "value": str(s.value)}
        for family in text_string_to_metric_families(reply.body.decode())
        for s in family.samples
        if s.name == name
    ]


def exporter_env() -> dict[str, str]:
    """The environment for a child exporter: this checkout's ``src`` first, output unbuffered."""
    path = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def start_exporter(
    log_dir: Path, *extra_args: str, context: ssl.SSLContext | None = None
) -> Service:
    """The simulated exporter on a free loopback port, sampling fast enough for quick tests;
    ``context`` trusts its certificate where ``extra_args`` give it a TLS web config."""
    port = free_port()
    argv = [
        sys.executable, "-m", "migexporter", "--simulate", *extra_args,
        "--listen", f"{LOOPBACK}:{port}", "--interval", "0.5", "--topology-refresh", "2",
        "--log-level", "info",
    ]  # fmt: skip
    return start_service(
        "exporter",
        argv,
        port=port,
        log_path=log_dir / "exporter.log",
        ready_path="/-/ready",
        env=exporter_env(),
        context=context,
    )


def sim_fleet(exporter: Service) -> list[dict[str, Any]]:
    """The simulator's GPUs as ``GET /api/sim/fleet`` lists them."""
    reply = exporter.get("/api/sim/fleet")
    assert reply.status == 200, reply.body[:500]
    gpus: list[dict[str, Any]] = reply.json()["gpus"]
    return gpus


@dataclass(frozen=True)
class Sample:
    """One element of an instant vector from Prometheus."""

    labels: dict[str, str]
    value: float
    timestamp: float


Query: TypeAlias = Callable[[str], list[Sample]]


@dataclass
class Prometheus:
    """A running Prometheus and its query API."""

    service: Service

    def query(self, expr: str) -> list[Sample]:
        """Evaluate an instant-vector expression now; fail on any API error."""
        reply = http(
            "GET", self.service.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        )
        assert reply.status == 200, f"{expr}: HTTP {reply.status} {reply.body[:500]!r}"
        data = reply.json()["data"]
        assert data["resultType"] == "vector", f"{expr} is not an instant vector: {data}"
        return [
            Sample(item["metric"], float(item["value"][1]), float(item["value"][0]))
            for item in data["result"]
        ]


def prometheus_binary() -> str:
    """The Prometheus server to run; fails (never skips) with install advice when missing."""
    found = shutil.which("prometheus")
    if found is None and os.access("/usr/bin/prometheus", os.X_OK):
        found = "/usr/bin/prometheus"
    if found is None:
        pytest.fail(INSTALL_PROMETHEUS, pytrace=False)
    return found


def start_prometheus(
    workdir: Path,
    targets: list[str],
    *,
    rule_files: tuple[Path, ...] = (),
    alertmanagers: tuple[str, ...] = (),
    scrape: dict[str, Any] | None = None,
) -> Prometheus:
    """A Prometheus scraping ``targets`` (host:port) every second, storing data in ``workdir``;
    with ``rule_files`` evaluated every second and alerts sent to ``alertmanagers``, and
    ``scrape`` merged into its scrape configuration (scheme, TLS, credentials)."""
    binary = prometheus_binary()
    port = free_port()
    # JSON is YAML, and json.dumps quotes every value correctly.
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "migexporter", "static_configs": [{"targets": targets}], **(scrape or {})}
        ],
        "rule_files": [str(path) for path in rule_files],
    }
    if alertmanagers:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": alertmanagers}]}]}
    config_path = workdir / "prometheus.yml"
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    argv = [
        binary,
        f"--config.file={config_path}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address={LOOPBACK}:{port}",
    ]
    service = start_service(
        "prometheus", argv, port=port, log_path=workdir / "prometheus.log", ready_path="/-/ready"
    )
    return Prometheus(service)


# --- Alertmanager and a webhook receiver, VictoriaMetrics's binaries ----------------------------

ROOT = SRC.parent
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"  # Debian's name for the alertmanager binary
INSTALL_ALERTMANAGER = (
    "Alertmanager is not installed, and the integration tests page through a real one. Install it "
    "with `sudo apt-get install --no-install-recommends prometheus-alertmanager` (`make deps` "
    "does this when run as root), or put a `prometheus-alertmanager` binary on PATH."
)
INSTALL_VICTORIAMETRICS = (
    "VictoriaMetrics is not installed, and the integration tests run the mixin on a real one. "
    "Install it with `sudo apt-get install --no-install-recommends victoria-metrics` (`make deps` "
    "does this when run as root): it ships victoria-metrics, vmagent and vmalert."
)


@dataclass
class Receiver:
    """A webhook receiver on loopback: every notification POSTed to it, with its arrival time."""

    port: int
    received: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def alerts(self, receiver: str) -> list[tuple[float, dict[str, Any]]]:
        """(arrival, alert) of every alert notified to ``/receiver`` so far."""
        with self.lock:
            return [
                (at, alert)
                for at, path, body in self.received
                if path == f"/{receiver}"
                for alert in body["alerts"]
            ]


@contextlib.contextmanager
def webhook_receiver() -> Iterator[Receiver]:
    """A Receiver serving on a free loopback port until the block ends."""
    sink = Receiver(free_port())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with sink.lock:
                sink.received.append((time.monotonic(), self.path, body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            return

    server = ThreadingHTTPServer((LOOPBACK, sink.port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()


def alertmanager_binary() -> str:
    """Alertmanager; fails (never skips) with install advice when missing."""
    found = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if found is None and os.access(ALERTMANAGER, os.X_OK):
        found = ALERTMANAGER
    if found is None:
        pytest.fail(INSTALL_ALERTMANAGER, pytrace=False)
    return found


def start_alertmanager(workdir: Path, receiver: Receiver) -> Service:
    """Alertmanager on alerts/alertmanager.yml, with its webhook URLs pointed at ``receiver``
    (one path per receiver name) and its group waits shortened to a second."""
    binary = alertmanager_binary()
    config = yaml.safe_load((ROOT / "alerts" / "alertmanager.yml").read_text(encoding="utf-8"))
    config["route"] |= {"group_wait": "1s", "group_interval": "1s"}
    for entry in config["receivers"]:
        for hook in entry.get("webhook_configs", []):
            hook["url"] = f"http://{LOOPBACK}:{receiver.port}/{entry['name']}"
    path = workdir / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    argv = [
        binary,
        f"--config.file={path}",
        f"--storage.path={workdir / 'data'}",
        f"--web.listen-address={LOOPBACK}:{port}",
        "--cluster.listen-address=",  # one instance: no gossip port
    ]
    return start_service(
        "alertmanager",
        argv,
        port=port,
        log_path=workdir / "alertmanager.log",
        ready_path="/-/ready",
    )


def victoriametrics_binary(name: str) -> str:
    """``victoria-metrics``, ``vmagent`` or ``vmalert``; fails (never skips) with install
    advice when missing."""
    found = shutil.which(name)
    if found is None and os.access(f"/usr/bin/{name}", os.X_OK):
        found = f"/usr/bin/{name}"
    if found is None:
        pytest.fail(f"no `{name}` binary. {INSTALL_VICTORIAMETRICS}", pytrace=False)
    return found
