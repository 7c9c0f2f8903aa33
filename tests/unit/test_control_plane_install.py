"""The control plane's install files: the kustomize base `deploy/control-plane` (and its `ingress` component)
and the Helm chart `deploy/charts/rrm-control-plane` hold the same objects, every one valid Kubernetes by
`kubernetes-validate`'s schemas, and they run it the way the issue asks: several replicas behind probes,
resources, a PodDisruptionBudget and a Service, secrets from a Secret, migrations before a replica serves."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from install_manifests import kustomize_build, object_key, render_chart, validate_all
from typer.testing import CliRunner

import rrm.server
from rrm.cli.app import app
from rrm.server import ServerSettings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KUSTOMIZE_BASE = DEPLOY / "control-plane"
CHART = DEPLOY / "charts" / "rrm-control-plane"
# Added by the chart to every object's own labels, never to selectors or pod templates.
HELM_LABELS = ("app.kubernetes.io/managed-by", "helm.sh/chart")
# What `rrm server` reads from the Secret: a PostgreSQL database shared by the replicas, the key that
# encrypts stored secret values (the same on every replica), the first admin token.
SECRET_KEYS = {"RRM_DATABASE_URL", "RRM_SECRET_KEY", "RRM_BOOTSTRAP_ADMIN_TOKEN"}
AGENT_LONG_POLL_SECONDS = 30


def build(tmp_path: Path, components: list[str]) -> Path:
    """A copy of the base with `components:` added, as its kustomization.yaml tells users to do."""
    directory = tmp_path / "control-plane"
    shutil.copytree(KUSTOMIZE_BASE, directory)
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    if components:
        kustomization["components"] = components
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return directory


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [obj] = [o for o in objects if o["kind"] == kind]
    return obj


def pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(objects, "Deployment")["spec"]["template"]["spec"]
    return spec


def selects_the_pods(selector: dict[str, Any], objects: list[dict[str, Any]]) -> bool:
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    return bool(selector) and selector.items() <= pod_labels.items()


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return kustomize_build(KUSTOMIZE_BASE)


@pytest.mark.parametrize("components", [[], ["ingress"]])
def test_every_file_is_listed_and_every_object_is_valid(tmp_path: Path, components: list[str]) -> None:
    for directory in (KUSTOMIZE_BASE, KUSTOMIZE_BASE / "ingress"):
        listed = set(yaml.safe_load((directory / "kustomization.yaml").read_text())["resources"])
        files = {f.name for f in directory.glob("*.yaml")} - {"kustomization.yaml"}
        assert files == listed, f"a file of {directory} is not listed in its kustomization.yaml"
    objects = kustomize_build(build(tmp_path, components))
    assert sorted(o["kind"] for o in objects) == sorted(
        ["Namespace", "ServiceAccount", "Secret", "Deployment", "Service", "PodDisruptionBudget"]
        + (["Ingress"] if components else [])
    )
    assert {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"} == {"rrm-system"}
    validate_all(objects)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="no kubectl, so no kustomize to compare with")
@pytest.mark.parametrize("components", [[], ["ingress"]])
def test_the_loader_builds_what_kubectl_kustomize_builds(tmp_path: Path, components: list[str]) -> None:
    directory = build(tmp_path, components)
    printed = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    expected = [doc for doc in yaml.safe_load_all(printed) if doc]
    assert sorted(kustomize_build(directory), key=object_key) == sorted(expected, key=object_key)


def test_the_deployment_runs_replicas_behind_probes_with_resources(base: list[dict[str, Any]]) -> None:
    deployment = one(base, "Deployment")
    assert deployment["spec"]["replicas"] >= 2
    # A rollout never takes a serving replica away before its successor is ready.
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert selects_the_pods(deployment["spec"]["selector"]["matchLabels"], base)
    spec = pod_spec(base)
    [server] = spec["containers"]
    assert server["args"][0] == "server"
    port_names = {p["name"] for p in server["ports"]}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert server[probe]["httpGet"]["port"] in port_names, probe
    assert server["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert server["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # Kubernetes 1.29 has the `sleep` hook action only behind an alpha gate: it would drop it and then
    # reject the empty hook, though the schema accepts it.
    assert "sleep" not in server["lifecycle"]["preStop"]
    for container in spec["initContainers"] + spec["containers"]:
        assert {"cpu", "memory"} <= container["resources"]["requests"].keys(), container["name"]
        assert "memory" in container["resources"]["limits"], container["name"]
        assert container["securityContext"]["readOnlyRootFilesystem"], container["name"]
    for constraint in spec["topologySpreadConstraints"]:
        assert selects_the_pods(constraint["labelSelector"]["matchLabels"], base)


def test_the_server_container_listens_on_its_port_and_keeps_its_data_on_the_volume(
    base: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    received: list[ServerSettings] = []
    monkeypatch.setattr(rrm.server, "serve", received.append)
    spec = pod_spec(base)
    [server] = spec["containers"]
    result = CliRunner().invoke(app, server["args"])
    assert result.exit_code == 0, result.output
    [settings] = received
    assert [p["containerPort"] for p in server["ports"]] == [settings.port]
    assert settings.host == "0.0.0.0"
    assert str(settings.data_dir) in {m["mountPath"] for m in server["volumeMounts"]}


def test_the_disruption_budget_and_the_service_cover_the_pods(base: list[dict[str, Any]]) -> None:
    pdb = one(base, "PodDisruptionBudget")
    assert selects_the_pods(pdb["spec"]["selector"]["matchLabels"], base)
    # A voluntary disruption (a node drain) leaves at least one replica serving.
    assert pdb["spec"]["maxUnavailable"] < one(base, "Deployment")["spec"]["replicas"]
    service = one(base, "Service")
    assert selects_the_pods(service["spec"]["selector"], base)
    [port] = service["spec"]["ports"]
    assert (port["name"], port["port"]) == ("http", 80)
    [server] = pod_spec(base)["containers"]
    assert port["targetPort"] in {p["name"] for p in server["ports"]}


def test_the_containers_read_the_database_url_and_the_key_from_the_secret(base: list[dict[str, Any]]) -> None:
    secret = one(base, "Secret")
    assert set(secret["stringData"]) == SECRET_KEYS
    reference = [{"secretRef": {"name": secret["metadata"]["name"]}}]
    spec = pod_spec(base)
    for container in spec["initContainers"] + spec["containers"]:
        assert container["envFrom"] == reference, container["name"]
        assert "env" not in container
    assert one(base, "ServiceAccount")["metadata"]["name"] == spec["serviceAccountName"]


def test_migrations_run_in_an_init_container_that_works_on_a_read_only_image(
    base: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = pod_spec(base)
    [migrate] = spec["initContainers"]
    [server] = spec["containers"]
    assert migrate["image"] == server["image"] == "rrm:0.1.0"
    args: list[str] = migrate["args"]
    assert args[0] == "migrate"
    # The root filesystem is read-only and the image's $HOME does not exist, so the data dir must be a volume.
    at = args.index("--data-dir") + 1
    data_dir = args[at]
    mounts = {m["mountPath"]: m["name"] for m in migrate["volumeMounts"]}
    assert data_dir in mounts
    assert mounts[data_dir] in {v["name"] for v in spec["volumes"]}
    # The same arguments, with the volume a temporary directory, bring a database up to date and write
    # nothing under $HOME.
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("RRM_DATABASE_URL", f"sqlite:///{tmp_path / 'rrm.db'}")
    monkeypatch.delenv("RRM_DATA_DIR", raising=False)
    result = CliRunner().invoke(app, [*args[:at], str(tmp_path / "data"), *args[at + 1 :]])
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output
    assert not home.exists()


def test_the_ingress_component_routes_to_the_service(tmp_path: Path) -> None:
    objects = kustomize_build(build(tmp_path, ["ingress"]))
    ingress = one(objects, "Ingress")
    [rule] = ingress["spec"]["rules"]
    assert [rule["host"]] == ingress["spec"]["tls"][0]["hosts"]
    [path] = rule["http"]["paths"]
    service = one(objects, "Service")
    assert path["backend"]["service"] == {
        "name": service["metadata"]["name"],
        "port": {"name": service["spec"]["ports"][0]["name"]},
    }
    # The proxy must hold a long-poll open longer than the agents' --wait, or it cuts every one of them.
    timeout = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"]
    assert int(timeout) > AGENT_LONG_POLL_SECONDS


def placeholder_values(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The chart's required secret values, set to what the kustomize base's secret.yaml holds."""
    data = one(objects, "Secret")["stringData"]
    return {
        "databaseUrl": data["RRM_DATABASE_URL"],
        "secretKey": data["RRM_SECRET_KEY"],
        "bootstrapAdminToken": data["RRM_BOOTSTRAP_ADMIN_TOKEN"],
    }


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    objects = render_chart(CHART, values, name="rrm", namespace="rrm-system")
    validate_all(objects)
    return objects


