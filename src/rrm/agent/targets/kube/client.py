"""The Kubernetes API calls the agent makes, through the official client, each returning plain JSON dicts.

Objects stay dicts as the API server sent them (with `managedFields`), never the client's models, so what
is compared is exactly what the server holds. Server-side apply is a PATCH with
`application/apply-patch+yaml` (JSON is YAML), field manager `rrm-agent` and `force=true`, over the
resourceVersion the agent last read: a write someone made in between is a 409, after which the agent reads
the object again and applies over what it finds, as long as the object is still its own.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from rrm.agent.targets.kube.objects import API_VERSIONS, COMPONENT, FIELD_MANAGER, SECRET, status_message

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
APPLY_PATCH = "application/apply-patch+yaml"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
DAPR_GROUP, DAPR_VERSION = "dapr.io", "v1alpha1"
REQUEST_TIMEOUT = (5.0, 30.0)
APPLY_ATTEMPTS = 3
WORKLOAD_KINDS = ("Deployment", "StatefulSet")


class KubeError(Exception):
    """The API server refused a call (`status` > 0) or could not be reached (`status` 0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class KubeConfigError(Exception):
    """No usable cluster configuration (no in-cluster service account, unreadable kubeconfig)."""


def load_configuration(kubeconfig: Path | None) -> tuple[client.Configuration, str]:
    """The client configuration and the default namespace: of the kubeconfig's current context, else of
    the pod's service account (in-cluster), else `default`."""
    configuration = client.Configuration()
    try:
        if kubeconfig is not None:
            config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
            _, current = config.list_kube_config_contexts(config_file=str(kubeconfig))
            namespace = (current or {}).get("context", {}).get("namespace") or "default"
        else:
            config.load_incluster_config(client_configuration=configuration)
            namespace = SERVICE_ACCOUNT_NAMESPACE_FILE.read_text().strip() or "default"
    except (config.ConfigException, OSError, ValueError) as exc:
        where = f"kubeconfig {kubeconfig}" if kubeconfig else "in-cluster configuration (pass --kubeconfig?)"
        raise KubeConfigError(f"cannot use the {where}: {exc}") from exc
    return configuration, namespace


def _raw(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a client method without its model deserialisation; answers the parsed JSON body."""
    try:
        response = call(*args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT, **kwargs)
    except ApiException as exc:
        raise KubeError(exc.status or 0, status_message(exc.body, f"{exc.status} {exc.reason}")) from exc
    except Exception as exc:  # urllib3 connection errors and the like
        raise KubeError(0, f"{type(exc).__name__}: {exc}") from exc
    data = response.data
    return json.loads(data) if data else {}


def _found(call: Callable[..., Any], *args: Any) -> dict[str, Any] | None:
    """`_raw` of a read, or None when the object does not exist."""
    try:
        return dict(_raw(call, *args))
    except KubeError as exc:
        if exc.status == 404:
            return None
        raise


class KubeApi:
    """One responsibility: speak to the API server. One instance per thread that streams (watches)."""

    def __init__(self, configuration: client.Configuration) -> None:
        self.api_client = client.ApiClient(configuration)
        self.core = client.CoreV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)
        self.apps = client.AppsV1Api(self.api_client)

    def close(self) -> None:
        self.api_client.close()

    # --- Secrets and Components -----------------------------------------------------------------------

    def _list_call(self, kind: str) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        if kind == SECRET:
            return self.core.list_namespaced_secret, ()
        if kind == COMPONENT:
            return self.custom.list_namespaced_custom_object, (DAPR_GROUP, DAPR_VERSION)
        raise ValueError(kind)

    def list_objects(self, kind: str, namespace: str, selector: str) -> tuple[list[dict[str, Any]], str]:
        """The objects of `kind` matching `selector` and the list's resourceVersion (to watch from)."""
        call, prefix = self._list_call(kind)
        args = (*prefix, namespace, "components") if kind == COMPONENT else (namespace,)
        body = _raw(call, *args, label_selector=selector)
        # Items of a typed list carry no apiVersion and kind; give them theirs, as a GET would.
        items = [{**item, "apiVersion": API_VERSIONS[kind], "kind": kind} for item in body.get("items", [])]
        return items, str((body.get("metadata") or {}).get("resourceVersion", ""))

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        if kind == SECRET:
            return _found(self.core.read_namespaced_secret, name, namespace)
        return self._dapr_object(namespace, "components", name)

    def apply(
        self,
        obj: dict[str, Any],
        over: Mapping[str, Any] | None = None,
        still_ours: Callable[[dict[str, Any]], bool] | None = None,
    ) -> dict[str, Any]:
        """Server-side apply of `obj` (create or update), taking over fields others changed. With `over`
        (the object as last read), only over that version: on a 409 Conflict the object is read again and
        applied over, while `still_ours` accepts it (else KubeError 409, nothing written)."""
        kind, metadata = obj["kind"], obj["metadata"]
        version = ((over or {}).get("metadata") or {}).get("resourceVersion")
        for attempt in range(1, APPLY_ATTEMPTS):
            try:
                return self._apply_once(obj, version)
            except KubeError as exc:
                if exc.status != 409:
                    raise
                log.info("event=apply-conflict object=%s/%s attempt=%d", kind, metadata["name"], attempt)
            current = self.get(kind, metadata["namespace"], metadata["name"])
            if current is not None and still_ours is not None and not still_ours(current):
                raise KubeError(
                    409,
                    f"{kind} {metadata['namespace']}/{metadata['name']} was changed meanwhile and is no "
                    "longer this agent's; left alone",
                )
            version = (current or {}).get("metadata", {}).get("resourceVersion")
        return self._apply_once(obj, version)

    def _apply_once(self, obj: dict[str, Any], version: str | None) -> dict[str, Any]:
        kind, metadata = obj["kind"], obj["metadata"]
        body = {**obj, "metadata": {**metadata, "resourceVersion": version}} if version else obj
        options: dict[str, Any] = {
            "field_manager": FIELD_MANAGER,
            "force": True,
            "_content_type": APPLY_PATCH,
        }
        if kind == SECRET:
            return dict(
                _raw(
                    self.core.patch_namespaced_secret,
                    metadata["name"],
                    metadata["namespace"],
                    body,
                    **options,
                )
            )
        return dict(
            _raw(
                self.custom.patch_namespaced_custom_object,
                DAPR_GROUP,
                DAPR_VERSION,
                metadata["namespace"],
                "components",
                metadata["name"],
                body,
                **options,
            )
        )

    def delete(self, kind: str, namespace: str, name: str, uid: str | None) -> None:
        """Delete one object; with `uid`, only that very object (a re-created namesake is left alone)."""
        body = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid)) if uid else None
        try:
            if kind == SECRET:
                _raw(self.core.delete_namespaced_secret, name, namespace, body=body)
            else:
                _raw(
                    self.custom.delete_namespaced_custom_object,
                    DAPR_GROUP,
                    DAPR_VERSION,
                    namespace,
                    "components",
                    name,
                    body=body,
                )
        except KubeError as exc:
            if exc.status != 404:
                raise

    def watch(
        self, kind: str, namespace: str, selector: str, resource_version: str, timeout_seconds: int
    ) -> Iterator[dict[str, Any]]:
        """Watch events (`{"type", "object"}`, BOOKMARK included) after `resource_version`; ends after
        `timeout_seconds`. An ERROR event (410 Expired when `resource_version` is too old) is raised as
        KubeError with the Status's code and message. The lines are read here rather than through
        `kubernetes.watch.Watch`, which retries a 410 itself and, without deserialising, fails on the
        ERROR event (KeyError 'raw_object')."""
        call, prefix = self._list_call(kind)
        args = (*prefix, namespace, "components") if kind == COMPONENT else (namespace,)
        try:
            response = call(
                *args,
                watch=True,
                label_selector=selector,
                resource_version=resource_version,
                timeout_seconds=timeout_seconds,
                allow_watch_bookmarks=True,
                _preload_content=False,
                _request_timeout=(REQUEST_TIMEOUT[0], timeout_seconds + REQUEST_TIMEOUT[1]),
            )
        except ApiException as exc:
            raise KubeError(exc.status or 0, status_message(exc.body, f"{exc.status} {exc.reason}")) from exc
        try:
            for line in iter_resp_lines(response):
                if not line.strip():
                    continue
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    raise KubeError(int(status.get("code") or 0), str(status.get("message") or status))
                yield event
        finally:
            response.close()
            response.release_conn()

    # --- what restarts need ------------------------------------------------------------------------------

    def list_workloads(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        call = (
            self.apps.list_namespaced_deployment
            if kind == "Deployment"
            else self.apps.list_namespaced_stateful_set
        )
        return [{**item, "kind": kind} for item in _raw(call, namespace).get("items", [])]

    def annotate_pod_template(
        self, kind: str, namespace: str, name: str, annotations: dict[str, str]
    ) -> None:
        """A strategic-merge patch of the pod template's annotations: a rolling restart, as kubectl does."""
        patch = {"spec": {"template": {"metadata": {"annotations": annotations}}}}
        call = (
            self.apps.patch_namespaced_deployment
            if kind == "Deployment"
            else self.apps.patch_namespaced_stateful_set
        )
        _raw(call, name, namespace, patch, field_manager=FIELD_MANAGER, _content_type=STRATEGIC_MERGE_PATCH)

    def get_configuration(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A Dapr `Configuration`; None when it does not exist."""
        return self._dapr_object(namespace, "configurations", name)

    def _dapr_object(self, namespace: str, plural: str, name: str) -> dict[str, Any] | None:
        return _found(
            self.custom.get_namespaced_custom_object, DAPR_GROUP, DAPR_VERSION, namespace, plural, name
        )

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return list(_raw(self.core.list_namespaced_pod, namespace, label_selector=selector).get("items", []))
