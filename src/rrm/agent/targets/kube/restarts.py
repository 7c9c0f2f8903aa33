"""Making sidecars load a change where hot reload is off: restart the Dapr-enabled workloads it concerns.

A workload (Deployment or StatefulSet) is concerned by a component when its pod template has
`dapr.io/enabled: "true"` and its `dapr.io/app-id` is in the component's `scopes` (every Dapr-enabled one
when there are none). It is restarted the way `kubectl rollout restart` does it, by patching a pod-template
annotation (`rrm.io/restarted-at`): at most once per sync, and at most once per `min_interval`; a restart
asked for sooner is postponed (the target is woken when it is due), never dropped.

`--hot-reload`: `on` never restarts; `off` always does; `auto` asks per workload whether its sidecar hot
reloads (the `HotReload` feature of the Configuration named by `dapr.io/config`, else on from Dapr 1.18,
the version read from the `daprd` container of its pods; unknown counts as off). Hot reload does not notice
a Secret whose values changed under an unchanged component, so with `auto` such a change restarts too.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rrm.agent.config import HotReload
from rrm.agent.targets.kube.client import WORKLOAD_KINDS, KubeApi, KubeError
from rrm.wire.protocol import ReloadResult

log = logging.getLogger(__name__)

ENABLED_ANNOTATION = "dapr.io/enabled"
APP_ID_ANNOTATION = "dapr.io/app-id"
CONFIG_ANNOTATION = "dapr.io/config"
SIDECAR_IMAGE_ANNOTATION = "dapr.io/sidecar-image"
RESTARTED_AT_ANNOTATION = "rrm.io/restarted-at"
SIDECAR_CONTAINER = "daprd"
HOT_RELOAD_FEATURE = "HotReload"
HOT_RELOAD_BY_DEFAULT_SINCE = (1, 18)
RESTART_COMMAND = (
    f"restart Dapr-enabled workloads in scope (pod-template annotation {RESTARTED_AT_ANNOTATION})"
)
_VERSION = re.compile(r"^v?(\d+)\.(\d+)")


@dataclass(frozen=True)
class Concern:
    """A change sidecars must load: in which namespace, for which app ids (empty: every Dapr-enabled
    workload), and whether only the values of a Secret changed under an unchanged component."""

    namespace: str
    scopes: tuple[str, ...]
    secrets_only: bool = False


def workload_id(workload: Mapping[str, Any]) -> str:
    metadata = workload.get("metadata") or {}
    return f"{workload.get('kind')}/{metadata.get('namespace')}/{metadata.get('name')}"


def template_annotations(workload: Mapping[str, Any]) -> Mapping[str, str]:
    template = (workload.get("spec") or {}).get("template") or {}
    return (template.get("metadata") or {}).get("annotations") or {}


def concerns_workload(workload: Mapping[str, Any], scopes: Iterable[str]) -> bool:
    annotations = template_annotations(workload)
    if annotations.get(ENABLED_ANNOTATION) != "true":
        return False
    wanted = set(scopes)
    return not wanted or annotations.get(APP_ID_ANNOTATION) in wanted


def dapr_version(image: str) -> tuple[int, int] | None:
    """`ghcr.io/dapr/daprd:1.14.4` → (1, 14); None for `latest`, digests and anything else."""
    tag = image.split("@", 1)[0].rsplit("/", 1)[-1].partition(":")[2]
    match = _VERSION.match(tag)
    return (int(match[1]), int(match[2])) if match else None


def hot_reload_feature(configuration: Mapping[str, Any] | None) -> bool | None:
    """The `HotReload` feature's `enabled` in a Dapr Configuration; None when it does not say."""
    for feature in ((configuration or {}).get("spec") or {}).get("features") or []:
        if isinstance(feature, Mapping) and feature.get("name") == HOT_RELOAD_FEATURE:
            return bool(feature.get("enabled"))
    return None


