"""Fleet specs and scenario files: what parses, what is refused and how it says so."""

from __future__ import annotations

import asyncio
import logging
import textwrap

import pynvml
import pytest

from migexporter.sim import FakeNvml, Fleet, SimError, load_scenario, run_scenario


def shape(fleet: Fleet) -> list[tuple[str, bool, list[str]]]:
    """(model, MIG enabled, GI profiles) per GPU."""
    return [
        (g["model"], g["mig_enabled"], [gi["profile"] for gi in g["gpu_instances"]])
        for g in fleet.describe()["gpus"]
    ]


def test_default_is_the_documented_spec():
    """The word default, in any case, is the three-H100 fleet."""
    spelled = "h100-80gb:3g.40gb+2g.20gb+1g.10gb*2,h100-80gb:1g.10gb*7,h100-80gb"
    assert shape(Fleet.from_spec("DEFAULT")) == shape(Fleet.from_spec(spelled))
    assert shape(Fleet.default()) == shape(Fleet.from_spec(spelled))


def test_repeated_gpus_and_models_are_case_insensitive():
    """N*MODEL repeats a GPU; model names ignore case."""
    fleet = Fleet.from_spec("8*H100-80GB:1g.10gb*7")
    assert shape(fleet) == [("h100-80gb", True, ["1g.10gb"] * 7)] * 8
    assert len({g["uuid"] for g in fleet.describe()["gpus"]}) == 8


def test_a_colon_alone_enables_mig_without_instances():
    """MODEL is MIG disabled; MODEL: is MIG enabled and empty."""
    assert shape(Fleet.from_spec("a30, a100-40gb:")) == [
        ("a30", False, []),
        ("a100-40gb", True, []),
    ]


def test_compute_instances_inside_a_gpu_instance():
    """GI/CI*N creates N compute instances in each GPU instance."""
    fleet = Fleet.from_spec("a100-80gb:3g.40gb*2/1c*3")
    gis = fleet.describe()["gpus"][0]["gpu_instances"]
    assert [[ci["profile"] for ci in gi["compute_instances"]] for gi in gis] == [
        ["1c.3g.40gb"] * 3
    ] * 2


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ("", "it is empty"),
        ("h100", "unknown GPU model 'h100'; valid: a100-40gb, a100-80gb, h100-80gb"),
        ("h100-80gb:9g.90gb", "unknown profile '9g.90gb' for h100-80gb; valid profiles: 1g.10gb"),
        ("h100-80gb:3g.40gb*3", "using profile 3g.40gb: Insufficient Resources"),
        ("h100-80gb,h100-80gb:7g.80gb+1g.10gb", "on GPU 1 using profile 1g.10gb"),
        ("h100-80gb:1g.10gb+", "empty profile between '+' signs"),
        ("h100-80gb:1g.10gb*0", "the count must be 1 to 64"),
        ("0*a30", "the count must be at least 1"),
        ("65*a30", "more than 64 GPUs"),
        ("h100-80gb:7g.80gb/9c", "unknown compute-instance profile '9c' in 7g.80gb"),
        ("h100-80gb:3g.40gb/2c*2", "do not fit in one 3g.40gb"),
        ("h100-80gb;a30", "is not [N*]MODEL[:PROFILES]"),
        ("a30,,a30", "GPU entry 2 '' is not"),
    ],
)
def test_bad_specs_say_what_is_wrong_in_one_line(spec, complaint):
    """Each mistake raises SimError (a ValueError) naming the spec and the problem."""
    with pytest.raises(SimError) as caught:
        Fleet.from_spec(spec)
    message = str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert message.startswith(f"invalid fleet spec {spec.strip()!r}: ")
    assert complaint in message
    assert "\n" not in message


