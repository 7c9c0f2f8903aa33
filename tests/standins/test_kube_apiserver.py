"""The Kubernetes API stand-in follows the rules its docstring cites, so tests of the agent cannot pass
against a server laxer than a real one. Writes go through the official `kubernetes` client, as the agent's
do; watches are read as raw HTTP lines, the wire format a real server streams."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import kube_apiserver
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

TOKEN = "t"
NS = "team"
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
DAPR = ("dapr.io", "v1alpha1", NS, "components")


@pytest.fixture
def server() -> Iterator[kube_apiserver.ApiServer]:
    standin = kube_apiserver.ApiServer(0, TOKEN, history=3, bookmark_interval=0.2)
    thread = threading.Thread(target=standin.serve_forever, daemon=True)
    thread.start()
    try:
        yield standin
    finally:
        standin.shutdown()
        standin.server_close()


@pytest.fixture
def url(server: kube_apiserver.ApiServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def api(url: str) -> Iterator[client.ApiClient]:
    api_client = client.ApiClient(client.Configuration(host=url))
    api_client.set_default_header("Authorization", f"Bearer {TOKEN}")
    try:
        yield api_client
    finally:
        api_client.close()


def component(name: str = "web", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"type": "bindings.http", "version": "v1", "metadata": [], **spec},
    }


def deployment(**template_spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "shop", "namespace": NS},
        "spec": {"template": {"spec": template_spec}},
    }


def raw(call: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """The JSON body a client call answers, without the client's models (which refuse partial objects)."""
    return dict(json.loads(call(*args, _preload_content=False, **kwargs).data))


def apply_component(
    api: client.ApiClient, body: dict[str, Any], manager: str, force: bool = False
) -> dict[str, Any]:
    custom = client.CustomObjectsApi(api)
    name = body["metadata"]["name"]
    return raw(
        custom.patch_namespaced_custom_object,
        *DAPR,
        name,
        body,
        field_manager=manager,
        force=force,
        _content_type=APPLY,
    )


def apply_deployment(api: client.ApiClient, body: dict[str, Any], manager: str) -> dict[str, Any]:
    apps = client.AppsV1Api(api)
    return raw(apps.patch_namespaced_deployment, "shop", NS, body, field_manager=manager, _content_type=APPLY)


