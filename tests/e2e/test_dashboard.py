"""The dashboard in a real browser against a real control plane with real agents: sign-in, the fleet's
states, and changes that appear on an open page without reloading it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import yaml
from playwright.sync_api import Browser, Locator, Page, Route, expect

from integration.harness import apply, component, wait_until
from integration.network_cut import AnswerDroppingProxy

from .conftest import NEVER_CONNECTED, PROD_RUNTIMES, STOPPED, VIEWPORT, Screenshot, Stack

LIVE_TIMEOUT_MS = 20_000
SECRET_VALUE = f"e2e-secret-{uuid.uuid4().hex}"
APP_TOKEN = f"e2e-app-token-{uuid.uuid4().hex}"
APP_PASSWORD = f"e2e-app-password-{uuid.uuid4().hex}"
NO_RELOAD_MARK = "window.__rrmNotReloaded"
BAKE_SECONDS = 6  # long enough to see the canary wave bake and the next one wait


def mark_page(page: Page) -> None:
    """A flag that only survives as long as the page is not reloaded."""
    page.evaluate(f"{NO_RELOAD_MARK} = true")


def assert_not_reloaded(page: Page) -> None:
    assert page.evaluate(NO_RELOAD_MARK) is True, "the page was reloaded"


def show(page: Page, screenshot: Screenshot, name: str) -> None:
    """Screenshot a page, and check that its HTML carries no secret value nor credential."""
    screenshot(page, name)
    content = page.content()
    for value in (SECRET_VALUE, APP_TOKEN, APP_PASSWORD):
        assert value not in content, f"the {name} page shows a secret value"


def rrm_cli(stack: Stack, *args: str) -> str:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RRM_")},
        "RRM_URL": stack.server.url,
        "RRM_TOKEN": stack.server.admin_token,
    }
    done = subprocess.run(
        [sys.executable, "-m", "rrm", *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"rrm {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def logger_manifests(url: str) -> list[dict[str, object]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "e2e-logger-auth"},
            "stringData": {"token": SECRET_VALUE},
        },
        {
            "apiVersion": "dapr.io/v1alpha1",
            "kind": "Component",
            "metadata": {"name": "e2e-logger", "annotations": {"rrm.io/selector": "env=prod"}},
            "spec": {
                "type": "bindings.http",
                "version": "v1",
                "metadata": [
                    {"name": "url", "value": url},
                    {"name": "securityToken", "secretKeyRef": {"name": "e2e-logger-auth", "key": "token"}},
                ],
            },
        },
    ]


def application_manifests() -> list[dict[str, object]]:
    """e2e-shop for the prod runtimes (with credentials), e2e-billing for the edge runtime."""
    shop = {
        "description": "Shop backend",
        "provider": "ACME",
        "baseUrl": "https://shop.example.com",
        "scenarios": ["E2E-SHOP"],
        "apis": [{"name": "orders-v1", "targetUrl": "https://shop.example.com/v1"}],
        "bundles": [
            {
                "name": "api",
                "apis": ["orders-v1"],
                "credentials": {"type": "header", "header": "X-Api-Key", "token": APP_TOKEN},
            },
            {
                "name": "admin",
                "credentials": {"type": "basic", "username": "shop-admin", "password": APP_PASSWORD},
            },
        ],
    }
    billing = {
        "description": "Invoices",
        "provider": "Billing Inc.",
        "baseUrl": "https://billing.example.com",
        "bundles": [{"name": "main", "credentials": {"type": "none"}}],
    }
    return [
        {"apiVersion": "rrm.io/v1", "kind": "Application", "metadata": {"name": name}, "spec": spec}
        for name, spec in (("e2e-shop", shop), ("e2e-billing", billing))
    ]


def condition_badge(page: Page, row: str, condition: str) -> Locator:
    return page.locator(f'{row} [data-condition="{condition}"] .badge')


def test_sign_in_is_required_and_a_bad_token_is_refused(
    chromium: Browser, stack: Stack, screenshot: Screenshot
) -> None:
    context = chromium.new_context(viewport=VIEWPORT, base_url=stack.server.url)
    try:
        page = context.new_page()
        page.goto("/ui/runtimes")
        expect(page).to_have_url(re.compile(r"/ui/login\?next=%2Fui%2Fruntimes$"))
        show(page, screenshot, "login")

        page.fill("#token", "rrmat_not-a-valid-token")
        with page.expect_response(lambda r: r.url.endswith("/ui/login")) as refused:
            page.click("button[type=submit]")
        assert refused.value.status == 401
        expect(page.get_by_role("alert")).to_have_text("That token is not valid.")
        assert not context.cookies()
        show(page, screenshot, "login-refused")

        page.fill("#token", stack.server.admin_token)
        page.click("button[type=submit]")
        expect(page).to_have_url(re.compile(r"/ui/runtimes$"))
        expect(page.locator("h1")).to_contain_text("Runtimes")
        (cookie,) = context.cookies()
        assert cookie["name"] == "rrm_session" and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert stack.server.admin_token not in cookie["value"]
        assert page.evaluate("document.cookie") == "", "the session cookie must not be readable by scripts"
    finally:
        context.close()


def test_the_fleet_page_shows_the_state_of_each_runtime(
    page: Page, stack: Stack, screenshot: Screenshot
) -> None:
    page.goto("/ui")
    attention = page.locator("#attention")
    never = attention.locator(f'tr[data-runtime="{NEVER_CONNECTED}"]')
    expect(never).to_contain_text("Connected")
    expect(never.locator(".reason")).to_have_text("NeverConnected")
    for name in PROD_RUNTIMES:
        expect(attention.locator(f'tr[data-runtime="{name}"]')).to_have_count(0)
    expect(page.locator('[data-tile="Runtimes"] .tile-value')).to_have_text("4")
    expect(page.locator('[data-tile="Ready"] [data-count="True"]')).to_have_text("3")
    expect(page.locator("#live-status")).to_have_text("live")
    show(page, screenshot, "fleet")

    page.goto("/ui/runtimes")
    for name in PROD_RUNTIMES:
        for condition in ("Connected", "Synced", "Ready"):
            badge = condition_badge(page, f'tr[data-runtime="{name}"]', condition)
            expect(badge).to_have_text("True")
    expect(condition_badge(page, f'tr[data-runtime="{NEVER_CONNECTED}"]', "Connected")).to_have_text("False")
    show(page, screenshot, "runtimes")

    page.fill("#selector", "env=prod")
    page.click(".filter button")
    expect(page.locator("#runtimes tbody tr")).to_have_count(len(PROD_RUNTIMES))
    show(page, screenshot, "runtimes-filtered")

    page.click(f'a:text-is("{PROD_RUNTIMES[0]}")')
    expect(page.locator("h1")).to_contain_text(PROD_RUNTIMES[0])
    expect(condition_badge(page, "#conditions", "Ready")).to_have_text("True")
    expect(page.locator("#events")).to_contain_text("RuntimePaired")
    show(page, screenshot, "runtime")


def test_a_component_applied_through_the_cli_shows_up_live(
    page: Page, stack: Stack, screenshot: Screenshot, tmp_path: Path
) -> None:
    page.goto("/ui/components")
    expect(page.locator("#live-status")).to_have_text("live")
    mark_page(page)
    manifest = tmp_path / "logger.yaml"
    manifest.write_text(yaml.safe_dump_all(logger_manifests("http://logger.invalid/v1")))
    rrm_cli(stack, "apply", "-f", str(manifest))

    row = page.locator('#components tr[data-component="e2e-logger"]')
    expect(row).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    expect(row.locator('[data-field="ready"]')).to_have_text(
        f"{len(PROD_RUNTIMES)}/{len(PROD_RUNTIMES)}", timeout=LIVE_TIMEOUT_MS
    )
    expect(page.locator('#secrets tr[data-secret="e2e-logger-auth"]')).to_contain_text("token")
    assert_not_reloaded(page)
    show(page, screenshot, "components")

    page.click('a:text-is("e2e-logger")')
    expect(page.locator("#ready-count")).to_have_text(f"{len(PROD_RUNTIMES)}/{len(PROD_RUNTIMES)} runtimes")
    mark_page(page)
    manifest.write_text(yaml.safe_dump_all(logger_manifests("http://logger.invalid/v2")))
    rrm_cli(stack, "apply", "-f", str(manifest))
    expect(page.locator('#history tr[data-revision="2"]')).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("#diff .d-add")).to_have_text(
        "+    value: http://logger.invalid/v2", timeout=LIVE_TIMEOUT_MS
    )
    assert_not_reloaded(page)
    expect(page.locator("#manifest")).to_contain_text("secretKeyRef")
    show(page, screenshot, "component")


def test_a_change_made_before_the_page_starts_following_events_still_shows_up(
    page: Page, stack: Stack, screenshot: Screenshot
) -> None:
    """The page starts its event stream only after it has loaded; what happens in between is not lost."""
    held: list[Route] = []

    def hold(route: Route) -> None:  # the stream's request waits until released
        held.append(route)

    page.route("**/api/v1/events/stream*", hold)
    page.goto("/ui/components")
    # Playwright hands over the request only while it is called, hence the evaluate
    wait_until(lambda: page.evaluate("true") and held, message="the page did not open its event stream")
    mark_page(page)
    name = f"e2e-early-{uuid.uuid4().hex[:8]}"
    apply(stack.server.admin, [component(name, "env=nowhere")])  # no agent reports on it
    wait_until(
        lambda: stack.server.admin.get("/api/v1/events", params={"subject": f"component/{name}"}).json(),
        message=f"no event was recorded for component/{name}",
    )
    held[0].continue_()
    page.unroute("**/api/v1/events/stream*")
    expect(page.locator(f'#components tr[data-component="{name}"]')).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("#live-status")).to_have_text("live")
    assert_not_reloaded(page)
    stack.server.admin.delete(f"/api/v1/components/{name}").raise_for_status()


def test_stopping_an_agent_turns_its_runtime_not_connected_on_the_page(
    page: Page, stack: Stack, screenshot: Screenshot
) -> None:
    page.goto(f"/ui/runtimes/{STOPPED}")
    connected = condition_badge(page, "#conditions", "Connected")
    expect(connected).to_have_text("True")
    expect(page.locator("#live-status")).to_have_text("live")
    mark_page(page)

    stack.agents[STOPPED].stop()
    expect(connected).to_have_text("False", timeout=LIVE_TIMEOUT_MS)
    expect(page.locator('#conditions [data-condition="Connected"]')).to_contain_text("HeartbeatMissed")
    expect(page.locator("#events")).to_contain_text("ConnectedFalse")
    assert_not_reloaded(page)
    show(page, screenshot, "runtime-disconnected")

    page.goto("/ui")
    expect(page.locator(f'#attention tr[data-runtime="{STOPPED}"] .reason')).to_have_text("HeartbeatMissed")
    show(page, screenshot, "fleet-disconnected")


def orders_manifests(url: str, policy: str | None = None) -> list[dict[str, object]]:
    annotations = {"rrm.io/selector": "env=prod"}
    documents: list[dict[str, object]] = []
    if policy is not None:
        annotations["rrm.io/rollout-policy"] = policy
        spec = {
            "groups": [{"name": "canary", "selector": "canary=true"}],
            "minSuccessTime": f"{BAKE_SECONDS}s",
            "progressDeadline": "1m",
        }
        documents.append(
            {"apiVersion": "rrm.io/v1", "kind": "RolloutPolicy", "metadata": {"name": policy}, "spec": spec}
        )
    documents.append(
        {
            "apiVersion": "dapr.io/v1alpha1",
            "kind": "Component",
            "metadata": {"name": "e2e-orders", "annotations": annotations},
            "spec": {"type": "bindings.http", "version": "v1", "metadata": [{"name": "url", "value": url}]},
        }
    )
    return documents


def test_a_rollout_with_a_canary_wave_shows_up_live_on_the_component_page(
    page: Page, stack: Stack, screenshot: Screenshot, tmp_path: Path
) -> None:
    canary, other = PROD_RUNTIMES
    rrm_cli(stack, "label", "runtime", canary, "canary=true")
    manifest = tmp_path / "orders.yaml"
    manifest.write_text(yaml.safe_dump_all(orders_manifests("http://orders.invalid/v1")))
    rrm_cli(stack, "apply", "-f", str(manifest))
    page.goto("/ui/components/e2e-orders")
    expect(page.locator("#ready-count")).to_have_text("2/2 runtimes", timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("#rollout")).to_have_count(0)
    expect(page.locator("#live-status")).to_have_text("live")
    mark_page(page)

    manifest.write_text(yaml.safe_dump_all(orders_manifests("http://orders.invalid/v2", "e2e-careful")))
    rrm_cli(stack, "apply", "-f", str(manifest))
    rollout = page.locator("#rollout")
    first, second = page.locator('#waves [data-wave="1"]'), page.locator('#waves [data-wave="2"]')
    # the canary wave is updated and bakes while the rest waits …
    expect(rollout).to_have_attribute("data-state", "progressing", timeout=LIVE_TIMEOUT_MS)
    expect(first).to_have_attribute("data-state", "baking", timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("#rollout-bake .countdown")).to_be_visible()
    expect(second).to_have_attribute("data-state", "pending")
    expect(second.locator(f'tr[data-runtime="{other}"]')).to_have_attribute("data-state", "pending")
    expect(first.locator(f'tr[data-runtime="{canary}"]')).to_have_attribute("data-state", "ready")
    expect(first.locator(".wave-head .chip")).to_have_text("canary")
    show(page, screenshot, "component-rollout-baking")
    # … then the next wave starts by itself and the rollout succeeds, on the same page
    expect(second).to_have_attribute("data-state", "done", timeout=LIVE_TIMEOUT_MS)
    expect(rollout).to_have_attribute("data-state", "succeeded", timeout=LIVE_TIMEOUT_MS)
    expect(second.locator(f'tr[data-runtime="{other}"]')).to_have_attribute("data-state", "ready")
    expect(page.locator("#rollout-progress")).to_contain_text("2/2 ready")
    assert_not_reloaded(page)
    show(page, screenshot, "component-rollout-succeeded")

    page.goto("/ui/components")
    expect(page.locator('tr[data-component="e2e-orders"] [data-field="rollout"]')).to_have_text("succeeded")
    show(page, screenshot, "components-rollout")


def test_the_applications_page_shows_which_runtimes_see_which_application(
    page: Page, stack: Stack, screenshot: Screenshot, tmp_path: Path
) -> None:
    page.goto("/ui/applications")
    expect(page.locator("#live-status")).to_have_text("live")
    mark_page(page)
    rrm_cli(stack, "create", "scenario", "E2E-SHOP")
    rrm_cli(stack, "scenario", "assign", "E2E-SHOP", "--selector", "env=prod")
    manifest = tmp_path / "applications.yaml"
    manifest.write_text(yaml.safe_dump_all(application_manifests()))
    rrm_cli(stack, "apply", "-f", str(manifest))

    shop = page.locator('#application-list tr[data-application="e2e-shop"]')
    expect(shop).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    expect(shop.locator("[data-runtime]")).to_have_text(list(PROD_RUNTIMES))
    expect(shop.locator(".badge.cred")).to_have_text(["header", "basic"])
    billing = page.locator('#application-list tr[data-application="e2e-billing"]')
    every_runtime = sorted([*PROD_RUNTIMES, STOPPED, NEVER_CONNECTED])  # all registered into DEFAULT
    expect(billing.locator("[data-runtime]")).to_have_text(every_runtime)
    expect(page.locator('#scenario-list tr[data-scenario="E2E-SHOP"]')).to_contain_text("env=prod")
    assert_not_reloaded(page)
    show(page, screenshot, "applications")

    page.click(f'#application-list tr[data-application="e2e-shop"] a:text-is("{PROD_RUNTIMES[0]}")')
    expect(page.locator('#scenarios [data-scenario="E2E-SHOP"]')).to_contain_text("by automatic assignment")
    expect(page.locator('#applications tr[data-application="e2e-shop"]')).to_contain_text("app-e2e-shop-api")
    expect(page.locator('#results tr[data-component="app-e2e-shop-api"] .badge')).to_have_text(
        "applied", timeout=LIVE_TIMEOUT_MS
    )
    show(page, screenshot, "runtime-applications")


LOCAL_ENVIRONMENT = "e2e-env"
RENDERED_STATES = "window.__rrmOperationStates"


def record_operation_states(page: Page) -> None:
    """Every state the newest operation is shown in, as the live region is swapped in (a list on the page)."""
    page.evaluate(
        f"""() => {{
          {RENDERED_STATES} = [];
          const note = () => {{
            const op = document.querySelector("#live section.operation");
            if (op) {RENDERED_STATES}.push(op.dataset.state);
          }};
          new MutationObserver(note).observe(document.getElementById("live"), {{childList: true}});
        }}"""
    )


def test_a_local_environment_shows_its_stages_progress_live(
    page: Page, stack: Stack, screenshot: Screenshot
) -> None:
    """The page is open before the environment is requested through the API; without a reload it shows the
    operation in progress while the local agent cannot reach the control plane yet, and every stage
    succeeded once it connected."""
    admin = stack.server.admin
    page.goto(f"/ui/environments/{LOCAL_ENVIRONMENT}")
    expect(page.locator("#live-status")).to_have_text("live")
    mark_page(page)
    record_operation_states(page)
    body = {
        "name": LOCAL_ENVIRONMENT,
        "plan": "local",
        "tenant": {"globalAccount": "e2e-ga", "subaccount": "e2e-sa"},
    }
    answer = admin.post("/api/v1/environments", json=body)
    assert answer.status_code == 202, answer.text
    gate: AnswerDroppingProxy | None = None
    try:
        operation = page.locator(f'section.operation[data-operation="{answer.json()["operation"]}"]')
        waiting = operation.locator('[data-stage="wait_for_connection"]')
        expect(waiting).to_have_attribute("data-state", "waiting", timeout=LIVE_TIMEOUT_MS)
        expect(operation).to_have_attribute("data-state", "in progress")
        # the agent's address now leads to the control plane: it connects at its next try (backoff ≤ 10 s)
        gate = AnswerDroppingProxy(stack.server.url, port=stack.installed_agents_port)
        expect(operation).to_have_attribute("data-state", "succeeded", timeout=LIVE_TIMEOUT_MS * 2)
        stages = operation.locator("li.stage")
        expect(stages).to_have_count(5)
        for index in range(5):
            expect(stages.nth(index)).to_have_attribute("data-state", "succeeded")
        expect(operation.locator('[data-stage="wait_for_connection"] .stage-description')).to_contain_text(
            "Connected"
        )
        expect(page.locator("#environment-state")).to_have_text("succeeded")
        expect(page.locator("#environment")).to_contain_text("e2e-ga")
        assert_not_reloaded(page)
        seen = page.evaluate(RENDERED_STATES)
        assert seen[-1] == "succeeded" and any(s in ("pending", "in progress") for s in seen), seen
        show(page, screenshot, "environment")

        page.goto("/ui/environments?globalAccount=e2e-ga")
        row = page.locator(f'#environments tr[data-environment="{LOCAL_ENVIRONMENT}"]')
        expect(row).to_have_attribute("data-state", "succeeded")
        expect(page.locator("#environments tbody tr")).to_have_count(1)
        show(page, screenshot, "environments")
    finally:
        if gate is not None:
            gate.close()
        deleted = admin.delete(f"/api/v1/environments/{LOCAL_ENVIRONMENT}")
        assert deleted.status_code == 202, deleted.text

        def archived() -> bool:
            found = admin.get("/api/v1/environments/" + LOCAL_ENVIRONMENT).json()
            return bool(found.get("archivedAt"))

        wait_until(archived, LIVE_TIMEOUT_MS / 1000, "the environment was not deleted")
