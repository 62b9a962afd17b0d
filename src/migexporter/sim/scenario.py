"""Scenario files: a fleet and timed operator steps (driver events, MIG, faults), from YAML."""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from migexporter.sim._spec import check_fits, parse_fleet, parse_layout
from migexporter.sim.fleet import FAULTS, MAX_EVENTS, Fleet, recovery_action_value
from migexporter.sim.profiles import SimError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from migexporter.sim._spec import GpuSpec
    from migexporter.sim.kubelet import DraNode

log = logging.getLogger(__name__)

_TOP_KEYS = ("fleet", "seed", "steps")
_VERBS: dict[str, dict[str, bool]] = {  # verb -> argument -> required
    "xid": {
        "gpu": True,
        "xid": True,
        "gpu_instance_id": False,
        "compute_instance_id": False,
        "count": False,
    },
    "mig": {"gpu": True, "profiles": True},
    "fault": {"gpu": True, "kind": True},
    "ecc": {"gpu": True, "uncorrected": False, "count": False},
    "recovery": {"gpu": True, "action": True},
    # NVIDIA's DRA driver on the node (sim.kubelet.DraNode): allocate a claim's device to a pod
    # (a MIG device of ``profile``, created for it, else the whole GPU), and release it.
    "claim": {
        "gpu": True,
        "pod": True,
        "claim": True,
        "profile": False,
        "gpu_instance_id": False,
        "namespace": False,
        "container": False,
    },
    "release": {"claim": True, "namespace": False},
}
DRA_VERBS = ("claim", "release")
_INTEGERS = {  # verb -> its arguments that must be integers
    "xid": ("xid", "gpu_instance_id", "compute_instance_id", "count"),
    "ecc": ("count",),
    "claim": ("gpu_instance_id",),
}


@dataclass(frozen=True)
class Step:
    """One operator action at ``at`` seconds after the start, repeated ``every`` seconds."""

    at: float
    verb: str  # one of _VERBS: "xid", "mig", "fault", "ecc", "recovery", "claim", "release"
    args: Mapping[str, Any]
    every: float | None = None


@dataclass(frozen=True)
class Scenario:
    """A fleet spec, its seed, and the steps to play against it."""

    fleet: str = "default"
    seed: int = 0
    steps: tuple[Step, ...] = field(default_factory=tuple)

    @property
    def uses_dra(self) -> bool:
        """Whether a step allocates or releases a DRA claim (the node then has a kubelet)."""
        return any(step.verb in DRA_VERBS for step in self.steps)

    def build_fleet(self, *, clock: Callable[[], float] = time.monotonic) -> Fleet:
        """The fleet the scenario starts from."""
        return Fleet.from_spec(self.fleet, seed=self.seed, clock=clock)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _keys(where: str, data: object, allowed: Mapping[str, bool]) -> Mapping[str, Any]:
    """``data`` as a mapping with only ``allowed`` keys and every required one present."""
    if not isinstance(data, dict):
        raise SimError(f"{where}: expected a mapping, got {type(data).__name__}")
    for key in data:
        if key not in allowed:
            raise SimError(f"{where}: unknown key {key!r} (valid: {', '.join(allowed)})")
    for key, required in allowed.items():
        if required and key not in data:
            raise SimError(f"{where}: missing key {key!r}")
    return data


def _check_events(where: str, verb: str, args: Mapping[str, Any]) -> None:
    """The arguments of the event verbs (xid, ecc, recovery), beyond the GPU index."""
    for key in _INTEGERS.get(verb, ()):
        if key in args and not _is_int(args[key]):
            raise SimError(f"{where}.{key}: expected an integer, got {args[key]!r}")
    if not 1 <= args.get("count", 1) <= MAX_EVENTS:
        raise SimError(f"{where}.count: must be between 1 and {MAX_EVENTS}")
    if not isinstance(args.get("uncorrected", False), bool):
        raise SimError(f"{where}.uncorrected: expected true or false, got {args['uncorrected']!r}")
    if "action" in args:
        try:
            recovery_action_value(args["action"])
        except SimError as error:
            raise SimError(f"{where}.action: {error}") from None


def _check_names(where: str, args: Mapping[str, Any]) -> None:
    """The pod, claim, namespace and container of the DRA verbs: non-empty strings."""
    for key in ("pod", "claim", "namespace", "container"):
        if key in args and (not isinstance(args[key], str) or not args[key]):
            raise SimError(f"{where}.{key}: expected a name, got {args[key]!r}")


def _check_claim(where: str, args: Mapping[str, Any], gpu: GpuSpec) -> None:
    """A claim's device: a profile to make, an existing GPU instance, or neither (whole)."""
    _check_events(where, "claim", args)  # gpu_instance_id, an integer
    if "profile" in args and "gpu_instance_id" in args:
        raise SimError(f"{where}: give profile or gpu_instance_id, not both")
    if "profile" in args:
        if not isinstance(args["profile"], str):
            raise SimError(f"{where}.profile: expected a profile name")
        parse_layout(gpu.model, [args["profile"]])


