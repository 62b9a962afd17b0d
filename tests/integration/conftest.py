"""Fixtures for the integration tests: a simulated exporter and a real Prometheus scraping it.

Each child writes its output to a file that is attached to the report of every failing test that
used it. The helpers the fixtures are built from live in ``harness.py``.
"""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING

import pytest
from harness import Prometheus, Query, Service, start_exporter, start_prometheus

if TYPE_CHECKING:
    from collections.abc import Generator, Iterator


@pytest.fixture(scope="module")
def exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One simulated exporter (default fleet) shared by the tests of a module."""
    service = start_exporter(tmp_path_factory.mktemp("exporter"))
    yield service
    service.stop()


@pytest.fixture(scope="module")
def prometheus(exporter: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """A real Prometheus scraping the module's exporter every second."""
    target = urllib.parse.urlsplit(exporter.url).netloc
    server = start_prometheus(tmp_path_factory.mktemp("prometheus"), [target])
    yield server
    server.service.stop()


@pytest.fixture(scope="module")
def query(prometheus: Prometheus) -> Query:
    """``query(expr)``: the module's Prometheus evaluating an instant query now."""
    return prometheus.query


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item,
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the output of the exporter and Prometheus to each failing test that used them."""
    report = yield
    if report.failed:
        for value in getattr(item, "funcargs", {}).values():
            service = value.service if isinstance(value, Prometheus) else value
            if isinstance(service, Service):
                report.sections.append((f"{service.name} log", service.log_tail()))
    return report