def refusal(call: Any, *args: Any, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(ApiException) as caught:
        call(*args, **kwargs)
    return caught.value.status, json.loads(caught.value.body)


def version(obj: dict[str, Any]) -> str:
    return str(obj["metadata"]["resourceVersion"])


def owners(obj: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(e["manager"], e["operation"]): e["fieldsV1"] for e in obj["metadata"]["managedFields"]}


STALE_MESSAGE = (
    'Operation cannot be fulfilled on components.dapr.io "web": the object has been modified; '
    "please apply your changes to the latest version and try again"
)


# --- resourceVersion preconditions ------------------------------------------------------------------------


def test_every_kind_of_write_with_a_stale_resource_version_is_a_409_conflict(api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    created = custom.create_namespaced_custom_object(*DAPR[:3], "components", component())
    stale = version(created)
    custom.patch_namespaced_custom_object(*DAPR, "web", {"spec": {"version": "v2"}}, _content_type=MERGE)
    old = {**component(), "metadata": {**component()["metadata"], "resourceVersion": stale}}
    attempts = [
        (custom.replace_namespaced_custom_object, (*DAPR, "web", old), {}),
        (
            custom.patch_namespaced_custom_object,
            (*DAPR, "web", {"metadata": {"resourceVersion": stale}}),
            {"_content_type": MERGE},
        ),
        (
            custom.patch_namespaced_custom_object,
            (*DAPR, "web", [{"op": "replace", "path": "/metadata/resourceVersion", "value": stale}]),
            {"_content_type": JSON_PATCH},
        ),
        (
            custom.patch_namespaced_custom_object,
            (*DAPR, "web", old),
            {"_content_type": APPLY, "field_manager": "ci", "force": True},
        ),
    ]
    for call, args, kwargs in attempts:
        code, status = refusal(call, *args, **kwargs)
        assert (code, status["reason"], status["code"]) == (409, "Conflict", 409)
        assert status["kind"] == "Status" and status["status"] == "Failure"
        assert status["message"] == STALE_MESSAGE
        assert status["details"] == {"name": "web", "group": "dapr.io", "kind": "components"}
    assert custom.get_namespaced_custom_object(*DAPR, "web")["spec"]["version"] == "v2"


def test_a_current_resource_version_is_accepted_and_a_strategic_patch_is_checked_too(
    api: client.ApiClient,
) -> None:
    custom = client.CustomObjectsApi(api)
    current = version(custom.create_namespaced_custom_object(*DAPR[:3], "components", component()))
    body = component(version="v2")
    body["metadata"]["resourceVersion"] = current
    applied = apply_component(api, body, "ci", force=True)
    assert applied["spec"]["version"] == "v2" and version(applied) != current

    apps = client.AppsV1Api(api)
    body = deployment(containers=[{"name": "app", "image": "a:1"}])
    body["spec"]["selector"] = {"matchLabels": {"app": "shop"}}
    made = apps.create_namespaced_deployment(NS, body)
    stale = made.metadata.resource_version
    apps.patch_namespaced_deployment("shop", NS, {"spec": {"replicas": 2}}, _content_type=STRATEGIC)
    patch = {"metadata": {"resourceVersion": stale}, "spec": {"replicas": 3}}
    code, status = refusal(apps.patch_namespaced_deployment, "shop", NS, patch, _content_type=STRATEGIC)
    assert (code, status["reason"]) == (409, "Conflict")
    assert 'on deployments.apps "shop"' in status["message"]


def test_a_put_without_resource_version_is_refused_for_a_custom_resource_and_allowed_for_a_secret(
    api: client.ApiClient,
) -> None:
    custom = client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(*DAPR[:3], "components", component())
    code, status = refusal(custom.replace_namespaced_custom_object, *DAPR, "web", component(version="v2"))
    assert (code, status["reason"]) == (422, "Invalid")
    assert status["message"] == (
        'components.dapr.io "web" is invalid: metadata.resourceVersion: Invalid value: 0x0: '
        "must be specified for an update"
    )
    assert status["details"]["causes"] == [
        {
            "reason": "FieldValueInvalid",
            "message": "Invalid value: 0x0: must be specified for an update",
            "field": "metadata.resourceVersion",
        }
    ]
    assert custom.get_namespaced_custom_object(*DAPR, "web")["spec"]["version"] == "v1"

    core = client.CoreV1Api(api)
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "djE="}}
    core.create_namespaced_secret(NS, secret)
    replaced = core.replace_namespaced_secret("s", NS, {**secret, "data": {"k": "djI="}})
    assert replaced.data == {"k": "djI="}, "an unconditional update of a built-in kind"


def test_patches_of_a_custom_resource_refuse_strategic_merge_and_check_json_patch_tests(
    api: client.ApiClient,
) -> None:
    custom = client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(*DAPR[:3], "components", component())
    patch = {"spec": {"version": "v2"}}
    code, status = refusal(
        custom.patch_namespaced_custom_object, *DAPR, "web", patch, _content_type=STRATEGIC
    )
    assert (code, status["reason"]) == (415, "UnsupportedMediaType")
    failing = [
        {"op": "test", "path": "/spec/version", "value": "v9"},
        {"op": "replace", "path": "/spec/version", "value": "v2"},
    ]
    code, _ = refusal(custom.patch_namespaced_custom_object, *DAPR, "web", failing, _content_type=JSON_PATCH)
    assert code == 422
    passing = [{**failing[0], "value": "v1"}, failing[1]]
    patched = custom.patch_namespaced_custom_object(*DAPR, "web", passing, _content_type=JSON_PATCH)
    assert patched["spec"]["version"] == "v2"


# --- server-side apply --------------------------------------------------------------------------------------


