"""The dashboard's Environments pages over plain HTTP against a real `rrm server` (SQLite and PostgreSQL):
the list with state, plan and tenant, filtered by global account; one environment's operations with their
stages, attempts and last error; the live region following the environment's events; no secret parameter
shown. The environments use the `kubernetes` plan with a cluster nobody answers at, so their provisioning
stays at install_agent, retrying with an error to show."""

from __future__ import annotations

import html
import re
import uuid

import httpx
import pytest

from .harness import ServerProcess, expect_status, wait_until
from .test_environment_broker import register_platform
from .test_ui_http import event_stream, first_event, new_token, signed_in

pytestmark = pytest.mark.integration
PROVISION_STAGES = [
    "validate",
    "register_runtime",
    "fetch_kubeconfig",
    "install_agent",
    "wait_for_connection",
]
STAGE = re.compile(r'<li class="stage" data-stage="([^"]+)" data-state="([^"]+)">(.*?)</li>', re.S)
ROW = re.compile(r'<tr data-environment="([^"]+)" data-state="([^"]+)">(.*?)</tr>', re.S)


def unreachable_kubeconfig(secret: str) -> str:
    return (
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        f"users: [{{name: u, user: {{token: {secret}}}}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )


def request(admin: httpx.Client, name: str, secret: str, **tenant: str) -> dict[str, str]:
    body = {
        "name": name,
        "plan": "kubernetes",
        "parameters": {"kubeconfig": unreachable_kubeconfig(secret)},
        "tenant": tenant,
    }
    return dict(expect_status(admin.post("/api/v1/environments", json=body), 202).json())


def rows(page: str) -> dict[str, tuple[str, str]]:
    """Environment name → (state, the row's text) as the list shows them."""
    return {
        name: (state, " ".join(html.unescape(re.sub(r"<[^>]+>", " ", cells)).split()))
        for name, state, cells in ROW.findall(page)
    }


def stages(page: str) -> list[tuple[str, str, str]]:
    """(stage, state, text) of the newest operation's timeline, in order."""
    newest = page.split('<section class="operation"', 2)[1]
    return [(n, s, html.unescape(body)) for n, s, body in STAGE.findall(newest)]


def delete(admin: httpx.Client, *names: str) -> None:
    for name in names:
        expect_status(admin.delete(f"/api/v1/environments/{name}"), 202)


def test_the_list_shows_state_plan_and_tenant_and_filters_by_global_account(server: ServerProcess) -> None:
    suffix, secret = uuid.uuid4().hex[:6], f"kube-secret-{uuid.uuid4().hex}"
    first, second = f"env-a-{suffix}", f"env-b-{suffix}"
    account = f"ga-{suffix}"
    request(server.admin, first, secret, globalAccount=account, subaccount=f"sa-{suffix}")
    request(server.admin, second, secret, globalAccount=f"other-{suffix}")
    try:
        with signed_in(server, new_token(server, "viewer")) as viewer:
            page = expect_status(viewer.get("/ui/environments"), 200).text
            assert '<a href="/ui/environments" aria-current="page">Environments</a>' in page
            listed = rows(page)
            assert listed[first][0] == "provisioning" and listed[second][0] == "provisioning"
            assert listed[first][1].split()[:5] == [first, "provisioning", "kubernetes", "-", account]
            assert f"sa-{suffix}" in listed[first][1] and "provision in progress" in listed[first][1]
            assert f'<option value="{account}">' in page  # the filter offers every global account

            filtered = expect_status(viewer.get("/ui/environments", params={"globalAccount": account}), 200)
            assert list(rows(filtered.text)) == [first]
            assert 'data-live="/ui/fragments/environments?globalAccount=' in filtered.text
            fragment = viewer.get("/ui/fragments/environments", params={"globalAccount": account})
            assert list(rows(expect_status(fragment, 200).text)) == [first]
            nobody = viewer.get("/ui/environments", params={"globalAccount": f"none-{suffix}"}).text
            assert rows(nobody) == {} and f"No environment of global account none-{suffix}" in nobody
            for shown in (page, filtered.text, fragment.text):
                assert secret not in shown
    finally:
        delete(server.admin, first, second)


def test_an_environment_page_shows_each_stage_and_follows_its_events(server: ServerProcess) -> None:
    name, secret = f"env-t-{uuid.uuid4().hex[:6]}", f"kube-secret-{uuid.uuid4().hex}"
    with signed_in(server) as admin_browser, event_stream(admin_browser) as events:
        answer = request(server.admin, name, secret, globalAccount="ga-timeline")
        first_event(events, lambda e: e["subject"] == f"environment/{name}" and e["type"] == "StageRetrying")

        def retrying() -> list[tuple[str, str, str]]:
            shown = stages(expect_status(admin_browser.get(f"/ui/fragments/environments/{name}"), 200).text)
            return shown if dict((n, s) for n, s, _ in shown)["install_agent"] == "retrying" else []

        shown = wait_until(retrying, 30, "install_agent never showed as retrying")
        assert [n for n, _, _ in shown] == PROVISION_STAGES
        assert [s for _, s, _ in shown][:3] == ["succeeded"] * 3 and shown[4][1] == "pending"
        install = shown[3][2]
        assert (
            re.search(r"\d+ attempts?\b", install)
            and "Connection refused" in install
            and "to its deadline" in install
        )
        assert "took " in shown[0][2] and "1 attempt" in shown[0][2] and "not started" in shown[4][2]

        page = expect_status(admin_browser.get(f"/ui/environments/{name}"), 200).text
        assert f'data-subjects="environment/{name}"' in page
        assert (
            f'data-operation="{answer["operation"]}" data-type="provision" data-state="in progress"' in page
        )
        assert 'data-poll-seconds="5"' in page  # a retrying stage's countdown changes without an event
        assert "ga-timeline" in page and "kubeconfig" in page and secret not in page
        assert expect_status(admin_browser.get(f"/ui/environments/missing-{name}"), 404)

        deleted = expect_status(server.admin.delete(f"/api/v1/environments/{name}"), 202).json()
        first_event(events, lambda e: e["subject"] == f"environment/{name}" and "deprovision" in e["message"])
        fragment = admin_browser.get(f"/ui/fragments/environments/{name}").text
        assert f'data-operation="{deleted["operation"]}" data-type="deprovision"' in fragment
        assert (
            "Earlier operations" in fragment and f'id="operation-{answer["operation"]}-details"' in fragment
        )


def test_the_environments_pages_need_a_session(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as anonymous:
        for path in ("/ui/environments", "/ui/environments/any"):
            response = anonymous.get(path)
            assert response.status_code == 303 and response.headers["location"].startswith("/ui/login?next=")
        for path in ("/ui/fragments/environments", "/ui/fragments/environments/any"):
            assert anonymous.get(path).status_code == 401


def test_the_pages_name_the_platform_that_ordered_an_environment(server: ServerProcess) -> None:
    suffix = uuid.uuid4().hex[:6]
    ordered, direct = f"env-osb-{suffix}", f"env-api-{suffix}"
    platform = register_platform(server, f"cf-{suffix}")
    context = {"platform": "cloudfoundry", "globalaccount_id": f"ga-{suffix}", "subaccount_id": "sa-1"}
    parameters = {"name": ordered, "kubeconfig": unreachable_kubeconfig("osb-secret")}
    with platform.http:
        expect_status(platform.provision(str(uuid.uuid4()), "kubernetes", parameters, context=context), 202)
    request(server.admin, direct, "api-secret", globalAccount=f"ga-{suffix}")
    try:
        with signed_in(server) as admin_browser:
            page = admin_browser.get("/ui/environments", params={"globalAccount": f"ga-{suffix}"}).text
            listed = rows(page)
            assert set(listed) == {ordered, direct}
            assert f" cf-{suffix} provision" in listed[ordered][1] and " API provision" in listed[direct][1]
            detail = expect_status(admin_browser.get(f"/ui/environments/{ordered}"), 200).text
            chip = f'<span class="chip" title="ordered through the Environment Broker">cf-{suffix}</span>'
            assert f"<dt>Ordered by</dt><dd>{chip}" in detail
    finally:
        delete(server.admin, ordered, direct)
