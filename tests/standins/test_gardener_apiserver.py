"""The Gardener API stand-in follows the rules its docstring cites, so a provisioner tested against it cannot
rely on anything a real Gardener refuses. Requests go through the official `kubernetes` client's
CustomObjectsApi, as a provisioner's would; the `adminkubeconfig` subresource through `ApiClient`, the way
`rrm.install.apply` sends raw requests. Sources: gardener/gardener @ b312835d."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gardener_apiserver as gardener
import httpx
import pytest
import yaml
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

TOKEN = "garden-token"
NS = "garden-dev"
CORE = ("core.gardener.cloud", "v1beta1", NS)
SHOOTS = (*CORE, "shoots")
SECRET_BINDINGS = (*CORE, "secretbindings")
CREDENTIALS_BINDINGS = ("security.gardener.cloud", "v1alpha1", NS, "credentialsbindings")
MERGE = "application/merge-patch+json"
APPLY = "application/apply-patch+yaml"
DEADLINE = 20.0


def wait_until(predicate: Callable[[], Any], timeout: float, message: str | Callable[[], str]) -> None:
    """Poll `predicate` until it holds, failing with `message` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, message() if callable(message) else message
        time.sleep(0.02)


@pytest.fixture
def garden(request: pytest.FixtureRequest) -> Iterator[gardener.GardenerApiServer]:
    """Zero-time operations unless a test asks for others with `@pytest.mark.parametrize("garden", …,
    indirect=True)`; a short tick keeps the tests fast."""
    seconds = getattr(request, "param", {"create_seconds": 0.0, "delete_seconds": 0.0})
    server = gardener.GardenerApiServer(0, TOKEN, tick=0.01, **seconds).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def api(garden: gardener.GardenerApiServer) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config_dict(garden.kubeconfig())
    try:
        yield api_client
    finally:
        api_client.close()


@pytest.fixture
def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def secret_binding(name: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "core.gardener.cloud/v1beta1",
        "kind": "SecretBinding",
        "metadata": {"name": name, "labels": labels},
        "secretRef": {"name": name, "namespace": NS},
        "provider": {"type": "aws"},
    }


def credentials_binding(name: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "security.gardener.cloud/v1alpha1",
        "kind": "CredentialsBinding",
        "metadata": {"name": name, "labels": labels},
        "credentialsRef": {"apiVersion": "v1", "kind": "Secret", "name": name, "namespace": NS},
        "provider": {"type": "aws"},
    }


def shoot(name: str = "c-1", binding: str = "aws-1", **labels: str) -> dict[str, Any]:
    """A Shoot as a provisioner builds one (KEB's Runtime CR, translated by KIM)."""
    return {
        "apiVersion": "core.gardener.cloud/v1beta1",
        "kind": "Shoot",
        "metadata": {"name": name, "labels": labels, "annotations": {"rrm.io/environment": name}},
        "spec": {
            "cloudProfile": {"kind": "CloudProfile", "name": "aws"},
            "region": "eu-central-1",
            "kubernetes": {"version": "1.33.4"},
            "secretBindingName": binding,
            "networking": {"type": "calico", "nodes": "10.250.0.0/16"},
            "provider": {
                "type": "aws",
                "workers": [{"name": "cpu", "machine": {"type": "m6i.large"}, "minimum": 3, "maximum": 20}],
            },
        },
    }