def _check_args(where: str, verb: str, args: Mapping[str, Any], gpus: list[GpuSpec]) -> None:
    _check_names(where, args)
    if verb == "release":
        return
    gpu = args["gpu"]
    if not _is_int(gpu) or not 0 <= gpu < len(gpus):
        raise SimError(f"{where}.gpu: {gpu!r} is not a GPU index of the fleet (0-{len(gpus) - 1})")
    if verb in ("xid", "ecc", "recovery"):
        _check_events(where, verb, args)
    elif verb == "claim":
        _check_claim(where, args, gpus[gpu])
    elif verb == "mig":
        profiles = args["profiles"]
        if not isinstance(profiles, list) or not all(isinstance(p, str) for p in profiles):
            raise SimError(f"{where}.profiles: expected a list of profile names")
        model = gpus[gpu].model
        check_fits(model, parse_layout(model, profiles), gpu)
    elif args["kind"] not in FAULTS:
        raise SimError(f"{where}.kind: {args['kind']!r} is not one of {', '.join(FAULTS)}")


def _step(where: str, data: object, gpus: list[GpuSpec]) -> Step:
    allowed = {"at": True, "every": False, **dict.fromkeys(_VERBS, False)}
    raw = _keys(where, data, allowed)
    verbs = [verb for verb in _VERBS if verb in raw]
    if len(verbs) != 1:
        raise SimError(f"{where}: give exactly one of {', '.join(_VERBS)}")
    at, every = raw["at"], raw.get("every")
    if not _is_number(at) or at < 0:
        raise SimError(f"{where}.at: expected seconds >= 0, got {at!r}")
    if every is not None and (not _is_number(every) or every <= 0):
        raise SimError(f"{where}.every: expected seconds > 0, got {every!r}")
    verb = verbs[0]
    try:
        args = _keys(f"{where}.{verb}", raw[verb], _VERBS[verb])
        _check_args(f"{where}.{verb}", verb, args, gpus)
    except SimError as error:
        message = str(error)
        prefixed = message if message.startswith(where) else f"{where}.{verb}: {message}"
        raise SimError(prefixed) from None
    return Step(float(at), verb, dict(args), None if every is None else float(every))


def _scenario(data: object) -> Scenario:
    raw = _keys("scenario", {} if data is None else data, dict.fromkeys(_TOP_KEYS, False))
    spec, seed = raw.get("fleet", "default"), raw.get("seed", 0)
    if not isinstance(spec, str):
        raise SimError(f"fleet: expected a spec string, got {spec!r}")
    if not _is_int(seed):
        raise SimError(f"seed: expected an integer, got {seed!r}")
    gpus = parse_fleet(spec)
    steps = raw.get("steps")
    steps = [] if steps is None else steps  # "steps:" with nothing after is no steps
    if not isinstance(steps, list):
        raise SimError("steps: expected a list")
    parsed = tuple(_step(f"steps[{i}]", step, gpus) for i, step in enumerate(steps))
    return Scenario(fleet=spec, seed=seed, steps=parsed)


def parse_scenario(data: object, source: str = "<scenario>") -> Scenario:
    """Validate loaded YAML; SimError names ``source`` and the problem in one line."""
    try:
        return _scenario(data)
    except SimError as error:
        raise SimError(f"{source}: {error}") from None


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise SimError(f"{path}: cannot read the scenario: {error.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(error, "problem", None) or "not valid YAML"
        raise SimError(f"{path}: not valid YAML{line}: {problem}") from None
    return parse_scenario(data, str(path))


def perform(fleet: Fleet, step: Step, dra: DraNode | None = None) -> dict[str, Any]:
    """Do one step to the fleet (blocking); SimError when the fleet refuses it.

    The DRA verbs need the node's ``dra`` driver and kubelet.
    """
    args = step.args
    if step.verb in DRA_VERBS:
        return _perform_dra(dra, step)
    if step.verb == "xid":
        return fleet.inject_xid(**args)
    if step.verb == "mig":
        return fleet.reconfigure(args["gpu"], args["profiles"])
    if step.verb == "ecc":
        return fleet.inject_ecc(args["gpu"], args.get("uncorrected", False), args.get("count", 1))
    if step.verb == "recovery":
        return fleet.inject_recovery_action(args["gpu"], args["action"])
    return fleet.fault(args["gpu"], args["kind"])


def _perform_dra(dra: DraNode | None, step: Step) -> dict[str, Any]:
    if dra is None:
        raise SimError(f"{step.verb} needs the simulated node's kubelet")
    args = step.args
    keys = ("namespace", "container", "profile", "gpu_instance_id")
    names = {k: v for k, v in args.items() if k in keys}
    if step.verb == "claim":
        return dra.claim(args["gpu"], args["pod"], args["claim"], **names)
    return dra.release(args["claim"], **names)


async def run_scenario(
    scenario: Scenario,
    fleet: Fleet,
    *,
    dra: DraNode | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> None:
    """Play the steps at their times; returns when no step is left (never, with ``every``).

    A step the fleet refuses is logged and skipped: a demo must keep running.
    """
    start = clock()
    queue = [(step.at, order, step) for order, step in enumerate(scenario.steps)]
    heapq.heapify(queue)
    while queue:
        due, order, step = heapq.heappop(queue)
        await sleep(max(0.0, start + due - clock()))
        try:
            result = await asyncio.to_thread(perform, fleet, step, dra)
        except SimError as error:
            log.warning("scenario step %s at %.1fs failed: %s", step.verb, due, error)
        else:
            log.info("scenario step %s at %.1fs: %s", step.verb, due, result)
        if step.every is not None:
            heapq.heappush(queue, (due + step.every, order, step))