def test_a_changed_field_another_manager_owns_is_a_conflict_worded_as_the_real_server_does(
    api: client.ApiClient,
) -> None:
    apply_component(api, component(), "alice")
    custom = client.CustomObjectsApi(api)
    custom.patch_namespaced_custom_object(
        *DAPR, "web", {"spec": {"initTimeout": "5s"}}, field_manager="kubectl-edit", _content_type=MERGE
    )
    code, status = refusal(apply_component, api, component(type="bindings.kafka"), "bob")
    assert (code, status["reason"]) == (409, "Conflict")
    assert status["message"] == 'Apply failed with 1 conflict: conflict with "alice": .spec.type'
    assert status["details"]["causes"] == [
        {"reason": "FieldManagerConflict", "message": 'conflict with "alice"', "field": ".spec.type"}
    ]

    both = component(type="bindings.kafka", version="v2", initTimeout="9s")
    code, status = refusal(apply_component, api, both, "bob")
    assert status["message"] == (
        "Apply failed with 3 conflicts: "
        'conflicts with "alice":\n- .spec.type\n- .spec.version\n'
        'conflicts with "kubectl-edit" using dapr.io/v1alpha1:\n- .spec.initTimeout'
    )
    assert custom.get_namespaced_custom_object(*DAPR, "web")["spec"]["type"] == "bindings.http"

    forced = apply_component(api, both, "bob", force=True)
    assert forced["spec"]["type"] == "bindings.kafka"
    fields = owners(forced)
    assert "f:type" in fields[("bob", "Apply")]["f:spec"]
    assert "f:type" not in fields[("alice", "Apply")]["f:spec"], "ownership moved to the forcing manager"
    assert ("kubectl-edit", "Update") not in fields


def test_an_equal_value_is_shared_and_a_dropped_field_goes_only_when_nobody_owns_it(
    api: client.ApiClient,
) -> None:
    apply_component(api, component(initTimeout="5s"), "alice")
    shared = apply_component(api, component(initTimeout="5s"), "bob")
    assert {"alice", "bob"} <= {m for m, _ in owners(shared)}, "no conflict: the same value is shared"
    kept = apply_component(api, component(), "alice")
    assert kept["spec"]["initTimeout"] == "5s", "bob still owns it"
    gone = apply_component(api, {**component(), "spec": {"type": "bindings.http"}}, "bob")
    assert "initTimeout" not in gone["spec"], "nobody owns it any more"
    assert gone["spec"]["version"] == "v1", "alice still owns the version bob dropped"


def test_the_component_crd_lists_are_atomic(api: client.ApiClient) -> None:
    """The Dapr Component CRD declares no `x-kubernetes-list-type`, so `spec.metadata` is one value."""
    apply_component(api, component(metadata=[{"name": "url", "value": "a"}]), "alice")
    other = component(metadata=[{"name": "token", "value": "b"}])
    code, status = refusal(apply_component, api, other, "bob")
    assert (code, status["details"]["causes"][0]["field"]) == (409, ".spec.metadata")
    applied = apply_component(api, other, "bob", force=True)
    assert applied["spec"]["metadata"] == [{"name": "token", "value": "b"}], "replaced, not merged"
    assert owners(applied)[("bob", "Apply")]["f:spec"]["f:metadata"] == {}


