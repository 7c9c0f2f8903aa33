"""The director client: long-poll, ETags, failover between directors, typed errors, hash verification."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Any

import httpx
import pytest

from rrm.agent.client import (
    DirectorClient,
    DirectorUnavailable,
    NothingListening,
    Unauthorized,
    UnexpectedResponse,
    tls_verification,
)
from rrm.core.hashing import state_hash
from rrm.wire.agent_auth import (
    NOT_YET_VALID_MESSAGE,
    AgentTokenError,
    generate_private_key,
    key_id,
    load_public_key,
    public_key_pem,
    sign_agent_token,
    verify_agent_token,
)
from rrm.wire.protocol import DeliveredSecret, DesiredState, PairRequest, ResourceResult, StatusReport, encode

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
    return DirectorClient(
        urls or ["http://a"],
        bearer=lambda renew=False, now=None: "jwt",
        transport=httpx.MockTransport(handler),
    )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def fetch_served(body: dict[str, Any]) -> None:
    """Fetch the desired state from a director that answers `body`."""
    client = client_for(lambda request: httpx.Response(200, json=body))
    try:
        await client.fetch_desired(None, wait=0)
    finally:
        await client.close()


def test_fetch_sends_etag_wait_and_bearer_and_returns_verified_state() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=encode(STATE), headers={"ETag": f'"{STATE.hash}"'})

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
    body = encode(STATE)
    tamper(body)

    with pytest.raises(UnexpectedResponse, match="does not match"):
        run(fetch_served(body))


def test_a_malformed_state_is_an_unexpected_response_naming_the_field_and_no_value() -> None:
    body = encode(STATE)
    body["secrets"][0]["revision"] = "p"

    with pytest.raises(UnexpectedResponse) as error:
        run(fetch_served(body))
    expected = "malformed DesiredState: secrets[0].revision: expected an integer, got a string"
    assert str(error.value) == expected


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


def refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("refused", request=request)


def refused_then_busy(request: httpx.Request) -> httpx.Response:
    if request.url.host == "a":
        return refused(request)
    raise httpx.ReadTimeout("busy", request=request)


@pytest.mark.parametrize(("handler", "listening"), [(refused, False), (refused_then_busy, True)])
def test_no_reachable_director_is_unavailable_and_says_whether_one_listens(
    handler: Callable[[httpx.Request], httpx.Response], listening: bool
) -> None:
    """Refused connections (none listening) cost the directors nothing to retry soon; a timeout may be
    one that is busy."""

    async def scenario() -> None:
        client = client_for(handler, ["http://a", "http://b"])
        try:
            await client.fetch_desired(None, wait=1)
        finally:
            await client.close()

    with pytest.raises(DirectorUnavailable, match="no director reachable") as raised:
        run(scenario())
    assert isinstance(raised.value, NothingListening) is not listening


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


class CountingBearer:
    """Stands in for `AgentIdentity.bearer_token`: a new token each time it is asked to renew."""

    def __init__(self) -> None:
        self.minted = 1
        self.renewals = 0
        self.times: list[float] = []

    def __call__(self, *, renew: bool = False, now: float | None = None) -> str:
        self.times.append(time.time() if now is None else now)
        if renew:
            self.renewals += 1
            self.minted += 1
        return f"jwt-{self.minted}"


def expired_token_detail() -> str:
    """The 401 detail the director sends for an expired token: its verification's own message, behind the
    prefix `rrm.server.auth` puts in front of every refused runtime token."""
    key = generate_private_key()
    kid = key_id(public_key_pem(key))
    token = sign_agent_token(key, "rt-1", kid, lifetime=300, now=time.time() - 1000)
    with pytest.raises(AgentTokenError) as refused:
        verify_agent_token(token, load_public_key(public_key_pem(key)), kid)
    return f"invalid runtime token: {refused.value}"


def send_with(bearer: CountingBearer, answers: list[httpx.Response]) -> tuple[list[str], Exception | None]:
    """Report a status through a director answering `answers` in turn; the bearers it saw, and the error."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return answers[len(seen) - 1]

    async def scenario() -> None:
        client = DirectorClient(["http://a"], bearer=bearer, transport=httpx.MockTransport(handler))
        try:
            await client.report_status(StatusReport())
        finally:
            await client.close()

    try:
        run(scenario())
    except Exception as exc:
        return seen, exc
    return seen, None


def test_an_expired_token_is_renewed_and_the_request_sent_again_once() -> None:
    bearer = CountingBearer()
    seen, error = send_with(
        bearer, [httpx.Response(401, json={"detail": expired_token_detail()}), httpx.Response(204)]
    )

    assert error is None
    assert seen == ["Bearer jwt-1", "Bearer jwt-2"]
    assert bearer.renewals == 1


def test_a_token_refused_as_expired_twice_is_unauthorized() -> None:
    bearer = CountingBearer()
    expired = httpx.Response(401, json={"detail": expired_token_detail()})
    seen, error = send_with(bearer, [expired, expired, httpx.Response(204)])

    assert isinstance(error, Unauthorized)
    assert "expired" in str(error)
    assert seen == ["Bearer jwt-1", "Bearer jwt-2"]
    assert bearer.renewals == 1