def refusal(call: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(ApiException) as caught:
        call(*args, **kwargs)
    return caught.value.status, json.loads(caught.value.body)


def created(custom: client.CustomObjectsApi, body: dict[str, Any], binding: str = "aws-1") -> dict[str, Any]:
    """A Shoot and the SecretBinding it names."""
    if binding:
        custom.create_namespaced_custom_object(*SECRET_BINDINGS, secret_binding(binding))
    return dict(custom.create_namespaced_custom_object(*SHOOTS, body))


def last_operation(custom: client.CustomObjectsApi, name: str = "c-1") -> dict[str, Any]:
    found = custom.get_namespaced_custom_object(*SHOOTS, name)
    return dict((found.get("status") or {}).get("lastOperation") or {})


def wait_for_state(
    custom: client.CustomObjectsApi, kind: str, state: str, name: str = "c-1"
) -> dict[str, Any]:
    wait_until(
        lambda: (
            last_operation(custom, name).get("type") == kind
            and last_operation(custom, name)["state"] == state
        ),
        DEADLINE,
        lambda: f"{name} never reached {kind} {state}: {last_operation(custom, name)}",
    )
    return dict(custom.get_namespaced_custom_object(*SHOOTS, name))


def set_outcome(garden: gardener.GardenerApiServer, **rule: Any) -> httpx.Response:
    return httpx.post(
        f"{garden.url}/test/outcomes", json=rule, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
    )


def admin_kubeconfig(api: client.ApiClient, name: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """POST shoots/{name}/adminkubeconfig, as `kubectl create --raw` does in docs/usage/shoot_access.md."""
    request = api.param_serialize(
        "POST",
        f"/apis/core.gardener.cloud/v1beta1/namespaces/{NS}/shoots/{name}/adminkubeconfig",
        header_params={"Content-Type": "application/json", "Accept": "application/json"},
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api.call_api(*request)
    return response.status, json.loads(response.read())


def kubeconfig_request(seconds: int | None = None) -> dict[str, Any]:
    spec = {} if seconds is None else {"expirationSeconds": seconds}
    return {
        "apiVersion": "authentication.gardener.cloud/v1alpha1",
        "kind": "AdminKubeconfigRequest",
        "spec": spec,
    }


def watched(
    custom: client.CustomObjectsApi, since: str, until: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    """The Shoot watch events after `since`, through the official client's `Watch`, until one matches."""
    events = []
    stream = watch.Watch().stream(
        custom.list_namespaced_custom_object, *SHOOTS, resource_version=since, timeout_seconds=int(DEADLINE)
    )
    for event in stream:
        events.append(event)
        if until(event):
            break
    return events


# --- the Shoot lifecycle ------------------------------------------------------------------------------------


@pytest.mark.parametrize("garden", [{"create_seconds": 0.5, "delete_seconds": 0.0}], indirect=True)
def test_create_goes_through_processing_to_succeeded_with_health_conditions(
    garden: gardener.GardenerApiServer, custom: client.CustomObjectsApi
) -> None:
    """`status.lastOperation` {type Create, state Processing, progress 0} as `updateShootStatusOperationStart`
    writes it, then Succeeded with progress 100 (gardenlet `pkg/gardenlet/controller/shoot/shoot/
    reconciler.go`); the conditions of `types_shoot.go` (APIServerAvailable, ControlPlaneHealthy,
    EveryNodeReady, SystemComponentsHealthy); `status.technicalID` `shoot--<project>--<name>` and
    `status.uid`; the `gardener` finalizer. Every status change is a watch event, so the sequence is exact."""
    body = created(custom, shoot())
    assert body["metadata"]["generation"] == 1 and "status" not in body
    events = watched(
        custom,
        body["metadata"]["resourceVersion"],
        lambda e: ((e["object"].get("status") or {}).get("lastOperation") or {}).get("state") == "Succeeded",
    )
    operations = [e["object"]["status"]["lastOperation"] for e in events if e["object"].get("status")]
    assert operations[0] == operations[0] | {"type": "Create", "state": "Processing", "progress": 0}
    assert {o["state"] for o in operations[:-1]} == {"Processing"}
    assert [o["progress"] for o in operations] == sorted(o["progress"] for o in operations)
    assert operations[-1] | {"lastUpdateTime": ""} == {
        "type": "Create",
        "state": "Succeeded",
        "progress": 100,
        "description": "Shoot cluster has been successfully reconciled.",
        "lastUpdateTime": "",
    }
    final = events[-1]["object"]
    status = final["status"]
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "APIServerAvailable": "True",
        "ControlPlaneHealthy": "True",
        "EveryNodeReady": "True",
        "SystemComponentsHealthy": "True",
    }
    assert status["technicalID"] == "shoot--dev--c-1"
    assert status["uid"] == final["metadata"]["uid"]
    assert final["metadata"]["finalizers"] == ["gardener"]
    assert final["spec"]["seedName"] == status["seedName"]
    assert status["observedGeneration"] == final["metadata"]["generation"]


def test_clients_cannot_write_status(custom: client.CustomObjectsApi) -> None:
    """ "Status can only be changed by shoots/status subresource": the shoot strategy's `PrepareForCreate`
    clears it and `PrepareForUpdate` copies the old one (`pkg/apiserver/registry/core/shoot/strategy.go`)."""
    body = shoot()
    body["status"] = {"lastOperation": {"type": "Create", "state": "Succeeded", "progress": 100}}
    custom.create_namespaced_custom_object(*SECRET_BINDINGS, secret_binding("aws-1"))
    assert "status" not in custom.create_namespaced_custom_object(*SHOOTS, body)
    before = wait_for_state(custom, "Create", "Succeeded")
    patch = {"status": {"lastOperation": {"state": "Failed"}}}
    after = custom.patch_namespaced_custom_object(*SHOOTS, "c-1", patch, _content_type=MERGE)
    assert after["status"]["lastOperation"] == before["status"]["lastOperation"]


def test_a_spec_change_runs_a_reconcile_and_bumps_the_generation(custom: client.CustomObjectsApi) -> None:
    """The generation grows with the spec (`mustIncreaseGeneration`), the gardenlet reconciles it
    (`LastOperationTypeReconcile`) and records `observedGeneration`; label changes keep the generation."""
    created(custom, shoot())
    before = wait_for_state(custom, "Create", "Succeeded")
    labelled = custom.patch_namespaced_custom_object(
        *SHOOTS, "c-1", {"metadata": {"labels": {"team": "a"}}}, _content_type=MERGE
    )
    assert labelled["metadata"]["generation"] == before["metadata"]["generation"]
    patch = {
        "spec": {"provider": {"workers": [{"name": "cpu", "machine": {"type": "m6i.large"}, "maximum": 30}]}}
    }
    changed = custom.patch_namespaced_custom_object(*SHOOTS, "c-1", patch, _content_type=MERGE)
    assert changed["metadata"]["generation"] == before["metadata"]["generation"] + 1
    after = wait_for_state(custom, "Reconcile", "Succeeded")
    assert after["status"]["observedGeneration"] == changed["metadata"]["generation"]


# --- outcomes tests choose ----------------------------------------------------------------------------------


def test_a_failing_create_reports_failed_with_its_errors(
    garden: gardener.GardenerApiServer, custom: client.CustomObjectsApi
) -> None:
    """`LastOperationStateFailed` ("completed with errors and won't be retried") with the description and
    `status.lastErrors` {description, codes} (`types_common.go`, `ErrorInfraQuotaExceeded`); chosen before
    the Shoot exists, by label selector, as a test of a provisioner must."""
    rule = {"outcome": "fail", "selector": "rrm.io/subaccount=doomed", "description": "quota exceeded"}
    assert set_outcome(garden, **rule).status_code == 201
    created(custom, shoot("c-1", **{"rrm.io/subaccount": "doomed"}))
    custom.create_namespaced_custom_object(*SHOOTS, shoot("c-2", **{"rrm.io/subaccount": "lucky"}))
    failed = wait_for_state(custom, "Create", "Failed")
    assert failed["status"]["lastOperation"]["description"] == "quota exceeded"
    assert failed["status"]["lastErrors"][0]["codes"] == ["ERR_INFRA_QUOTA_EXCEEDED"]
    wait_for_state(custom, "Create", "Succeeded", name="c-2")
    garden.gardenlet.reconcile_all()
    assert last_operation(custom)["state"] == "Failed"


def test_an_error_is_retried_once_the_cause_is_gone(
    garden: gardener.GardenerApiServer, custom: client.CustomObjectsApi
) -> None:
    """`LastOperationStateError`: "completed with errors and will be retried"; the retry starts a new
    operation and clears `lastErrors` (`updateShootStatusOperationStart`)."""
    set_outcome(garden, outcome="fail", state="Error", name="c-1")
    created(custom, shoot())
    assert wait_for_state(custom, "Create", "Error")["status"]["lastErrors"]
    set_outcome(garden, outcome="succeed", name="c-1")
    assert "lastErrors" not in wait_for_state(custom, "Create", "Succeeded")["status"]


def test_a_hanging_create_stays_processing_below_100(
    garden: gardener.GardenerApiServer, custom: client.CustomObjectsApi
) -> None:
    """What a provisioner's stage deadline is for (KEB polls 60 min, `Check_RuntimeResource_Provisioning`)."""
    set_outcome(garden, outcome="hang")
    created(custom, shoot())
    wait_until(lambda: last_operation(custom).get("progress") == 99, DEADLINE, "the create never reached 99%")
    for _ in range(3):
        garden.gardenlet.reconcile_all()
    assert last_operation(custom) | {"lastUpdateTime": ""} == {
        "type": "Create",
        "state": "Processing",
        "progress": 99,
        "description": "Waiting until all shoot system components are healthy",
        "lastUpdateTime": "",
    }


@pytest.mark.parametrize(
    "rule, problem",
    [
        ({"outcome": "explode"}, "outcome must be one of succeed, fail, hang"),
        ({"outcome": "fail", "state": "Broken"}, "state must be one of Failed, Error"),
        ({"selector": "a in ()"}, "unable to parse requirement"),
        ({"colour": "red"}, "unknown field 'colour'"),
        ({"codes": "ERR"}, "codes must be a list of strings"),
    ],
)
def test_bad_outcome_rules_are_refused(
    garden: gardener.GardenerApiServer, rule: dict[str, Any], problem: str
) -> None:
    response = set_outcome(garden, **rule)
    assert response.status_code == 400 and problem in response.json()["message"]
    assert httpx.get(f"{garden.url}/test/outcomes", headers={"Authorization": f"Bearer {TOKEN}"}).json() == []


# --- deletion -----------------------------------------------------------------------------------------------


def test_deletion_needs_the_confirmation_annotation(
    garden: gardener.GardenerApiServer, custom: client.CustomObjectsApi
) -> None:
    """`plugin/pkg/global/deletionconfirmation`: DELETE is refused with `admission.NewForbidden` and
    `must have a "confirmation.gardener.cloud/deletion" annotation to delete` unless the annotation parses as
    true (`CheckIfDeletionIsConfirmed`, strconv.ParseBool)."""
    created(custom, shoot())
    wait_for_state(custom, "Create", "Succeeded")
    message = (
        'shoots.core.gardener.cloud "c-1" is forbidden: must have a "confirmation.gardener.cloud/deletion" '
        "annotation to delete"
    )
    for value in (None, "false", "yes"):
        patch = {"metadata": {"annotations": {"confirmation.gardener.cloud/deletion": value}}}
        custom.patch_namespaced_custom_object(*SHOOTS, "c-1", patch, _content_type=MERGE)
        code, status = refusal(custom.delete_namespaced_custom_object, *SHOOTS, "c-1")
        assert (code, status["reason"], status["message"]) == (403, "Forbidden", message)
    assert last_operation(custom)["type"] == "Create"


@pytest.mark.parametrize("garden", [{"create_seconds": 0.0, "delete_seconds": 0.3}], indirect=True)
def test_a_confirmed_deletion_runs_a_delete_operation_then_the_shoot_is_gone(
    garden: gardener.GardenerApiServer, custom: client.CustomObjectsApi
) -> None:
    """With the `gardener` finalizer, DELETE sets `deletionTimestamp` and answers the object (the generic
    registry's graceful deletion); the gardenlet runs a Delete operation ("Deletion of Shoot cluster in
    progress.") and releases the finalizer, so the Shoot disappears. The spec is frozen meanwhile:
    "cannot update shoot spec if deletion timestamp is set" (`ValidateShootSpecUpdate`)."""
    created(custom, shoot())
    before = wait_for_state(custom, "Create", "Succeeded")
    confirm = {"metadata": {"annotations": {"confirmation.gardener.cloud/deletion": "true"}}}
    custom.patch_namespaced_custom_object(*SHOOTS, "c-1", confirm, _content_type=MERGE)
    marked = custom.delete_namespaced_custom_object(*SHOOTS, "c-1")
    assert marked["metadata"]["deletionTimestamp"]
    assert marked["metadata"]["generation"] == before["metadata"]["generation"] + 1
    code, status = refusal(
        custom.patch_namespaced_custom_object, *SHOOTS, "c-1", {"spec": {"kubernetes": {"version": "1.34.0"}}}
    )
    assert code == 422 and "cannot update shoot spec if deletion timestamp is set" in status["message"]
    events = watched(custom, marked["metadata"]["resourceVersion"], lambda e: e["type"] == "DELETED")
    operations = [e["object"]["status"]["lastOperation"] for e in events]
    assert operations[0] | {"lastUpdateTime": ""} == {
        "type": "Delete",
        "state": "Processing",
        "progress": 0,
        "description": "Deletion of Shoot cluster in progress.",
        "lastUpdateTime": "",
    }
    assert events[-1]["type"] == "DELETED"
    code, _ = refusal(custom.get_namespaced_custom_object, *SHOOTS, "c-1")
    assert code == 404


def test_a_hanging_deletion_keeps_the_shoot(
    garden: gardener.GardenerApiServer, custom: client.CustomObjectsApi
) -> None:
    """A provisioner's "wait until it is gone" stage must be able to time out: the Delete can hang."""
    set_outcome(garden, outcome="hang", operation="Delete")
    created(custom, shoot())
    wait_for_state(custom, "Create", "Succeeded")
    confirm = {"metadata": {"annotations": {"confirmation.gardener.cloud/deletion": "1"}}}
    custom.patch_namespaced_custom_object(*SHOOTS, "c-1", confirm, _content_type=MERGE)
    custom.delete_namespaced_custom_object(*SHOOTS, "c-1")
    wait_until(lambda: last_operation(custom).get("progress") == 99, DEADLINE, "the delete never reached 99%")
    garden.gardenlet.reconcile_all()
    assert last_operation(custom)["state"] == "Processing"


# --- validation and admission -------------------------------------------------------------------------------


def test_the_named_binding_must_exist(custom: client.CustomObjectsApi) -> None:
    """`plugin/pkg/global/resourcereferencemanager` (`ensureShootReferences`): the lister's NotFound wrapped
    in `admission.NewForbidden`, so 403, for SecretBindings and CredentialsBindings alike."""
    code, status = refusal(custom.create_namespaced_custom_object, *SHOOTS, shoot(binding="nowhere"))
    assert (code, status["reason"]) == (403, "Forbidden")
    assert status["message"] == (
        'shoots.core.gardener.cloud "c-1" is forbidden: secretbinding.core.gardener.cloud "nowhere" not found'
    )
    body = shoot()
    body["spec"]["credentialsBindingName"] = body["spec"].pop("secretBindingName")
    code, status = refusal(custom.create_namespaced_custom_object, *SHOOTS, body)
    assert code == 403 and 'credentialsbinding.security.gardener.cloud "aws-1" not found' in status["message"]
    custom.create_namespaced_custom_object(*CREDENTIALS_BINDINGS, credentials_binding("aws-1"))
    assert custom.create_namespaced_custom_object(*SHOOTS, body)["spec"]["credentialsBindingName"] == "aws-1"


@pytest.mark.parametrize(
    "change, field, message",
    [
        (lambda s: s["spec"].pop("region"), "spec.region", "Required value: must specify a region"),
        (lambda s: s["spec"]["provider"].pop("type"), "spec.provider.type", "Required value"),
        (lambda s: s["spec"].pop("cloudProfile"), "spec.cloudProfile.name", "must specify a cloud profile"),
        (lambda s: s["spec"]["kubernetes"].pop("version"), "spec.kubernetes.version", "must not be empty"),
        (lambda s: s["spec"].pop("secretBindingName"), "spec.secretBindingName", "must be set when"),
        (
            lambda s: s["spec"].update(credentialsBindingName="aws-1"),
            "spec.secretBindingName",
            "is incompatible with credentialsBindingName",
        ),
        (
            lambda s: s["spec"]["kubernetes"].update(version="1.34.1"),
            "spec.secretBindingName",
            "for Kubernetes versions >= 1.34, secretBindingName field is no longer supported",
        ),
        (
            lambda s: s["spec"]["provider"]["workers"][0].update(minimum=5, maximum=4),
            "spec.provider.workers[0].maximum",
            "maximum value must not be less than minimum value",
        ),
        (
            lambda s: s["spec"]["networking"].pop("type"),
            "spec.networking.type",
            "networking type must be provided",
        ),
        (lambda s: s["metadata"].update(name="c--1"), "metadata.name", "two consecutive hyphens"),
        (lambda s: s["metadata"].update(name="a.b"), "metadata.name", "RFC 1123 label"),
        (
            lambda s: s["metadata"].update(name="nineteen-chars-xxxx"),
            "name",
            "the length of the shoot name and the project name must not exceed 21 characters",
        ),
        (
            lambda s: s["metadata"].update(finalizers=["gardener"]),
            "metadata.finalizers[0]",
            'finalizer "gardener" cannot be added on creation',
        ),
    ],
)
def test_invalid_shoots_are_refused_naming_the_field(
    custom: client.CustomObjectsApi, change: Callable[[dict[str, Any]], Any], field: str, message: str
) -> None:
    """`pkg/api/core/validation/shoot.go` (`ValidateShootSpec`, `validateKubernetes`, `validateNetworking`,
    `validateWorker`, `ValidateFinalizersOnCreation`, `validateNameConsecutiveHyphens`) and the shoot
    validator's project name length limit (`plugin/pkg/shoot/validator`, `validateProjectMembership`)."""
    custom.create_namespaced_custom_object(*SECRET_BINDINGS, secret_binding("aws-1"))
    body = shoot()
    change(body)
    code, status = refusal(custom.create_namespaced_custom_object, *SHOOTS, body)
    assert (code, status["reason"]) == (422, "Invalid"), status
    assert any(c["field"] == field and message in c["message"] for c in status["details"]["causes"]), status
    assert custom.list_namespaced_custom_object(*SHOOTS)["items"] == []


@pytest.mark.parametrize(
    "patch, field",
    [
        ({"spec": {"region": "eu-west-1"}}, "spec.region"),
        ({"spec": {"provider": {"type": "gcp"}}}, "spec.provider.type"),
        ({"spec": {"networking": {"type": "cilium"}}}, "spec.networking.type"),
        ({"spec": {"secretBindingName": "aws-2"}}, "spec.secretBindingName"),
    ],
)
def test_immutable_fields_refuse_changes(
    custom: client.CustomObjectsApi, patch: dict[str, Any], field: str
) -> None:
    """`ValidateShootSpecUpdate` / `ValidateProviderUpdate` / `validateNetworkingUpdate`:
    `ValidateImmutableField` → "field is immutable"."""
    created(custom, shoot())
    custom.create_namespaced_custom_object(*SECRET_BINDINGS, secret_binding("aws-2"))
    code, status = refusal(custom.patch_namespaced_custom_object, *SHOOTS, "c-1", patch)
    assert code == 422
    assert [
        (c["field"], c["message"].endswith("field is immutable")) for c in status["details"]["causes"]
    ] == [(field, True)]


def test_shoots_live_in_project_namespaces(custom: client.CustomObjectsApi) -> None:
    """A Shoot belongs to a project through its namespace (`ProjectForNamespaceFromLister`); here every
    `garden-<project>` namespace is one, and other namespaces do not exist (NamespaceLifecycle: 404)."""
    code, status = refusal(
        custom.create_namespaced_custom_object, "core.gardener.cloud", "v1beta1", "default", "shoots", shoot()
    )
    assert (code, status["message"]) == (404, 'namespaces "default" not found')


# --- optimistic concurrency: what the account pool's claim relies on ----------------------------------------


def test_a_stale_binding_update_is_a_conflict_so_two_replicas_never_claim_the_same_account(
    custom: client.CustomObjectsApi,
) -> None:
    """The HAP claim (KEB `resolve_credentials_binding.go`): list the free bindings, label one with the
    tenant, with the listed resourceVersion as precondition. The second claimant's write is stale and
    answers 409 Conflict (API Concepts, "Resource versions"; `registry/generic/registry/store.go`), for a
    PUT, a merge patch and a server-side apply alike, so it must re-list and pick another binding."""
    custom.create_namespaced_custom_object(*SECRET_BINDINGS, secret_binding("aws-1", hyperscalerType="aws"))
    free = "hyperscalerType=aws,!tenantName,shared!=true,dirty!=true"
    listed = custom.list_namespaced_custom_object(*SECRET_BINDINGS, label_selector=free)["items"]
    first, second = listed[0], json.loads(json.dumps(listed[0]))
    first["metadata"]["labels"]["tenantName"] = "ga-1"
    custom.replace_namespaced_custom_object(*SECRET_BINDINGS, "aws-1", first)
    second["metadata"]["labels"]["tenantName"] = "ga-2"
    code, status = refusal(custom.replace_namespaced_custom_object, *SECRET_BINDINGS, "aws-1", second)
    assert (code, status["reason"]) == (409, "Conflict")
    assert "the object has been modified" in status["message"]
    stale = {
        "metadata": {
            "resourceVersion": second["metadata"]["resourceVersion"],
            "labels": {"tenantName": "ga-2"},
        }
    }
    assert (
        refusal(custom.patch_namespaced_custom_object, *SECRET_BINDINGS, "aws-1", stale, _content_type=MERGE)[
            0
        ]
        == 409
    )
    applied = {"apiVersion": "core.gardener.cloud/v1beta1", "kind": "SecretBinding"} | {
        "metadata": {"name": "aws-1", **stale["metadata"]}
    }
    code, _ = refusal(
        custom.patch_namespaced_custom_object,
        *SECRET_BINDINGS,
        "aws-1",
        applied,
        field_manager="rrm-hap",
        _content_type=APPLY,
    )
    assert code == 409
    assert custom.list_namespaced_custom_object(*SECRET_BINDINGS, label_selector=free)["items"] == []
    owner = custom.get_namespaced_custom_object(*SECRET_BINDINGS, "aws-1")["metadata"]["labels"]["tenantName"]
    assert owner == "ga-1"


def test_racing_claimants_win_exactly_once_per_binding(custom: client.CustomObjectsApi) -> None:
    """Eight threads claim from the same listing at once: each binding is won by exactly one of them."""
    for index in range(3):
        custom.create_namespaced_custom_object(
            *SECRET_BINDINGS, secret_binding(f"aws-{index}", hyperscalerType="aws")
        )
    listed = custom.list_namespaced_custom_object(*SECRET_BINDINGS)["items"]
    wins: list[tuple[str, str]] = []
    start = threading.Barrier(8)

    def claim(tenant: str) -> None:
        start.wait()
        for binding in listed:
            patch = {
                "metadata": {
                    "resourceVersion": binding["metadata"]["resourceVersion"],
                    "labels": {"tenantName": tenant},
                }
            }
            try:
                custom.patch_namespaced_custom_object(
                    *SECRET_BINDINGS, binding["metadata"]["name"], patch, _content_type=MERGE
                )
            except ApiException as exc:
                assert exc.status == 409
                continue
            wins.append((binding["metadata"]["name"], tenant))
            return

    threads = [threading.Thread(target=claim, args=(f"ga-{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=DEADLINE)
    assert sorted(name for name, _ in wins) == ["aws-0", "aws-1", "aws-2"]
    labels = {
        b["metadata"]["name"]: b["metadata"]["labels"]["tenantName"]
        for b in custom.list_namespaced_custom_object(*SECRET_BINDINGS)["items"]
    }
    assert labels == dict(wins)


def test_put_without_a_resource_version_follows_each_strategy(custom: client.CustomObjectsApi) -> None:
    """`AllowUnconditionalUpdate()`: true for SecretBindings (`registry/core/secretbinding/strategy.go`),
    false for CredentialsBindings and Shoots, which answer 422 "must be specified for an update"."""
    custom.create_namespaced_custom_object(*SECRET_BINDINGS, secret_binding("aws-1"))
    custom.create_namespaced_custom_object(*CREDENTIALS_BINDINGS, credentials_binding("aws-1"))
    unconditional = secret_binding("aws-1", dirty="true")
    assert custom.replace_namespaced_custom_object(*SECRET_BINDINGS, "aws-1", unconditional)["metadata"][
        "labels"
    ] == {"dirty": "true"}
    for plural, body in (
        (CREDENTIALS_BINDINGS, credentials_binding("aws-1", dirty="true")),
        (SHOOTS, shoot()),
    ):
        if plural == SHOOTS:
            custom.create_namespaced_custom_object(*SHOOTS, shoot())
        code, status = refusal(
            custom.replace_namespaced_custom_object, *plural, body["metadata"]["name"], body
        )
        assert (code, status["details"]["causes"][0]["field"]) == (422, "metadata.resourceVersion")


def test_bindings_label_by_server_side_apply_and_keep_their_references(
    custom: client.CustomObjectsApi,
) -> None:
    """Labels applied by one field manager and changed by another conflict (Server-Side Apply); the secret
    reference, quotas and provider of a binding are immutable (`ValidateSecretBindingUpdate`,
    `ValidateCredentialsBindingUpdate`)."""
    custom.create_namespaced_custom_object(
        *CREDENTIALS_BINDINGS, credentials_binding("aws-1", hyperscalerType="aws")
    )
    labels = {"apiVersion": "security.gardener.cloud/v1alpha1", "kind": "CredentialsBinding"}
    applied = custom.patch_namespaced_custom_object(
        *CREDENTIALS_BINDINGS,
        "aws-1",
        labels | {"metadata": {"name": "aws-1", "labels": {"tenantName": "ga-1"}}},
        field_manager="rrm-hap",
        _content_type=APPLY,
    )
    assert applied["metadata"]["labels"] == {"hyperscalerType": "aws", "tenantName": "ga-1"}
    code, status = refusal(
        custom.patch_namespaced_custom_object,
        *CREDENTIALS_BINDINGS,
        "aws-1",
        labels | {"metadata": {"name": "aws-1", "labels": {"tenantName": "ga-2"}}},
        field_manager="other-replica",
        _content_type=APPLY,
    )
    assert code == 409 and 'conflict with "rrm-hap"' in status["message"]
    moved = {"credentialsRef": {"apiVersion": "v1", "kind": "Secret", "name": "other", "namespace": NS}}
    code, status = refusal(custom.patch_namespaced_custom_object, *CREDENTIALS_BINDINGS, "aws-1", moved)
    assert code == 422 and status["details"]["causes"][0]["field"] == "credentialsRef"


# --- adminkubeconfig and the "shoot" cluster ----------------------------------------------------------------


def test_admin_kubeconfig_reaches_a_shoot_cluster_started_on_demand(
    garden: gardener.GardenerApiServer, api: client.ApiClient, custom: client.CustomObjectsApi
) -> None:
    """`shoots/adminkubeconfig` (docs/usage/shoot_access.md, `KubeconfigREST.Create`): 201 with
    `status.kubeconfig` (base64) and `status.expirationTimestamp`; the kubeconfig reaches a Kubernetes
    stand-in of its own, which runs only once asked for and stops when the Shoot is gone."""
    created(custom, shoot())
    wait_for_state(custom, "Create", "Succeeded")
    assert garden.clusters.listed() == []
    code, answer = admin_kubeconfig(api, "c-1", kubeconfig_request(600))
    assert code == 201 and answer["kind"] == "AdminKubeconfigRequest"
    assert answer["spec"] == {"expirationSeconds": 600}
    assert answer["status"]["expirationTimestamp"].endswith("Z")
    kubeconfig = yaml.safe_load(base64.b64decode(answer["status"]["kubeconfig"]))
    assert kubeconfig["current-context"] == "garden-dev--c-1-external"
    shoot_api = config.new_client_from_config_dict(kubeconfig)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "pairing"},
        "stringData": {"token": "t"},
    }
    client.CoreV1Api(shoot_api).create_namespaced_secret("rrm-system", secret)
    again = yaml.safe_load(
        base64.b64decode(admin_kubeconfig(api, "c-1", kubeconfig_request())[1]["status"]["kubeconfig"])
    )
    assert again["clusters"] == kubeconfig["clusters"]
    assert [c["name"] for c in garden.clusters.listed()] == ["c-1"]
    confirm = {"metadata": {"annotations": {"confirmation.gardener.cloud/deletion": "true"}}}
    custom.patch_namespaced_custom_object(*SHOOTS, "c-1", confirm, _content_type=MERGE)
    custom.delete_namespaced_custom_object(*SHOOTS, "c-1")
    wait_until(lambda: garden.clusters.listed() == [], DEADLINE, "the shoot cluster kept running")
    wait_until(lambda: unreachable(shoot_api), DEADLINE, "the deleted shoot's API server still answers")


def test_shoot_clusters_share_one_accepting_thread(
    garden: gardener.GardenerApiServer, api: client.ApiClient, custom: client.CustomObjectsApi
) -> None:
    """Each Shoot's API server answers on its own port, but one thread accepts for all of them: a
    thousand Shoots are not a thousand threads polling for connections."""
    custom.create_namespaced_custom_object(*SECRET_BINDINGS, secret_binding("aws-1"))
    names = [f"c-{i}" for i in range(5)]
    for name in names:
        custom.create_namespaced_custom_object(*SHOOTS, shoot(name))
    for name in names:
        wait_for_state(custom, "Create", "Succeeded", name=name)
    before = threading.active_count()
    kubeconfigs = [
        yaml.safe_load(
            base64.b64decode(admin_kubeconfig(api, n, kubeconfig_request())[1]["status"]["kubeconfig"])
        )
        for n in names
    ]
    assert threading.active_count() <= before + 1  # the acceptor; each request's own thread has ended
    for kubeconfig in kubeconfigs:
        shoot_api = config.new_client_from_config_dict(kubeconfig)
        with shoot_api:
            assert client.CoreV1Api(shoot_api).list_namespaced_secret("default").items == []
    assert len({c["server"] for c in garden.clusters.listed()}) == len(names)


@pytest.mark.parametrize("garden", [{"create_seconds": 0.6, "delete_seconds": 0.0}], indirect=True)
def test_the_gardenlet_looks_at_written_and_due_shoots_only(
    garden: gardener.GardenerApiServer, custom: client.CustomObjectsApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A settled Shoot is not looked at again until it is written (or the outcomes change); a Processing
    one steps on at its own times without any write, as the gardenlet's requeue does."""
    looked: list[str] = []
    busy = garden.gardenlet.busy

    def counted(body: dict[str, Any]) -> bool:
        looked.append(body["metadata"]["name"])
        return busy(body)

    passes = [0]
    reconcile_due = garden.gardenlet.reconcile_due

    def counted_passes() -> bool:
        passes[0] += 1
        return reconcile_due()

    monkeypatch.setattr(garden.gardenlet, "busy", counted)
    monkeypatch.setattr(garden.gardenlet, "reconcile_due", counted_passes)
    settled = created(custom, shoot("c-settled"))
    wait_for_state(custom, "Create", "Succeeded", name="c-settled")
    custom.create_namespaced_custom_object(*SHOOTS, shoot("c-busy"))

    def busy_done(event: dict[str, Any]) -> bool:
        current = (event["object"].get("status") or {}).get("lastOperation") or {}
        return event["object"]["metadata"]["name"] == "c-busy" and current.get("state") == "Succeeded"

    progress = [
        e["object"]["status"]["lastOperation"]["progress"]
        for e in watched(custom, settled["metadata"]["resourceVersion"], busy_done)
        if e["object"]["metadata"]["name"] == "c-busy" and e["object"].get("status")
    ]
    assert len(progress) > 3 and progress == sorted(progress)  # stepped on by its timers alone
    looked.clear()
    seen = passes[0]
    wait_until(lambda: passes[0] >= seen + 10, DEADLINE, "the gardenlet stopped passing")
    assert looked == []  # ten passes over a settled fleet looked at no Shoot
    set_outcome(garden, outcome="fail", name="nothing")
    wait_until(
        lambda: {"c-settled", "c-busy"} <= set(looked), DEADLINE, "a changed outcome was not looked at"
    )


def unreachable(api: client.ApiClient) -> bool:
    try:
        client.CoreV1Api(api).read_namespaced_secret("pairing", "rrm-system", _request_timeout=2)
    except Exception:  # refused, reset or closed: whichever the closing socket gives
        return True
    return False


@pytest.mark.parametrize("garden", [{"create_seconds": 3600.0, "delete_seconds": 0.0}], indirect=True)
def test_admin_kubeconfig_before_the_cluster_is_up_is_refused(
    garden: gardener.GardenerApiServer, api: client.ApiClient, custom: client.CustomObjectsApi
) -> None:
    """No advertised kube-apiserver address yet: 422 "no suitable advertised address for kube-apiserver found
    in .status.advertisedAddresses" (`KubeconfigREST.Create`); an unknown Shoot is 404."""
    created(custom, shoot())
    wait_for_state(custom, "Create", "Processing")
    code, status = admin_kubeconfig(api, "c-1", kubeconfig_request())
    assert code == 422 and "no suitable advertised address for kube-apiserver" in status["message"]
    assert admin_kubeconfig(api, "c-9", kubeconfig_request())[0] == 404
    assert garden.clusters.listed() == []


@pytest.mark.parametrize(
    "seconds, code, answered",
    [
        (None, 201, 3600),  # SetDefaults_AdminKubeconfigRequestSpec
        (599, 422, None),  # "may not specify a duration less than 10 minutes"
        (2**32, 422, None),  # more than MaxUint32
        (7 * 24 * 3600, 201, 24 * 3600),  # capped at --shoot-admin-kubeconfig-max-expiration (24h)
    ],
)
def test_admin_kubeconfig_expiration(
    api: client.ApiClient,
    custom: client.CustomObjectsApi,
    seconds: int | None,
    code: int,
    answered: int | None,
) -> None:
    """`pkg/api/authentication/validation` (`ValidateKubeconfigRequest`) and the server's maximum."""
    created(custom, shoot())
    wait_for_state(custom, "Create", "Succeeded")
    status, body = admin_kubeconfig(api, "c-1", kubeconfig_request(seconds))
    assert status == code, body
    if answered is not None:
        assert body["spec"]["expirationSeconds"] == answered
    else:
        assert body["details"]["causes"][0]["field"] == "spec.expirationSeconds"


# --- as its own process -------------------------------------------------------------------------------------


def test_runs_as_its_own_process_printing_its_port(tmp_path: Path) -> None:
    """`--port 0` picks a port and prints it once the server listens; `--kubeconfig` is written first, for
    the provisioner under test (`rrm server --gardener-kubeconfig`), readable by its owner only."""
    kubeconfig = tmp_path / "garden.yaml"
    script = Path(gardener.__file__)
    args = [sys.executable, str(script), "--port", "0", "--token", TOKEN, "--kubeconfig", str(kubeconfig)]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        assert kubeconfig.stat().st_mode & 0o777 == 0o600
        with config.new_client_from_config(str(kubeconfig)) as api:
            groups = client.ApisApi(api).get_api_versions().groups
            assert sorted(g.name for g in groups) == ["core.gardener.cloud", "security.gardener.cloud"]
            assert client.CustomObjectsApi(api).list_namespaced_custom_object(*SHOOTS)["items"] == []
        resources = httpx.get(
            f"http://127.0.0.1:{port}/apis/core.gardener.cloud/v1beta1",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=5,
        ).json()["resources"]
        assert {r["name"] for r in resources} == {"shoots", "secretbindings", "shoots/adminkubeconfig"}
        assert httpx.get(f"http://127.0.0.1:{port}/apis", timeout=5).status_code == 401
    finally:
        process.terminate()
        process.wait(timeout=10)
