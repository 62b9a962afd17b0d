"""Fixtures for the hardware tests: the real driver, the exporter on it, and the figures seen.

Every test here is skipped when no NVIDIA driver answers; that is the only skip. The figures
each test records are printed at the end of the run and, when ``MIGEXPORTER_HW_REPORT`` names a
directory, written there as ``<test>.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from gpu_harness import Exporter, Gpu

if TYPE_CHECKING:
    from collections.abc import Generator, Iterator
    from types import ModuleType

    from pluggy import Result

EXPORTER_INTERVAL_S = 0.25
REPORT_DIR_ENV = "MIGEXPORTER_HW_REPORT"
_FIGURES = pytest.StashKey[dict[str, dict[str, Any]]]()


@pytest.fixture(scope="session", autouse=True)
def nvml() -> Iterator[ModuleType]:
    """pynvml, initialised; without an NVIDIA driver every test here is skipped."""
    import pynvml  # noqa: PLC0415  (a missing nvidia-ml-py is an error, not a reason to skip)

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        pytest.skip(f"no NVIDIA driver: {error}")
    yield pynvml
    pynvml.nvmlShutdown()


@pytest.fixture(scope="session")
def gpu0(nvml: ModuleType) -> Gpu:
    """GPU 0, the one the load helpers run on and whose series the tests read."""
    handle = nvml.nvmlDeviceGetHandleByIndex(0)
    return Gpu(0, str(nvml.nvmlDeviceGetUUID(handle)), handle)


@pytest.fixture(scope="module")
def exporter(nvml: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exporter]:
    """The exporter on the real driver, sampling every 0.25 s, on a free loopback port."""
    log_path = tmp_path_factory.mktemp("exporter") / "exporter.log"
    process = Exporter.start(log_path, EXPORTER_INTERVAL_S)
    yield process
    process.stop()


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """A dict the test fills with what it measured; reported even when the test fails."""
    seen: dict[str, Any] = {}
    yield seen
    name = request.node.name
    request.config.stash.setdefault(_FIGURES, {})[name] = seen
    report_dir = os.environ.get(REPORT_DIR_ENV)
    if report_dir:
        path = Path(report_dir) / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(seen, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print every test's figures after the run, whatever the verbosity."""
    recorded = terminalreporter.config.stash.get(_FIGURES, {})
    if recorded:
        terminalreporter.write_sep("-", "hardware figures")
        for name, seen in recorded.items():
            terminalreporter.write_line(f"{name}: {json.dumps(seen, sort_keys=True)}")


# Old-style wrapper on purpose: the GPU machine's pytest may predate wrapper=True.
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, Result[Any], None]:
    """Attach the exporter's output to each failing test that used it."""
    outcome = yield
    report = outcome.get_result()
    process = getattr(item, "funcargs", {}).get("exporter")
    if report.failed and isinstance(process, Exporter):
        report.sections.append(("exporter log", process.log_tail()))
