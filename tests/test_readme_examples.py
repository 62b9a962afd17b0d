"""The README's fleet specs and scenario example are valid input, as a user would paste them."""

from __future__ import annotations

import re
from pathlib import Path

from migexporter.sim import Fleet
from migexporter.sim.scenario import load_scenario

README = Path(__file__).resolve().parents[1] / "README.md"


def _block(name: str) -> str:
    """The fenced block between the README's ``<!-- name:start -->`` and ``:end`` markers."""
    text = README.read_text(encoding="utf-8")
    between = text.split(f"<!-- {name}:start -->", 1)[1].split(f"<!-- {name}:end -->", 1)[0]
    match = re.search(r"```\w*\n(.*?)```", between, re.DOTALL)
    assert match, f"no fenced block between the {name} markers"
    return match.group(1)


def test_every_fleet_spec_of_the_readme_builds_a_fleet() -> None:
    specs = [line for line in _block("fleet-specs").splitlines() if line.strip()]
    assert len(specs) >= 4
    sizes = [len(Fleet.from_spec(spec).gpus) for spec in specs]
    assert sizes == [1, 8, 3, 3]


def test_the_readme_scenario_loads(tmp_path: Path) -> None:
    path = tmp_path / "scenario.yaml"
    path.write_text(_block("scenario"), encoding="utf-8")
    scenario = load_scenario(path)
    assert [step.verb for step in scenario.steps] == [
        "xid", "ecc", "mig", "fault", "fault", "mig", "claim", "claim", "release",
    ]  # fmt: skip
    assert scenario.uses_dra
    fleet = scenario.build_fleet()
    assert len(fleet.gpus) == 2
    (first,) = [step for step in scenario.steps if step.verb == "xid"]
    assert fleet.inject_xid(**first.args)["count"] == 1  # its instance exists in that fleet
