"""`rrm rollout …`, `rrm get rollouts|rolloutpolicies` and `rrm delete rolloutpolicy` against a fake admin
API that answers with the shapes of docs/api.md."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from rrm.cli import rollouts
from rrm.cli.app import app
from rrm.cli.client import AdminClient


def runtime(name: str, state: str, message: str = "", revision: int = 2) -> dict[str, Any]:
    return {"id": f"id-{name}", "name": name, "state": state, "message": message, "revision": revision}


ROLLOUT: dict[str, Any] = {
    "id": 7,
    "component": "orders",
    "state": "progressing",
    "message": "",
    "from_revision": 1,
    "to_revision": 2,
    "policy": "careful",
    "policy_spec": {
        "groups": [{"name": "canary", "selector": "canary=true"}],
        "maxConcurrency": "50%",
        "minSuccessTime": "30s",
        "maxFailures": 1,
        "progressDeadline": "10m",
        "onFailure": "rollback",
    },
    "targets": 4,
    "updated": 3,
    "ready": 1,
    "failed": 1,
    "max_failures": {"spec": "1", "allowed": 1},
    "current_wave": 2,
    "wave_count": 3,
    "bake": {"min_success_time": "30s", "ready_since": None, "remaining_seconds": None},
    "deadline": {"progress_deadline": "10m", "at": "2026-01-01T00:10:00+00:00"},
    "waves": [
        {
            "number": 1,
            "group": "canary",
            "state": "done",
            "started_at": "2026-01-01T00:00:00+00:00",
            "total": 1,
            "ready": 1,
            "failed": 0,
            "runtimes": [runtime("edge-canary", "ready", "applied and loaded by the sidecar")],
        },
        {
            "number": 2,
            "group": "rest",
            "state": "updating",
            "started_at": "2026-01-01T00:01:00+00:00",
            "total": 2,
            "ready": 0,
            "failed": 1,
            "runtimes": [
                runtime("edge-a", "failed", "component orders is already defined in /x/orders.yaml"),
                runtime("edge-b", "updating", "applied; the sidecar has not loaded it"),
            ],
        },
        {
            "number": 3,
            "group": "rest",
            "state": "pending",
            "started_at": None,
            "total": 1,
            "ready": 0,
            "failed": 0,
            "runtimes": [runtime("edge-c", "pending", "its wave has not started", 1)],
        },
    ],
    "failures": [{"runtime": "edge-a", "message": "component orders is already defined in /x/orders.yaml"}],
    "created_at": "2026-01-01T00:00:00+00:00",
    "updated_at": "2026-01-01T00:01:00+00:00",
    "finished_at": None,
}


class FakeApi:
    """Answers GET /api/v1/rollouts/orders with the next of `answers` (the last one repeats)."""

    def __init__(self, *answers: dict[str, Any]) -> None:
        self.answers = list(answers) or [ROLLOUT]
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path, method = request.url.path, request.method
        if method == "GET" and path == "/api/v1/rollouts/orders":
            answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
            return httpx.Response(200, json=answer)
        if method == "POST" and path.startswith("/api/v1/rollouts/orders/"):
            return httpx.Response(200, json={**ROLLOUT, "state": "paused"})
        if method == "GET" and path == "/api/v1/rollouts":
            listed = copy.deepcopy(ROLLOUT)
            for wave in listed["waves"]:
                wave.pop("runtimes")
            return httpx.Response(200, json=[listed])
        if method == "GET" and path == "/api/v1/rollout-policies":
            return httpx.Response(
                200, json=[{"name": "careful", "spec": ROLLOUT["policy_spec"], "used_by": ["orders"]}]
            )
        if method == "DELETE" and path == "/api/v1/rollout-policies/careful":
            return httpx.Response(204)
        return httpx.Response(404, json={"detail": "no route"})

    def run(self, *args: str) -> Any:
        client = AdminClient("http://cp.test", "admin-secret", transport=httpx.MockTransport(self))
        return CliRunner().invoke(app, list(args), obj=client)


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(rollouts, "WATCH_INTERVAL", 0)
    yield


def test_status_shows_each_wave_with_its_progress_and_the_failing_runtimes() -> None:
    result = FakeApi().run("rollout", "status", "orders")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "orders" in out and "progressing" in out and "1 → 2" in out
    assert "wave 2/3, 1/4 runtimes ready, 1 failed (maxFailures allows 1)" in out
    assert "canary=true" in out and "onFailure rollback" in out
    lines = out.splitlines()
    wave_lines = [line for line in lines if line.lstrip().startswith(("1 ", "2 ", "3 "))]
    assert len(wave_lines) == 3
    assert "canary" in wave_lines[0] and "done" in wave_lines[0] and "1/1" in wave_lines[0]
    assert "0/2 (1 failed)" in wave_lines[1] and "edge-a, edge-b" in wave_lines[1]
    assert "pending" in wave_lines[2]
    assert "Failed runtimes" in out and "already defined in /x/orders.yaml" in out
    assert "Awaited in the current wave" in out and "the sidecar has not loaded it" in out


def test_status_json_is_the_api_answer() -> None:
    result = FakeApi().run("rollout", "status", "orders", "-o", "json")
    assert json.loads(result.stdout) == ROLLOUT


def test_watch_follows_until_the_end_and_the_exit_code_says_how_it_ended() -> None:
    succeeded = {**ROLLOUT, "state": "succeeded", "current_wave": 3}
    api = FakeApi(ROLLOUT, ROLLOUT, succeeded)
    result = api.run("rollout", "status", "orders", "--watch", "-o", "json")
    assert result.exit_code == 0, result.output
    states = [json.loads(line)["state"] for line in result.stdout.splitlines()]
    assert states == ["progressing", "succeeded"]  # an unchanged answer is not printed again
    rolled_back = FakeApi(ROLLOUT, {**ROLLOUT, "state": "rolled-back"}).run(
        "rollout", "status", "orders", "-w"
    )
    assert rolled_back.exit_code == 1
    assert "rolled-back" in rolled_back.stdout


@pytest.mark.parametrize("action", ["pause", "resume", "abort", "promote"])
def test_steering_posts_the_action(action: str) -> None:
    api = FakeApi()
    result = api.run("rollout", action, "orders")
    assert result.exit_code == 0, result.output
    assert (api.requests[-1].method, api.requests[-1].url.path) == (
        "POST",
        f"/api/v1/rollouts/orders/{action}",
    )
    assert "component/orders: rollout of revision 2" in result.stdout


def test_get_rollouts_and_policies_and_delete_a_policy() -> None:
    api = FakeApi()
    listed = api.run("get", "rollouts")
    assert listed.exit_code == 0, listed.output
    for column in ("COMPONENT", "STATE", "REVISIONS", "POLICY", "WAVE", "READY", "FAILED"):
        assert column in listed.stdout
    assert "orders" in listed.stdout and "2/3" in listed.stdout and "1/4" in listed.stdout
    policies = api.run("get", "rolloutpolicies")
    assert "careful" in policies.stdout and "50%" in policies.stdout and "orders" in policies.stdout
    deleted = api.run("delete", "rolloutpolicy", "careful")
    assert deleted.exit_code == 0 and "rolloutpolicy/careful deleted" in deleted.stdout
