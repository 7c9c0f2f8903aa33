"""The one small interface every provisioning backend implements (gardener, kubernetes, local).

The engine (`rrm.server.provisioning.engine`) owns the stages, their order, deadlines, retries and what is
persisted; a backend only knows how to talk to its infrastructure. Every method is idempotent and may be
called again after a crash at any point: `create_cluster` for a cluster that already exists returns quietly,
`delete_cluster` for one already gone returns quietly. Methods are blocking (they run in a worker thread)
and raise `RetryLater` for what may pass (a 5xx, a timeout, a 409) and `BackendFailure` for what will not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class RetryLater(Exception):
    """A transient problem: the engine retries the stage with backoff until the stage's deadline."""


class BackendFailure(Exception):
    """A permanent problem: the stage, and with it the operation, fails with this message."""


@dataclass(frozen=True)
class ClusterRequest:
    """What a backend needs to know about the environment it builds a cluster for."""

    environment: str  # the environment's (and the runtime's) name
    environment_id: str
    operation_id: str
    plan: str
    region: str | None
    parameters: dict[str, Any]  # validated against the plan's schema; secret parameters included, decrypted
    global_account: str | None
    subaccount: str | None
    account: str | None = None  # the Hyperscaler Account Pool binding claimed for it, when the plan needs one


@dataclass(frozen=True)
class ClusterProgress:
    """One look at a cluster being created or deleted; `description` is shown to people as it is."""

    done: bool
    description: str
    percent: int | None = None
    failed: str | None = None  # set when the infrastructure says the cluster will not come (permanent)


@dataclass(frozen=True)
class AgentInstall:
    """What installing the agent takes: the control plane's URL as the agent reaches it, the runtime's
    pairing token (single use), and the agent's settings for this runtime."""

    director_url: str
    runtime: str
    pairing_token: str
    options: dict[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    name: str
    creates_clusters: bool  # False: the cluster exists already (kubernetes) or there is none (local)
    mints_kubeconfigs: bool  # True: `kubeconfig` can issue a credential for people (environment broker)

    def create_cluster(self, request: ClusterRequest) -> None: ...

    def cluster_progress(self, request: ClusterRequest) -> ClusterProgress: ...

    def kubeconfig(self, request: ClusterRequest) -> str: ...

    def install_agent(self, request: ClusterRequest, kubeconfig: str, install: AgentInstall) -> None: ...

    def remove_agent(self, request: ClusterRequest, kubeconfig: str) -> None: ...

    def delete_cluster(self, request: ClusterRequest) -> None: ...

    def deletion_progress(self, request: ClusterRequest) -> ClusterProgress: ...
