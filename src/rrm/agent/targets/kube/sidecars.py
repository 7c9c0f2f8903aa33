"""Whether the sidecars of the Dapr-enabled Deployments in scope have loaded what the agent applied.

A component is expected of every Deployment in its namespace whose pod template has `dapr.io/enabled:
"true"` and whose `dapr.io/app-id` its `scopes` admit (all of them without scopes). For each such Deployment
the agent restarted, the rollout must have completed first (`rollout.py`); then each of its pods' sidecars
is asked through its metrics (`metrics.py`), on the pod IP:

- a sidecar that counts an init failure of the component since the apply refused it: failed at once, with
  the failing stage daprd names;
- else it has loaded it once it counts at least as many successful inits of the component's type as there
  are components of that type for its app id and — for a sidecar already running at the apply, which hot
  reloads — as many more since the apply as components of that type were changed;
- a pod without an IP, with metrics disabled or not answering tells nothing: when no sidecar of any
  Deployment in scope tells, whether the component is loaded is unknown and the result says why.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from rrm.agent.loading import SidecarsView
from rrm.agent.targets.kube.client import KubeApi, KubeError
from rrm.agent.targets.kube.metrics import ComponentMetrics, MetricsError, parse_component_metrics
from rrm.agent.targets.kube.restarts import (
    APP_ID_ANNOTATION,
    ENABLED_ANNOTATION,
    concerns_workload,
    workload_id,
)
from rrm.agent.targets.kube.rollout import rollout_status
from rrm.wire.protocol import LoadedComponent, SidecarReport

METRICS_PORT_ANNOTATION = "dapr.io/metrics-port"
ENABLE_METRICS_ANNOTATION = "dapr.io/enable-metrics"
DEFAULT_METRICS_PORT = 9090
SCRAPE_TIMEOUT_SECONDS = 2.0

Scrape = Callable[[str], str]  # a metrics URL → the answer's text; raises on any failure


def http_scrape(url: str) -> str:
    response = httpx.get(url, timeout=SCRAPE_TIMEOUT_SECONDS)
    response.raise_for_status()
    return response.text


@dataclass(frozen=True)
class Placed:
    """Where a component was applied and which sidecars it is for."""

    namespace: str
    type: str
    version: str
    scopes: tuple[str, ...]


@dataclass(frozen=True)
class Verdict:
    state: str  # loaded | waiting | refused | silent (the pod's sidecar tells nothing)
    why: str = ""


def metrics_url(pod: Mapping[str, Any]) -> tuple[str | None, str]:
    """Where the pod's sidecar serves its metrics, or why it cannot be asked."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    name = (pod.get("metadata") or {}).get("name")
    if annotations.get(ENABLE_METRICS_ANNOTATION) == "false":
        return None, f"pod {name}: sidecar metrics disabled ({ENABLE_METRICS_ANNOTATION})"
    ip = (pod.get("status") or {}).get("podIP")
    if not ip:
        return None, f"pod {name}: no pod IP"
    port = str(annotations.get(METRICS_PORT_ANNOTATION) or DEFAULT_METRICS_PORT)
    host = f"[{ip}]" if ":" in str(ip) else ip
    return f"http://{host}:{port}/metrics", ""


def in_scope(scopes: Iterable[str], app_id: str) -> bool:
    wanted = set(scopes)
    return not wanted or app_id in wanted


