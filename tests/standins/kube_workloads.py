"""What runs in the Kubernetes stand-in when it is started with `--rollout-seconds`: a Deployment controller,
pods, and a small daprd per Dapr-enabled pod that serves its metrics on the pod IP.

Rules followed (the Deployment documentation, kubernetes.io/docs/concepts/workloads/controllers/deployment/,
and the apiserver and controller sources where it is silent):

- `metadata.generation` is 1 at creation and grows by one with every change of `spec` (status writes
  leave it): "a sequence number representing a specific generation of the desired state. Populated by
  the system." (ObjectMeta reference; apps/v1 Deployment strategy `PrepareForUpdate`).
- A rollout is triggered "if and only if the Deployment's Pod template (that is, `.spec.template`) is
  changed"; the controller records `status.observedGeneration`, and the status shows the rollout's
  progress: while it runs `updatedReplicas` < `replicas`, the `Progressing` condition has reason
  `ReplicaSetUpdated`; once "all of the replicas associated with the Deployment have been updated ...
  are available ... no old replicas for the Deployment are running" it is complete: `Progressing` True
  with reason `NewReplicaSetAvailable`, `Available` True (`MinimumReplicasAvailable`). Here the new pods
  replace the old ones all at once after `--rollout-seconds`.
- Pods are named `<deployment>-<pod-template-hash>-<suffix>`, carry the template's labels and annotations
  plus `pod-template-hash`, and run with `status.podIP` on a loopback address 127.0.0.x.
- A pod whose template says `dapr.io/enabled: "true"` gets a `daprd` container (image
  `dapr.io/sidecar-image`, default `ghcr.io/dapr/daprd:latest`) and a sidecar that loads the Components of
  its namespace in scope of its app id (`dapr.io/app-id`, default the Deployment's name), one after the
  other, each after `--sidecar-init-delay` seconds, the rules reused from `fake_daprd.py` (scopes, types
  and versions daprd's registry knows). It serves `GET /metrics` on the pod IP at `dapr.io/metrics-port`
  (default 9090; none with `dapr.io/enable-metrics: "false"`) with daprd's component counters
  (`pkg/diagnostics/service_monitoring.go`): `dapr_runtime_component_init_total{app_id, component=<type>}`
  and `dapr_runtime_component_init_fail_total{app_id, component, reason, componentName}`, reason
  `creation` for a type or version the registry lacks. A component of no known category is refused with
  no metric, as daprd's `processComponentAndDependents` does. Sidecars of Dapr 1.18 and later (and
  `latest`) hot reload changed Components; older ones load only when their pod starts. A
  `secretstores.local.file` whose file cannot be read fails with reason `init`.

- A component that fails to initialise while the sidecar starts, without `ignoreErrors: true`, makes
  daprd exit (the Dapr reference: "A component that fails to init with ignoreErrors: false (the default)
  shuts daprd down"): its pod stays not ready (daprd `CrashLoopBackOff`). A Dapr pod is ready, and counts
  as available, once its sidecar has loaded its components at start (daprd's readiness);
  a rollout not complete `spec.progressDeadlineSeconds` (default 600) after it started gets the
  `Progressing` condition False with reason `ProgressDeadlineExceeded` ("Failed Deployment").

Simplifications: no ReplicaSets, no maxSurge/maxUnavailable steps (old pods are replaced all at once), no
probes; a crashed sidecar keeps serving the counters it had when it exited (a real one restarts and counts
the failure again); a failure on hot reload does not stop the sidecar.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import random
import re
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fake_daprd import (
    LOCAL_FILE_STORE,
    LocalFileStore,
    creation_error,
    identity,
    in_scope,
    known_category,
    log,
    spec_of,
)

MANAGER = "deployment-controller"
DEFAULT_SIDECAR_IMAGE = "ghcr.io/dapr/daprd:latest"
DEFAULT_METRICS_PORT = 9090
PROGRESS_DEADLINE_SECONDS = 600  # spec.progressDeadlineSeconds' default
RESCAN_INTERVAL = 0.1
HOT_RELOAD_SINCE = (1, 18)
_VERSION = re.compile(r":v?(\d+)\.(\d+)")


def next_generation(old: dict[str, Any] | None, new: dict[str, Any]) -> int:
    """1 at creation; one more whenever `spec` changed."""
    if old is None:
        return 1
    before = int(old["metadata"].get("generation") or 1)
    return before + 1 if old.get("spec") != new.get("spec") else before


def template_hash(deployment: dict[str, Any]) -> str:
    template = json.dumps(deployment["spec"].get("template") or {}, sort_keys=True)
    return hashlib.sha256(template.encode()).hexdigest()[:10]


def initialises(manifest: dict[str, Any]) -> bool:
    """Whether the component's own initialisation succeeds: a local file secret store reads its file."""
    if spec_of(manifest).get("type") != LOCAL_FILE_STORE:
        return True
    items = {str(i.get("name")): i.get("value") for i in spec_of(manifest).get("metadata") or []}
    try:
        LocalFileStore.initialise(items)
    except (OSError, ValueError) as exc:
        log(f"Failed to init component {manifest['metadata']['name']}: {exc}", "error")
        return False
    return True


