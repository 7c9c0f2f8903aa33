"""Kubernetes (and Kyma) runtimes: `v1` Secrets and Dapr `Component`s by server-side apply.

Secrets first, then the Components that use them (a missing Secret breaks the component listing of every
sidecar in scope); deletions the other way round, and only of objects carrying this agent's labels. An object
of the same name without them is reported as a conflict and left alone. Hand edits are noticed by a watch
and put back by the loop's reconcile; sidecars without hot reload are made to load changes by restarting
the workloads in scope (`kube/restarts.py`). After each apply the agent follows the Dapr-enabled
Deployments in scope until their rollouts completed and their sidecars report the components loaded
(`kube/sidecars.py`), where it can reach them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client

from rrm.agent.config import AgentConfig, ConfigurationError, HotReload
from rrm.agent.drift import changed_paths
from rrm.agent.loading import SidecarsView
from rrm.agent.targets.base import ApplyOutcome, NativeChanges, NativeObject, Target, component_results
from rrm.agent.targets.kube.client import KubeApi, KubeConfigError, KubeError, load_configuration
from rrm.agent.targets.kube.objects import (
    COMPONENT,
    SECRET,
    Plan,
    id_of,
    is_managed_by,
    managed_selector,
    owned_view,
    plan_state,
    split_id,
)
from rrm.agent.targets.kube.restarts import Concern, Restarter
from rrm.agent.targets.kube.sidecars import Placed, SidecarInspector
from rrm.agent.targets.kube.watch import ChangeWatcher
from rrm.core.names import dns1123_label_error
from rrm.wire.protocol import DesiredState

log = logging.getLogger(__name__)

MAX_PATHS_SHOWN = 5


class KubernetesTarget(Target):
    name = "kubernetes"

    def __init__(
        self,
        configuration: client.Configuration,
        namespaces: list[str],
        hot_reload: HotReload = AgentConfig.hot_reload,
        restart_min_interval: float = AgentConfig.restart_min_interval,
    ) -> None:
        self.configuration = configuration
        self.namespaces = namespaces
        self.api = KubeApi(configuration)
        self.restarter = Restarter(self.api, hot_reload, restart_min_interval)
        self.sidecars = SidecarInspector(self.api)
        self.runtime_id: str | None = None
        self._live: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_config(cls, config: AgentConfig) -> KubernetesTarget:
        try:
            configuration, default_namespace = load_configuration(config.kubeconfig)
        except KubeConfigError as exc:
            raise ConfigurationError(str(exc)) from exc
        namespaces = list(dict.fromkeys(config.namespaces)) or [default_namespace]
        for namespace in namespaces:
            problem = dns1123_label_error(namespace)
            if problem:
                raise ConfigurationError(f"--namespace {namespace!r}: {problem}")
        return cls(configuration, namespaces, config.hot_reload, config.restart_min_interval)

    def attach(self, runtime_id: str) -> None:
        self.runtime_id = runtime_id

    def watch(self, wake: Callable[[], None]) -> None:
        self.restarter.wake = wake
        watcher = ChangeWatcher(
            self.configuration, (SECRET, COMPONENT), self.namespaces, self._selector(), wake
        )
        watcher.start()

    def render(self, state: DesiredState) -> dict[str, NativeObject]:
        return self._plan(state).objects

    def observe(self) -> dict[str, NativeObject]:
        """This runtime's Secrets and Components in the agent's namespaces, as far as the agent owns them."""
        live: dict[str, dict[str, Any]] = {}
        for namespace in self.namespaces:
            for kind in (SECRET, COMPONENT):
                items, _ = self.api.list_objects(kind, namespace, self._selector())
                live.update((id_of(item), item) for item in items)
        self._live = live
        return {object_id: owned_view(obj) for object_id, obj in live.items()}

    def apply(self, changes: NativeChanges, state: DesiredState, *, prune: bool) -> ApplyOutcome:
        plan = self._plan(state)
        failed: dict[str, str] = dict(plan.rejected)
        writes = {**changes.create, **changes.update}
        changed: set[str] = set()
        broken_secrets: dict[str, str] = {}
        baseline = self.sidecars.take_baseline(split_id(i)[1] for i in writes if split_id(i)[0] == COMPONENT)

        for object_id in sorted(i for i in writes if split_id(i)[0] == SECRET):
            error = self._apply_one(object_id, writes[object_id], changed, is_new=object_id in changes.create)
            if error:
                broken_secrets[object_id] = error
        for object_id in sorted(i for i in plan.objects if split_id(i)[0] == COMPONENT):
            name = split_id(object_id)[2]
            broken = [broken_secrets[s] for s in sorted(plan.needs[object_id]) if s in broken_secrets]
            if broken:
                failed[name] = "not applied, a Secret it uses failed: " + "; ".join(broken)
            elif object_id in writes:
                error = self._apply_one(
                    object_id, writes[object_id], changed, is_new=object_id in changes.create
                )
                if error:
                    failed[name] = error

        deleted: dict[str, NativeObject] = {}
        if prune and changes.delete:
            deleted = self._prune(
                changes.delete,
                keep_secrets=bool(broken_secrets) or _component_failed(failed, changes.update),
            )

        reload = self.restarter.restart(_concerns(plan, changed, deleted))
        restarted = reload.restarted if reload else []
        if changed or deleted or restarted or not self.sidecars.placed:
            rewritten = {split_id(i)[2] for i in changed if split_id(i)[0] == COMPONENT}
            self.sidecars.begin(_placed(plan, failed), rewritten, restarted, baseline)
        if changed or deleted:
            log.info(
                "event=applied hash=%s applied=%d deleted=%d failed=%d",
                state.hash[:12],
                len(changed),
                len(deleted),
                len(failed),
            )
        return ApplyOutcome(
            resources=component_results(state, failed),
            changed=bool(changed or deleted or (reload and reload.restarted)),
            reload=reload,
        )

    async def sidecar_report(self) -> SidecarsView | None:
        """The sidecars of the Dapr-enabled Deployments in scope, on the components of the last apply (read
        through the Kubernetes API and the sidecars' metrics, blocking: on a thread)."""
        return await asyncio.to_thread(self.sidecars.view)

    def component_name(self, object_id: str) -> str | None:
        kind, _, name = split_id(object_id)
        return name if kind == COMPONENT else None

    def _plan(self, state: DesiredState) -> Plan:
        return plan_state(state, self._runtime(), self.namespaces)

    def _runtime(self) -> str:
        if self.runtime_id is None:
            raise RuntimeError("the kubernetes target is used before attach(runtime_id)")
        return self.runtime_id

    def _selector(self) -> str:
        return managed_selector(self._runtime())

    def _apply_one(
        self, object_id: str, desired: NativeObject, changed: set[str], *, is_new: bool
    ) -> str | None:
        """Apply one object; None when it is in place as desired, else why not (the API server's words)."""
        kind, namespace, name = split_id(object_id)
        try:
            if is_new:
                existing = self.api.get(kind, namespace, name)
                if existing is not None and not is_managed_by(existing, self._runtime()):
                    return (
                        f"{kind} {namespace}/{name} already exists and is not managed by rrm for this "
                        "runtime; left alone"
                    )
            applied = self.api.apply(  # over the version observed: a write in between is re-read
                desired, self._live.get(object_id), lambda live: is_managed_by(live, self._runtime())
            )
        except KubeError as exc:
            log.error("event=apply-failed object=%s status=%d error=%s", object_id, exc.status, exc.message)
            return f"{kind} {namespace}/{name}: {exc.message}"
        before = (self._live.get(object_id, {}).get("metadata") or {}).get("resourceVersion")
        if (applied.get("metadata") or {}).get("resourceVersion") != before:
            changed.add(object_id)
        self._live[object_id] = applied
        read_back = owned_view(applied)
        if read_back != desired:
            paths = changed_paths(desired, read_back)
            shown = ", ".join(paths[:MAX_PATHS_SHOWN]) + (" …" if len(paths) > MAX_PATHS_SHOWN else "")
            return f"{kind} {namespace}/{name} was applied, but reads back different at {shown}"
        return None

    def _prune(self, stale: Mapping[str, NativeObject], *, keep_secrets: bool) -> dict[str, NativeObject]:
        """Components first, then Secrets; Secrets stay while a Component that may use them stays."""
        deleted: dict[str, NativeObject] = {}
        for object_id in sorted(i for i in stale if split_id(i)[0] == COMPONENT):
            if self._delete(object_id):
                deleted[object_id] = stale[object_id]
            else:
                keep_secrets = True
        if not keep_secrets:
            for object_id in sorted(i for i in stale if split_id(i)[0] == SECRET):
                if self._delete(object_id):
                    deleted[object_id] = stale[object_id]
        return deleted

    def _delete(self, object_id: str) -> bool:
        kind, namespace, name = split_id(object_id)
        uid = (self._live.get(object_id, {}).get("metadata") or {}).get("uid")
        try:
            self.api.delete(kind, namespace, name, uid)
        except KubeError as exc:
            log.error("event=delete-failed object=%s status=%d error=%s", object_id, exc.status, exc.message)
            return False
        self._live.pop(object_id, None)
        return True


def _component_failed(failed: Mapping[str, str], updates: Mapping[str, NativeObject]) -> bool:
    """A Component left at its old version may still use Secrets the new state no longer holds (one that
    could not be created has no old version)."""
    return any(split_id(i)[0] == COMPONENT and split_id(i)[2] in failed for i in updates)


def _placed(plan: Plan, failed: Mapping[str, str]) -> dict[str, Placed]:
    """The Components in place as desired, for following their loading."""
    placed = {}
    for object_id, obj in plan.objects.items():
        kind, namespace, name = split_id(object_id)
        if kind == COMPONENT and name not in failed:
            spec = obj.get("spec") or {}
            placed[name] = Placed(
                namespace, str(spec.get("type", "")), str(spec.get("version", "")), _scopes(obj)
            )
    return placed


def _scopes(obj: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(str(s) for s in obj.get("scopes") or [])


def _concerns(plan: Plan, changed: set[str], deleted: Mapping[str, NativeObject]) -> list[Concern]:
    """What the sidecars must load: changed and deleted Components, and the unchanged Components whose
    Secret values changed."""
    concerns = []
    for object_id in sorted(changed | set(deleted)):
        kind, namespace, _ = split_id(object_id)
        if kind == COMPONENT:
            obj = plan.objects.get(object_id) or deleted.get(object_id) or {}
            concerns.append(Concern(namespace, _scopes(obj)))
    changed_secrets = {i for i in changed if split_id(i)[0] == SECRET}
    for object_id, needs in sorted(plan.needs.items()):
        if object_id not in changed and needs & changed_secrets:
            concerns.append(
                Concern(split_id(object_id)[1], _scopes(plan.objects[object_id]), secrets_only=True)
            )
    return concerns