class Restarter:
    def __init__(
        self, api: KubeApi, mode: HotReload, min_interval: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.api = api
        self.mode = mode
        self.min_interval = min_interval
        self.clock = clock
        self.wake: Callable[[], None] | None = None
        self._last: dict[str, float] = {}
        self._pending: set[str] = set()
        self._lock = threading.Lock()

    def restart(self, concerns: list[Concern]) -> ReloadResult | None:
        """Restart what `concerns` reach and what was postponed; None when nothing was (to be) done."""
        if self.mode == "on":
            return None
        wanted, failed = self._select(concerns)
        with self._lock:
            wanted |= self._pending
            self._pending = set()
        restarted: list[str] = []
        postponed: list[str] = []
        now = self.clock()
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        for workload in sorted(wanted):
            due = self._last.get(workload, float("-inf")) + self.min_interval
            if now < due:
                postponed.append(workload)
                self._postpone(workload, due - now)
                continue
            kind, namespace, name = workload.split("/", 2)
            try:
                self.api.annotate_pod_template(kind, namespace, name, {RESTARTED_AT_ANNOTATION: stamp})
            except KubeError as exc:
                if exc.status != 404:  # a workload deleted meanwhile needs no restart
                    failed.append(f"{workload}: {exc.message}")
                continue
            self._last[workload] = now
            restarted.append(workload)
        if not (restarted or postponed or failed):
            return None
        for workload in restarted:
            log.info("event=restarted workload=%s", workload)
        lines = [f"restarted {w}" for w in restarted]
        lines += [f"postponed {w} (at most one restart per {self.min_interval:g} s)" for w in postponed]
        lines += [f"failed {line}" for line in failed]
        return ReloadResult(
            command=RESTART_COMMAND,
            exit_code=1 if failed else 0,
            output="\n".join(lines),
            restarted=restarted,
        )

    def _postpone(self, workload: str, delay: float) -> None:
        with self._lock:
            self._pending.add(workload)
        if self.wake is not None:
            timer = threading.Timer(delay, self.wake)
            timer.daemon = True
            timer.start()

    def _select(self, concerns: list[Concern]) -> tuple[set[str], list[str]]:
        """The workloads to restart, and the namespaces that could not be looked at."""
        wanted: set[str] = set()
        failed: list[str] = []
        for namespace in sorted({c.namespace for c in concerns}):
            here = [c for c in concerns if c.namespace == namespace]
            try:
                workloads = [w for kind in WORKLOAD_KINDS for w in self.api.list_workloads(kind, namespace)]
            except KubeError as exc:
                failed.append(f"listing workloads in {namespace}: {exc.message}")
                continue
            for workload in workloads:
                reached = [c for c in here if concerns_workload(workload, c.scopes)]
                if not reached:
                    continue
                if (
                    self.mode == "auto"
                    and all(not c.secrets_only for c in reached)
                    and self._hot_reloads(workload)
                ):
                    continue
                wanted.add(workload_id(workload))
        return wanted, failed

    def _hot_reloads(self, workload: Mapping[str, Any]) -> bool:
        """Whether the workload's sidecar picks up component changes by itself; unknown counts as no."""
        namespace = str((workload.get("metadata") or {}).get("namespace"))
        annotations = template_annotations(workload)
        try:
            if annotations.get(CONFIG_ANNOTATION):
                enabled = hot_reload_feature(
                    self.api.get_configuration(namespace, annotations[CONFIG_ANNOTATION])
                )
                if enabled is not None:
                    return enabled
            version = self._sidecar_version(workload, namespace)
        except KubeError as exc:
            log.warning("event=hot-reload-unknown workload=%s error=%s", workload_id(workload), exc)
            return False
        return version is not None and version >= HOT_RELOAD_BY_DEFAULT_SINCE

    def _sidecar_version(self, workload: Mapping[str, Any], namespace: str) -> tuple[int, int] | None:
        image = template_annotations(workload).get(SIDECAR_IMAGE_ANNOTATION)
        if image:
            return dapr_version(image)
        match_labels = (((workload.get("spec") or {}).get("selector") or {}).get("matchLabels")) or {}
        if not match_labels:
            return None
        selector = ",".join(f"{k}={v}" for k, v in sorted(match_labels.items()))
        for pod in self.api.list_pods(namespace, selector):
            for container in (pod.get("spec") or {}).get("containers") or []:
                if container.get("name") == SIDECAR_CONTAINER and container.get("image"):
                    return dapr_version(str(container["image"]))
        return None