@pytest.mark.parametrize(
    "detail", ["unknown or revoked runtime key", "runtime no longer registered", "missing bearer token"]
)
def test_other_401s_are_not_retried(detail: str) -> None:
    bearer = CountingBearer()
    seen, error = send_with(bearer, [httpx.Response(401, json={"detail": detail}), httpx.Response(204)])

    assert isinstance(error, Unauthorized)
    assert seen == ["Bearer jwt-1"]
    assert bearer.renewals == 0


def answer_dated(status: int, director_offset: float, **kwargs: Any) -> httpx.Response:
    """An answer whose `Date` is the director's clock, `director_offset` seconds from this host's."""
    return httpx.Response(
        status, headers={"Date": formatdate(time.time() + director_offset, usegmt=True)}, **kwargs
    )


@pytest.mark.parametrize("director_offset", [-60.0, 400.0], ids=["host-60s-ahead", "host-400s-behind"])
def test_a_token_refused_for_the_hosts_clock_is_issued_again_in_the_directors_time(
    director_offset: float,
) -> None:
    """The refusal's `Date` gives the director's time: the token is issued again in it, and so is every
    token after it; the client knows that this host's clock is off (the agent's status message says so)."""
    bearer = CountingBearer()
    sent: list[dict[str, Any]] = []
    refused = {"json": {"detail": f"invalid runtime token: {NOT_YET_VALID_MESSAGE}"}}

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return (
            answer_dated(401, director_offset, **refused)
            if len(sent) == 1
            else answer_dated(204, director_offset)
        )

    async def scenario() -> None:
        client = DirectorClient(["http://a"], bearer=bearer, transport=httpx.MockTransport(handler))
        try:
            await client.report_status(StatusReport())
            await client.report_status(StatusReport())
            client_note.append(client.clock.describe())
        finally:
            await client.close()

    client_note: list[str] = []
    before = time.time()
    run(scenario())

    assert bearer.renewals == 1 and len(bearer.times) == 3
    assert abs(bearer.times[0] - before) < 5, "the first token is issued in this host's time"
    assert all(abs(t - (before + director_offset)) < 5 for t in bearer.times[1:]), "then in the director's"
    assert "clock" in client_note[0], client_note


def test_a_refusal_for_time_that_persists_says_it_is_the_clock() -> None:
    """No `Date` to learn from (a proxy dropped it): the error names the clock, for the log."""
    refused = httpx.Response(401, json={"detail": expired_token_detail()})
    _, error = send_with(CountingBearer(), [refused, refused])

    assert isinstance(error, Unauthorized)
    assert "clock" in str(error)


def test_a_date_within_a_second_or_so_changes_nothing() -> None:
    bearer = CountingBearer()
    send_with(bearer, [answer_dated(204, 1.0), answer_dated(204, 1.0)])
    _, error = send_with(bearer, [answer_dated(204, 0)])
    assert error is None and all(abs(t - time.time()) < 5 for t in bearer.times)


def test_an_expired_pairing_token_is_not_retried() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(401, json={"detail": "pairing token unknown, already used or expired"})

    async def scenario() -> None:
        client = DirectorClient(["http://a"], bearer=CountingBearer(), transport=httpx.MockTransport(handler))
        try:
            await client.pair(PairRequest(token="t", public_key="pem"))
        finally:
            await client.close()

    with pytest.raises(Unauthorized):
        run(scenario())
    assert len(seen) == 1


@pytest.fixture
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_plain_http_directors_need_no_ca_bundle_and_any_tls_would_be_refused(
    no_proxies: pytest.MonkeyPatch,
) -> None:
    context = tls_verification(["http://a:8080", "http://b:8080"])

    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] == 0


@pytest.mark.parametrize(
    ("urls", "proxy"),
    [(["http://a", "https://b"], None), (["HTTPS://a"], None), (["http://a"], "http://proxy:3128")],
)
def test_tls_is_verified_as_httpx_does_wherever_it_may_be_spoken(
    no_proxies: pytest.MonkeyPatch, urls: list[str], proxy: str | None
) -> None:
    if proxy:
        no_proxies.setenv("HTTPS_PROXY", proxy)
    assert tls_verification(urls) is True


def test_a_status_report_asks_for_its_connection_to_be_closed_and_other_requests_keep_theirs() -> None:
    """A report goes beside the held stream or long-poll a heartbeat apart, and httpx drops an idle connection
    only when the client next sends: without `Connection: close` the control plane would hold two
    connections per agent between heartbeats (twice the open files and memory)."""
    seen: dict[str, str | None] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen[request.url.path] = request.headers.get("connection")
        if request.url.path == "/agent/v1/status":
            return httpx.Response(204)
        return httpx.Response(304)

    async def scenario() -> None:
        client = client_for(handler)
        try:
            await client.report_status(StatusReport())
            await client.fetch_desired(STATE.hash, wait=0)
        finally:
            await client.close()

    run(scenario())
    assert seen["/agent/v1/status"] == "close"
    assert seen["/agent/v1/desired-state"] != "close"
