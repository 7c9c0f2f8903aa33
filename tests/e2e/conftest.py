"""A headless Chromium (Debian's, driven by Playwright) and a real control plane with real agents.

Playwright's own browser download does not work here, so the browser is `/usr/bin/chromium` (`.ci/run`
installs it with apt). Without it these tests skip on a developer's machine and fail under CI=true.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from integration.harness import (
    AgentProcess,
    Fleet,
    ServerProcess,
    condition_true,
    free_port,
    register,
    synced,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "e2e"
VIEWPORT = {"width": 1280, "height": 900}
PROD_RUNTIMES = ("e2e-prod-1", "e2e-prod-2")
NEVER_CONNECTED = "e2e-edge"
STOPPED = "e2e-lab"
STOPPED_HEARTBEAT_SECONDS = 2.0  # the lab agent's: a test stops it to see the page follow Connected=False


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """Module-scoped: Playwright's sync API runs an event loop on this thread while it is open, which would
    break every later test that calls `asyncio.run`."""
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"the browser tests cannot run: {reason}")
        pytest.skip(reason)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Stack:
    server: ServerProcess
    fleet: Fleet
    agents: dict[str, AgentProcess]
    # The address agents installed by provisioning are given (`--public-url`): nothing listens there until a
    # test forwards it to the server, so an environment's agent connects only when the test lets it.
    installed_agents_port: int


@pytest.fixture(scope="module")
def stack(chromium: Browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A control plane with two prod runtimes (Ready), one lab runtime (Ready until a test stops its agent)
    and one edge runtime whose agent never ran. Agents installed by provisioning reach it only once a test
    forwards `installed_agents_port` to it."""
    workdir = tmp_path_factory.mktemp("e2e")
    installed_agents_port = free_port()
    public_url = ["--public-url", f"http://127.0.0.1:{installed_agents_port}"]
    server = ServerProcess(workdir / "data", workdir / "server.log", options=public_url)
    server.start()
    fleet = Fleet(server, workdir)
    try:
        agents = {name: fleet.agent(name, {"env": "prod"}) for name in PROD_RUNTIMES}
        # The page's promise is to follow the Connected condition, not the interval: at the default 60 s
        # heartbeat, the condition would take 3 minutes to turn.
        agents[STOPPED] = fleet.agent(STOPPED, {"env": "lab"}, heartbeat_interval=STOPPED_HEARTBEAT_SECONDS)
        register(server.admin, NEVER_CONNECTED, labels={"env": "edge"})
        for name in agents:
            fleet.wait_runtime(name, lambda d: synced(d) and condition_true(d, "Ready"), "Ready")
        yield Stack(server, fleet, agents, installed_agents_port)
    finally:
        fleet.close()
        server.stop()


@pytest.fixture
def page(chromium: Browser, stack: Stack) -> Iterator[Page]:
    """A page of a browser context signed in with the admin token."""
    context = chromium.new_context(viewport=VIEWPORT, base_url=stack.server.url)
    try:
        page = context.new_page()
        page.goto(f"/ui/login#token={stack.server.admin_token}")  # the one-click link `rrm demo` prints
        page.wait_for_url(re.compile(r"/ui$"))
        yield page
    finally:
        context.close()


class Screenshot(Protocol):
    def __call__(self, page: Page, name: str) -> Path: ...


@pytest.fixture
def screenshot(request: pytest.FixtureRequest) -> Screenshot:
    """`screenshot(page, "fleet")` saves test-artifacts/e2e/<test>-fleet.png."""
    test = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)

    def take(page: Page, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{test}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
