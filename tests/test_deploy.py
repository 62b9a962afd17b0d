"""Deploy files: the systemd unit, the container images and the demo stack hold together.

No container engine or systemd runs here: the tests check what can be checked without them.
Every file the Dockerfiles copy and the compose stack mounts exists, the images start the
installed console script, the unit passes ``systemd-analyze verify``, and the demo stack's
Prometheus and Alertmanager configurations pass ``promtool`` and ``amtool`` with the mounted
files where the containers would see them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from migexporter.mixin import alerts, dashboards

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKERFILES = sorted((DEPLOY / "docker").glob("Dockerfile*"))
COMPOSE = DEPLOY / "compose" / "compose.yaml"
CONSOLE_SCRIPT = next(
    iter(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])
)


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    found = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word, _, rest = stripped.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copies_files_that_exist(dockerfile):
    copies = [rest for word, rest in _instructions(dockerfile) if word == "COPY"]
    assert copies
    for rest in copies:
        if rest.startswith("--from="):
            continue  # from another image, not from the build context
        *sources, _destination = rest.split()
        for source in sources:
            assert (ROOT / source).exists(), f"{dockerfile.name} copies {source}, which is missing"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_runs_the_console_script_with_a_health_check(dockerfile):
    instructions = dict(_instructions(dockerfile))
    entrypoint = yaml.safe_load(instructions["ENTRYPOINT"])  # JSON form, which YAML reads
    assert entrypoint[0] == CONSOLE_SCRIPT
    assert "/-/healthy" in instructions["HEALTHCHECK"]
    assert "9945" in instructions["EXPOSE"]


def test_plain_image_runs_as_a_non_root_user():
    users = [
        rest for word, rest in _instructions(DEPLOY / "docker" / "Dockerfile") if word == "USER"
    ]
    assert users
    assert users[-1] not in {"0", "root"}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not here")
def test_systemd_unit_verifies():
    done = subprocess.run(
        ["systemd-analyze", "verify", str(DEPLOY / "systemd" / "migexporter.service")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning" not in done.stderr.lower(), done.stderr


def test_systemd_unit_keeps_only_sys_admin_and_the_nvidia_devices():
    unit = (DEPLOY / "systemd" / "migexporter.service").read_text()
    assert "CapabilityBoundingSet=CAP_SYS_ADMIN\n" in unit
    assert "DevicePolicy=closed" in unit
    assert "NoNewPrivileges=yes" in unit
    devices = re.findall(r"^DeviceAllow=(\S+)", unit, re.MULTILINE)
    assert devices
    assert all(device.startswith("char-nvidia") for device in devices)


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _mounts(service: dict) -> dict[str, Path]:
    """Container path -> host path of a compose service's bind mounts."""
    mounts = {}
    for volume in service.get("volumes", []):
        host, container = volume.split(":")[:2]
        mounts[container] = (COMPOSE.parent / host).resolve()
    return mounts


def test_compose_builds_and_mounts_files_that_exist():
    services = _compose()["services"]
    assert set(services) == {"migexporter", "prometheus", "alertmanager", "grafana"}
    build = services["migexporter"]["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).is_file()
    for name, service in services.items():
        for container, host in _mounts(service).items():
            assert host.exists(), f"{name} mounts {host} at {container}, which is missing"


def _as_mounted(text: str, mounts: dict[str, Path]) -> str:
    """A config with container paths replaced by the host files mounted there."""
    for container, host in mounts.items():
        text = text.replace(container, str(host))
    return text


def test_compose_prometheus_config_and_rules_pass_promtool(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("needs promtool: apt-get install prometheus", pytrace=False)
    prometheus = _compose()["services"]["prometheus"]
    mounts = _mounts(prometheus)
    config = mounts["/etc/prometheus/prometheus.yml"]
    local = tmp_path / "prometheus.yml"
    local.write_text(_as_mounted(config.read_text(), mounts))
    done = subprocess.run(
        [promtool, "check", "config", str(local)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # promtool read the generated rule file through the mount: all of its rules.
    rules = re.search(r"SUCCESS: (\d+) rules found", done.stdout)
    assert rules, done.stdout
    assert int(rules[1]) == sum(len(g["rules"]) for g in alerts.groups())


def test_compose_alertmanager_config_passes_amtool():
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.fail("needs amtool: apt-get install prometheus-alertmanager", pytrace=False)
    mounts = _mounts(_compose()["services"]["alertmanager"])
    done = subprocess.run(
        [amtool, "check-config", str(mounts["/etc/alertmanager/alertmanager.yml"])],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_grafana_provisions_the_generated_dashboards():
    grafana = _compose()["services"]["grafana"]
    mounts = _mounts(grafana)
    providers = yaml.safe_load(
        mounts["/etc/grafana/provisioning/dashboards/migexporter.yml"].read_text()
    )["providers"]
    folder = mounts[providers[0]["options"]["path"]]
    assert {p.stem for p in folder.glob("*.json")} == set(dashboards.DASHBOARDS)
    sources = yaml.safe_load(
        mounts["/etc/grafana/provisioning/datasources/migexporter.yml"].read_text()
    )["datasources"]
    assert [s["type"] for s in sources] == ["prometheus"]
    assert sources[0]["isDefault"] is True
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert Path(home).name in {f"{name}.json" for name in dashboards.DASHBOARDS}
