"""The cluster side of a binding's kubeconfig: the ServiceAccount in `kube-system`, its ClusterRoleBinding to
`cluster-admin`, and a token from the TokenRequest API (`POST serviceaccounts/{name}/token`), through the
official `kubernetes` client with the cluster's kubeconfig the provisioning fetched. Imported only by
`kubeconfigs` on the first call (see there why).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from rrm.core.bounded import load_yaml
from rrm.server.environment_broker.kubeconfigs import KubeconfigError, kubeconfig_with_token

NAMESPACE = "kube-system"
CLUSTER_ROLE = "cluster-admin"
MANAGED_BY = {"app.kubernetes.io/managed-by": "rrm", "rrm.io/binding": "true"}


def mint(cluster_kubeconfig: str, name: str, seconds: int) -> tuple[str, datetime]:
    """A kubeconfig for the cluster whose user is ServiceAccount `name`'s token, and when it expires."""
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


def _api(kubeconfig: str) -> client.ApiClient:
    try:
        return config.new_client_from_config_dict(load_yaml(kubeconfig))
    except (yaml.YAMLError, config.ConfigException, KeyError, TypeError) as exc:
        raise KubeconfigError(f"the cluster's kubeconfig is not usable: {exc}") from exc


def _create(call: Any) -> None:
    try:
        call()
    except ApiException as exc:
        if exc.status != 409:  # AlreadyExists: an earlier attempt made it
            raise


def _account(name: str) -> client.V1ServiceAccount:
    return client.V1ServiceAccount(
        api_version="v1", kind="ServiceAccount", metadata=client.V1ObjectMeta(name=name, labels=MANAGED_BY)
    )


def _binding(name: str) -> client.V1ClusterRoleBinding:
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
    if isinstance(exc, ApiException):
        return f"{exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"
