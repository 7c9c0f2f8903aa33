"""Applications reach runtimes through scenarios: as `app-…` bindings in the agent's files (the one path),
in the System Broker's catalog, and on `/agent/v1/applications`; label definitions guard every label."""

from __future__ import annotations

import uuid

import httpx
import pytest

from .compass import application, broker_client, catalog_names, create_scenario, put_in_scenarios
from .harness import (
    Fleet,
    ServerProcess,
    apply,
    apply_refused,
    component,
    expect_status,
    files_containing,
    metadata_value,
    pair,
    register,
    registration,
    relabel,
    runtime,
    secret,
)

pytestmark = pytest.mark.integration


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def test_a_scenario_change_reaches_the_agents_files_and_the_broker_catalog(
    fleet: Fleet, server: ServerProcess, admin: httpx.Client
) -> None:
    scenario, app, token = unique("SC-"), unique("orders"), f"token-{uuid.uuid4().hex}"
    binding = f"app-{app}-main"
    create_scenario(admin, scenario)
    apply(
        admin,
        [
            application(
                app,
                [
                    {
                        "name": "main",
                        "apis": ["v1"],
                        "credentials": {"type": "header", "header": "X-Api-Key", "token": token},
                    }
                ],
                scenarios=[scenario],
                apis=[{"name": "v1", "targetUrl": f"https://{app}.example.com/v1"}],
            )
        ],
    )
    label = unique("t-")
    daprd = fleet.daprd("cmp-1")
    agent = fleet.agent("cmp-1", {"t-compass": label}, daprd=daprd)
    broker = broker_client(admin, "cmp-1")
    fleet.wait_runtime(
        "cmp-1", lambda d: d.get("applied_hash") is not None, "the agent applied its first state"
    )
    assert binding not in fleet.wait_files(agent, lambda c: True, "files listed")
    assert app not in catalog_names(broker)

    put_in_scenarios(admin, "cmp-1", add=[scenario])
    files = fleet.wait_files(agent, lambda c: binding in c, f"{binding} is written")
    manifest = files[binding]
    assert manifest["spec"]["type"] == "bindings.http"
    assert metadata_value(manifest, "url") == f"https://{app}.example.com/v1"
    assert metadata_value(manifest, "securityToken") == {"name": binding, "key": "token"}
    assert metadata_value(manifest, "securityTokenHeader") == "X-Api-Key"
    fleet.wait_until(
        lambda: (daprd.resolved(binding) or {}).get("securityToken") == token,
        "daprd resolves the application's credential through the rrm secret store",
    )
    assert token not in "".join(p.read_text() for p in agent.resources_path.glob("*.yaml")), (
        "token in a YAML file"
    )
    assert app in catalog_names(broker)
    assert app in [
        a["name"] for a in expect_status(admin.get("/api/v1/applications?runtime=cmp-1"), 200).json()
    ]

    put_in_scenarios(admin, "cmp-1", remove=[scenario])
    fleet.wait_files(
        agent, lambda c: binding not in c, f"{binding} is pruned when the runtime leaves the scenario"
    )
    assert app not in catalog_names(broker)

    # Automatic assignment: the runtime is in the scenario while its labels match the selector.
    expect_status(
        admin.put(f"/api/v1/scenarios/{scenario}/assignment", json={"selector": f"t-compass={label}"}), 200
    )
    fleet.wait_files(agent, lambda c: binding in c, f"{binding} is back through the automatic assignment")
    assert app in catalog_names(broker)
    relabel(admin, "cmp-1", {"t-compass": "elsewhere"})
    fleet.wait_files(agent, lambda c: binding not in c, f"{binding} goes when the labels stop matching")
    assert app not in catalog_names(broker)
    relabel(admin, "cmp-1", {"t-compass": label})
    fleet.wait_files(agent, lambda c: binding in c, f"{binding} comes back when they match again")

    # Taking the application out of the scenario removes it as well.
    apply(admin, [application(app, [{"name": "main"}], scenarios=[])])
    fleet.wait_files(agent, lambda c: binding not in c, f"{binding} goes with the application's scenario")
    assert app not in catalog_names(broker)
    expect_status(admin.delete(f"/api/v1/scenarios/{scenario}/assignment"), 204)


