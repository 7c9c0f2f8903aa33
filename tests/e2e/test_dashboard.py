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
from playwright.sync_api import Browser, Locator, Page, expect

from .conftest import NEVER_CONNECTED, PROD_RUNTIMES, STOPPED, VIEWPORT, Screenshot, Stack

LIVE_TIMEOUT_MS = 20_000
SECRET_VALUE = f"e2e-secret-{uuid.uuid4().hex}"
NO_RELOAD_MARK = "window.__rrmNotReloaded"


def mark_page(page: Page) -> None:
    """A flag that only survives as long as the page is not reloaded."""
    page.evaluate(f"{NO_RELOAD_MARK} = true")


def assert_not_reloaded(page: Page) -> None:
    assert page.evaluate(NO_RELOAD_MARK) is True, "the page was reloaded"


def show(page: Page, screenshot: Screenshot, name: str) -> None:
    """Screenshot a page, and check that its HTML carries no secret value."""
    screenshot(page, name)
    assert SECRET_VALUE not in page.content(), f"the {name} page shows a secret value"


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
