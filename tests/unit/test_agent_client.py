"""The director client: long-poll, ETags, failover between directors, typed errors, hash verification."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from rrm.agent.client import DirectorClient, DirectorUnavailable, Unauthorized, UnexpectedResponse
from rrm.core.hashing import state_hash
from rrm.wire import DeliveredSecret, DesiredState, PairRequest, ResourceResult, StatusReport

COMPONENTS = [
    {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": "cache"},
        "spec": {"type": "state.redis", "version": "v1", "metadata": []},
    }
]
SECRET = DeliveredSecret(name="redis", revision=2, data={"password": "p"})
STATE = DesiredState(hash=state_hash(COMPONENTS, [("redis", 2)]), components=COMPONENTS, secrets=[SECRET])

Handler = Callable[[httpx.Request], httpx.Response]


def client_for(handler: Handler, urls: list[str] | None = None) -> DirectorClient:
    return DirectorClient(urls or ["http://a"], bearer=lambda: "jwt", transport=httpx.MockTransport(handler))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_fetch_sends_etag_wait_and_bearer_and_returns_verified_state() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=STATE.model_dump(mode="json"), headers={"ETag": f'"{STATE.hash}"'})

    async def scenario() -> DesiredState | None:
        client = client_for(handler)
        try:
            return await client.fetch_desired("abc", wait=30)
        finally:
            await client.close()

    assert run(scenario()) == STATE
    request = seen[0]
    assert request.url.path == "/agent/v1/desired-state"
    assert request.url.params["wait"] == "30"
    assert request.headers["If-None-Match"] == '"abc"'
    assert request.headers["Authorization"] == "Bearer jwt"
    assert request.extensions["timeout"]["read"] == 40


def test_not_modified_is_none() -> None:
    async def scenario() -> DesiredState | None:
        client = client_for(lambda request: httpx.Response(304))
        try:
            return await client.fetch_desired(STATE.hash, wait=5)
        finally:
            await client.close()

    assert run(scenario()) is None


@pytest.mark.parametrize(
    "tamper",
    [
        lambda body: body["secrets"][0].update(revision=3),
        lambda body: body["components"][0]["spec"].update(type="state.in-memory"),
        lambda body: body.update(hash="0" * 64),
    ],
)
def test_state_that_does_not_match_its_hash_is_rejected(tamper: Callable[[dict[str, Any]], None]) -> None:
    body = json.loads(STATE.model_dump_json())
    tamper(body)

    async def scenario() -> None:
        client = client_for(lambda request: httpx.Response(200, json=body))
        try:
            await client.fetch_desired(None, wait=0)
        finally:
            await client.close()

    with pytest.raises(UnexpectedResponse, match="does not match"):
        run(scenario())


def test_connection_errors_fail_over_to_the_next_director_and_stick_to_it() -> None:
    hosts: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        if request.url.host == "down":
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(204)

    async def scenario() -> str:
        client = client_for(handler, ["http://down", "http://up"])
        try:
            await client.report_status(StatusReport(resources=[ResourceResult(name="a", state="applied")]))
            await client.report_status(StatusReport())
            return client.active_url
        finally:
            await client.close()

    assert run(scenario()) == "http://up"
    assert hosts == ["down", "up", "up"]


def test_no_reachable_director_is_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async def scenario() -> None:
        client = client_for(handler, ["http://a", "http://b"])
        try:
            await client.fetch_desired(None, wait=1)
        finally:
            await client.close()

    with pytest.raises(DirectorUnavailable, match="no director reachable"):
        run(scenario())


@pytest.mark.parametrize(
    ("status", "error"), [(401, Unauthorized), (503, DirectorUnavailable), (400, UnexpectedResponse)]
)
def test_error_statuses_map_to_typed_errors(status: int, error: type[Exception]) -> None:
    async def scenario() -> None:
        client = client_for(lambda request: httpx.Response(status, json={"detail": "nope"}))
        try:
            await client.fetch_desired(None, wait=1)
        finally:
            await client.close()

    with pytest.raises(error):
        run(scenario())


def test_pair_sends_no_bearer() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            201, json={"runtime_id": "r1", "runtime_name": "edge", "kind": "selfhosted", "key_id": "k1"}
        )

    async def scenario() -> str:
        client = DirectorClient(["http://a"], transport=httpx.MockTransport(handler))
        try:
            return (await client.pair(PairRequest(token="t", public_key="pem"))).runtime_id
        finally:
            await client.close()

    assert run(scenario()) == "r1"
    assert "Authorization" not in seen[0].headers
    assert json.loads(seen[0].content)["token"] == "t"