def pod_app_id(pod: Mapping[str, Any], deployment: Mapping[str, Any]) -> str:
    """The pod's `dapr.io/app-id`; Dapr's injector defaults it to the owning workload's name."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(APP_ID_ANNOTATION) or (deployment.get("metadata") or {}).get("name"))


def pods_of(deployment: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The Deployment's pods (its selector's matchLabels), leaving out those being deleted."""
    wanted = (((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels")) or {}
    return [
        pod
        for pod in pods
        if not (pod.get("metadata") or {}).get("deletionTimestamp")
        and all(((pod.get("metadata") or {}).get("labels") or {}).get(k) == v for k, v in wanted.items())
    ]


def judge_pod(
    name: str,
    placed: Mapping[str, Placed],
    changed: set[str],
    pod: str,
    app_id: str,
    now: ComponentMetrics,
    before: ComponentMetrics | None,
) -> Verdict:
    """One sidecar's verdict on component `name` (see the module's rules)."""
    want = placed[name]
    failed = now.new_failures(name, before)
    if failed:
        return Verdict("refused", f"daprd on pod {pod} failed to initialise it (reason: {', '.join(failed)})")
    same_type = [
        n
        for n, p in placed.items()
        if (p.namespace, p.type) == (want.namespace, want.type) and in_scope(p.scopes, app_id)
    ]
    have = now.inits.get(want.type, 0.0)
    if have < len(same_type):
        return Verdict(
            "waiting", f"daprd on pod {pod} counts {have:g} of {len(same_type)} {want.type} init(s)"
        )
    if before is not None and name in changed:
        renewed = [n for n in same_type if n in changed]
        since = have - before.inits.get(want.type, 0.0)
        if since < len(renewed):
            return Verdict("waiting", f"daprd on pod {pod} has not re-initialised it since the apply")
    return Verdict("loaded")


def combine(verdicts: list[Verdict], nobody: str) -> Verdict:
    """Refused by any sidecar, else waiting for any, else loaded when at least one told."""
    for state in ("refused", "waiting"):
        found = [v.why for v in verdicts if v.state == state]
        if found:
            return Verdict(state, "; ".join(found[:3]) + (" …" if len(found) > 3 else ""))
    if any(v.state == "loaded" for v in verdicts):
        return Verdict("loaded")
    silent = [v.why for v in verdicts if v.why]
    return Verdict("silent", "; ".join([nobody, *silent[:3]]))


@dataclass
class _Look:
    """One look at the sidecars: what the last apply placed, and each pod's metrics read so far."""

    placed: dict[str, Placed]
    changed: set[str]
    restarted: set[str]
    baseline: dict[str, ComponentMetrics]
    scraped: dict[str, tuple[ComponentMetrics | None, str]] = field(default_factory=dict)


class SidecarInspector:
    """Follows the sidecars for the components of the last apply. Called from worker threads."""

    def __init__(self, api: KubeApi, scrape: Scrape = http_scrape) -> None:
        self.api = api
        self.scrape = scrape
        self._lock = threading.Lock()
        self.placed: dict[str, Placed] = {}
        self.changed: set[str] = set()
        self.restarted: set[str] = set()
        self.baseline: dict[str, ComponentMetrics] = {}  # pod uid → its counters before the apply

    def take_baseline(self, namespaces: Iterable[str]) -> dict[str, ComponentMetrics]:
        """The counters of every reachable Dapr-enabled pod in `namespaces`, before an apply writes."""
        baseline: dict[str, ComponentMetrics] = {}
        for namespace in sorted(set(namespaces)):
            try:
                pods = self.api.list_pods(namespace, "")
            except KubeError:
                continue
            for pod in pods:
                annotations = (pod.get("metadata") or {}).get("annotations") or {}
                if annotations.get(ENABLED_ANNOTATION) == "true":
                    metrics, _ = self._metrics(pod)
                    if metrics is not None:
                        baseline[str(pod["metadata"].get("uid"))] = metrics
        return baseline

    def begin(
        self,
        placed: Mapping[str, Placed],
        changed: Iterable[str],
        restarted: Iterable[str],
        baseline: Mapping[str, ComponentMetrics],
    ) -> None:
        with self._lock:
            self.placed, self.changed = dict(placed), set(changed)
            self.restarted, self.baseline = set(restarted), dict(baseline)

    def view(self) -> SidecarsView | None:
        """The verdict on every component of the last apply; None before any."""
        with self._lock:
            look = _Look(dict(self.placed), set(self.changed), set(self.restarted), dict(self.baseline))
        if not look.placed:
            return None
        verdicts: dict[str, Verdict] = {}
        for namespace in sorted({p.namespace for p in look.placed.values()}):
            verdicts.update(self._judge_namespace(namespace, look))
        return _view(verdicts, look.placed)

    def _judge_namespace(self, namespace: str, look: _Look) -> dict[str, Verdict]:
        here = [n for n, p in look.placed.items() if p.namespace == namespace]
        try:
            deployments = self.api.list_workloads("Deployment", namespace)
            pods = self.api.list_pods(namespace, "")
        except KubeError as exc:
            why = f"cannot list Deployments and pods in {namespace}: {exc.message}"
            return {name: Verdict("silent", why) for name in here}
        verdicts = {}
        for name in here:
            reached = [d for d in deployments if concerns_workload(d, look.placed[name].scopes)]
            found = [v for d in reached for v in self._judge_deployment(name, d, pods, look)]
            nobody = (
                f"no sidecar in reach reports on it ({len(reached)} Dapr-enabled Deployment(s) in scope)"
                if reached
                else f"no Dapr-enabled Deployment in {namespace} is in its scope"
            )
            verdicts[name] = combine(found, nobody)
        return verdicts

    def _judge_deployment(
        self, name: str, deployment: Mapping[str, Any], pods: list[dict[str, Any]], look: _Look
    ) -> list[Verdict]:
        if workload_id(deployment) in look.restarted:
            status = rollout_status(deployment)
            if status.failed:
                return [Verdict("refused", f"{workload_id(deployment)}: {status.message}")]
            if not status.done:
                return [Verdict("waiting", f"{workload_id(deployment)} restarted: {status.message}")]
        found = []
        for pod in pods_of(deployment, pods):
            uid = str((pod.get("metadata") or {}).get("uid"))
            if uid not in look.scraped:
                look.scraped[uid] = self._metrics(pod)
            metrics, why = look.scraped[uid]
            if metrics is None:
                found.append(Verdict("silent", why))
                continue
            pod_name = str((pod.get("metadata") or {}).get("name"))
            app_id = pod_app_id(pod, deployment)
            found.append(
                judge_pod(name, look.placed, look.changed, pod_name, app_id, metrics, look.baseline.get(uid))
            )
        return found

    def _metrics(self, pod: Mapping[str, Any]) -> tuple[ComponentMetrics | None, str]:
        url, why = metrics_url(pod)
        if url is None:
            return None, why
        name = (pod.get("metadata") or {}).get("name")
        try:
            return parse_component_metrics(self.scrape(url)), ""
        except (httpx.HTTPError, OSError, MetricsError) as exc:
            return None, f"pod {name}: metrics at {url} not readable ({type(exc).__name__}: {exc})"[:300]


def _view(verdicts: Mapping[str, Verdict], placed: Mapping[str, Placed]) -> SidecarsView:
    loaded = [n for n, v in verdicts.items() if v.state == "loaded"]
    told = [n for n, v in verdicts.items() if v.state != "silent"]
    report = (
        SidecarReport(
            reachable=True,
            components=[
                LoadedComponent(name=n, type=placed[n].type, version=placed[n].version)
                for n in sorted(loaded)
            ],
        )
        if told
        else None
    )
    return SidecarsView(
        report=report,
        missing={n: v.why for n, v in verdicts.items() if v.state == "waiting"},
        refused={n: v.why for n, v in verdicts.items() if v.state == "refused"},
        unknown={n: v.why for n, v in verdicts.items() if v.state == "silent"},
    )
