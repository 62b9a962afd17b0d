"""Fleet scale: rule evaluation and dashboard queries with N nodes in one Prometheus.

Usage: python benchmarks/fleet.py [--quick] [--nodes N] [--duration S] [--spec SPEC]
                                  [--phases baseline,current] [--repetitions R]

One exporter on a simulated fleet (8 H100s with seven 1g.10gb GPU instances each unless
--spec says otherwise) stands for N nodes: Debian's Prometheus scrapes it as N static targets
of one job, each with its own ``instance`` and ``node`` target labels, and metric relabelling
makes every ``gpu_uuid`` and ``mig_uuid`` distinct per node, so that the head holds what N real
nodes would send. Scrape and evaluation every 15 s (Grafana's default minimum interval).

Two phases, each with a fresh Prometheus and an empty TSDB: ``baseline``, the rules and
dashboards committed under benchmarks/baseline/ (before the fleet-scale work), scraped through a
loopback proxy that adds the event series that exporter pre-created at 0 on every GPU; and
``current``, this checkout's generated rules and dashboards, scraped directly. While data
accumulates, an XID of each severity is injected every 30 s, so every node has event series for
the XID rules and panels. After ``--duration`` seconds of data, each rule group's evaluation
time is the median of its next evaluations as /api/v1/rules reports them; then each dashboard is
opened as Grafana opens it with its default variables over the last ``--duration`` seconds: all
panels' queries in sequence and all at once, with Grafana's 30 s data-proxy timeout per query.
Prints JSON on stdout (both phases and the baseline/current ratios) and a summary on stderr.
Measures only: nothing here is compared with a target.

Grafana's defaults, as reproduced here: a multi-value or include-All variable is All (its
``allValue``, ``.*`` in these dashboards, else the alternation of its values), any other the
first of its values in its sort order; ``label_values`` through /api/v1/label/<label>/values
over the range. ``$__interval`` is the range over the panel's ``maxDataPoints`` (1000 when it
sets none), whole seconds, at least the 15 s scrape interval, and is a range query's step;
``$__rate_interval`` is max($__interval + 15 s, 60 s). A target marked ``instant`` is one
instant query at the end of the range. Collapsed rows' panels are not loaded, as in Grafana.
"""

from __future__ import annotations

import argparse
import http.server
import json
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import (
    CANNOT_RUN,
    FLEET_8X7,
    HERE,
    LOOPBACK,
    SRC,
    BenchmarkError,
    Server,
    free_port,
    get,
    post_json,
    report,
    series,
    start,
    start_exporter,
)

sys.path.insert(0, str(SRC))
from migexporter.mixin import alerts, dashboards, preview  # this checkout's mixin

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

NODES, QUICK_NODES = 100, 10
DURATION_S, QUICK_DURATION_S = 300, 45
REPETITIONS, QUICK_REPETITIONS = 3, 1
EVALUATIONS, QUICK_EVALUATIONS = 3, 1  # fresh evaluations of each rule group to take the median of
RULES_WAIT_S, QUICK_RULES_WAIT_S = 600.0, 20.0  # bound on waiting for them
PHASES = ("baseline", "current")
BASELINE = HERE / "baseline"
BASELINE_DASHBOARDS = ("mig-fleet", "mig-instance", "migexporter")
SCRAPE_INTERVAL_S, SCRAPE_TIMEOUT_S = 15, 10  # Grafana's default minimum interval
EXPORTER_INTERVAL = "15s"  # the exporter samples as often as it is scraped: spare cores
QUERY_TIMEOUT_S = 30.0  # Grafana's data-proxy timeout
MAX_DATA_POINTS = 1000  # Grafana's default when a panel sets none (about its width in pixels)
TARGETS_WAIT_S = 2 * SCRAPE_INTERVAL_S + 30.0
PROXY_CACHE_S = 1.0
POLL_S = 1.0
# While data accumulates, an XID every XID_EVERY_S on the exporter, so every virtual node has
# event series of each severity (page, ticket, info) for the XID rules and panels to read.
XID_EVERY_S = 30.0
# (gpu, GPU instance id, xid): ids that seven 1g instances have in either numbering of the halves
XIDS = ((0, 7, 48), (1, 8, 43), (2, 9, 31), (3, 11, 94), (1, 8, 43), (5, 12, 13))
MIB = 1 << 20
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_BUILTIN = re.compile(r"\$\{(__\w+)\}|\$(__\w+)")
_BRACED = re.compile(r"\$\{(\w+)\}")
_FIRST_NUMBER = re.compile(r".*?(\d+)")
_REGEX_SPECIAL = re.compile(r"[$^*{}\[\]'+?.()|]")
_QUERY_RESULT = re.compile(r"^query_result\((?P<expr>.+)\)$")
_LABEL_NAMES = re.compile(r"^label_names\(\)$")
_METRICS = re.compile(r"^metrics\((?P<regex>.*)\)$")


