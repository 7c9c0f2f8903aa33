"""Real `rrm server`, `rrm agent` and fake daprd processes on loopback, and waits that fail with their logs.

Nothing of rrm is mocked here: every process is started the way an operator starts it, and tests observe
it only through its HTTP API and the files it writes.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from rrm.wire import agent_auth

T = TypeVar("T")

DEADLINE = 30.0
STOP_TIMEOUT = 20.0
LOG_TAIL_LINES = 40
TAIL_MARKER = "=== log tail"
FAKE_DAPRD = Path(__file__).resolve().parents[1] / "standins" / "fake_daprd.py"
COMPONENT_API_VERSION = "dapr.io/v1alpha1"


# --- waiting -------------------------------------------------------------------------------------------


class ProcessExited(AssertionError):
    """A process a wait depends on is gone: waiting longer cannot help."""


def wait_until(
    predicate: Callable[[], T],
    timeout: float = DEADLINE,
    message: str | Callable[[], str] = "condition not met",
    interval: float = 0.1,
) -> T:
    """Poll `predicate` until it returns something truthy (returned), or fail after `timeout` seconds.

    Exceptions raised by the predicate count as "not yet" (a process may be restarting); the last one is
    named in the failure. `ProcessExited` ends the wait at once.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except ProcessExited:
            raise
        except Exception as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            cause = f"\nlast error: {last_error!r}" if last_error else ""
            raise AssertionError(f"timed out after {timeout:.0f} s: {text}{cause}")
        time.sleep(interval)


def holds_for(predicate: Callable[[], bool], duration: float, message: str | Callable[[], str]) -> None:
    """Assert that `predicate` stays true for `duration` seconds (a property, not a synchronisation)."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        if not predicate():
            raise AssertionError(message() if callable(message) else message)
        time.sleep(0.1)


def free_port() -> int:
    """A free port below Linux's ephemeral range (32768+), so that no outgoing connection of this or another
    test worker can take it between this check and the server's bind."""
    while True:
        port = random.randint(20_000, 32_000)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def expect_status(response: httpx.Response, *codes: int) -> httpx.Response:
    if response.status_code not in codes:
        raise AssertionError(
            f"{response.request.method} {response.request.url} answered {response.status_code}, "
            f"expected {' or '.join(map(str, codes))}: {response.text[:2000]}"
        )
    return response


# --- processes ------------------------------------------------------------------------------------------


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without RRM_/DAPR_ settings, so a developer's shell cannot leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RRM_", "DAPR_"))}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class ManagedProcess:
    """One child process whose output goes to a log file; stopped by its own pid only."""

    def __init__(self, label: str, log_path: Path) -> None:
        self.label = label
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def _launch(self, args: list[str], env: Mapping[str, str] | None = None) -> None:
        assert not self.running, f"{self.label} is already running"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n=== {time.strftime('%H:%M:%S')} start: {' '.join(args)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child_env(env),
                start_new_session=True,
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.label} was never started"
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, wait, SIGKILL if it does not go: the way an operator stops it."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        return self.process.returncode

    def kill9(self) -> None:
        assert self.process is not None and self.process.poll() is None, f"{self.label} is not running"
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(STOP_TIMEOUT)

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def ensure_running(self) -> None:
        if not self.running:
            raise ProcessExited(f"{self.label} exited with {self.returncode}:\n{self.tail()}")


class ServerProcess(ManagedProcess):
    """`rrm server` on 127.0.0.1:port with its data dir; keeps both across restarts. One worker unless a
    test asks for more: the suite's servers run side by side on a few cores, and a kill -9 of `pid` kills
    the whole control plane only when it is the one process."""

    def __init__(
        self,
        data_dir: Path,
        log_path: Path,
        port: int | None = None,
        database_url: str | None = None,
        workers: int = 1,
        options: Sequence[str] = (),
    ) -> None:
        """`options`: more `rrm server` options, given at every start."""
        super().__init__("rrm server", log_path)
        self.workers = workers
        self.options = list(options)
        self.data_dir = data_dir
        self.port = port or free_port()
        self.database_url = database_url
        self._admin: httpx.Client | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_token(self) -> str:
        return (self.data_dir / "admin-token").read_text().strip()

    @property
    def admin(self) -> httpx.Client:
        assert self._admin is not None, "the server was not started"
        return self._admin

    def start(self, timeout: float = DEADLINE) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "rrm", "server", "--host", "127.0.0.1", "--port", str(self.port)]
        args += ["--data-dir", str(self.data_dir), "--workers", str(self.workers)]
        if self.database_url:
            args += ["--database-url", self.database_url]
        self._launch(args + self.options)
        wait_until(self._ready, timeout, lambda: f"rrm server did not become ready:\n{self.tail()}")
        if self._admin is not None:
            self._admin.close()
        self._admin = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.admin_token}"}, timeout=30
        )

    def _ready(self) -> bool:
        self.ensure_running()
        with httpx.Client(base_url=self.url, timeout=5) as probe:
            healthy = probe.get("/healthz").status_code == 200 and probe.get("/readyz").status_code == 200
        return healthy and (self.data_dir / "admin-token").is_file()

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        return super().stop(timeout)

    def restart(self) -> None:
        self.stop()
        self.start()


