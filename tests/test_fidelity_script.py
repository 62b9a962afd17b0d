"""benchmarks/fidelity.py, the real-versus-simulated comparison, checked on two simulators.

On the GPU machine it compares nvidia-ml-py with the fake; here both sides are fakes, so every
call must come out alike, and a fake changed on purpose must be caught call by call.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pynvml
import pytest

from migexporter.sim import FakeNvml, Fleet

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import fidelity

MODEL = "h200-141gb"


def _report(simulated: FakeNvml) -> dict[str, Any]:
    real = fidelity.open_library(FakeNvml(Fleet.from_spec(MODEL)))
    return fidelity.compare(real, fidelity.open_library(simulated))


def test_a_simulator_behaves_like_itself_and_every_function_is_covered() -> None:
    report = _report(FakeNvml(Fleet.from_spec(MODEL)))
    assert report["alike"] == report["calls"], [r for r in report["rows"] if not r["alike"]]
    assert report["uncovered"] == []
    assert report["functions_called"] + len(report["not_called"]) == report["functions_implemented"]


class _Drifted(FakeNvml):
    """A fake that went wrong in three ways code written for pynvml would notice."""

    def nvmlDeviceGetName(self, handle: Any) -> str:  # noqa: ARG002 (pynvml's signature)
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def nvmlDeviceGetMemoryInfo(self, handle: Any, version: Any = None) -> Any:
        answer = super().nvmlDeviceGetMemoryInfo(handle, version)
        answer.used = 0
        return answer

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:  # noqa: ARG002 (pynvml's signature)
        raise TypeError("no power today")


def test_a_drifted_fake_is_caught_call_by_call() -> None:
    report = _report(_Drifted(Fleet.from_spec(MODEL)))
    differing = {row["call"]: row["simulated"] for row in report["rows"] if not row["alike"]}
    assert differing.keys() == {
        "nvmlDeviceGetName(gpu)",
        "nvmlDeviceGetMemoryInfo(gpu)",
        "nvmlDeviceGetMemoryInfo(gpu, version=nvmlMemory_v2)",
        "nvmlDeviceGetPowerUsage(gpu)",
    }
    assert differing["nvmlDeviceGetName(gpu)"] == {"error": "NVMLError_NotSupported"}
    assert "used" not in differing["nvmlDeviceGetMemoryInfo(gpu)"]["set"]
    assert differing["nvmlDeviceGetPowerUsage(gpu)"] == {"raised": "TypeError: no power today"}
    assert report["alike"] == report["calls"] - 4


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            pynvml.c_nvmlUtilization_t(gpu=3, memory=0),
            {"type": "c_nvmlUtilization_t", "set": ["gpu"]},
        ),
        ([1, "a"], {"type": "list", "items": [{"type": "int"}, {"type": "str"}]}),
        (None, {"type": "NoneType"}),
    ],
)
def test_an_answer_is_reduced_to_its_type_and_set_fields(value: Any, expected: Any) -> None:
    assert fidelity.shape(value) == expected