# --- the baseline's zero series ------------------------------------------------------------------
def _blocks(text: str) -> list[tuple[str, list[str]]]:
    """The exposition's lines grouped by metric family, in order: a block starts at a ``# HELP``
    or ``# TYPE`` line naming another family than the block before."""
    blocks: list[tuple[str, list[str]]] = [("", [])]
    for line in text.splitlines():
        words = line.split(maxsplit=3)
        comment = line.startswith("#") and len(words) > 2 and words[1] in {"HELP", "TYPE"}
        if comment and words[2] != blocks[-1][0]:
            blocks.append((words[2], []))
        blocks[-1][1].append(line)
    return blocks


def _sample_key(line: str) -> frozenset[tuple[str, str]]:
    """A sample line's labels as Prometheus sees them: an empty value is no label."""
    start, end = line.find("{"), line.rfind("}")
    text = line[start + 1 : end] if start != -1 else ""
    return frozenset((k, v) for k, v in _LABEL.findall(text) if v)


def with_zero_series(body: bytes, zeros: list[dict[str, str]]) -> tuple[bytes, int]:
    """``body`` with a zero sample of each of ``zeros`` on every GPU of its ``nvidia_gpu_info``,
    and how many lines that added.

    A zero line goes at the end of its family's block (one ``# TYPE`` per family, no family in
    two groups); a family the body lacks is appended with its own ``# TYPE`` line. A series
    the body already has (labels compared as Prometheus compares them) is not added twice.
    """
    gpus = sorted(
        (dict(key)["gpu"], dict(key)["gpu_uuid"]) for key in series(body, "nvidia_gpu_info")
    )
    blocks = _blocks(body.decode())
    names = [name for name, _ in blocks]
    added = 0
    for zero in zeros:
        metric = zero["metric"]
        if metric not in names:
            blocks.append((metric, [f"# TYPE {metric} counter"]))
            names.append(metric)
        lines = blocks[names.index(metric)][1]
        present = {_sample_key(line) for line in lines if not line.startswith("#")}
        for gpu, uuid in gpus:
            labels = {"gpu": gpu, "gpu_uuid": uuid} | (
                {zero["label"]: zero["value"]} if zero["label"] else {}
            )
            if frozenset(labels.items()) in present:
                continue
            lines.append(metric + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "} 0")
            added += 1
    text = "\n".join(line for _, lines in blocks for line in lines)
    return text.encode() + b"\n", added


class ZeroProxy(http.server.ThreadingHTTPServer):
    """Serves the exporter's /metrics with the baseline's zero series added; the augmented body
    is kept for PROXY_CACHE_S, so that N scrapes cost one fetch a second."""

    daemon_threads = True

    def __init__(self, upstream: str, zeros: list[dict[str, str]]) -> None:
        self.upstream = upstream
        self.zeros = zeros
        self.lock = threading.Lock()
        self.fetched_at = float("-inf")
        self.raw, self.body, self.added = b"", b"", 0
        super().__init__((LOOPBACK, 0), _ProxyHandler)

    def exposition(self) -> bytes:
        with self.lock:
            now = time.monotonic()
            if now - self.fetched_at >= PROXY_CACHE_S:
                raw = get(self.upstream, timeout=SCRAPE_TIMEOUT_S)  # plain text: no gzip asked
                if raw != self.raw:
                    self.raw = raw
                    self.body, self.added = with_zero_series(raw, self.zeros)
                self.fetched_at = now
            return self.body

    def address(self) -> str:
        return f"{LOOPBACK}:{self.server_port}"


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    server: ZeroProxy

    def do_GET(self) -> None:
        try:
            body = self.server.exposition()
        except OSError as error:
            self.send_error(503, str(error))
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        return


# --- Prometheus ----------------------------------------------------------------------------------
def _prometheus_binary() -> str:
    found = shutil.which("prometheus") or shutil.which("prometheus", path="/usr/bin")
    if not found:
        raise BenchmarkError("needs prometheus (apt-get install prometheus)")
    return found


def scrape_config(address: str, nodes: int, rules: Path) -> dict[str, Any]:
    """N targets of one job, all at ``address``, each with its own node's target labels."""
    targets = [
        {"targets": [address], "labels": {"instance": f"node-{i}:9945", "node": f"node-{i}"}}
        for i in range(1, nodes + 1)
    ]
    relabel = [
        {
            "source_labels": [label, "instance"],
            "regex": "(.+);(.+)",
            "target_label": label,
            "replacement": "${1}-${2}",
        }
        for label in ("gpu_uuid", "mig_uuid")
    ]
    interval = f"{SCRAPE_INTERVAL_S}s"
    return {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": f"{SCRAPE_TIMEOUT_S}s",
            "evaluation_interval": interval,
        },
        "rule_files": [str(rules)],
        "scrape_configs": [
            {"job_name": alerts.JOB, "static_configs": targets, "metric_relabel_configs": relabel}
        ],
    }


def start_prometheus(binary: str, workdir: Path, address: str, nodes: int, rules: Path) -> Server:
    config = workdir / "prometheus.yml"
    config.write_text(json.dumps(scrape_config(address, nodes, rules)))
    port = free_port()
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'tsdb'}",
        "--storage.tsdb.retention.time=1d",
        f"--web.listen-address={LOOPBACK}:{port}",
    ]
    return start("prometheus", argv, port, workdir / "prometheus.log", "/-/ready")