class AgentProcess(ManagedProcess):
    """`rrm agent` for one self-hosted runtime; restarts reuse its state dir and pass no token.

    It runs at the agent's own defaults (heartbeat, long-poll wait) unless a test sets them: a test that
    passes only with a shorter heartbeat hides what a user would wait for."""

    def __init__(
        self,
        name: str,
        director_url: str,
        state_dir: Path,
        resources_path: Path,
        log_path: Path,
        *,
        heartbeat_interval: float | None = None,
        wait: float | None = None,
        dapr_http_port: int | None = None,
        dapr_api_token: str | None = None,
        reload_command: str | None = None,
        delivery: str | None = None,
    ) -> None:
        super().__init__(f"rrm agent {name}", log_path)
        self.name = name
        self.director_url = director_url
        self.state_dir = state_dir
        self.resources_path = resources_path
        self.heartbeat_interval = heartbeat_interval
        self.wait = wait
        self.dapr_http_port = dapr_http_port
        self.dapr_api_token = dapr_api_token
        self.reload_command = reload_command
        self.delivery = delivery
        self.extra_directors: list[str] = []  # further replicas, tried in order when one is unreachable

    def start(self, token: str | None = None) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.resources_path.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "rrm", "agent", "--director", self.director_url]
        for url in self.extra_directors:
            args += ["--director", url]
        if token is not None:
            args += ["--token", token]
        args += ["--state-dir", str(self.state_dir), "--target", "selfhosted"]
        args += ["--resources-path", str(self.resources_path)]
        if self.heartbeat_interval is not None:
            args += ["--heartbeat-interval", str(self.heartbeat_interval)]
        if self.wait is not None:
            args += ["--wait", str(self.wait)]
        if self.dapr_http_port is not None:
            args += ["--dapr-http-port", str(self.dapr_http_port)]
        if self.dapr_api_token is not None:
            args += ["--dapr-api-token", self.dapr_api_token]
        if self.reload_command is not None:
            args += ["--reload-command", self.reload_command]
        if self.delivery is not None:
            args += ["--delivery", self.delivery]
        self._launch(args)

    def restart(self) -> None:
        self.stop()
        self.start()


class FakeDaprd(ManagedProcess):
    """The daprd stand-in (tests/standins/fake_daprd.py) watching one resources directory, at the stand-in's
    own rescan interval and init delay unless a test sets them."""

    def __init__(
        self,
        resources_path: Path,
        log_path: Path,
        *,
        app_id: str = "app",
        hot_reload: bool = True,
        api_token: str | None = None,
        rescan_interval: float | None = None,
        init_delay: float | None = None,
    ) -> None:
        super().__init__(f"fake daprd {app_id}", log_path)
        self.resources_path = resources_path
        self.port = free_port()
        self.app_id = app_id
        self.hot_reload = hot_reload
        self.api_token = api_token
        self.timings = {"--rescan-interval": rescan_interval, "--init-delay": init_delay}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.resources_path.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, str(FAKE_DAPRD), "--port", str(self.port)]
        args += ["--resources-path", str(self.resources_path), "--app-id", self.app_id]
        if not self.hot_reload:
            args.append("--no-hot-reload")
        if self.api_token:
            args += ["--api-token", self.api_token]
        for flag, seconds in self.timings.items():
            if seconds is not None:
                args += [flag, str(seconds)]
        self._launch(args)
        wait_until(self._healthy, DEADLINE, lambda: f"fake daprd did not start:\n{self.tail()}")

    def _healthy(self) -> bool:
        self.ensure_running()
        return httpx.get(f"{self.url}/v1.0/healthz", timeout=5).status_code == 204

    def metadata(self) -> dict[str, Any]:
        self.ensure_running()
        headers = {"dapr-api-token": self.api_token} if self.api_token else {}
        response = expect_status(httpx.get(f"{self.url}/v1.0/metadata", headers=headers, timeout=5), 200)
        return dict(response.json())

    def loaded_names(self) -> set[str]:
        return {c["name"] for c in self.metadata()["components"]}

    def resolved(self, component: str) -> dict[str, Any] | None:
        """What the component's metadata resolved to when daprd last initialised it; None if not loaded."""
        self.ensure_running()
        response = httpx.get(f"{self.url}/test/resolved/{component}", timeout=5)
        return dict(response.json()["metadata"]) if response.status_code == 200 else None

    def loaded_at(self, component: str) -> float | None:
        """When daprd last logged `Component loaded:` for `component` (epoch seconds), if it did."""
        found = re.findall(
            rf'^time="([^"]+)" level=info msg="Component loaded: {re.escape(component)} \(',
            self.tail(10**6),
            re.MULTILINE,
        )
        return parse_time(found[-1]) if found else None

    def init_errors(self) -> dict[str, str]:
        """Component → daprd's init error (what daprd only logs; the stand-in also serves it to tests)."""
        self.ensure_running()
        return dict(expect_status(httpx.get(f"{self.url}/test/init-errors", timeout=5), 200).json())

    def hangup(self) -> None:
        os.kill(self.pid, signal.SIGHUP)


