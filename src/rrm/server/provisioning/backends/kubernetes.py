"""The `kubernetes` backend: bring your own cluster. The kubeconfig comes in the environment's (secret)
parameters; no cluster is created or deleted. Provisioning installs the agent with the objects
`rrm runtime manifest` prints (server-side apply through the official client), deprovisioning deletes them
again (all but the namespace, which may hold more than rrm's)."""

from __future__ import annotations

from typing import Any

import yaml
from kubernetes import config
from kubernetes.client.exceptions import ApiException

from rrm.core.bounded import load_yaml
from rrm.install.agent import AgentInstallValues, agent_objects
from rrm.install.apply import REQUEST_TIMEOUT, InstallError, apply_objects, object_path
from rrm.server.provisioning.backends.base import (
    AgentInstall,
    BackendFailure,
    ClusterProgress,
    ClusterRequest,
    RetryLater,
)

UNUSABLE = "the kubeconfig is not usable"


def install_values(request: ClusterRequest, install: AgentInstall | None) -> AgentInstallValues:
    """The same values `rrm runtime manifest` takes, from the plan's parameters."""
    parameters = request.parameters
    return AgentInstallValues(
        runtime=request.environment,
        director_url=install.director_url if install else "",
        pairing_token=install.pairing_token if install else "",
        namespace=parameters.get("namespace", "rrm-system"),
        target_namespaces=tuple(parameters.get("targetNamespaces") or ("default",)),
    )


class KubernetesBackend:
    name = "kubernetes"
    creates_clusters = False
    mints_kubeconfigs = True  # the kubeconfig given can make ServiceAccount tokens (TokenRequest)

    def create_cluster(self, request: ClusterRequest) -> None:
        """There is nothing to create: the cluster is the user's."""

    def cluster_progress(self, request: ClusterRequest) -> ClusterProgress:
        return ClusterProgress(done=True, description="the cluster exists")

    def kubeconfig(self, request: ClusterRequest) -> str:
        kubeconfig = str(request.parameters.get("kubeconfig") or "")
        if not kubeconfig:
            raise BackendFailure("parameters.kubeconfig: required")
        return kubeconfig

    def install_agent(self, request: ClusterRequest, kubeconfig: str, install: AgentInstall) -> None:
        try:
            apply_objects(kubeconfig, agent_objects(install_values(request, install)))
        except InstallError as exc:
            if str(exc).startswith(UNUSABLE):
                raise BackendFailure(str(exc)) from exc
            raise RetryLater(str(exc)) from exc

    def remove_agent(self, request: ClusterRequest, kubeconfig: str) -> None:
        if not kubeconfig:
            return  # never got as far as a kubeconfig: nothing was installed
        objects = [o for o in agent_objects(install_values(request, None)) if o["kind"] != "Namespace"]
        delete_objects(kubeconfig, list(reversed(objects)))

    def delete_cluster(self, request: ClusterRequest) -> None:
        """The cluster stays: it is the user's."""

    def deletion_progress(self, request: ClusterRequest) -> ClusterProgress:
        return ClusterProgress(done=True, description="the cluster is the user's and stays")


def delete_objects(kubeconfig: str, objects: list[dict[str, Any]]) -> None:
    """DELETE each object; one already gone is fine. RetryLater naming the object on any other answer."""
    try:
        api = config.new_client_from_config_dict(load_yaml(kubeconfig))
    except (config.ConfigException, yaml.YAMLError, AttributeError, TypeError, KeyError) as exc:
        raise BackendFailure(f"{UNUSABLE}: {exc}") from exc
    with api:
        for obj in objects:
            named = f"{obj['kind']}/{obj['metadata']['name']}"
            request = api.param_serialize(
                "DELETE",
                object_path(obj),
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
            )
            try:
                response = api.call_api(*request, _request_timeout=REQUEST_TIMEOUT)
                response.read()
            except ApiException as exc:
                if exc.status != 404:
                    raise RetryLater(f"deleting {named}: {exc.status} {exc.reason}") from exc
                continue
            except Exception as exc:  # urllib3 connection errors and the like
                raise RetryLater(f"deleting {named}: {type(exc).__name__}: {exc}") from exc
            if response.status >= 300 and response.status != 404:
                raise RetryLater(f"deleting {named}: {response.status} {response.reason}")
