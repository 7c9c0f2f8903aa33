"""Kubeconfigs for bindings, as KEB issues them: a ServiceAccount in the runtime's cluster, bound to the
`cluster-admin` ClusterRole, and a token for it from the TokenRequest API
(`POST serviceaccounts/{name}/token`) that expires with the binding. Deleting the ServiceAccount revokes
every token issued for it (a bound token is valid only while the object it is bound to exists), and the
ClusterRoleBinding goes with it.

The calls to the cluster live in `cluster_accounts`, on the official `kubernetes` client. It is imported
by the first call, not with the control plane: it adds about 10 MB to the resident memory of every process
that imports it, and a control plane that never binds an environment never calls it.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

import yaml

from rrm.core.bounded import load_yaml


class KubeconfigError(Exception):
    """The cluster refused or could not be reached; the message says which call and why."""


def service_account_name(environment_id: str, binding_id: str) -> str:
    """A valid object name whatever characters the platform's binding id has."""
    digest = hashlib.sha256(f"{environment_id}/{binding_id}".encode()).hexdigest()[:20]
    return f"rrm-binding-{digest}"


def mint(cluster_kubeconfig: str, name: str, seconds: int) -> tuple[str, datetime]:
    """A kubeconfig for the cluster whose user is ServiceAccount `name`'s token, and when it expires."""
    from rrm.server.environment_broker import cluster_accounts

    return cluster_accounts.mint(cluster_kubeconfig, name, seconds)


def revoke(cluster_kubeconfig: str, name: str) -> None:
    """Delete the ServiceAccount (its tokens stop working) and its ClusterRoleBinding; gone is fine."""
    from rrm.server.environment_broker import cluster_accounts

    cluster_accounts.revoke(cluster_kubeconfig, name)


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