def api(url: str, path: str, **params: str) -> Any:
    """``data`` of a successful answer of Prometheus's HTTP API; BenchmarkError otherwise."""
    try:
        body = json.loads(
            get(f"{url}/api/v1/{path}?{urllib.parse.urlencode(params)}", timeout=QUERY_TIMEOUT_S)
        )
    except urllib.error.HTTPError as error:
        raise BenchmarkError(f"Prometheus {path}: {_error_text(error)}") from error
    except (OSError, ValueError) as error:
        raise BenchmarkError(f"Prometheus {path}: {error}") from error
    if body.get("status") != "success":
        raise BenchmarkError(f"Prometheus {path}: {body.get('error', body)}")
    return body["data"]


def _scalar(url: str, expr: str) -> float:
    result = api(url, "query", query=expr)["result"]
    return float(result[0]["value"][1]) if result else 0.0


def wait_for_targets(url: str, nodes: int) -> None:
    """Until every target has been scraped successfully once (bounded)."""
    deadline = time.monotonic() + TARGETS_WAIT_S
    up = 0.0
    while time.monotonic() < deadline:
        up = _scalar(url, f'count(up{{job="{alerts.JOB}"}} == 1)')
        if up >= nodes:
            return
        time.sleep(POLL_S)
    raise BenchmarkError(f"only {up:.0f} of {nodes} targets up after {TARGETS_WAIT_S:.0f}s")


def _unlabelled(body: bytes, metric: str) -> float:
    match = re.search(rb"^" + re.escape(metric.encode()) + rb" (\S+)$", body, re.MULTILINE)
    return float(match.group(1)) if match else float("nan")


def _by_group(body: bytes, metric: str) -> dict[str, float]:
    """A per-rule-group counter of Prometheus's own metrics, by group name (file dropped)."""
    return {
        dict(key)["rule_group"].rsplit(";", 1)[-1]: value
        for key, value in series(body, metric).items()
        if "rule_group" in dict(key)
    }


def self_metrics(url: str) -> dict[str, Any]:
    body = get(url + "/metrics")
    return {
        "head_series": int(_unlabelled(body, "prometheus_tsdb_head_series")),
        "prometheus_rss_bytes": int(_unlabelled(body, "process_resident_memory_bytes")),
        "missed": _by_group(body, "prometheus_rule_group_iterations_missed_total"),
        "failures": _by_group(body, "prometheus_rule_evaluation_failures_total"),
    }


# --- rule groups ---------------------------------------------------------------------------------
def _rule_names(rules: list[dict[str, Any]]) -> list[str]:
    """Rule names, made unique in order (recording rules may share a name)."""
    names: list[str] = []
    for rule in rules:
        name, n = rule["name"], 2
        while name in names:
            name, n = f"{rule['name']}#{n}", n + 1
        names.append(name)
    return names


@dataclass
class Sampled:
    """A rule group as last seen, its fresh evaluations, and whether one before them counts."""

    group: dict[str, Any]
    fresh: list[dict[str, Any]]
    before: dict[str, Any] | None  # None when the group had not been evaluated yet

    def samples(self) -> list[dict[str, Any]]:
        """The fresh evaluations, else the last one before them, else none."""
        return self.fresh or ([self.before] if self.before else [])


def _evaluated(group: dict[str, Any]) -> bool:
    return not str(group.get("lastEvaluation", "")).startswith("0001-")  # Go's zero time


def sample_groups(url: str, evaluations: int, wait_s: float) -> dict[str, Sampled]:
    """Each group's next ``evaluations`` evaluations, as /api/v1/rules reports them, waiting
    at most ``wait_s``; a group not evaluated again by then keeps its last one before."""
    first = {g["name"]: g for g in api(url, "rules")["groups"]}
    intervals = [float(g.get("interval") or SCRAPE_INTERVAL_S) for g in first.values()]
    deadline = time.monotonic() + min(wait_s, max(intervals, default=0.0) * (evaluations + 1) + 5)
    latest = dict(first)
    fresh: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in first}
    while time.monotonic() < deadline:
        for group in api(url, "rules")["groups"]:
            latest[group["name"]] = group
            if group["lastEvaluation"] != first.get(group["name"], {}).get("lastEvaluation"):
                fresh.setdefault(group["name"], {})[group["lastEvaluation"]] = group
        if all(len(found) >= evaluations for found in fresh.values()):
            break
        time.sleep(POLL_S)
    return {
        name: Sampled(
            latest[name],
            list(found.values())[:evaluations],
            first[name] if name in first and _evaluated(first[name]) else None,
        )
        for name, found in fresh.items()
    }


def _median_or_none(values: list[float]) -> float | None:
    return round(statistics.median(values), 6) if values else None


