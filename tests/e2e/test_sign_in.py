"""Signing in and out of the dashboard in a real browser: the one-click link keeps the token out of every
request line and the address, sign-out ends the session for good, and a page on another site cannot sign
the browser in (login CSRF)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import cast

import pytest
from playwright._impl._api_structures import SetCookieParam
from playwright.sync_api import Browser, BrowserContext, expect

from integration.harness import ServerProcess, expect_status

from .conftest import VIEWPORT

ATTACKER = "http://attacker.invalid"


class AccessLoggingServer(ServerProcess):
    def _launch(self, args: list[str], env: Mapping[str, str] | None = None) -> None:
        super()._launch(args, {**(env or {}), "RRM_ACCESS_LOG": "1"})


@pytest.fixture(scope="module")
def server(chromium: Browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("e2e-sign-in")
    process = AccessLoggingServer(workdir / "data", workdir / "server.log")
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def context(chromium: Browser, server: ServerProcess) -> Iterator[BrowserContext]:
    browser_context = chromium.new_context(viewport=VIEWPORT, base_url=server.url)
    try:
        yield browser_context
    finally:
        browser_context.close()


def test_the_one_click_link_signs_in_without_the_token_reaching_the_server_or_the_history(
    context: BrowserContext, server: ServerProcess
) -> None:
    token = server.admin_token
    page = context.new_page()
    page.goto(f"/ui/login#token={token}")
    page.wait_for_url(re.compile(r"/ui$"))
    expect(page.locator("h1")).to_contain_text("Fleet")
    assert token not in page.url
    page.go_back()  # the link's history entry was replaced: back leads to no address holding the token
    assert token not in page.url
    log = Path(server.log_path).read_text()
    assert '"POST /ui/login HTTP/1.1" 303' in log
    assert token not in log and token.split("_", 1)[1] not in log


def test_sign_out_ends_the_session_even_for_a_copy_of_the_cookie(
    context: BrowserContext, server: ServerProcess
) -> None:
    page = context.new_page()
    page.goto("/ui/login")
    page.fill("#token", server.admin_token)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/ui$"))
    (cookie,) = context.cookies()
    page.click(".signout button")
    page.wait_for_url(re.compile(r"/ui/login$"))
    assert context.cookies() == []
    context.add_cookies([cast(SetCookieParam, cookie)])  # as if it had been copied before sign-out
    page.goto("/ui/runtimes")
    expect(page).to_have_url(re.compile(r"/ui/login\?next=%2Fui%2Fruntimes$"))


def test_a_page_on_another_site_cannot_sign_the_browser_in(
    context: BrowserContext, server: ServerProcess
) -> None:
    answer = server.admin.post("/api/v1/tokens", json={"role": "viewer", "description": "attacker"})
    attackers_token = expect_status(answer, 201).json()["token"]
    form = (
        f'<form id="f" method="post" action="{server.url}/ui/login">'
        f'<input name="token" value="{attackers_token}"><input name="next" value="/ui"></form>'
        '<script>document.getElementById("f").submit()</script>'
    )
    context.route(f"{ATTACKER}/**", lambda route: route.fulfill(content_type="text/html", body=form))
    page = context.new_page()
    with page.expect_response(lambda r: r.url.endswith("/ui/login")) as answered:
        page.goto(f"{ATTACKER}/")
    assert answered.value.status == 403
    assert context.cookies() == []
    page.goto(f"{server.url}/ui")
    expect(page).to_have_url(re.compile(r"/ui/login\?next=%2Fui$"))
