"""The gardener backend against the Gardener API stand-in (in this process): one Shoot per environment
however often a stage runs, Gardener's lastOperation as progress, deletion confirmed first."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "standins"))

import gardener_apiserver as gardener

from rrm.server.provisioning.backends.base import BackendFailure, ClusterProgress, ClusterRequest
from rrm.server.provisioning.backends.gardener import (
    CONFIRM_DELETION,
    GardenerBackend,
    shoot_manifest,
    shoot_name,
)
from rrm.server.provisioning.catalog import build_catalog
from rrm.server.provisioning.garden import SECRET_BINDINGS, SHOOTS, Garden
from rrm.server.provisioning.hap import Binding
from rrm.server.provisioning.plans import parameter_problems, with_defaults
from rrm.server.settings import ServerSettings

PARAMETERS = {"provider": "aws", "machineType": "m6i.large", "autoScalerMin": 3, "autoScalerMax": 5}


@pytest.fixture
def standin() -> Iterator[gardener.GardenerApiServer]:
    server = gardener.GardenerApiServer(0, "t", create_seconds=0.3, delete_seconds=0.0, tick=0.01).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def backend(standin: gardener.GardenerApiServer) -> Iterator[GardenerBackend]:
    api = config.new_client_from_config_dict(standin.kubeconfig())
    garden = Garden(api, "garden-dev")
    for name, labels in (("aws-1", {}), ("aws-dirty", {"dirty": "true"})):
        garden.create(
            SECRET_BINDINGS,
            {
                "apiVersion": "core.gardener.cloud/v1beta1",
                "kind": "SecretBinding",
                "metadata": {
                    "name": name,
                    "labels": {"hyperscalerType": "aws", **labels},
                    "annotations": {"rrm.io/environments": '["env-a"]'},
                },
                "secretRef": {"name": name},
            },
        )
    try:
        yield GardenerBackend(garden)
    finally:
        api.close()


def request(environment_id: str = "env-id-1", account: str = "SecretBinding/aws-1") -> ClusterRequest:
    return ClusterRequest(
        "env-a", environment_id, "op-1", "gardener-aws", "eu-central-1", dict(PARAMETERS), "ga", "sa", account
    )


def follow(backend: GardenerBackend, look: str, req: ClusterRequest) -> ClusterProgress:
    deadline = time.monotonic() + 10
    while True:
        progress: ClusterProgress = getattr(backend, look)(req)
        if progress.done or progress.failed:
            return progress
        assert time.monotonic() < deadline, progress
        time.sleep(0.02)


def test_shoot_names_fit_gardeners_limit_and_a_long_project_is_refused() -> None:
    assert shoot_name("x", "dev") == shoot_name("x", "dev") != shoot_name("y", "dev")
    assert len("dev" + shoot_name("x", "dev")) <= 21 and len(shoot_name("x", "dev")) == 10
    assert len("fourteen-chars" + shoot_name("x", "fourteen-chars")) == 21
    with pytest.raises(ValueError, match="too long"):
        shoot_name("x", "fifteen-letters")


def test_creating_twice_makes_one_shoot_that_becomes_ready(backend: GardenerBackend) -> None:
    backend.create_cluster(request())
    backend.create_cluster(request())  # a resumed stage
    assert len(backend.garden.list(SHOOTS)) == 1
    assert follow(backend, "cluster_progress", request()).done
    assert "current-context" in backend.kubeconfig(request())


def test_a_shoot_of_that_name_for_another_environment_is_refused(backend: GardenerBackend) -> None:
    body = backend.garden.get(SECRET_BINDINGS, "aws-1")
    assert body is not None
    foreign = shoot_manifest(backend.garden, request(), Binding(SECRET_BINDINGS, body))
    foreign["metadata"]["annotations"]["rrm.io/environment-id"] = "someone-else"
    backend.garden.create(SHOOTS, foreign)
    with pytest.raises(BackendFailure, match="for another environment"):
        backend.create_cluster(request())


def test_a_dirty_account_never_gets_a_cluster(backend: GardenerBackend) -> None:
    with pytest.raises(BackendFailure, match="marked dirty"):
        backend.create_cluster(request(account="SecretBinding/aws-dirty"))
    assert backend.garden.list(SHOOTS) == []


def test_a_failed_create_fails_with_gardeners_words_and_codes(
    standin: gardener.GardenerApiServer, backend: GardenerBackend
) -> None:
    standin.outcomes.add(gardener.Outcome.parse({"outcome": "fail"}))
    backend.create_cluster(request())
    progress = follow(backend, "cluster_progress", request())
    assert progress.failed is not None
    assert progress.failed.startswith("Gardener could not create the cluster: Shoot c-")
    assert "quota exceeded" in progress.failed and "[ERR_INFRA_QUOTA_EXCEEDED]" in progress.failed


def test_an_error_is_shown_while_gardener_retries(
    standin: gardener.GardenerApiServer, backend: GardenerBackend
) -> None:
    standin.outcomes.add(gardener.Outcome.parse({"outcome": "fail", "state": "Error"}))
    backend.create_cluster(request())
    deadline = time.monotonic() + 10
    while "Gardener retries" not in (progress := backend.cluster_progress(request())).description:
        assert time.monotonic() < deadline, progress
        time.sleep(0.02)
    assert progress.failed is None and not progress.done


def test_deletion_is_confirmed_then_followed_until_the_shoot_is_gone(backend: GardenerBackend) -> None:
    backend.create_cluster(request())
    follow(backend, "cluster_progress", request())
    backend.delete_cluster(request())
    backend.delete_cluster(request())
    shoot = backend.garden.get(SHOOTS, shoot_name("env-id-1", "dev"))
    assert shoot is None or shoot["metadata"]["annotations"][CONFIRM_DELETION] == "true"
    assert follow(backend, "deletion_progress", request()).done
    backend.delete_cluster(request())  # gone already: quietly


def test_an_account_the_environment_no_longer_holds_gets_no_cluster(backend: GardenerBackend) -> None:
    """A resumed (suspended) environment must claim again: its old binding may belong to another tenant."""
    body = backend.garden.get(SECRET_BINDINGS, "aws-1")
    assert body is not None
    body["metadata"]["annotations"]["rrm.io/environments"] = '["someone-else"]'
    backend.garden.replace(SECRET_BINDINGS, body)
    with pytest.raises(BackendFailure, match="not claimed by environment env-a"):
        backend.create_cluster(request())
    assert backend.garden.list(SHOOTS) == []


def test_gardener_plans_are_offered_and_refuse_a_maximum_below_the_minimum(
    standin: gardener.GardenerApiServer, tmp_path: Path
) -> None:
    kubeconfig = tmp_path / "garden.yaml"
    kubeconfig.write_text(yaml.safe_dump(standin.kubeconfig()))
    settings = ServerSettings(
        data_dir=tmp_path, gardener_kubeconfig=kubeconfig, gardener_namespace="garden-dev"
    )
    catalog = build_catalog(settings, is_sqlite=True)
    assert {"gardener-aws", "gardener-azure", "gardener-gcp", "trial", "local"} <= set(catalog.plans)
    plan = catalog.plans["gardener-aws"]
    assert parameter_problems(plan, with_defaults(plan, {"autoScalerMin": 5, "autoScalerMax": 4})) == [
        ("parameters.autoScalerMax", "must not be less than autoScalerMin (5)")
    ]
    assert parameter_problems(plan, with_defaults(plan, {"autoScalerMin": 5})) == []
    assert parameter_problems(plan, with_defaults(plan, {"provider": "gcp"}))[0][0] == "parameters.provider"