def hot_reloads(image: str) -> bool:
    match = _VERSION.search(image.split("@", 1)[0].rsplit("/", 1)[-1])
    return match is None or (int(match[1]), int(match[2])) >= HOT_RELOAD_SINCE


class Sidecar:
    """One pod's daprd, as far as its component counters go."""

    def __init__(
        self,
        list_components: Callable[[], list[dict[str, Any]]],
        app_id: str,
        hot_reload: bool,
        init_delay: float,
    ) -> None:
        self.list_components = list_components
        self.app_id = app_id
        self.hot_reload = hot_reload
        self.init_delay = init_delay
        self.seen: dict[str, str] = {}  # name → identity loaded or refused
        self.inits: dict[str, int] = defaultdict(int)
        self.failures: dict[tuple[str, str, str], int] = defaultdict(int)  # (type, name, reason)
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.server: ThreadingHTTPServer | None = None
        self.fatal = ""  # why daprd exited: its pod is not ready
        self.started = threading.Event()  # loaded its components at start: daprd's readiness passes

    def start(self, ip: str, port: int | None) -> None:
        if port is not None:
            try:
                self.server = ThreadingHTTPServer((ip, port), metrics_handler(self))
            except OSError as exc:
                log(f"sidecar {self.app_id}: cannot serve metrics on {ip}:{port}: {exc}", "error")
            else:
                self.server.daemon_threads = True
                threading.Thread(target=self.server.serve_forever, daemon=True).start()
        threading.Thread(target=self._scan_forever, daemon=True).start()

    def stop(self) -> None:
        self.stopped.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def _scan_forever(self) -> None:
        starting = True
        while not self.stopped.is_set() and not self.fatal:
            if starting or self.hot_reload:
                self._scan(starting)
            if starting and not self.fatal:
                self.started.set()
            starting = False
            self.stopped.wait(RESCAN_INTERVAL)

    def _scan(self, starting: bool) -> None:
        for manifest in self.list_components():
            name = manifest["metadata"]["name"]
            if not in_scope(manifest, self.app_id) or self.seen.get(name) == identity(manifest):
                continue
            self.seen[name] = identity(manifest)
            if self.stopped.wait(self.init_delay):
                return
            failed = self._load(manifest)
            if failed and starting and spec_of(manifest).get("ignoreErrors") is not True:
                self.fatal = f"Fatal error from runtime: process component {name} error: {failed}"
                log(f"sidecar {self.app_id}: {self.fatal}", "error")
                return

    def _load(self, manifest: dict[str, Any]) -> str:
        """Initialise one component: counted, or the failure ("" when there is none)."""
        name = manifest["metadata"]["name"]
        component_type = str(spec_of(manifest).get("type", ""))
        with self.lock:
            if not known_category(manifest):
                return f"incorrect type {component_type}"
            if creation_error(manifest) is not None:
                self.failures[(component_type, name, "creation")] += 1
                return str(creation_error(manifest))
            if not initialises(manifest):
                self.failures[(component_type, name, "init")] += 1
                return f"[INIT_COMPONENT_FAILURE]: initialization error occurred for {name}"
            self.inits[component_type] += 1
        return ""

    def metrics(self) -> str:
        app = self.app_id
        lines = [
            "# HELP dapr_runtime_component_init_total The number of initialized components.",
            "# TYPE dapr_runtime_component_init_total counter",
        ]
        with self.lock:
            lines += [
                f'dapr_runtime_component_init_total{{app_id="{app}",component="{t}"}} {n}'
                for t, n in sorted(self.inits.items())
            ]
            lines += [
                "# HELP dapr_runtime_component_init_fail_total "
                "The number of component initialization failures.",
                "# TYPE dapr_runtime_component_init_fail_total counter",
            ]
            lines += [
                f'dapr_runtime_component_init_fail_total{{app_id="{app}",component="{t}",'
                f'componentName="{name}",reason="{reason}"}} {n}'
                for (t, name, reason), n in sorted(self.failures.items())
            ]
        return "\n".join(lines) + "\n"


