"""The kustomize base: current with its generator, rendered by kubectl, every object valid."""

from __future__ import annotations

import base64
import copy
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import trustme
import yaml

from cli_run import run_cli
from migexporter import webconfig
from migexporter.mixin import alerts, dashboards
from migexporter.mixin import manifests as kubernetes

ROOT = Path(__file__).resolve().parents[1]
KUBERNETES = ROOT / "deploy" / "kubernetes"
BASE = KUBERNETES / "base"
OVERLAY = KUBERNETES / "web-config"
KUBERNETES_VERSION = "1.30.0"  # schemas bundled with kubernetes-validate, checked offline
CORE_KINDS = {"DaemonSet", "Service", "ConfigMap"}
# The prometheus-operator's own CRDs, vendored unmodified (tests/data/crds/README.md).
CRDS = ROOT / "tests" / "data" / "crds"
OPERATOR_KINDS = {"ServiceMonitor": "servicemonitors", "PrometheusRule": "prometheusrules"}


def test_committed_base_is_what_the_generator_writes():
    """Regenerate with `migexporter kubernetes` when this fails."""
    expected = kubernetes.files()
    committed = {str(p.relative_to(KUBERNETES)) for p in KUBERNETES.rglob("*") if p.is_file()}
    assert committed == set(expected)
    for name, text in expected.items():
        assert (KUBERNETES / name).read_text() == text, name


