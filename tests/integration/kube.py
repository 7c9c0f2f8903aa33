"""The Kubernetes stand-in and `rrm agent --target kubernetes` as real processes, plus the client tests use.

Tests look at the cluster only through the official `kubernetes` client over HTTP, as an operator with
kubectl would, and at the stand-in's `/test/audit` for the order of writes.
"""

from __future__ import annotations

import base64
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml
from kubernetes import client, config

from .harness import DEADLINE, Fleet, ManagedProcess, free_port, register, wait_until

KUBE_APISERVER = Path(__file__).resolve().parents[1] / "standins" / "kube_apiserver.py"
TOKEN = "standin-token"
MANAGED_BY = "app.kubernetes.io/managed-by"
RUNTIME_LABEL = "rrm.io/runtime"
RESTARTED_AT = "rrm.io/restarted-at"


class KubeApiServer(ManagedProcess):
    def __init__(
        self,
        workdir: Path,
        bookmark_interval: float | None = None,
        rollout_seconds: float | None = None,
        sidecar_init_delay: float | None = None,
    ) -> None:
        """`rollout_seconds`: Deployments run, with pods and sidecars (kube_workloads.py)."""
        super().__init__("kube-apiserver stand-in", workdir / "kube-apiserver.log")
        self.port = free_port()
        self.kubeconfig = workdir / "kubeconfig.yaml"
        self.bookmark_interval = bookmark_interval
        self.rollout_seconds = rollout_seconds
        self.sidecar_init_delay = sidecar_init_delay

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [sys.executable, str(KUBE_APISERVER), "--port", str(self.port), "--token", TOKEN]
        if self.bookmark_interval is not None:
            args += ["--bookmark-interval", str(self.bookmark_interval)]
        if self.rollout_seconds is not None:
            args += ["--rollout-seconds", str(self.rollout_seconds)]
        if self.sidecar_init_delay is not None:
            args += ["--sidecar-init-delay", str(self.sidecar_init_delay)]
        self._launch(args)
        self.kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
                    "users": [{"name": "agent", "user": {"token": TOKEN}}],
                    "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "agent"}}],
                    "current-context": "standin",
                }
            )
        )
        wait_until(self._up, DEADLINE, lambda: f"the stand-in did not start:\n{self.tail()}")

    def _up(self) -> bool:
        self.ensure_running()
        return httpx.get(f"{self.url}/version", headers=self.auth, timeout=5).status_code == 200

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}"}

    def audit(self) -> list[dict[str, Any]]:
        return list(httpx.get(f"{self.url}/test/audit", headers=self.auth, timeout=5).json())

    def watches(self) -> list[dict[str, Any]]:
        """Every watch request so far: `{"resource", "namespace", "resourceVersion", "code"}`."""
        return list(httpx.get(f"{self.url}/test/watches", headers=self.auth, timeout=5).json())

    def compact(self) -> None:
        """Forget the event history and end every open watch, as a compaction and a restart would."""
        httpx.post(f"{self.url}/test/compact", headers=self.auth, timeout=5).raise_for_status()

    def api_client(self) -> client.ApiClient:
        return config.new_client_from_config(config_file=str(self.kubeconfig))


def start_standin(fleet: Fleet, workdir: Path | None = None, **options: float) -> KubeApiServer:
    """A started stand-in (in `workdir`, else the fleet's) that stops with the fleet's other processes."""
    standin = KubeApiServer(workdir or fleet.workdir, **options)
    fleet.processes.append(standin)
    standin.start()
    return standin