# --- admin API --------------------------------------------------------------------------------------


def registration(
    admin: httpx.Client,
    name: str,
    kind: str = "selfhosted",
    labels: Mapping[str, str] | None = None,
    token_ttl_seconds: int | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "kind": kind, "labels": dict(labels or {})}
    if token_ttl_seconds is not None:
        body["token_ttl_seconds"] = token_ttl_seconds
    return dict(expect_status(admin.post("/api/v1/runtimes", json=body), 201).json())


def register(
    admin: httpx.Client, name: str, kind: str = "selfhosted", labels: Mapping[str, str] | None = None
) -> str:
    """Register a runtime; returns its pairing token."""
    return str(registration(admin, name, kind, labels)["pairing_token"])


def apply(admin: httpx.Client, docs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    response = admin.post("/api/v1/apply", json={"documents": list(docs)})
    return dict(expect_status(response, 200).json())


def apply_refused(admin: httpx.Client, docs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Apply documents that must be refused; returns the 422 detail list."""
    response = expect_status(admin.post("/api/v1/apply", json={"documents": list(docs)}), 422)
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail, f"422 detail is not a non-empty list: {detail!r}"
    return detail


def runtime(admin: httpx.Client, name: str) -> dict[str, Any]:
    return dict(expect_status(admin.get(f"/api/v1/runtimes/{name}"), 200).json())


def relabel(
    admin: httpx.Client, name: str, set_labels: Mapping[str, str] | None = None, remove: Iterable[str] = ()
) -> dict[str, Any]:
    body = {"set": dict(set_labels or {}), "remove": list(remove)}
    return dict(expect_status(admin.patch(f"/api/v1/runtimes/{name}/labels", json=body), 200).json())


def condition(detail: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    for item in detail.get("conditions") or []:
        if item.get("type") == kind:
            return dict(item)
    return None


def condition_true(detail: Mapping[str, Any], kind: str) -> bool:
    found = condition(detail, kind)
    return found is not None and found.get("status") == "True"


def synced(detail: Mapping[str, Any]) -> bool:
    """Synced as the operator sees it: the condition and equal, known hashes."""
    return (
        condition_true(detail, "Synced")
        and detail.get("applied_hash") is not None
        and detail.get("applied_hash") == detail.get("desired_hash")
    )


def component_names(admin: httpx.Client) -> list[str]:
    return sorted(c["name"] for c in expect_status(admin.get("/api/v1/components"), 200).json())


def parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


# --- manifests ------------------------------------------------------------------------------------------


def component(
    name: str,
    selector: str | None,
    *,
    type: str = "bindings.http",
    version: str = "v1",
    metadata: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A Component manifest; an http binding to `url` unless told otherwise."""
    meta: dict[str, Any] = {"name": name}
    if selector is not None:
        meta["annotations"] = {"rrm.io/selector": selector}
    items = metadata if metadata is not None else [{"name": "url", "value": f"http://{name}.invalid/"}]
    return {
        "apiVersion": COMPONENT_API_VERSION,
        "kind": "Component",
        "metadata": meta,
        "spec": {"type": type, "version": version, "metadata": items},
        **extra,
    }


def http_binding(
    name: str, selector: str, url: str, token_ref: tuple[str, str] | None = None
) -> dict[str, Any]:
    items: list[dict[str, Any]] = [{"name": "url", "value": url}]
    if token_ref is not None:
        items.append({"name": "securityToken", "secretKeyRef": {"name": token_ref[0], "key": token_ref[1]}})
    return component(name, selector, metadata=items)


def secret(name: str, data: Mapping[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": dict(data)}


def metadata_value(manifest: Mapping[str, Any], item: str) -> Any:
    for entry in manifest.get("spec", {}).get("metadata") or []:
        if entry.get("name") == item:
            return entry.get("value", entry.get("secretKeyRef"))
    return None


# --- files the agent writes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Document:
    path: Path
    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.manifest.get("metadata", {}).get("name"))


def resource_documents(directory: Path) -> list[Document]:
    """Every Component in the directory as daprd reads it; raises on a document that does not parse."""
    found: list[Document] = []
    for path in sorted(directory.iterdir()):
        if not path.is_file() or path.suffix not in (".yaml", ".yml"):
            continue
        try:
            text = path.read_text()
        except FileNotFoundError:  # replaced or pruned while we list
            continue
        for chunk in text.split("\n---"):
            doc = yaml.safe_load(chunk)
            is_component = isinstance(doc, dict) and doc.get("kind") == "Component"
            if is_component and doc.get("apiVersion") == COMPONENT_API_VERSION:
                found.append(Document(path, doc))
    return found


def components_on_disk(directory: Path) -> dict[str, dict[str, Any]]:
    """Component name → manifest; asserts that no name appears twice (fatal for daprd)."""
    by_name: dict[str, dict[str, Any]] = {}
    for doc in resource_documents(directory):
        assert doc.name not in by_name, f"component {doc.name} defined twice in {directory}"
        by_name[doc.name] = doc.manifest
    return by_name


def rrm_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.startswith("rrm-"))


def assert_resources_consistent(directory: Path) -> dict[str, dict[str, Any]]:
    """What daprd would accept at any instant: every YAML file parses, no name twice, no YAML temp file."""
    for path in sorted(directory.iterdir()):
        if path.suffix in (".yaml", ".yml"):
            try:
                docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
            except yaml.YAMLError as exc:
                raise AssertionError(f"{path.name} does not parse as YAML: {exc}") from exc
            assert docs, f"{path.name} is an empty YAML file (a truncated write looks like a deletion)"
            for doc in docs:
                assert isinstance(doc, dict) and doc.get("kind") == "Component", f"{path.name}: {doc!r}"
                assert isinstance(doc.get("metadata", {}).get("name"), str), f"{path.name} has no name"
            assert not any(t in path.name for t in (".tmp", ".temp", ".part", "~")), f"temp file {path.name}"
    return components_on_disk(directory)


def secret_stores(directory: Path) -> dict[str, dict[str, Any]]:
    """The local-file secret stores rrm wrote (rrm- files) in the directory, by component name."""
    return {
        doc.name: doc.manifest
        for doc in resource_documents(directory)
        if doc.path.name.startswith("rrm-") and doc.manifest["spec"].get("type") == "secretstores.local.file"
    }


def secrets_file_of(store: Mapping[str, Any]) -> Path:
    value = metadata_value(store, "secretsFile")
    assert isinstance(value, str), f"secret store without a secretsFile value: {store!r}"
    return Path(value)


def json_contains(value: Any, needle: str) -> bool:
    if isinstance(value, dict):
        return any(json_contains(v, needle) for v in value.values())
    if isinstance(value, list):
        return any(json_contains(v, needle) for v in value)
    return value == needle


def files_containing(roots: Iterable[Path], needle: str) -> list[Path]:
    """Every file under `roots` whose bytes contain `needle`."""
    found = []
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            if needle.encode() in path.read_bytes():
                found.append(path)
    return found


# --- the agent API, signed by hand ------------------------------------------------------------------


@dataclass
class AgentIdentity:
    """A runtime paired by the test itself, to call the agent API the way an agent does."""

    server_url: str
    runtime_id: str
    runtime_name: str
    key: Ed25519PrivateKey
    kid: str

    def token(self, sub: str | None = None, kid: str | None = None, lifetime: float = 300) -> str:
        return agent_auth.sign_agent_token(
            self.key, sub or self.runtime_id, kid or self.kid, lifetime=lifetime
        )

    def headers(self, **token_args: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(**token_args)}"}

    def request(
        self, method: str, path: str, *, headers: Mapping[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        merged = {**self.headers(), **(headers or {})}
        return httpx.request(method, f"{self.server_url}{path}", headers=merged, timeout=60, **kwargs)

    def desired_state(
        self, etag: str | None = None, wait: float | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = {"If-None-Match": f'"{etag}"'} if etag else {}
        headers.update(kwargs.pop("headers", {}))
        params = {"wait": wait} if wait is not None else {}
        params.update(kwargs.pop("params", {}))
        return self.request("GET", "/agent/v1/desired-state", headers=headers, params=params, **kwargs)


def pair_request(server_url: str, pairing_token: str, key: Ed25519PrivateKey) -> httpx.Response:
    body = {"token": pairing_token, "public_key": agent_auth.public_key_pem(key), "agent_version": "test"}
    return httpx.post(f"{server_url}/agent/v1/pair", json=body, timeout=30)


def pair(server_url: str, pairing_token: str) -> AgentIdentity:
    key = agent_auth.generate_private_key()
    answer = expect_status(pair_request(server_url, pairing_token, key), 201).json()
    return AgentIdentity(server_url, answer["runtime_id"], answer["runtime_name"], key, answer["key_id"])


def etag_of(response: httpx.Response) -> str:
    return response.headers.get("etag", "").strip('"')


# --- one test's processes ---------------------------------------------------------------------------


class Fleet:
    """The agents and fake daprds one test starts against a server; waits that fail with every log tail."""

    def __init__(self, server: ServerProcess, workdir: Path) -> None:
        self.server = server
        self.workdir = workdir
        self.processes: list[ManagedProcess] = []

    def agent(
        self,
        name: str,
        labels: Mapping[str, str] | None = None,
        *,
        daprd: FakeDaprd | None = None,
        start: bool = True,
        **options: Any,
    ) -> AgentProcess:
        """Register runtime `name` and start its agent with the pairing token (unless `start=False`)."""
        token = register(self.server.admin, name, labels=labels)
        if daprd is not None:
            options |= {"dapr_http_port": daprd.port, "dapr_api_token": daprd.api_token}
        agent = self.agent_process(name, **options)
        if start:
            agent.start(token)
        return agent

    def agent_process(self, name: str, **options: Any) -> AgentProcess:
        base = self.workdir / name
        agent = AgentProcess(
            name, self.server.url, base / "state", base / "resources", base / "agent.log", **options
        )
        self.processes.append(agent)
        return agent

    def daprd(self, name: str, **options: Any) -> FakeDaprd:
        """A started fake daprd over the resources dir the agent named `name` will use."""
        base = self.workdir / name
        daprd = FakeDaprd(base / "resources", base / "daprd.log", app_id=name, **options)
        self.processes.append(daprd)
        daprd.start()
        return daprd

    def tails(self) -> str:
        parts = [
            f"{TAIL_MARKER}: {p.label} ({p.log_path}) ===\n{p.tail()}" for p in [self.server, *self.processes]
        ]
        return "\n".join(parts)

    def explain(self, message: str) -> str:
        return f"{message}\n{self.tails()}"

    def wait_until(
        self, predicate: Callable[[], T], message: str | Callable[[], str], timeout: float = DEADLINE
    ) -> T:
        def text() -> str:
            return self.explain(message() if callable(message) else message)

        return wait_until(predicate, timeout, text)

    def wait_runtime(
        self, name: str, predicate: Callable[[dict[str, Any]], bool], what: str, timeout: float = DEADLINE
    ) -> dict[str, Any]:
        """Poll the runtime's detail until `predicate(detail)`; fails showing the last detail seen."""
        seen: dict[str, Any] = {}

        def check() -> dict[str, Any]:
            seen["detail"] = runtime(self.server.admin, name)
            return seen["detail"] if predicate(seen["detail"]) else {}

        def message() -> str:
            return f"runtime {name}: {what}; last detail:\n{json.dumps(seen.get('detail'), indent=1)[:3000]}"

        return self.wait_until(check, message, timeout)

    def wait_files(
        self,
        agent: AgentProcess,
        predicate: Callable[[dict[str, dict[str, Any]]], bool],
        what: str,
        timeout: float = DEADLINE,
    ) -> dict[str, dict[str, Any]]:
        """Poll the agent's resources dir (components by name) until `predicate` holds."""

        def check() -> list[dict[str, dict[str, Any]]]:
            agent.ensure_running()
            found = components_on_disk(agent.resources_path)
            return [found] if predicate(found) else []

        def message() -> str:
            listing = sorted(p.name for p in agent.resources_path.iterdir())
            return f"{agent.name}: {what}; files: {listing}"

        return self.wait_until(check, message, timeout)[0]

    def close(self) -> None:
        for process in reversed(self.processes):
            process.stop()
