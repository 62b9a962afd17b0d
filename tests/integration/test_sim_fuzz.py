"""A fuzz run of the simulator's control API: bad bodies get a 4xx with a JSON error, never a 5xx.

Bodies are drawn by hypothesis: arbitrary JSON shaped like the real ones (the right keys with
wrong values, extra keys, wrong types) and arbitrary bytes. A body the simulator accepts is
applied (200), so the fleet changes under the fuzzing too, as it would under a careless user.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

import pytest
from harness import Service, start_exporter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.integration

ROUTES = ["/api/sim/xid", "/api/sim/ecc", "/api/sim/recovery", "/api/sim/mig", "/api/sim/fault"]
KEYS = ["gpu", "xid", "gpu_instance_id", "compute_instance_id", "count", "uncorrected",
        "action", "profiles", "kind"]  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(["gpu_reset", "fall_off_bus", "recover", "1g.10gb", "3g.40gb", "hang"]),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), inner, max_size=5),
    ),
    max_leaves=10,
)
SETTINGS = settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    service = start_exporter(tmp_path_factory.mktemp("fuzz"), "--backend", "nvml")
    yield service
    service.stop()


def _raw_post(exporter: Service, route: str, body: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(exporter.url + route, data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read() or b"null")
    except urllib.error.HTTPError as error:
        with error:
            text = error.read()
        return error.code, json.loads(text) if text.startswith(b"{") else text


@SETTINGS
@given(route=st.sampled_from(ROUTES), body=JSON)
def test_json_bodies_get_200_or_a_4xx_with_an_error(
    exporter: Service, route: str, body: object
) -> None:
    status, answer = _raw_post(exporter, route, json.dumps(body).encode())
    assert status == 200 or 400 <= status < 500, (status, answer)
    if status != 200:
        assert isinstance(answer, dict), answer
        assert isinstance(answer.get("error"), str), answer
    assert exporter.get("/-/healthy").status == 200


@SETTINGS
@given(route=st.sampled_from(ROUTES), body=st.binary(max_size=300))
def test_arbitrary_bytes_get_a_4xx(exporter: Service, route: str, body: bytes) -> None:
    status, _ = _raw_post(exporter, route, body)
    assert status == 200 or 400 <= status < 500, status


def test_the_exporter_serves_after_the_fuzzing(exporter: Service) -> None:
    assert exporter.process.poll() is None
    assert exporter.get("/metrics").status == 200