class KubeAgentProcess(ManagedProcess):
    """`rrm agent --target kubernetes` for one runtime, against the stand-in."""

    def __init__(
        self,
        name: str,
        director_url: str,
        workdir: Path,
        kubeconfig: Path,
        namespaces: list[str],
        *,
        hot_reload: str = "auto",
        reconcile_interval: float = 60.0,
        restart_min_interval: float = 0.0,
    ) -> None:
        super().__init__(f"rrm agent {name} (kubernetes)", workdir / "agent.log")
        self.name = name
        self.director_url = director_url
        self.state_dir = workdir / "state"
        self.kubeconfig = kubeconfig
        self.namespaces = namespaces
        self.hot_reload = hot_reload
        self.reconcile_interval = reconcile_interval
        self.restart_min_interval = restart_min_interval
        self.health_port = free_port()

    def start(self, token: str | None = None) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "rrm", "agent", "--director", self.director_url]
        if token is not None:
            args += ["--token", token]
        args += [
            "--state-dir",
            str(self.state_dir),
            "--target",
            "kubernetes",
            "--kubeconfig",
            str(self.kubeconfig),
        ]
        for namespace in self.namespaces:
            args += ["--namespace", namespace]
        args += ["--hot-reload", self.hot_reload, "--reconcile-interval", str(self.reconcile_interval)]
        args += [
            "--restart-min-interval",
            str(self.restart_min_interval),
            "--health-port",
            str(self.health_port),
        ]
        args += ["--heartbeat-interval", "1", "--wait", "5"]
        self._launch(args)

    def probe(self, path: str) -> int:
        self.ensure_running()
        return httpx.get(f"http://127.0.0.1:{self.health_port}{path}", timeout=5).status_code


def start_kube_agent(
    fleet: Fleet,
    cluster: KubeApiServer,
    name: str,
    namespaces: list[str],
    labels: Mapping[str, str],
    **options: Any,
) -> KubeAgentProcess:
    """Register runtime `name` (kind kubernetes) and start its agent with the pairing token."""
    token = register(fleet.server.admin, name, kind="kubernetes", labels=labels)
    agent = KubeAgentProcess(
        name, fleet.server.url, fleet.workdir / name, cluster.kubeconfig, namespaces, **options
    )
    fleet.processes.append(agent)
    agent.start(token)
    return agent


class Cluster:
    """What a test reads and changes in the stand-in, through the official client."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.apps = client.AppsV1Api(api_client)

    def components(self, namespace: str) -> dict[str, dict[str, Any]]:
        body = self.custom.list_namespaced_custom_object("dapr.io", "v1alpha1", namespace, "components")
        return {item["metadata"]["name"]: item for item in body["items"]}

    def secrets(self, namespace: str) -> dict[str, dict[str, Any]]:
        listed = self.core.list_namespaced_secret(namespace)
        return {s.metadata.name: self.api_client.sanitize_for_serialization(s) for s in listed.items}

    def create_component(self, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
        return dict(
            self.custom.create_namespaced_custom_object(
                "dapr.io", "v1alpha1", namespace, "components", manifest
            )
        )

    def edit_component(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A hand edit, as `kubectl edit` makes it: a merge patch under another field manager."""
        return dict(
            self.custom.patch_namespaced_custom_object(
                "dapr.io", "v1alpha1", namespace, "components", name, patch, field_manager="kubectl-edit"
            )
        )

    def delete_component(self, namespace: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object("dapr.io", "v1alpha1", namespace, "components", name)

    def create_workload(self, kind: str, namespace: str, name: str, annotations: Mapping[str, str]) -> None:
        body = {
            "apiVersion": "apps/v1",
            "kind": kind,
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}, "annotations": dict(annotations)},
                    "spec": {"containers": [{"name": "app", "image": "example/app:1"}]},
                },
            },
        }
        if kind == "Deployment":
            self.apps.create_namespaced_deployment(namespace, body)
        else:
            self.apps.create_namespaced_stateful_set(namespace, body)

    def restarted_at(self, kind: str, namespace: str, name: str) -> str | None:
        read = (
            self.apps.read_namespaced_deployment
            if kind == "Deployment"
            else self.apps.read_namespaced_stateful_set
        )
        workload = self.api_client.sanitize_for_serialization(read(name, namespace))
        return (workload["spec"]["template"]["metadata"].get("annotations") or {}).get(RESTARTED_AT)


def decoded(secret: Mapping[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


def dapr_workload(app_id: str | None, enabled: bool = True) -> dict[str, str]:
    annotations = {"dapr.io/enabled": "true" if enabled else "false"}
    if app_id:
        annotations["dapr.io/app-id"] = app_id
    return annotations


def write_order(audit: Iterable[Mapping[str, Any]], verb: str) -> list[str]:
    """`resource/name` of every write with `verb`, in the order the stand-in received them."""
    return [f"{entry['resource']}/{entry['name']}" for entry in audit if entry["verb"] == verb]
