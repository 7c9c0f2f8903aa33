"""Install objects into a cluster: server-side apply through the official client, field manager `rrm`.

Provisioning calls it with the kubeconfig of a cluster it just made (or was given). Each object is one
PATCH with `application/apply-patch+yaml` and `force=true`, so applying again is harmless and takes back
fields someone else changed. The kinds are the ones `agent_objects` and `control_plane_objects` make; the
REST path of each is known, so no discovery round trips are needed.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

FIELD_MANAGER = "rrm"
APPLY_PATCH = "application/apply-patch+yaml"
REQUEST_TIMEOUT = (5.0, 30.0)
# kind -> (API group path, resource plural, namespaced)
PATHS: dict[str, tuple[str, str, bool]] = {
    "Namespace": ("/api/v1", "namespaces", False),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "Secret": ("/api/v1", "secrets", True),
    "Service": ("/api/v1", "services", True),
    "PersistentVolumeClaim": ("/api/v1", "persistentvolumeclaims", True),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets", True),
    "Ingress": ("/apis/networking.k8s.io/v1", "ingresses", True),
}


class InstallError(Exception):
    """An object could not be applied; the message names it and says what the API server answered."""


def apply_objects(kubeconfig: str, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Apply `objects` in order to the cluster of `kubeconfig` (its text); answers what the server holds."""
    try:
        api = config.new_client_from_config_dict(yaml.safe_load(kubeconfig))
    except (config.ConfigException, yaml.YAMLError, AttributeError, TypeError, KeyError) as exc:
        raise InstallError(f"the kubeconfig is not usable: {exc}") from exc
    with api:
        return [_apply(api, obj) for obj in objects]


def object_path(obj: dict[str, Any]) -> str:
    kind, metadata = obj["kind"], obj["metadata"]
    if kind not in PATHS:
        raise InstallError(f"{kind}/{metadata['name']}: rrm does not install objects of kind {kind}")
    prefix, plural, namespaced = PATHS[kind]
    where = f"/namespaces/{metadata['namespace']}" if namespaced else ""
    return f"{prefix}{where}/{plural}/{metadata['name']}"


def _apply(api: client.ApiClient, obj: dict[str, Any]) -> dict[str, Any]:
    named = f"{obj['kind']}/{obj['metadata']['name']}"
    request = api.param_serialize(
        "PATCH",
        object_path(obj),
        query_params=[("fieldManager", FIELD_MANAGER), ("force", "true")],
        header_params={"Content-Type": APPLY_PATCH, "Accept": "application/json"},
        body=obj,
        auth_settings=["BearerToken"],
    )
    try:
        response = api.call_api(*request, _request_timeout=REQUEST_TIMEOUT)
        body = response.read()
    except ApiException as exc:
        raise InstallError(f"{named}: {exc.status} {_message(exc.body, exc.reason)}") from exc
    except Exception as exc:  # urllib3 connection errors and the like
        raise InstallError(f"{named}: {type(exc).__name__}: {exc}") from exc
    if response.status >= 300:
        raise InstallError(f"{named}: {response.status} {_message(body, response.reason)}")
    applied: dict[str, Any] = json.loads(body)
    return applied


def _message(body: Any, reason: Any) -> str:
    """The `message` of the `Status` the API server answered, else the HTTP reason."""
    try:
        return str(json.loads(body).get("message") or reason)
    except (TypeError, ValueError, AttributeError):
        return str(reason)