def metrics_handler(sidecar: Sidecar) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            body = sidecar.metrics().encode() if self.path == "/metrics" else b"404 page not found\n"
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


class DeploymentController:
    """Rolls Deployments out (see the module's rules); one thread, woken every 50 ms."""

    def __init__(
        self, store: Any, resources: dict[str, Any], rollout_seconds: float, init_delay: float
    ) -> None:
        self.store = store
        self.deployments, self.pods = resources["deployments"], resources["pods"]
        self.components = resources["components"]
        self.rollout_seconds = rollout_seconds
        self.init_delay = init_delay
        self.rollouts: dict[str, tuple[str, float]] = {}  # deployment uid → (template hash, since)
        self.running: dict[str, str] = {}  # deployment uid → template hash of its pods
        self.sidecars: dict[str, Sidecar] = {}  # pod name → its sidecar
        start = random.randrange(2, 255)  # two stand-ins side by side rarely hand out the same address
        self.addresses = itertools.cycle([*range(start, 255), *range(2, start)])
        self.stopped = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def stop(self) -> None:
        self.stopped.set()
        for sidecar in self.sidecars.values():
            sidecar.stop()

    def _run(self) -> None:
        while not self.stopped.wait(0.05):
            try:
                self.tick()
            except Exception as exc:  # a stand-in bug must show, not stop the controller
                log(f"deployment controller: {exc!r}", "error")

    def _objects(self, resource: Any, namespace: str | None = None) -> list[dict[str, Any]]:
        with self.store.changed:
            return [
                s.rendered()
                for (r, ns, _), s in list(self.store.objects.items())
                if r is resource and namespace in (None, ns)
            ]

    def tick(self) -> None:
        deployments = self._objects(self.deployments)
        alive = {d["metadata"]["uid"] for d in deployments}
        for pod in self._objects(self.pods):
            owner = (pod["metadata"].get("ownerReferences") or [{}])[0].get("uid")
            if owner is not None and owner not in alive:  # garbage collection of a deleted Deployment's pods
                self._delete_pod(pod)
        for deployment in deployments:
            self._sync(deployment)

    def _sync(self, deployment: dict[str, Any]) -> None:
        uid, wanted = deployment["metadata"]["uid"], template_hash(deployment)
        now = time.monotonic()
        if self.rollouts.get(uid, ("", 0.0))[0] != wanted:
            self.rollouts[uid] = (wanted, now)
        started = self.rollouts[uid][1]
        if self.running.get(uid) != wanted and now - started >= self.rollout_seconds:
            self._replace_pods(deployment, wanted)
            self.running[uid] = wanted
        replaced = self.running.get(uid) == wanted
        available = self._available(deployment) if replaced else None
        deadline = float(deployment["spec"].get("progressDeadlineSeconds", PROGRESS_DEADLINE_SECONDS))
        self._write_status(deployment, available, overdue=now - started > deadline)

    def _write_status(self, deployment: dict[str, Any], available: int | None, overdue: bool) -> None:
        """`available`: how many of the new pods are, None while the old ones still run."""
        metadata = deployment["metadata"]
        replicas = int(deployment["spec"].get("replicas", 1))
        old = replicas if available is None and metadata["uid"] in self.running else 0
        now_available = old if available is None else available
        complete = available == replicas
        progressing = (
            condition("Progressing", "True", "NewReplicaSetAvailable")
            if complete
            else condition("Progressing", "False", "ProgressDeadlineExceeded")
            if overdue
            else condition("Progressing", "True", "ReplicaSetUpdated")
        )
        enough = now_available >= replicas
        status = {
            "observedGeneration": int(metadata.get("generation") or 1),
            "replicas": old if available is None else replicas,
            "updatedReplicas": 0 if available is None else replicas,
            "readyReplicas": now_available,
            "availableReplicas": now_available,
            "conditions": [
                condition(
                    "Available",
                    "True" if enough else "False",
                    "MinimumReplicasAvailable" if enough else "MinimumReplicasUnavailable",
                ),
                progressing,
            ],
        }
        if deployment.get("status") == status:
            return

        def with_status(live: dict[str, Any]) -> dict[str, Any]:
            live["status"] = status
            return live

        self.store.update(
            "update", self.deployments, metadata["namespace"], metadata["name"], MANAGER, with_status
        )

    def _available(self, deployment: dict[str, Any]) -> int:
        """The Deployment's pods whose sidecar did not exit; one that did is marked not ready."""
        available = 0
        for pod in self._objects(self.pods, deployment["metadata"]["namespace"]):
            if (pod["metadata"].get("ownerReferences") or [{}])[0].get("uid") != deployment["metadata"][
                "uid"
            ]:
                continue
            sidecar = self.sidecars.get(pod["metadata"]["name"])
            ready = sidecar is None or sidecar.started.is_set()
            available += ready
            if ready != (pod["status"]["conditions"][0]["status"] == "True"):
                self._set_ready(pod, ready)
            elif sidecar is not None and sidecar.fatal and "containerStatuses" not in pod["status"]:
                self._set_crashed(pod, sidecar.fatal)
        return available

    def _set_ready(self, pod: dict[str, Any], ready: bool) -> None:
        def with_ready(live: dict[str, Any]) -> dict[str, Any]:
            live["status"]["conditions"] = [pod_ready(ready)]
            return live

        metadata = pod["metadata"]
        self.store.update("update", self.pods, metadata["namespace"], metadata["name"], "kubelet", with_ready)

    def _set_crashed(self, pod: dict[str, Any], why: str) -> None:
        def crashed(live: dict[str, Any]) -> dict[str, Any]:
            live["status"]["containerStatuses"] = [
                {
                    "name": "daprd",
                    "ready": False,
                    "restartCount": 1,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": why[:500]}},
                }
            ]
            return live

        metadata = pod["metadata"]
        self.store.update("update", self.pods, metadata["namespace"], metadata["name"], "kubelet", crashed)

    def _replace_pods(self, deployment: dict[str, Any], wanted: str) -> None:
        metadata = deployment["metadata"]
        for pod in self._objects(self.pods, metadata["namespace"]):
            if (pod["metadata"].get("ownerReferences") or [{}])[0].get("uid") == metadata["uid"]:
                self._delete_pod(pod)
        for _ in range(int(deployment["spec"].get("replicas", 1))):
            self._create_pod(deployment, wanted)

    def _delete_pod(self, pod: dict[str, Any]) -> None:
        name, namespace = pod["metadata"]["name"], pod["metadata"]["namespace"]
        sidecar = self.sidecars.pop(name, None)
        if sidecar is not None:
            sidecar.stop()
        with contextlib.suppress(Exception):  # deleted meanwhile
            self.store.delete(self.pods, namespace, name, MANAGER, {})

    def _create_pod(self, deployment: dict[str, Any], wanted: str) -> None:
        metadata, template = deployment["metadata"], deployment["spec"].get("template") or {}
        annotations = dict((template.get("metadata") or {}).get("annotations") or {})
        ip = f"127.0.0.{next(self.addresses)}"
        containers = list((template.get("spec") or {}).get("containers") or [])
        image = annotations.get("dapr.io/sidecar-image", DEFAULT_SIDECAR_IMAGE)
        dapr = annotations.get("dapr.io/enabled") == "true"
        if dapr:
            containers.append({"name": "daprd", "image": image})
        name = f"{metadata['name']}-{wanted}-{uuid.uuid4().hex[:5]}"
        owner = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": metadata["name"],
            "uid": metadata["uid"],
        }
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": metadata["namespace"],
                "labels": {
                    **((template.get("metadata") or {}).get("labels") or {}),
                    "pod-template-hash": wanted,
                },
                "annotations": annotations,
                "ownerReferences": [owner],
            },
            "spec": {**(template.get("spec") or {}), "containers": containers},
            "status": {"phase": "Running", "podIP": ip, "conditions": [pod_ready(not dapr)]},
        }
        self.store.create(self.pods, metadata["namespace"], body, MANAGER)
        if dapr:
            self._start_sidecar(name, metadata, annotations, ip, image)

    def _start_sidecar(
        self, pod: str, owner: dict[str, Any], annotations: dict[str, str], ip: str, image: str
    ) -> None:
        namespace = owner["namespace"]
        app_id = annotations.get("dapr.io/app-id") or owner["name"]
        sidecar = Sidecar(
            lambda: self._objects(self.components, namespace), app_id, hot_reloads(image), self.init_delay
        )
        port = None
        if annotations.get("dapr.io/enable-metrics") != "false":
            port = int(annotations.get("dapr.io/metrics-port") or DEFAULT_METRICS_PORT)
        self.sidecars[pod] = sidecar
        sidecar.start(ip, port)


def pod_ready(ready: bool) -> dict[str, str]:
    return condition("Ready", "True" if ready else "False", "" if ready else "ContainersNotReady")


def condition(kind: str, status: str, reason: str) -> dict[str, str]:
    return {"type": kind, "status": status, "reason": reason}