SCENARIO = """\
fleet: "h100-80gb:1g.10gb*7,h100-80gb"
seed: 4
steps:
  - at: 0
    xid: {gpu: 0, gpu_instance_id: 9, compute_instance_id: 0, xid: 48}
  - at: 0.05
    mig: {gpu: 1, profiles: [3g.40gb, 3g.40gb]}
  - at: 0.1
    every: 30
    fault: {gpu: 0, kind: hang}
"""


def test_a_scenario_file_loads(tmp_path):
    """Fleet, seed and steps come out of the YAML, validated."""
    path = tmp_path / "demo.yaml"
    path.write_text(SCENARIO)
    scenario = load_scenario(path)
    assert (scenario.fleet, scenario.seed) == ("h100-80gb:1g.10gb*7,h100-80gb", 4)
    assert [(s.at, s.verb, s.every) for s in scenario.steps] == [
        (0.0, "xid", None),
        (0.05, "mig", None),
        (0.1, "fault", 30.0),
    ]
    assert scenario.steps[1].args == {"gpu": 1, "profiles": ["3g.40gb", "3g.40gb"]}
    assert shape(scenario.build_fleet())[0] == ("h100-80gb", True, ["1g.10gb"] * 7)


def test_an_empty_file_is_the_default_fleet_with_no_steps(tmp_path):
    """Every key is optional."""
    path = tmp_path / "empty.yaml"
    path.write_text("")
    scenario = load_scenario(path)
    assert (scenario.fleet, scenario.seed, scenario.steps) == ("default", 0, ())


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("fleets: default", "scenario: unknown key 'fleets' (valid: fleet, seed, steps)"),
        ("- 1\n- 2", "scenario: expected a mapping, got list"),
        ("fleet: 3", "fleet: expected a spec string, got 3"),
        ("fleet: h100", "unknown GPU model 'h100'"),
        ("seed: yes", "seed: expected an integer, got True"),
        ("steps: {}", "steps: expected a list"),
        ("steps: [{at: 1}]", "steps[0]: give exactly one of xid, mig, fault"),
        ("steps: [{xid: {gpu: 0, xid: 1}}]", "steps[0]: missing key 'at'"),
        ("steps: [{at: -1, xid: {gpu: 0, xid: 1}}]", "steps[0].at: expected seconds >= 0"),
        ("steps: [{at: 1, every: 0, xid: {gpu: 0, xid: 1}}]", "steps[0].every: expected"),
        ("steps: [{at: 1, when: 2, xid: {gpu: 0, xid: 1}}]", "steps[0]: unknown key 'when'"),
        ("steps: [{at: 1, xid: {gpu: 0}}]", "steps[0].xid: missing key 'xid'"),
        ("steps: [{at: 1, xid: {gpu: 9, xid: 1}}]", "steps[0].xid.gpu: 9 is not a GPU index"),
        ("steps: [{at: 1, xid: {gpu: 0, xid: '48'}}]", "steps[0].xid.xid: expected an integer"),
        ("steps: [{at: 1, xid: {gpu: 0, xid: 1, count: 0}}]", "steps[0].xid.count: must be"),
        ("steps: [{at: 1, mig: {gpu: 0, profiles: 3g.40gb}}]", "expected a list of profile"),
        ("steps: [{at: 1, mig: {gpu: 0, profiles: [9g.1gb]}}]", "steps[0].mig: unknown profile"),
        ("steps: [{at: 1, mig: {gpu: 2, profiles: [7g.80gb, 1g.10gb]}}]", "Insufficient"),
        ("steps: [{at: 1, fault: {gpu: 0, kind: melt}}]", "steps[0].fault.kind: 'melt' is not"),
        ("steps: [{at: 1, fault: [0]}]", "steps[0].fault: expected a mapping"),
        ("steps: [{at: 1, ecc: {count: 2}}]", "steps[0].ecc: missing key 'gpu'"),
        ("steps: [{at: 1, ecc: {gpu: 5}}]", "steps[0].ecc.gpu: 5 is not a GPU index"),
        ("steps: [{at: 1, ecc: {gpu: 0, count: 0}}]", "steps[0].ecc.count: must be between"),
        ("steps: [{at: 1, ecc: {gpu: 0, count: two}}]", "steps[0].ecc.count: expected an int"),
        ("steps: [{at: 1, ecc: {gpu: 0, uncorrected: 1}}]", "steps[0].ecc.uncorrected: expected"),
        ("steps: [{at: 1, ecc: {gpu: 0, xid: 48}}]", "steps[0].ecc: unknown key 'xid'"),
        ("steps: [{at: 1, recovery: {gpu: 0}}]", "steps[0].recovery: missing key 'action'"),
        (
            "steps: [{at: 1, recovery: {gpu: 0, action: reboot}}]",
            "steps[0].recovery.action: unknown recovery action 'reboot'; valid: none, gpu_reset",
        ),
        ("steps: [{at: 1, recovery: {gpu: 0, action: 99}}]", "unknown recovery action 99"),
        ("steps: [{at: 1, recovery: {gpu: 0, action: yes}}]", "unknown recovery action True"),
        (
            "steps: [{at: 1, ecc: {gpu: 0}, recovery: {gpu: 0, action: none}}]",
            "steps[0]: give exactly one of xid, mig, fault, ecc, recovery",
        ),
        ("fleet: [unclosed", "not valid YAML at line 1"),
    ],
)
def test_bad_scenarios_name_the_file_and_the_problem(tmp_path, text, complaint):
    """Unknown keys, wrong types and bad verbs raise one line naming the file."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SimError) as caught:
        load_scenario(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert complaint in message
    assert "\n" not in message


def test_a_missing_scenario_file_is_reported(tmp_path):
    """A path that cannot be read gives a SimError, not an OSError."""
    with pytest.raises(SimError, match="cannot read the scenario"):
        load_scenario(tmp_path / "nope.yaml")


async def test_a_scenario_plays_its_steps_and_survives_a_failing_one(tmp_path, caplog):
    """Steps happen in time order; a refused step is logged and the rest still run."""
    path = tmp_path / "play.yaml"
    path.write_text(
        textwrap.dedent("""\
        fleet: "h100-80gb:1g.10gb*7,h100-80gb"
        steps:
          - {at: 0.02, xid: {gpu: 0, gpu_instance_id: 9, compute_instance_id: 0, xid: 48}}
          - {at: 0.01, xid: {gpu: 0, gpu_instance_id: 99, xid: 13}}
          - {at: 0.03, mig: {gpu: 1, profiles: [3g.40gb, 3g.40gb]}}
          - {at: 0.04, fault: {gpu: 1, kind: fall_off_bus}}
        """)
    )
    scenario = load_scenario(path)
    fleet = scenario.build_fleet()
    nv = FakeNvml(fleet)
    nv.nvmlInit()
    event_set = nv.nvmlEventSetCreate()
    xid = pynvml.nvmlEventTypeXidCriticalError
    nv.nvmlDeviceRegisterEvents(nv.nvmlDeviceGetHandleByIndex(0), xid, event_set)
    with caplog.at_level(logging.INFO, logger="migexporter.sim.scenario"):
        await asyncio.wait_for(run_scenario(scenario, fleet), timeout=5)
    data = nv.nvmlEventSetWait_v2(event_set, 0)
    assert (data.eventData, data.gpuInstanceId, data.computeInstanceId) == (48, 9, 0)
    gpus = fleet.describe()["gpus"]
    assert [gi["profile"] for gi in gpus[1]["gpu_instances"]] == ["3g.40gb", "3g.40gb"]
    assert gpus[1]["state"] == "lost"
    failures = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(failures) == 1
    assert "no GPU instance 99" in failures[0].getMessage()


async def test_repeating_steps_repeat_on_the_scenarios_clock(tmp_path):
    """A step with every: runs again each period until the runner is cancelled."""
    path = tmp_path / "repeat.yaml"
    path.write_text("fleet: h100-80gb\nsteps: [{at: 0, every: 0.25, xid: {gpu: 0, xid: 31}}]\n")
    scenario = load_scenario(path)
    fleet = scenario.build_fleet()
    nv = FakeNvml(fleet)
    nv.nvmlInit()
    event_set = nv.nvmlEventSetCreate()
    xid = pynvml.nvmlEventTypeXidCriticalError
    nv.nvmlDeviceRegisterEvents(nv.nvmlDeviceGetHandleByIndex(0), xid, event_set)
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds
        if now[0] > 1.1:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await run_scenario(scenario, fleet, clock=lambda: now[0], sleep=sleep)
    delivered = 0
    while True:
        try:
            nv.nvmlEventSetWait_v2(event_set, 0)
        except pynvml.NVMLError_Timeout:
            break
        delivered += 1
    assert delivered == 5  # at 0, 0.25, 0.5, 0.75 and 1.0


async def test_ecc_and_recovery_steps_load_and_play(tmp_path):
    """The ecc and recovery verbs load with their defaults and act through the fleet."""
    path = tmp_path / "events.yaml"
    path.write_text(
        textwrap.dedent("""\
        fleet: h100-80gb,h100-80gb
        steps:
          - {at: 0, ecc: {gpu: 0}}
          - {at: 0.01, ecc: {gpu: 1, uncorrected: true, count: 2}}
          - {at: 0.02, recovery: {gpu: 1, action: drain_p2p}}
          - {at: 0.03, recovery: {gpu: 0, action: 2}}
        """)
    )
    scenario = load_scenario(path)
    assert [(s.verb, s.args) for s in scenario.steps] == [
        ("ecc", {"gpu": 0}),
        ("ecc", {"gpu": 1, "uncorrected": True, "count": 2}),
        ("recovery", {"gpu": 1, "action": "drain_p2p"}),
        ("recovery", {"gpu": 0, "action": 2}),
    ]
    fleet = scenario.build_fleet()
    nv = FakeNvml(fleet)
    nv.nvmlInit()
    event_set = nv.nvmlEventSetCreate()
    mask = pynvml.nvmlEventTypeDoubleBitEccError | pynvml.nvmlEventTypeGpuRecoveryAction
    nv.nvmlDeviceRegisterEvents(nv.nvmlDeviceGetHandleByIndex(1), mask, event_set)
    await asyncio.wait_for(run_scenario(scenario, fleet), timeout=5)
    kinds = [nv.nvmlEventSetWait_v2(event_set, 0).eventType for _ in range(3)]
    assert kinds == [
        pynvml.nvmlEventTypeDoubleBitEccError,
        pynvml.nvmlEventTypeDoubleBitEccError,
        pynvml.nvmlEventTypeGpuRecoveryAction,
    ]
    assert [gpu.ecc for gpu in fleet.gpus] == [{(0, 0): 1, (0, 1): 1}, {(1, 0): 2, (1, 1): 2}]
    assert [g["recovery_action"] for g in fleet.describe()["gpus"]] == ["node_reboot", "drain_p2p"]


async def test_a_scenario_can_overheat_a_gpu_and_let_it_cool(tmp_path):
    """The overheat fault is a valid scenario step; recover ends it."""
    path = tmp_path / "heat.yaml"
    path.write_text(
        textwrap.dedent("""\
        fleet: "h100-80gb,h100-80gb"
        steps:
          - {at: 0.01, fault: {gpu: 1, kind: overheat}}
          - {at: 0.02, fault: {gpu: 0, kind: overheat}}
          - {at: 0.03, fault: {gpu: 0, kind: recover}}
        """)
    )
    scenario = load_scenario(path)
    fleet = scenario.build_fleet()
    await asyncio.wait_for(run_scenario(scenario, fleet), timeout=5)
    assert [g["overheated"] for g in fleet.describe()["gpus"]] == [False, True]