def group_figures(sampled: Sampled, missed: float, failures: float) -> dict[str, Any]:
    """A group's median evaluation time and its rules' (None where never evaluated)."""
    samples = sampled.samples()
    interval = float(sampled.group.get("interval") or SCRAPE_INTERVAL_S)
    median = _median_or_none([float(s["evaluationTime"]) for s in samples])
    rules: dict[str, Any] = {}
    for i, name in enumerate(_rule_names(sampled.group["rules"])):
        times = [float(s["rules"][i]["evaluationTime"]) for s in samples if len(s["rules"]) > i]
        rule = sampled.group["rules"][i]
        rules[name] = {"type": rule.get("type"), "eval_median_s": _median_or_none(times)}
        if rule.get("lastError"):
            rules[name]["error"] = rule["lastError"]
    return {
        "interval_s": interval,
        "eval_median_s": median,
        "share": None if median is None else round(median / interval, 6),
        "evaluations": len(sampled.fresh),
        "missed_iterations": int(missed),
        "failures": int(failures),
        "rules": rules,
    }


def measure_groups(url: str, evaluations: int, wait_s: float) -> dict[str, Any]:
    """Rule groups' evaluation times, then Prometheus's own figures."""
    sampled = sample_groups(url, evaluations, wait_s)
    own = self_metrics(url)
    groups = {
        name: group_figures(found, own["missed"].get(name, 0.0), own["failures"].get(name, 0.0))
        for name, found in sampled.items()
    }
    return {
        "head_series": own["head_series"],
        "prometheus_rss_bytes": own["prometheus_rss_bytes"],
        "groups": groups,
    }


# --- dashboards ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    """The dashboard's time range: the last ``range_s`` seconds up to ``end``."""

    end: float
    range_s: int

    @property
    def start(self) -> float:
        return self.end - self.range_s

    def interval_s(self, max_points: int | None) -> int:
        """Grafana's $__interval: the range over the panel's points, at least the scrape."""
        return max(SCRAPE_INTERVAL_S, round(self.range_s / (max_points or MAX_DATA_POINTS)))

    def builtins(self, interval_s: int) -> dict[str, str]:
        rate = max(interval_s + SCRAPE_INTERVAL_S, 4 * SCRAPE_INTERVAL_S)
        return {
            "__range": f"{self.range_s}s",
            "__range_s": str(self.range_s),
            "__range_ms": str(self.range_s * 1000),
            "__interval": f"{interval_s}s",
            "__interval_ms": str(interval_s * 1000),
            "__rate_interval": f"{rate}s",
        }


def interpolate(expr: str, values: dict[str, str], builtins: dict[str, str]) -> str:
    """``expr`` with Grafana's built-ins, then the dashboard's variables, replaced."""
    expr = _BUILTIN.sub(lambda m: builtins.get(m.group(1) or m.group(2), m.group(0)), expr)
    expr = _BRACED.sub(lambda m: values.get(m.group(1), m.group(0)), expr)
    return preview.substitute(expr, values)


def _regex_escape(value: str) -> str:
    """A value in a multi-value regex, escaped as Grafana's Prometheus data source does."""
    value = value.replace("\\", "\\\\\\\\")
    return _REGEX_SPECIAL.sub(lambda m: "\\\\" + m.group(0), value)


def _sorted(options: list[str], sort: int) -> list[str]:
    """Options in the variable's sort order (1/2 alphabetical, 3/4 numerical, 5/6 no case)."""
    if sort in {1, 2}:
        return sorted(options, reverse=sort == 2)
    if sort in {3, 4}:

        def number(option: str) -> int:
            match = _FIRST_NUMBER.match(option)
            return int(match.group(1)) if match else -1

        return sorted(options, key=number, reverse=sort == 4)
    if sort in {5, 6}:
        return sorted(options, key=str.lower, reverse=sort == 6)
    return options


def _filtered(options: list[str], regex: str | None) -> list[str]:
    """Options through the variable's regex: a match's first group, else the option."""
    if not regex:
        return options
    pattern = re.compile(regex.strip("/"))
    kept = []
    for option in options:
        match = pattern.search(option)
        if match:
            kept.append(match.group(1) if match.groups() else option)
    return list(dict.fromkeys(kept))


def _query_options(url: str, query: str, window: Window) -> tuple[list[str], str | None]:
    """A query variable's options, and a note where its form is resolved loosely."""
    span = {"start": str(window.start), "end": str(window.end)}
    match = dashboards.LABEL_VALUES.match(query)
    if match:
        params = span | ({"match[]": match["selector"]} if match["selector"] else {})
        return list(api(url, f"label/{match['label']}/values", **params)), None
    if _LABEL_NAMES.match(query):
        return list(api(url, "labels", **span)), None
    if match := _METRICS.match(query):
        names = api(url, "label/__name__/values", **span)
        return [n for n in names if re.search(match["regex"] or ".", n)], None
    if match := _QUERY_RESULT.match(query):
        result = api(url, "query", query=match["expr"], time=str(window.end))["result"]
        options = [
            s["metric"].get("__name__", "")
            + "{"
            + ", ".join(f'{k}="{v}"' for k, v in s["metric"].items() if k != "__name__")
            + "} "
            + f"{s['value'][1]} {int(float(s['value'][0]) * 1000)}"
            for s in result
        ]
        return options, "query_result: run as an instant query at the end of the range"
    return [], f"unsupported variable query {query!r}: left empty"


