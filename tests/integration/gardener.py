"""The Gardener API stand-in as a real process, `rrm server` pointed at it, and what tests read there: the
Shoots, the bindings, the write audit, a Shoot's admin kubeconfig (through plain HTTP, as an operator's
client would send it)."""

from __future__ import annotations

import base64
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from .harness import DEADLINE, ManagedProcess, ServerProcess, free_port, wait_until

GARDENER_APISERVER = Path(__file__).resolve().parents[1] / "standins" / "gardener_apiserver.py"
TOKEN = "garden-token"
NAMESPACE = "garden-dev"
CORE = f"/apis/core.gardener.cloud/v1beta1/namespaces/{NAMESPACE}"


class GardenerApiServer(ManagedProcess):
    def __init__(self, workdir: Path, create_seconds: float = 3.0, delete_seconds: float = 2.0) -> None:
        super().__init__("gardener-apiserver stand-in", workdir / "gardener-apiserver.log")
        self.port = free_port()
        self.kubeconfig = workdir / "garden-kubeconfig.yaml"
        self.seconds = (create_seconds, delete_seconds)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [sys.executable, str(GARDENER_APISERVER), "--port", str(self.port), "--token", TOKEN]
        args += ["--kubeconfig", str(self.kubeconfig)]
        args += ["--create-seconds", str(self.seconds[0]), "--delete-seconds", str(self.seconds[1])]
        self._launch(args)
        wait_until(self._up, DEADLINE, lambda: f"the Gardener stand-in did not start:\n{self.tail()}")

    def _up(self) -> bool:
        self.ensure_running()
        try:
            return self.http.get("/version").status_code == 200
        except httpx.TransportError:
            return False

    @property
    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)

    def binding(self, name: str, **labels: str) -> None:
        body = {
            "apiVersion": "core.gardener.cloud/v1beta1",
            "kind": "SecretBinding",
            "metadata": {"name": name, "labels": {"hyperscalerType": "aws", **labels}},
            "secretRef": {"name": f"{name}-credentials"},
        }
        with self.http as http:
            http.post(f"{CORE}/secretbindings", json=body).raise_for_status()

    def bindings(self) -> dict[str, dict[str, Any]]:
        with self.http as http:
            items = http.get(f"{CORE}/secretbindings").json()["items"]
        return {b["metadata"]["name"]: b for b in items}

    def labels(self, binding: str) -> dict[str, str]:
        return dict(self.bindings()[binding]["metadata"].get("labels") or {})

    def shoots(self) -> list[dict[str, Any]]:
        with self.http as http:
            return list(http.get(f"{CORE}/shoots").json()["items"])

    def audit(self, verb: str, resource: str) -> list[dict[str, Any]]:
        with self.http as http:
            entries = http.get("/test/audit").json()
        return [e for e in entries if e["verb"] == verb and e["resource"] == resource]

    def outcome(self, rule: Mapping[str, Any]) -> None:
        with self.http as http:
            http.post("/test/outcomes", json=dict(rule)).raise_for_status()

    def clear_outcomes(self) -> None:
        with self.http as http:
            http.delete("/test/outcomes").raise_for_status()

    def shoot_kubeconfig(self, shoot: str, path: Path) -> Path:
        """The Shoot's admin kubeconfig, written to `path` (mode 0600)."""
        body = {"apiVersion": "authentication.gardener.cloud/v1alpha1", "kind": "AdminKubeconfigRequest"}
        with self.http as http:
            answer = http.post(f"{CORE}/shoots/{shoot}/adminkubeconfig", json=body)
        answer.raise_for_status()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_bytes(base64.b64decode(answer.json()["status"]["kubeconfig"]))
        return path


class GardenerServer(ServerProcess):
    """`rrm server --gardener-kubeconfig … --gardener-namespace garden-dev` plus whatever `extra` says."""

    def __init__(self, garden: GardenerApiServer, extra: list[str], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.garden = garden
        self.extra = extra

    def _launch(self, args: list[str], env: Mapping[str, str] | None = None) -> None:
        gardener = ["--gardener-kubeconfig", str(self.garden.kubeconfig), "--gardener-namespace", NAMESPACE]
        super()._launch([*args, *gardener, *self.extra], env)


CLEANUP_SCRIPT = """\
import pathlib, sys
here = pathlib.Path(__file__).parent
with (here / "cleaned").open("a") as done:
    done.write(sys.argv[1] + "\\n")
if (here / "fail").exists():
    print("3 EBS volumes still attached", file=sys.stderr)
    sys.exit(3)
"""


def cleanup_command(directory: Path) -> str:
    """A cleanup command that records each binding it is run for and fails while `directory/fail` exists."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "cleanup.py"
    script.write_text(CLEANUP_SCRIPT)
    return f"{sys.executable} {script}"