def without_helm_labels(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        for label in HELM_LABELS:
            del labels[label]
    return sorted(objects, key=object_key)


@pytest.mark.parametrize("components", [[], ["ingress"]])
def test_the_helm_chart_renders_the_kustomize_objects(tmp_path: Path, components: list[str]) -> None:
    expected = kustomize_build(build(tmp_path, components))
    values = placeholder_values(expected)
    if components:
        ingress = one(expected, "Ingress")["spec"]
        values["ingress"] = {
            "enabled": True,
            "host": ingress["rules"][0]["host"],
            "tlsSecretName": ingress["tls"][0]["secretName"],
        }
    # Helm installs into a namespace it creates (--create-namespace) rather than owning it.
    expected = [o for o in expected if o["kind"] != "Namespace"]
    assert without_helm_labels(render(values)) == sorted(expected, key=object_key)


def test_the_helm_chart_values_reach_the_objects(base: list[dict[str, Any]]) -> None:
    resources = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
    objects = render(
        {
            "image": "registry.example.com/rrm:0.2.0",
            "replicas": 5,
            "resources": resources,
            "existingSecret": "my-rrm-secrets",
            "podDisruptionBudget": {"minAvailable": 3},
            "ingress": {"enabled": True, "className": "nginx", "host": "rrm.internal", "tlsSecretName": ""},
        }
    )
    assert not [o for o in objects if o["kind"] == "Secret"]
    spec = pod_spec(objects)
    for container in spec["initContainers"] + spec["containers"]:
        assert container["image"] == "registry.example.com/rrm:0.2.0"
        assert container["envFrom"] == [{"secretRef": {"name": "my-rrm-secrets"}}]
    assert spec["containers"][0]["resources"] == resources
    assert one(objects, "Deployment")["spec"]["replicas"] == 5
    assert one(objects, "PodDisruptionBudget")["spec"] == {
        "minAvailable": 3,
        "selector": one(base, "PodDisruptionBudget")["spec"]["selector"],
    }
    ingress = one(objects, "Ingress")["spec"]
    assert ingress["ingressClassName"] == "nginx"
    assert ingress["rules"][0]["host"] == "rrm.internal"
    assert "tls" not in ingress


def test_the_helm_chart_lints_and_refuses_to_render_without_its_secrets(base: list[dict[str, Any]]) -> None:
    with_ingress = {"existingSecret": "mine", "ingress": {"enabled": True, "host": "rrm.internal"}}
    for values in (placeholder_values(base), with_ingress):
        report = helm.lint(str(CHART), values, strict=True)
        assert report["errors"] == [], report
    with pytest.raises(helm.HelmRenderError, match="databaseUrl is required"):
        render({})
    with pytest.raises(helm.HelmRenderError, match=r"ingress\.host is required"):
        render({**with_ingress, "ingress": {"enabled": True}})