def _render(directory: Path) -> dict[str, dict]:
    """The objects `kubectl kustomize` renders from a kustomization, by kind."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("needs kubectl: apt-get install kubernetes-client", pytrace=False)
    done = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    objects = list(yaml.safe_load_all(done.stdout))
    by_kind = {obj["kind"]: obj for obj in objects}
    assert len(by_kind) == len(objects)
    return by_kind


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict]:
    """The objects of the base, by kind."""
    by_kind = _render(BASE)
    assert set(by_kind) == CORE_KINDS | {"ServiceMonitor", "PrometheusRule"}
    return by_kind


@pytest.fixture(scope="module")
def overlay() -> dict[str, dict]:
    """The objects of the web-config overlay, by kind."""
    by_kind = _render(OVERLAY)
    assert set(by_kind) == CORE_KINDS | {"ServiceMonitor", "PrometheusRule", "Secret"}
    return by_kind


@pytest.mark.parametrize("kind", sorted(CORE_KINDS))
def test_core_objects_are_valid(rendered, kind):
    kubernetes_validate.validate(rendered[kind], KUBERNETES_VERSION, strict=True)


def test_daemonset_runs_on_gpu_nodes_with_only_sys_admin(rendered):
    pod = rendered["DaemonSet"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["SYS_ADMIN"]}
    assert security["allowPrivilegeEscalation"] is False
    assert container["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    assert container["readinessProbe"]["httpGet"]["path"] == "/-/ready"
    assert container["resources"]["limits"]["memory"]
    (mount,) = container["volumeMounts"]
    assert mount == {
        "name": "pod-resources",
        "mountPath": "/var/lib/kubelet/pod-resources",
        "readOnly": True,
    }


def _operator_validator(kind: str) -> jsonschema.Validator:
    """The CRD's OpenAPI v3 schema, checked as the API server's strict field validation does:
    a field the schema does not declare is an error, unless it preserves unknown fields."""
    crd = yaml.safe_load((CRDS / f"monitoring.coreos.com_{OPERATOR_KINDS[kind]}.yaml").read_text())
    assert crd["spec"]["names"]["kind"] == kind
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])

    def strict(node: object) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                strict(value)
        elif isinstance(node, list):
            for value in node:
                strict(value)

    strict(schema)
    return jsonschema.Draft7Validator(schema)


@pytest.mark.parametrize("kind", sorted(OPERATOR_KINDS))
def test_operator_objects_match_the_operators_crd(rendered, kind):
    obj = rendered[kind]
    assert obj["apiVersion"] == "monitoring.coreos.com/v1"
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in _operator_validator(kind).iter_errors(obj)
    ]
    assert not errors, "\n".join(errors)


def test_the_crd_check_catches_a_misspelt_field_and_a_wrong_type(rendered):
    """The schema check is not vacuous: the mistakes an operator would reject fail it."""
    monitor = copy.deepcopy(rendered["ServiceMonitor"])
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    rule = copy.deepcopy(rendered["PrometheusRule"])
    rule["spec"]["groups"][0]["rules"][0]["for"] = "ten minutes"
    assert list(_operator_validator("ServiceMonitor").iter_errors(monitor))
    assert list(_operator_validator("PrometheusRule").iter_errors(rule))


def test_service_monitor_scrapes_the_service_port(rendered):
    service, monitor = rendered["Service"], rendered["ServiceMonitor"]
    assert monitor["spec"]["selector"]["matchLabels"] == service["metadata"]["labels"]
    ports = {port["name"] for port in service["spec"]["ports"]}
    assert {endpoint["port"] for endpoint in monitor["spec"]["endpoints"]} <= ports
    assert (
        service["spec"]["selector"]
        == rendered["DaemonSet"]["spec"]["template"]["metadata"]["labels"]
    )


def test_prometheus_rule_and_dashboards_are_the_generated_ones(rendered):
    assert rendered["PrometheusRule"]["spec"]["groups"] == alerts.groups()
    config_map = rendered["ConfigMap"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert set(config_map["data"]) == {f"{name}.json" for name in dashboards.DASHBOARDS}


def test_cli_writes_the_base(tmp_path):
    done = run_cli("kubernetes", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    for name in ("base/daemonset.yaml", "web-config/kustomization.yaml"):
        assert (tmp_path / name).read_text() == (KUBERNETES / name).read_text()


@pytest.mark.parametrize("kind", sorted(CORE_KINDS | {"Secret"}))
def test_overlay_core_objects_are_valid(overlay, kind):
    kubernetes_validate.validate(overlay[kind], KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("kind", sorted(OPERATOR_KINDS))
def test_overlay_operator_objects_match_the_operators_crd(overlay, kind):
    assert not list(_operator_validator(kind).iter_errors(overlay[kind]))


def test_overlay_serves_and_scrapes_tls_from_the_web_config_secret(overlay, rendered, tmp_path):
    """The exporter gets --web-config from the Secret, probes and scrapes go over https, and
    the Secret's web config loads once its certificate files exist."""
    pod = overlay["DaemonSet"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    base_args = rendered["DaemonSet"]["spec"]["template"]["spec"]["containers"][0]["args"]
    path = f"{kubernetes.WEB_CONFIG_DIR}/web-config.yml"
    assert container["args"] == [*base_args, f"--web-config={path}"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["web-config"]["secret"]["secretName"] == overlay["Secret"]["metadata"]["name"]
    assert volumes["tls"]["secret"]["secretName"] == kubernetes.TLS_SECRET
    assert "pod-resources" in mounts  # the base's mounts stay
    assert all("subPath" not in m for m in mounts.values())  # Secret updates must reach files
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS"
    (endpoint,) = overlay["ServiceMonitor"]["spec"]["endpoints"]
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"]["ca"]["secret"]["name"] == kubernetes.TLS_SECRET

    text = base64.b64decode(overlay["Secret"]["data"]["web-config.yml"]).decode()
    pki = trustme.CA().issue_cert(kubernetes.NAME)
    pki.cert_chain_pems[0].write_to_path(str(tmp_path / "tls.crt"))
    pki.private_key_pem.write_to_path(str(tmp_path / "tls.key"))
    local = tmp_path / "web-config.yml"
    local.write_text(text.replace(kubernetes.TLS_DIR, str(tmp_path)))
    assert webconfig.load(str(local)).tls is not None
