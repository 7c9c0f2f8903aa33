"""Kubeconfigs for bindings, as KEB issues them: a ServiceAccount in the runtime's cluster, bound to the
`cluster-admin` ClusterRole, and a token for it from the TokenRequest API
(`POST serviceaccounts/{name}/token`) that expires with the binding. Deleting the ServiceAccount revokes
every token issued for it (a bound token is valid only while the object it is bound to exists), and the
ClusterRoleBinding goes with it.

Calls go through the official `kubernetes` client with the cluster's kubeconfig the provisioning fetched.
It is imported by the first call, not with the control plane: it adds about 10 MB to the resident memory
of every process that imports it, and a control plane that never binds an environment never calls it.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import yaml

from rrm.core.bounded import load_yaml

if TYPE_CHECKING:
    from kubernetes import client

NAMESPACE = "kube-system"
CLUSTER_ROLE = "cluster-admin"
MANAGED_BY = {"app.kubernetes.io/managed-by": "rrm", "rrm.io/binding": "true"}


class KubeconfigError(Exception):
    """The cluster refused or could not be reached; the message says which call and why."""


def service_account_name(environment_id: str, binding_id: str) -> str:
    """A valid object name whatever characters the platform's binding id has."""
    digest = hashlib.sha256(f"{environment_id}/{binding_id}".encode()).hexdigest()[:20]
    return f"rrm-binding-{digest}"


def mint(cluster_kubeconfig: str, name: str, seconds: int) -> tuple[str, datetime]:
    """A kubeconfig for the cluster whose user is ServiceAccount `name`'s token, and when it expires."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    api = _api(cluster_kubeconfig)
    try:
        _create(lambda: client.CoreV1Api(api).create_namespaced_service_account(NAMESPACE, _account(name)))
        _create(lambda: client.RbacAuthorizationV1Api(api).create_cluster_role_binding(_binding(name)))
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=seconds)
        )
        answer = client.CoreV1Api(api).create_namespaced_service_account_token(name, NAMESPACE, request)
    except (ApiException, HTTPError) as exc:
        raise KubeconfigError(f"the cluster did not issue a token: {_reason(exc)}") from exc
    finally:
        api.close()
    status = answer.status
    if status is None or not status.token:
        raise KubeconfigError("the cluster's TokenRequest answer has no token")
    expires = status.expiration_timestamp or datetime.now(UTC) + timedelta(seconds=seconds)
    return kubeconfig_with_token(cluster_kubeconfig, name, str(status.token)), expires


def revoke(cluster_kubeconfig: str, name: str) -> None:
    """Delete the ServiceAccount (its tokens stop working) and its ClusterRoleBinding; gone is fine."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    api = _api(cluster_kubeconfig)
    try:
        for delete in (
            lambda: client.CoreV1Api(api).delete_namespaced_service_account(name, NAMESPACE),
            lambda: client.RbacAuthorizationV1Api(api).delete_cluster_role_binding(name),
        ):
            try:
                delete()
            except ApiException as exc:
                if exc.status != 404:
                    raise
    except (ApiException, HTTPError) as exc:
        raise KubeconfigError(f"the cluster did not revoke the binding: {_reason(exc)}") from exc
    finally:
        api.close()


def kubeconfig_with_token(cluster_kubeconfig: str, user: str, token: str) -> str:
    """The cluster of the kubeconfig's current context, with `token` as its only user."""
    document = load_yaml(cluster_kubeconfig)
    current = document.get("current-context")
    context = next(c for c in document["contexts"] if c["name"] == current)["context"]
    cluster = next(c for c in document["clusters"] if c["name"] == context["cluster"])
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [cluster],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": user, "context": {"cluster": cluster["name"], "user": user}}],
            "current-context": user,
        }
    )


def _api(kubeconfig: str) -> client.ApiClient:
    from kubernetes import config

    try:
        return config.new_client_from_config_dict(load_yaml(kubeconfig))
    except (yaml.YAMLError, config.ConfigException, KeyError, TypeError) as exc:
        raise KubeconfigError(f"the cluster's kubeconfig is not usable: {exc}") from exc


def _create(call: Any) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        call()
    except ApiException as exc:
        if exc.status != 409:  # AlreadyExists: an earlier attempt made it
            raise


def _account(name: str) -> client.V1ServiceAccount:
    from kubernetes import client

    return client.V1ServiceAccount(
        api_version="v1", kind="ServiceAccount", metadata=client.V1ObjectMeta(name=name, labels=MANAGED_BY)
    )


def _binding(name: str) -> client.V1ClusterRoleBinding:
    from kubernetes import client

    return client.V1ClusterRoleBinding(
        api_version="rbac.authorization.k8s.io/v1",
        kind="ClusterRoleBinding",
        metadata=client.V1ObjectMeta(name=name, labels=MANAGED_BY),
        role_ref=client.V1RoleRef(
            api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=CLUSTER_ROLE
        ),
        subjects=[client.RbacV1Subject(kind="ServiceAccount", name=name, namespace=NAMESPACE)],
    )


def _reason(exc: Exception) -> str:
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        return f"{exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"
