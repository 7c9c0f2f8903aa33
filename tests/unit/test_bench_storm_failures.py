"""The load generator's failure kinds, from the real agent client's own errors: the storm's figures say what
a failed call was (a stream not answered, a connection refused, a status code), not "unexpected answer"."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from benchmarks.workers import Failures

from rrm.agent.client import DirectorClient, DirectorError
from rrm.wire.protocol import StatusReport

Handler = Callable[[httpx.Request], Any]


def _client(handler: Handler) -> DirectorClient:
    return DirectorClient(
        ["http://127.0.0.1:1"], bearer=lambda **_: "token", transport=httpx.MockTransport(handler)
    )


def _refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)


async def _failure_of_report(handler: Handler) -> DirectorError:
    client = _client(handler)
    try:
        with pytest.raises(DirectorError) as caught:
            await client.report_status(StatusReport())
    finally:
        await client.close()
    return caught.value


async def _failure_of_watch(handler: Handler, first_frame_timeout: float = 5.0) -> DirectorError:
    client = _client(handler)
    try:
        with pytest.raises(DirectorError) as caught:
            async for _ in client.watch_desired(None, first_frame_timeout):
                pass
    finally:
        await client.close()
    return caught.value


@pytest.mark.parametrize(
    ("handler", "kind"),
    [
        (_refused, "unreachable:ConnectError"),
        (lambda _: httpx.Response(503, json={"detail": "store down"}), "server_error:503"),
        (lambda _: httpx.Response(409, json={"detail": "conflict"}), "unexpected_status:409"),
        (lambda _: httpx.Response(401, json={"detail": "unknown or revoked runtime key"}), "unauthorized"),
    ],
)
def test_a_failed_report_is_counted_by_what_failed(handler: Handler, kind: str) -> None:
    assert Failures.kind(asyncio.run(_failure_of_report(handler))) == kind


def test_a_watch_stream_that_cannot_connect_is_told_from_a_refused_request() -> None:
    assert Failures.kind(asyncio.run(_failure_of_watch(_refused))) == "unreachable_watch:ConnectError"


def test_a_watch_stream_answered_without_its_open_frame_is_a_stream_not_opened() -> None:
    def page(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>a proxy's page</html>", headers={"content-type": "text/html"})

    assert Failures.kind(asyncio.run(_failure_of_watch(page))) == "stream_not_opened"


def test_a_watch_stream_not_answered_in_time_is_a_stream_unanswered() -> None:
    async def silent(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(10)
        return httpx.Response(204)

    assert Failures.kind(asyncio.run(_failure_of_watch(silent, 0.05))) == "stream_unanswered"


def test_failures_count_each_kind() -> None:
    failures = Failures()
    refused = asyncio.run(_failure_of_report(_refused))
    failures.note(refused)
    failures.note(refused)
    assert failures == {"unreachable:ConnectError": 2}