def test_a_partial_apply_of_the_pod_template_merges_containers_by_name(api: client.ApiClient) -> None:
    full = deployment(
        containers=[
            {
                "name": "app",
                "image": "shop:1",
                "env": [{"name": "FOO", "value": "1"}],
                "ports": [{"containerPort": 8080}],
            }
        ]
    )
    full["spec"]["template"]["metadata"] = {"labels": {"app": "shop"}}
    apply_deployment(api, full, "helm")
    annotations = {"spec": {"template": {"metadata": {"annotations": {"restarted-at": "now"}}}}}
    restarted = apply_deployment(api, {**deployment(), **annotations}, "rrm")
    template = restarted["spec"]["template"]
    assert template["metadata"] == {"labels": {"app": "shop"}, "annotations": {"restarted-at": "now"}}
    assert [c["name"] for c in template["spec"]["containers"]] == ["app"], "the containers stay"

    sidecar_env = deployment(containers=[{"name": "app", "env": [{"name": "BAR", "value": "2"}]}])
    merged = apply_deployment(api, sidecar_env, "rrm")
    (container,) = merged["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "shop:1"
    assert [e["name"] for e in container["env"]] == ["FOO", "BAR"], "env merged by name"
    rrm_fields = owners(merged)[("rrm", "Apply")]["f:spec"]["f:template"]["f:spec"]["f:containers"]
    assert rrm_fields == {
        'k:{"name":"app"}': {
            ".": {},
            "f:name": {},
            "f:env": {'k:{"name":"BAR"}': {".": {}, "f:name": {}, "f:value": {}}},
        }
    }
    helm_fields = owners(merged)[("helm", "Apply")]["f:spec"]["f:template"]["f:spec"]["f:containers"]
    assert 'k:{"containerPort":8080,"protocol":"TCP"}' in helm_fields['k:{"name":"app"}']["f:ports"]

    code, status = refusal(
        apply_deployment, api, deployment(containers=[{"name": "app", "image": "shop:2"}]), "rrm"
    )
    assert code == 409
    assert status["message"] == (
        'Apply failed with 1 conflict: conflict with "helm": .spec.template.spec.containers[name="app"].image'
    )


def test_dropping_a_list_item_removes_only_what_that_manager_alone_owned(api: client.ApiClient) -> None:
    envs = [{"name": "FOO", "value": "1"}, {"name": "BAR", "value": "2"}]
    apply_deployment(api, deployment(containers=[{"name": "app", "image": "a:1", "env": envs}]), "helm")
    apply_deployment(api, deployment(containers=[{"name": "app", "env": envs[1:]}]), "rrm")
    after = apply_deployment(api, deployment(containers=[{"name": "app", "image": "a:1"}]), "helm")
    (container,) = after["spec"]["template"]["spec"]["containers"]
    assert container["env"] == [{"name": "BAR", "value": "2"}], "FOO went; BAR is still rrm's"


# --- lists and watches --------------------------------------------------------------------------------------


def watch_lines(url: str, query: str, count: int) -> list[dict[str, Any]]:
    """The first `count` events of a watch (or all of them if it ends sooner)."""
    events: list[dict[str, Any]] = []
    headers = {"Authorization": f"Bearer {TOKEN}"}
    path = f"{url}/apis/dapr.io/v1alpha1/namespaces/{NS}/components?watch=true&{query}"
    with httpx.stream("GET", path, headers=headers, timeout=10) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line:
                events.append(json.loads(line))
            if len(events) == count:
                break
    return events


def test_a_list_carries_the_collection_version_to_watch_from_and_bookmarks_keep_it_fresh(
    api: client.ApiClient, url: str
) -> None:
    custom = client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(*DAPR[:3], "components", component("a"))
    listed = custom.list_namespaced_custom_object(*DAPR)
    since = listed["metadata"]["resourceVersion"]
    assert since == version(listed["items"][0])
    custom.create_namespaced_custom_object(*DAPR[:3], "components", component("b"))
    added, bookmark = watch_lines(url, f"resourceVersion={since}&allowWatchBookmarks=true", 2)
    assert (added["type"], added["object"]["metadata"]["name"]) == ("ADDED", "b")
    assert bookmark == {
        "type": "BOOKMARK",
        "object": {
            "kind": "Component",
            "apiVersion": "dapr.io/v1alpha1",
            "metadata": {"resourceVersion": version(added["object"])},
        },
    }
    quiet = watch_lines(url, f"resourceVersion={version(added['object'])}&timeoutSeconds=1", 5)
    assert quiet == [], "no bookmarks unless asked for"


def test_a_watch_from_a_version_older_than_the_history_is_answered_410_expired(
    api: client.ApiClient, url: str, server: kube_apiserver.ApiServer
) -> None:
    custom = client.CustomObjectsApi(api)
    first = version(custom.create_namespaced_custom_object(*DAPR[:3], "components", component("a")))
    for name in ("b", "c", "d", "e"):  # the stand-in keeps 3 events: the one after `first` is gone
        custom.create_namespaced_custom_object(*DAPR[:3], "components", component(name))
    (error,) = watch_lines(url, f"resourceVersion={first}", 2)
    assert error["type"] == "ERROR"
    status = error["object"]
    assert (status["kind"], status["code"], status["reason"]) == ("Status", 410, "Expired")
    assert status["message"] == f"too old resource version: {first} ({int(first) + 1})"
    assert server.store.watches[-1]["code"] == 410

    listed = custom.list_namespaced_custom_object(*DAPR)["metadata"]["resourceVersion"]
    custom.delete_namespaced_custom_object(*DAPR, "a")
    (deleted,) = watch_lines(url, f"resourceVersion={listed}", 1)
    assert deleted["type"] == "DELETED", "a fresh list's version watches again"


def test_compaction_ends_open_watches_and_expires_older_versions(
    api: client.ApiClient, url: str, server: kube_apiserver.ApiServer
) -> None:
    custom = client.CustomObjectsApi(api)
    since = version(custom.create_namespaced_custom_object(*DAPR[:3], "components", component("a")))
    ended = threading.Event()

    def watch_until_the_end() -> None:
        watch_lines(url, f"resourceVersion={since}", 100)
        ended.set()

    threading.Thread(target=watch_until_the_end, daemon=True).start()
    custom.create_namespaced_custom_object(*DAPR[:3], "components", component("b"))
    response = httpx.post(f"{url}/test/compact", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert ended.wait(10), "the open watch ended"
    (error,) = watch_lines(url, f"resourceVersion={since}", 1)
    assert error["object"]["code"] == 410


def test_namespaces_are_cluster_scoped_and_the_agents_install_objects_are_served(
    url: str, api: client.ApiClient
) -> None:
    """Namespace is cluster-scoped (`/api/v1/namespaces/{name}`, no namespace in its metadata); a namespaced
    kind asked for without a namespace is not found, as on a real server (API conventions, "Resources":
    https://github.com/kubernetes/community/blob/master/contributors/devel/sig-architecture/api-conventions.md#resources).
    The kinds `rrm.install.agent_objects` writes are all served, so provisioning can install an agent."""
    from rrm.install import AgentInstallValues, agent_objects
    from rrm.install.apply import apply_objects

    kubeconfig = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "s", "cluster": {"server": url}}],
            "users": [{"name": "u", "user": {"token": TOKEN}}],
            "contexts": [{"name": "c", "context": {"cluster": "s", "user": "u"}}],
            "current-context": "c",
        }
    )
    objects = agent_objects(
        AgentInstallValues("edge-1", "http://rrm:8080", "rrmpt_x", target_namespaces=("shop",))
    )
    applied = apply_objects(kubeconfig, objects)
    assert [o["kind"] for o in applied] == [o["kind"] for o in objects]
    assert client.CoreV1Api(api).read_namespace("rrm-system").metadata.namespace is None
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.get(f"{url}/api/v1/serviceaccounts/rrm-agent-edge-1", headers=headers).status_code == 404
    assert httpx.get(f"{url}/api/v1/namespaces/rrm-system/namespaces/x", headers=headers).status_code == 404