def test_the_applications_endpoint_shows_a_runtime_only_its_own_applications_page_by_page(
    server: ServerProcess, admin: httpx.Client
) -> None:
    mine, theirs = unique("SC-"), unique("SC-")
    create_scenario(admin, mine)
    create_scenario(admin, theirs)
    prefix = unique("pg")
    own = [f"{prefix}-{i}" for i in range(5)]
    other = f"{prefix}-other"
    apply(
        admin,
        [application(name, scenarios=[mine]) for name in own] + [application(other, scenarios=[theirs])],
    )
    a_name, b_name = unique("pga-"), unique("pgb-")
    a = pair(server.url, register(admin, a_name))
    b = pair(server.url, register(admin, b_name))
    put_in_scenarios(admin, a_name, add=[mine])
    put_in_scenarios(admin, b_name, add=[theirs])

    seen, cursor, pages = [], None, 0
    while True:
        params: dict[str, object] = {"limit": 2, "runtime": b_name, "runtime_id": b.runtime_id}
        if cursor:
            params["cursor"] = cursor
        page = expect_status(a.request("GET", "/agent/v1/applications", params=params), 200).json()
        seen += [item["name"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == own and pages == 3, (seen, pages)
    first = expect_status(a.request("GET", "/agent/v1/applications", params={"limit": 1}), 200).json()[
        "items"
    ][0]
    assert first["scenarios"] == [mine] and first["bundles"][0]["binding"] == f"app-{own[0]}-main"
    assert first["bundles"][0]["credentials"] == {"type": "header"}, "credential values on the agent API"
    assert f"{own[0]}-token" not in str(first)
    assert [
        i["name"] for i in expect_status(b.request("GET", "/agent/v1/applications"), 200).json()["items"]
    ] == [other]
    expect_status(a.request("GET", "/agent/v1/applications", params={"cursor": "not-a-cursor"}), 400)
    anonymous = httpx.get(f"{server.url}/agent/v1/applications", timeout=30)
    assert anonymous.status_code == 401
    admin_token = httpx.get(
        f"{server.url}/agent/v1/applications",
        headers={"Authorization": f"Bearer {server.admin_token}"},
        timeout=30,
    )
    assert admin_token.status_code == 401


def test_label_definitions_refuse_bad_values_and_nothing_is_stored(
    server: ServerProcess, admin: httpx.Client
) -> None:
    key = unique("t-ld-")
    definition = {
        "apiVersion": "rrm.io/v1",
        "kind": "LabelDefinition",
        "metadata": {"name": key},
        "spec": {"schema": {"type": "string", "enum": ["eu", "us"]}},
    }
    assert apply(admin, [definition])["results"][0]["action"] == "created"

    bad_runtime = unique("ld-bad-")
    response = admin.post(
        "/api/v1/runtimes", json={"name": bad_runtime, "kind": "selfhosted", "labels": {key: "mars"}}
    )
    assert expect_status(response, 422).json()["detail"][0]["field"] == f"labels.{key}"
    expect_status(admin.get(f"/api/v1/runtimes/{bad_runtime}"), 404)

    good = unique("ld-good-")
    registration(admin, good, labels={key: "eu"})
    refused = admin.patch(f"/api/v1/runtimes/{good}/labels", json={"set": {key: "mars"}})
    assert expect_status(refused, 422).json()["detail"][0]["field"] == f"labels.{key}"
    assert runtime(admin, good)["labels"] == {key: "eu"}

    app, companion = unique("ld-app-"), unique("ld-comp-")
    problems = apply_refused(
        admin,
        [
            component(companion, "t-ld=none"),
            application(app, labels={key: "mars"}),
        ],
    )
    assert [(p["document"], p["field"]) for p in problems] == [(1, f"metadata.labels.{key}")], problems
    expect_status(admin.get(f"/api/v1/applications/{app}"), 404)
    expect_status(admin.get(f"/api/v1/components/{companion}"), 404)

    narrowed = {**definition, "spec": {"schema": {"type": "string", "enum": ["us"]}}}
    problems = apply_refused(admin, [narrowed])
    assert problems[0]["field"] == "spec.schema" and good in problems[0]["message"], problems
    stored = {d["key"]: d for d in expect_status(admin.get("/api/v1/labeldefinitions"), 200).json()}
    assert stored[key]["schema"]["enum"] == ["eu", "us"]

    unknown = unique("NOPE-")
    problems = apply_refused(admin, [application(unique("ld-sc-"), scenarios=[unknown])])
    assert problems[0]["field"] == "spec.scenarios[0]" and unknown in problems[0]["message"]
    scenarios = stored["scenarios"]
    assert scenarios["builtin"] and "DEFAULT" in scenarios["schema"]["items"]["enum"]
    invalid_schema = {
        **definition,
        "metadata": {"name": unique("t-ld-")},
        "spec": {"schema": {"type": "strang"}},
    }
    assert apply_refused(admin, [invalid_schema])[0]["field"].startswith("spec.schema")
    refused_scenarios = admin.patch(f"/api/v1/runtimes/{good}/scenarios", json={"add": [unknown]})
    assert unknown in expect_status(refused_scenarios, 422).text


def test_scenarios_are_not_deleted_while_in_use(server: ServerProcess, admin: httpx.Client) -> None:
    scenario, app, rt = unique("SC-"), unique("use-"), unique("use-rt-")
    create_scenario(admin, scenario)
    expect_status(admin.post("/api/v1/scenarios", json={"name": scenario}), 409)
    expect_status(admin.post("/api/v1/scenarios", json={"name": "no spaces"}), 422)
    apply(admin, [application(app, scenarios=[scenario])])
    registration(admin, rt)
    put_in_scenarios(admin, rt, add=[scenario])
    expect_status(admin.put(f"/api/v1/scenarios/{scenario}/assignment", json={"selector": "t-never=1"}), 200)

    for user in (f"application {app}", f"runtime {rt}", "automatic assignment"):
        response = expect_status(admin.delete(f"/api/v1/scenarios/{scenario}"), 409)
        assert user in response.text, response.text
    expect_status(admin.delete(f"/api/v1/applications/{app}"), 204)
    assert "not found" in expect_status(admin.delete(f"/api/v1/applications/{app}"), 404).json()["detail"]
    put_in_scenarios(admin, rt, remove=[scenario])
    expect_status(admin.delete(f"/api/v1/scenarios/{scenario}/assignment"), 204)
    gone = expect_status(admin.delete(f"/api/v1/scenarios/{scenario}/assignment"), 404)
    assert gone.json()["detail"] == f"scenario {scenario!r} has no automatic assignment"
    expect_status(admin.delete(f"/api/v1/scenarios/{scenario}"), 204)
    assert scenario not in [s["name"] for s in expect_status(admin.get("/api/v1/scenarios"), 200).json()]
    expect_status(admin.delete("/api/v1/scenarios/DEFAULT"), 409)


def test_generated_names_are_checked_at_apply_and_credentials_stay_write_only(
    server: ServerProcess, admin: httpx.Client
) -> None:
    problems = apply_refused(admin, [component("app-mine", "t-x=1"), secret("app-creds", {"k": "v"})])
    assert [(p["document"], p["field"]) for p in problems] == [(0, "metadata.name"), (1, "metadata.name")]
    too_long = application("a" * 40, [{"name": "b" * 20}])
    assert apply_refused(admin, [too_long])[0]["field"] == "spec.bundles[0].name"
    first = unique("dup")
    apply(admin, [application(f"{first}-x", [{"name": "y"}])])
    clash = apply_refused(admin, [application(first, [{"name": "x-y"}])])
    assert clash[0]["field"] == "spec.bundles[0].name" and f"app-{first}-x-y" in clash[0]["message"]

    app, password = unique("wo-"), f"pw-{uuid.uuid4().hex}"
    basic = {"name": "basic", "credentials": {"type": "basic", "username": "svc", "password": password}}
    assert apply(admin, [application(app, [basic])])["results"][0]["action"] == "created"
    assert apply(admin, [application(app, [basic])])["results"][0]["action"] == "unchanged"
    for path in ("/api/v1/applications", f"/api/v1/applications/{app}", "/api/v1/events?limit=1000"):
        assert password not in expect_status(admin.get(path), 200).text, f"{path} shows a credential"
    detail = expect_status(admin.get(f"/api/v1/applications/{app}"), 200).json()
    assert detail["bundles"][0]["credentials"] == {"type": "basic"}
    assert detail["manifest"]["spec"]["bundles"][0]["credentials"] == {"type": "basic"}
    assert not files_containing([server.data_dir], password), "a credential stored in clear"
    assert password not in server.log_path.read_text(errors="replace"), "a credential logged"
    rotated = {**basic, "credentials": {**basic["credentials"], "password": "other"}}
    result = apply(admin, [application(app, [rotated])])["results"][0]
    assert (result["action"], result["revision"]) == ("updated", 2)