def _chosen(variable: dict[str, Any], options: list[str]) -> str:
    """What Grafana sets the variable to on open: All (its allValue, else every option) for a
    multi-value or include-All variable, else the first option."""
    if variable.get("multi") or variable.get("includeAll"):
        if variable.get("allValue"):
            return str(variable["allValue"])
        return "(" + "|".join(_regex_escape(o) for o in options) + ")"
    return options[0] if options else ""


def resolve(url: str, data: dict[str, Any], window: Window) -> tuple[dict[str, str], list[str]]:
    """The dashboard's variables in order, as Grafana sets them on open, and notes: a variable
    without values (an include-All one is still All), one resolved loosely, or one in error."""
    values: dict[str, str] = {}
    notes: list[str] = []
    builtins = window.builtins(window.interval_s(None))
    for variable in data.get("templating", {}).get("list", []):
        kind, name = variable.get("type"), variable["name"]
        query = variable.get("query", "")
        query = interpolate(
            query.get("query", "") if isinstance(query, dict) else str(query), values, builtins
        )
        options: list[str] = []
        if kind == "query":
            try:
                options, note = _query_options(url, query, window)
            except BenchmarkError as error:
                note = f"{error}"
            if note:
                notes.append(f"variable {name}: {note}")
        elif kind in {"custom", "interval"}:
            options = [o.strip() for o in query.split(",") if o.strip()]
        elif kind in {"constant", "textbox"}:
            options = [query]
        else:  # datasource, adhoc: nothing to put in a query
            continue
        options = _sorted(_filtered(options, variable.get("regex")), int(variable.get("sort") or 0))
        if not options and kind == "query":
            notes.append(f"variable {name} has no values: {query}")
        values[name] = _chosen(variable, options)
    return values, notes


@dataclass(frozen=True)
class Query:
    """One panel target as Grafana sends it."""

    panel: int  # the panel's index in the dashboard's list of panels with targets
    ref: str
    expr: str
    instant: bool
    step_s: int


@dataclass
class Answer:
    seconds: float
    series: int = 0
    bytes: int = 0
    error: str | None = None
    timed_out: bool = False


def panel_queries(
    data: dict[str, Any], values: dict[str, str], window: Window
) -> tuple[list[dict[str, Any]], list[Query]]:
    """The panels Grafana loads on open (collapsed rows' children wait for a click) and their
    visible targets, interpolated."""
    collapsed = {
        id(child)
        for row in data.get("panels", [])
        if row.get("collapsed")
        for child in row.get("panels", [])
    }
    shown = [p for p in dashboards.panels(data) if p.get("targets") and id(p) not in collapsed]
    queries = []
    for index, panel in enumerate(shown):
        step = window.interval_s(panel.get("maxDataPoints"))
        builtins = window.builtins(step)
        for target in panel["targets"]:
            if target.get("hide") or not target.get("expr"):
                continue
            expr = interpolate(target["expr"], values, builtins)
            queries.append(
                Query(index, target.get("refId", ""), expr, bool(target.get("instant")), step)
            )
    return shown, queries


def _error_text(error: urllib.error.HTTPError) -> str:
    with error:
        text = error.read()
    try:
        return str(json.loads(text).get("error", text.decode(errors="replace")))
    except ValueError:
        return f"HTTP {error.code}: {text[:200].decode(errors='replace')}"


def run_query(url: str, query: Query, window: Window, *, count: bool = True) -> Answer:
    """One target through the HTTP API, timed to the last byte; errors are answers too. The
    series are counted (JSON decoded) after the timing, and only with ``count``."""
    if query.instant:
        path, params = "query", {"query": query.expr, "time": str(window.end)}
    else:
        start = window.start // query.step_s * query.step_s
        end = window.end // query.step_s * query.step_s
        path = "query_range"
        params = {
            "query": query.expr,
            "start": str(start),
            "end": str(end),
            "step": str(query.step_s),
        }
    request = f"{url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    started = time.perf_counter()
    try:
        with _OPENER.open(request, timeout=QUERY_TIMEOUT_S) as reply:
            body = reply.read()
    except urllib.error.HTTPError as error:
        return Answer(time.perf_counter() - started, error=_error_text(error))
    except OSError as error:
        seconds = time.perf_counter() - started
        if isinstance(error, TimeoutError) or isinstance(
            getattr(error, "reason", None), TimeoutError
        ):
            return Answer(seconds, error=f"timed out after {QUERY_TIMEOUT_S:g}s", timed_out=True)
        return Answer(seconds, error=str(error))
    seconds = time.perf_counter() - started
    if not count:
        return Answer(seconds, 0, len(body))
    try:
        result = json.loads(body)["data"]["result"]
    except (ValueError, KeyError, TypeError) as error:
        return Answer(seconds, 0, len(body), error=f"not an API answer: {error}")
    return Answer(seconds, len(result) if isinstance(result, list) else 1, len(body))


