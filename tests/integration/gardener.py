"""The Gardener API stand-in as a real process, `rrm server` pointed at it, and what tests read there: the
Shoots, the bindings, the write audit, a Shoot's admin kubeconfig (through plain HTTP, as an operator's
client would send it)."""

from __future__ import annotations

import base64
import contextlib
import queue
import re
import sys
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import yaml

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


class HoldingProxy(ThreadingHTTPServer):
    """Between rrm server and the Gardener stand-in. A request matching a hold reaches Gardener, but its
    answer is kept back until `release`: the moment to kill the control plane that sent it, deterministic.
    Each hold fires once; `held` gets the hold's label when it does."""

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), ProxyHandler)
        self.upstream = upstream
        self.holds: list[tuple[str, str, str]] = []  # (method, path pattern, label)
        self.held: queue.Queue[str] = queue.Queue()
        self.released = threading.Event()
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def hold(self, method: str, pattern: str, label: str) -> None:
        with self.lock:
            self.holds.append((method, pattern, label))

    def take_hold(self, method: str, path: str) -> str | None:
        with self.lock:
            for hold in self.holds:
                if hold[0] == method and re.search(hold[1], path.split("?")[0]):
                    self.holds.remove(hold)
                    return hold[2]
        return None

    def release(self) -> None:
        self.released.set()

    def kubeconfig(self, garden_kubeconfig: Path, path: Path) -> Path:
        """The stand-in's kubeconfig, pointed at this proxy."""
        document = yaml.safe_load(garden_kubeconfig.read_text())
        document["clusters"][0]["cluster"]["server"] = self.url
        path.touch(mode=0o600)
        path.write_text(yaml.safe_dump(document))
        return path

    def close(self) -> None:
        self.released.set()
        self.shutdown()
        self.server_close()


class ProxyHandler(BaseHTTPRequestHandler):
    server: HoldingProxy  # type: ignore[assignment]
    SKIPPED = {
        "host",
        "content-length",
        "connection",
        "transfer-encoding",
        "content-encoding",
        "accept-encoding",
    }

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the stand-in logs every request already."""

    def forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in self.SKIPPED}
        try:
            answer = httpx.request(
                self.command, self.server.upstream + self.path, content=body, headers=headers, timeout=30
            )
        except httpx.TransportError as exc:  # the stand-in is stopping: answer as a gateway would
            with contextlib.suppress(OSError):
                self.send_error(502, f"the Gardener stand-in did not answer: {exc}")
            return
        label = self.server.take_hold(self.command, self.path)
        if label is not None:
            self.server.released.clear()
            self.server.held.put(label)
            self.server.released.wait(60)
        with contextlib.suppress(OSError):  # the control plane may be dead by now: that was the point
            self.send_response(answer.status_code)
            for key, value in answer.headers.items():
                if key.lower() not in self.SKIPPED:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = forward


class GardenerServer(ServerProcess):
    """`rrm server --gardener-kubeconfig … --gardener-namespace garden-dev` plus whatever `extra` says."""

    def __init__(
        self,
        garden: GardenerApiServer,
        extra: list[str],
        *args: Any,
        kubeconfig: Path | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.garden = garden
        self.extra = extra
        self.kubeconfig = kubeconfig

    def _launch(self, args: list[str], env: Mapping[str, str] | None = None) -> None:
        kubeconfig = self.kubeconfig or self.garden.kubeconfig
        gardener = ["--gardener-kubeconfig", str(kubeconfig), "--gardener-namespace", NAMESPACE]
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
