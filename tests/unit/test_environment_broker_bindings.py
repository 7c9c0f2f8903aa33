"""Bindings of the Environment Broker against the Kubernetes stand-in (in this process) on a real store:
an expired binding's ServiceAccount is deleted, and the binding forgotten, at the instance's next bind."""

from __future__ import annotations

import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "standins"))

import kube_apiserver

from rrm.server.broker.models import BrokerError
from rrm.server.broker.service import Answer, BrokerRequest
from rrm.server.environment_broker.backend import EnvironmentBrokerBackend, PlatformRecords
from rrm.server.environment_broker.bindings import bind, fetch_binding
from rrm.server.environment_broker.catalog import SERVICE_ID, plan_id
from rrm.server.provisioning.stages import CLUSTER_KUBECONFIG, sealed_name
from rrm.server.state import ServerState, utcnow
from rrm.store import environment_broker as store
from rrm.store.tables import BrokeredEnvironment, EnvironmentRow

TOKEN = "t"
BODY = {"service_id": SERVICE_ID, "plan_id": plan_id("kubernetes"), "parameters": {}}


@pytest.fixture
def cluster() -> Iterator[kube_apiserver.ApiServer]:
    server = kube_apiserver.ApiServer(0, TOKEN)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def kubeconfig(server: kube_apiserver.ApiServer) -> str:
    url = f"http://127.0.0.1:{server.server_address[1]}"
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": {"server": url}}],
            "users": [{"name": "u", "user": {"token": TOKEN}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "c",
        }
    )


def provisioned(state: ServerState, cluster: kube_apiserver.ApiServer) -> str:
    """A succeeded `kubernetes` environment of platform `p`, with its cluster's kubeconfig stored."""
    now, environment_id = utcnow(), str(uuid.uuid4())
    with state.db.write() as session:
        session.add(
            EnvironmentRow(
                id=environment_id, name="byo", plan="kubernetes", region=None, labels={}, parameters={},
                sealed=state.box.seal(sealed_name(environment_id), {CLUSTER_KUBECONFIG: kubeconfig(cluster)}),
                global_account=None, subaccount=None, state="succeeded", runtime_id=None, data={},
                created_at=now, updated_at=now, archived_at=None,
            )
        )  # fmt: skip
        session.flush()
        session.add(
            BrokeredEnvironment(
                environment_id=environment_id, platform="p", service_id=SERVICE_ID,
                plan_id=plan_id("kubernetes"), request_hash="", context={}, created_at=now, expired_at=None,
            )
        )  # fmt: skip
    return environment_id


def service_accounts(cluster: kube_apiserver.ApiServer) -> set[str]:
    return {name for (resource, _, name) in cluster.store.objects if resource.kind == "ServiceAccount"}


def test_an_expired_bindings_service_account_goes_at_the_next_bind(
    state: ServerState, cluster: kube_apiserver.ApiServer
) -> None:
    assert state.provisioning is not None
    backend = EnvironmentBrokerBackend(state, state.provisioning)
    instance = provisioned(state, cluster)

    def call(work: Callable[[BrokerRequest[PlatformRecords]], Answer]) -> Answer:
        return backend.transact("p", lambda records: work(BrokerRequest(records, backend.catalog("p"), 0.0)))

    assert call(lambda r: bind(r, instance, "old", BODY, False))[0] == 201
    [old_account] = service_accounts(cluster)
    with state.db.write() as session:
        binding = store.binding(session, instance, "old")
        assert binding is not None
        binding.expires_at = utcnow() - timedelta(seconds=1)
    assert call(lambda r: bind(r, instance, "new", BODY, False))[0] == 201
    assert old_account not in service_accounts(cluster) and len(service_accounts(cluster)) == 1
    with pytest.raises(BrokerError, match="does not exist"):
        call(lambda r: fetch_binding(r, instance, "old"))