def _sequence(url: str, queries: list[Query], window: Window) -> list[Answer]:
    return [run_query(url, q, window) for q in queries]


def _concurrently(url: str, queries: list[Query], window: Window) -> tuple[float, list[Answer]]:
    """All queries at once, one thread each, as a browser opening the dashboard; wall time.
    Answers are not decoded here, so that the client's GIL does not stretch the wall time."""
    with ThreadPoolExecutor(max_workers=max(1, len(queries))) as pool:
        started = time.perf_counter()
        answers = list(pool.map(lambda q: run_query(url, q, window, count=False), queries))
        return time.perf_counter() - started, answers


def _median(values: Iterable[float]) -> float:
    return round(statistics.median(values), 6)


def open_dashboard(
    url: str, data: dict[str, Any], window: Window, repetitions: int
) -> dict[str, Any]:
    """The dashboard opened with its default variables: in sequence, then all at once."""
    started = time.perf_counter()
    values, notes = resolve(url, data, window)
    variables_s = time.perf_counter() - started
    shown, queries = panel_queries(data, values, window)
    passes = [_sequence(url, queries, window) for _ in range(repetitions)]
    opened = [_concurrently(url, queries, window) for _ in range(repetitions)]
    panels = []
    for index, panel in enumerate(shown):
        mine = [i for i, q in enumerate(queries) if q.panel == index]
        panels.append({
            "title": panel.get("title", ""),
            "type": panel.get("type", ""),
            "queries": len(mine),
            "step_s": queries[mine[0]].step_s if mine else None,
            "seconds": _median(sum(answers[i].seconds for i in mine) for answers in passes),
            "series": sum(passes[0][i].series for i in mine),
            "bytes": sum(passes[0][i].bytes for i in mine),
        })  # fmt: skip
    errors = [
        {
            "panel": shown[q.panel].get("title", ""),
            "ref": q.ref,
            "error": a.error,
            "timed_out": a.timed_out,
        }
        for answers in (*passes, *(a for _, a in opened))
        for q, a in zip(queries, answers, strict=True)
        if a.error
    ]
    slowest = max(panels, key=lambda p: p["seconds"], default={"title": "", "seconds": 0.0})
    return {
        "variables": values,
        "variables_s": round(variables_s, 6),
        "queries": len(queries),
        "sequence_s": _median(sum(a.seconds for a in answers) for answers in passes),
        "concurrent_s": _median(wall for wall, _ in opened),
        "series": sum(a.series for a in passes[0]),
        "bytes": sum(a.bytes for a in passes[0]),
        "slowest_panel": {"title": slowest["title"], "seconds": slowest["seconds"]},
        "panels": panels,
        "notes": notes,
        "errors": [dict(e) for e in {json.dumps(e, sort_keys=True): e for e in errors}.values()],
    }


# --- the two phases ------------------------------------------------------------------------------
@dataclass
class Mixin:
    """A phase's rule file and dashboards (name -> JSON, or the error that stopped one)."""

    rules: str
    dashboards: dict[str, dict[str, Any] | str] = field(default_factory=dict)
    zeros: list[dict[str, str]] | None = None  # the baseline's pre-created series


def baseline_mixin() -> Mixin:
    boards: dict[str, dict[str, Any] | str] = {
        name: json.loads((BASELINE / f"{name}.json").read_text()) for name in BASELINE_DASHBOARDS
    }
    zeros = json.loads((BASELINE / "zero_series.json").read_text())
    return Mixin((BASELINE / "migexporter.rules.yml").read_text(), boards, zeros)


def current_mixin() -> Mixin:
    boards: dict[str, dict[str, Any] | str] = {}
    for name, build in dashboards.DASHBOARDS.items():
        try:
            boards[name] = json.loads(dashboards.as_json(build()))
        except Exception as error:
            boards[name] = f"cannot build: {type(error).__name__}: {error}"
    try:
        rules = alerts.rule_file()
    except Exception as error:
        raise BenchmarkError(
            f"cannot generate the rules: {type(error).__name__}: {error}"
        ) from error
    return Mixin(rules, boards)


@dataclass(frozen=True)
class Plan:
    """What one run measures."""

    nodes: int
    duration_s: int
    repetitions: int
    evaluations: int
    rules_wait_s: float


def _dashboard_figures(url: str, mixin: Mixin, plan: Plan) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for name, data in mixin.dashboards.items():
        if isinstance(data, str):
            figures[name] = {"errors": [data]}
            continue
        window = Window(time.time(), plan.duration_s)
        figures[name] = open_dashboard(url, data, window, plan.repetitions)
    return figures


