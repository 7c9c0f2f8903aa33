"""A Gardener environment whose control plane is killed (SIGKILL) in every stage, against the Gardener API
stand-in behind a proxy that holds Gardener's answers back: the operation resumes and creates one Shoot
with one claimed account. Its own module so that it runs beside the other Gardener tests (pytest-xdist
keeps one module on one worker)."""

from __future__ import annotations

import contextlib
import queue
from typing import Any

import pytest

from . import test_gardener_environments as gardener
from .kube import KubeAgentProcess
from .test_environments import detail, request

pytestmark = pytest.mark.integration
setup = gardener.setup


def current_stage(op: dict[str, Any]) -> dict[str, Any] | None:
    return next((s for s in op["stages"] if s["state"] != "succeeded"), None)


HOLDS = [  # requests whose answer the proxy keeps back, so the control plane dies right after Gardener acted
    ("PUT", r"/secretbindings/[^/]+$", "claim_account"),
    ("POST", r"/shoots$", "create_cluster"),
    ("POST", r"/adminkubeconfig$", "fetch_kubeconfig"),
]
WAITS = ("wait_for_cluster", "wait_for_connection")


def test_a_kill_9_in_each_stage_resumes_and_creates_the_shoot_once(setup: gardener.Setup) -> None:
    """The control plane is killed in each stage that talks to Gardener right after Gardener acted on its
    request (the proxy holds the answer back), and in each wait: the Shoot hangs until the kill in
    wait_for_cluster, the agent starts only after the kill in wait_for_connection."""
    server, fleet, garden, proxy = setup.server, setup.fleet, setup.garden, setup.proxy
    garden.outcome({"outcome": "hang", "operation": "Create"})
    for hold in HOLDS:
        proxy.hold(*hold)
    answer = request(server.admin, "gw-k", "gardener-aws", tenant={"globalAccount": "ga-k"})
    killed: list[str] = []
    agent: KubeAgentProcess | None = None

    def kill(stage_name: str) -> None:
        killed.append(stage_name)
        server.kill9()
        proxy.release()
        server.start()

    def step() -> dict[str, Any]:
        nonlocal agent
        with contextlib.suppress(queue.Empty):
            kill(proxy.held.get_nowait())
            return {}
        op = next(o for o in detail(server.admin, "gw-k")["operations"] if o["id"] == answer["operation"])
        now = current_stage(op)
        if now is None or op["state"] in ("succeeded", "failed"):
            return op
        if now["name"] in WAITS and now["name"] not in killed and now["state"] in ("running", "waiting"):
            kill(now["name"])
        elif now["name"] == "wait_for_cluster" and "wait_for_cluster" in killed:
            garden.clear_outcomes()  # only after the kill: a stage still pending must not see the Shoot ready
        elif now["name"] == "wait_for_connection" and agent is None:
            agent = gardener.play_agent_pod(
                setup, gardener.the_shoot(setup, "gw-k")["metadata"]["name"], "gw-k"
            )
        return {}

    op = fleet.wait_until(step, lambda: f"the operation did not end (killed in {killed})", timeout=180)
    assert op["state"] == "succeeded", op
    assert killed == [
        "claim_account", "create_cluster", "wait_for_cluster", "fetch_kubeconfig", "wait_for_connection"
    ]  # fmt: skip
    assert len(garden.audit("create", "shoots")) == 1
    assert len(garden.audit("update", "secretbindings")) == 1, "the account was claimed more than once"
    tenants = [body["metadata"]["labels"].get("tenantName") for body in garden.bindings().values()]
    assert sorted(t or "" for t in tenants) == ["", "", "ga-k"]
    assert len(garden.shoots()) == 1