def test_a_service_account_token_authenticates_until_its_account_is_deleted(
    url: str, api: client.ApiClient
) -> None:
    """TokenRequest (`POST serviceaccounts/{name}/token`, authentication.k8s.io/v1,
    https://kubernetes.io/docs/reference/kubernetes-api/authentication-resources/token-request-v1/) issues a
    bearer token for an existing ServiceAccount; less than 10 minutes is refused, as the apiserver's
    validation does. A bound token "is invalidated when the object it's bound to is deleted"
    (https://kubernetes.io/docs/reference/access-authn-authz/service-accounts-admin/#bound-service-account-tokens),
    and a token nobody issued is a 401. ClusterRoleBindings are cluster-scoped objects."""
    core = client.CoreV1Api(api)
    spec = client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
    missing = refusal(
        core.create_namespaced_service_account_token, "ops", NS, {"spec": {"expirationSeconds": 600}}
    )
    assert missing[0] == 404
    core.create_namespaced_service_account(
        NS,
        client.V1ServiceAccount(
            api_version="v1", kind="ServiceAccount", metadata=client.V1ObjectMeta(name="ops")
        ),
    )
    short = refusal(
        core.create_namespaced_service_account_token, "ops", NS, {"spec": {"expirationSeconds": 60}}
    )
    assert short[0] == 422 and short[1]["details"]["causes"][0]["field"] == "spec.expirationSeconds"
    answer = core.create_namespaced_service_account_token(
        "ops", NS, client.AuthenticationV1TokenRequest(spec=spec)
    )
    assert answer.status is not None and answer.status.expiration_timestamp is not None
    as_account = {"Authorization": f"Bearer {answer.status.token}"}
    assert httpx.get(f"{url}/api/v1/namespaces/{NS}/secrets", headers=as_account).status_code == 200
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "ops"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "ops", "namespace": NS}],
    }
    client.RbacAuthorizationV1Api(api).create_cluster_role_binding(binding)
    stored = client.RbacAuthorizationV1Api(api).read_cluster_role_binding("ops")
    assert stored.metadata.namespace is None and stored.subjects[0].name == "ops"
    core.delete_namespaced_service_account("ops", NS)
    assert httpx.get(f"{url}/api/v1/namespaces/{NS}/secrets", headers=as_account).status_code == 401
    forged = {"Authorization": "Bearer standin-sa-0123"}
    assert httpx.get(f"{url}/api/v1/namespaces/{NS}/secrets", headers=forged).status_code == 401