def accumulate(exporter: Server, duration_s: float) -> int:
    """Let ``duration_s`` of data accumulate, injecting an XID every XID_EVERY_S; how many."""
    injected = 0
    deadline = time.monotonic() + duration_s
    while (left := deadline - time.monotonic()) > 0:
        gpu, gpu_instance_id, xid = XIDS[injected % len(XIDS)]
        body = {"gpu": gpu, "gpu_instance_id": gpu_instance_id, "xid": xid}
        post_json(f"{exporter.url}/api/sim/xid", body)
        injected += 1
        time.sleep(min(XID_EVERY_S, left))
    return injected


def run_phase(name: str, exporter: Server, binary: str, plan: Plan, work: Path) -> dict[str, Any]:
    """A fresh Prometheus with the phase's rules, ``duration_s`` of data, then the measures."""
    mixin = baseline_mixin() if name == "baseline" else current_mixin()
    with tempfile.TemporaryDirectory(prefix=f"{name}-", dir=work) as tmp:
        workdir = Path(tmp)
        rules = workdir / "rules.yml"
        rules.write_text(mixin.rules)
        proxy = None
        address = urllib.parse.urlsplit(exporter.url).netloc
        if mixin.zeros is not None:
            proxy = ZeroProxy(exporter.metrics_url(), mixin.zeros)
            threading.Thread(target=proxy.serve_forever, daemon=True).start()
            address = proxy.address()
        try:
            with start_prometheus(binary, workdir, address, plan.nodes, rules) as prometheus:
                wait_for_targets(prometheus.url, plan.nodes)
                figures_xids = accumulate(exporter, plan.duration_s)
                figures = measure_groups(prometheus.url, plan.evaluations, plan.rules_wait_s)
                figures["gpus"] = int(_scalar(prometheus.url, "count(nvidia_gpu_info)"))
                figures["dashboards"] = _dashboard_figures(prometheus.url, mixin, plan)
        finally:
            if proxy is not None:
                proxy.shutdown()
                proxy.server_close()
        figures["xids_injected"] = figures_xids
        if proxy is not None:
            figures["zero_series_added_per_scrape"] = proxy.added
        return figures


def _ratio(base: float | None, current: float | None) -> float | None:
    if base is None or current is None or not current:
        return None
    return round(base / current, 3)


def _total_share(groups: dict[str, Any]) -> float:
    """Seconds of rule evaluation per second of wall time, over every group."""
    return float(sum(g["share"] for g in groups.values() if g["share"] is not None))


def ratios(base: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """Baseline over current for each measure both phases have."""
    found: dict[str, Any] = {
        key: _ratio(base.get(key), current.get(key))
        for key in ("head_series", "prometheus_rss_bytes")
    }
    b_groups, c_groups = base.get("groups", {}), current.get("groups", {})
    found["groups"] = {
        name: _ratio(b_groups[name]["eval_median_s"], c_groups[name]["eval_median_s"])
        for name in b_groups
        if name in c_groups
    }
    found["rule_seconds_per_interval_second"] = _ratio(
        _total_share(b_groups), _total_share(c_groups)
    )
    b_boards, c_boards = base.get("dashboards", {}), current.get("dashboards", {})
    found["dashboards"] = {
        name: {
            key: _ratio(b_boards[name].get(key), c_boards[name].get(key))
            for key in ("sequence_s", "concurrent_s", "series", "bytes")
        }
        for name in b_boards
        if name in c_boards
    }
    return found


# --- summary -------------------------------------------------------------------------------------
def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1e3:.1f} ms"


def _error_line(error: dict[str, Any] | str) -> str:
    if isinstance(error, str):
        return error
    return f"panel {error['panel']!r} {error['ref']}: {error['error']}"


def table_row(name: str, nodes: int, figures: dict[str, Any]) -> str:
    """The phase as one row: nodes, head series, XID and health groups, the fleet dashboard."""
    groups, fleet = figures["groups"], figures["dashboards"].get("mig-fleet", {})

    def group(key: str) -> str:
        return _ms(groups[key]["eval_median_s"]) if key in groups else "n/a"

    return (
        f"{name} row: {nodes} nodes | {figures['head_series']:,} head series | "
        f"XID group {group('migexporter-xid')} | health group {group('migexporter-health')} | "
        f"mig-fleet in sequence {_ms(fleet.get('sequence_s'))}, "
        f"opened concurrently {_ms(fleet.get('concurrent_s'))}, {fleet.get('series', 0):,} series"
    )


def phase_summary(name: str, figures: dict[str, Any]) -> list[str]:
    if "error" in figures:
        return [f"{name}: FAILED: {figures['error']}"]
    rss_mib = figures["prometheus_rss_bytes"] / MIB
    head = f"{name}: {figures['head_series']:,} head series ({figures['gpus']} GPUs), "
    lines = [head + f"Prometheus RSS {rss_mib:.0f} MiB"]
    for group, g in figures["groups"].items():
        stale = "" if g["evaluations"] else ", no fresh evaluation"
        share = "n/a" if g["share"] is None else f"{g['share']:.2%}"
        lines.append(
            f"{name}: group {group}: {_ms(g['eval_median_s'])} per evaluation every "
            f"{g['interval_s']:g}s ({share} of it), {len(g['rules'])} rules, "
            f"{g['missed_iterations']} missed, {g['failures']} failures{stale}"
        )
    for board, d in figures["dashboards"].items():
        if "sequence_s" not in d:
            lines.append(f"{name}: dashboard {board}: {'; '.join(map(_error_line, d['errors']))}")
            continue
        slowest = d["slowest_panel"]
        lines.append(
            f"{name}: dashboard {board}: {d['queries']} queries "
            f"in sequence {_ms(d['sequence_s'])}, "
            f"opened concurrently {_ms(d['concurrent_s'])}, {d['series']:,} series, "
            f"{d['bytes'] / 1024:.0f} KiB; slowest panel {slowest['title']!r} "
            f"{_ms(slowest['seconds'])}; {len(d['errors'])} errors"
        )
        lines.extend(f"{name}: {board}: {_error_line(e)}" for e in d["errors"][:3])
        lines.extend(f"{name}: {board}: note: {note}" for note in d["notes"])
    return lines


def ratio_summary(found: dict[str, Any]) -> list[str]:
    def x(value: float | None) -> str:
        return "n/a" if value is None else f"{value:g}x"

    parts = [f"head series {x(found['head_series'])}"]
    parts += [f"group {name} {x(value)}" for name, value in found["groups"].items()]
    parts.append(f"rule time per interval {x(found['rule_seconds_per_interval_second'])}")
    for name, d in found["dashboards"].items():
        parts.append(
            f"{name} sequence {x(d['sequence_s'])}, concurrent {x(d['concurrent_s'])}, "
            f"series {x(d['series'])}"
        )
    return ["baseline/current: " + "; ".join(parts)]


# --- main ----------------------------------------------------------------------------------------
def _phases(text: str) -> tuple[str, ...]:
    chosen = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = [p for p in chosen if p not in PHASES]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"phases are {', '.join(PHASES)}; not {unknown}")
    return chosen


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_NODES} nodes, {QUICK_DURATION_S}s, {QUICK_REPETITIONS} repetition",
    )
    parser.add_argument("--nodes", type=int, default=NODES, help="virtual nodes (targets)")
    parser.add_argument("--duration", type=int, default=DURATION_S, help="seconds of data")
    parser.add_argument("--spec", default=FLEET_8X7, help="the simulated fleet of one node")
    parser.add_argument("--phases", type=_phases, default=PHASES, help="baseline,current")
    parser.add_argument(
        "--repetitions",
        type=int,
        default=REPETITIONS,
        help=f"openings of each dashboard, in sequence and concurrently (median; {REPETITIONS})",
    )
    return parser.parse_args()


def _plan(args: argparse.Namespace) -> Plan:
    if args.quick:
        return Plan(
            QUICK_NODES, QUICK_DURATION_S, QUICK_REPETITIONS, QUICK_EVALUATIONS, QUICK_RULES_WAIT_S
        )
    return Plan(args.nodes, args.duration, max(1, args.repetitions), EVALUATIONS, RULES_WAIT_S)


def measure(
    args: argparse.Namespace, plan: Plan, on_phase: Callable[[str], None]
) -> dict[str, Any]:
    """Every phase against one exporter; a phase that fails is reported, not raised."""
    binary = _prometheus_binary()
    phases: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        work = Path(tmp)
        with start_exporter(args.spec, work, interval=EXPORTER_INTERVAL) as exporter:
            for name in args.phases:
                on_phase(name)
                try:
                    phases[name] = run_phase(name, exporter, binary, plan, work)
                except Exception as error:
                    lines = str(error).strip().splitlines() or [""]
                    text = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
                    phases[name] = {"error": f"{type(error).__name__}: {text[:800]}"}
    return phases


def main() -> int:
    """Measure, print the figures and a summary."""
    args = _arguments()
    plan = _plan(args)
    try:
        phases = measure(args, plan, lambda name: print(f"fleet: {name} phase...", file=sys.stderr))
    except (BenchmarkError, OSError) as error:
        print(f"fleet: {error}", file=sys.stderr)
        return CANNOT_RUN
    figures: dict[str, Any] = {
        "nodes": plan.nodes,
        "duration_s": plan.duration_s,
        "spec": args.spec,
        "scrape_interval_s": SCRAPE_INTERVAL_S,
        "repetitions": plan.repetitions,
        "query_timeout_s": QUERY_TIMEOUT_S,
        "phases": phases,
    }
    summary = [f"{plan.nodes} nodes of {args.spec}, {plan.duration_s}s of data per phase"]
    for name, phase in phases.items():
        summary += phase_summary(name, phase)
    ok = {name: p for name, p in phases.items() if "error" not in p}
    summary += [table_row(name, plan.nodes, phase) for name, phase in ok.items()]
    figures["ratios"] = None
    if len(ok) == len(PHASES):
        figures["ratios"] = ratios(ok["baseline"], ok["current"])
        summary += ratio_summary(figures["ratios"])
    report("fleet", figures, summary)
    return 1 if len(ok) < len(phases) else 0


if __name__ == "__main__":
    sys.exit(main())
