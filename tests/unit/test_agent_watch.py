"""The agent on the watch stream: the client yields each verified state and tells a cut stream (silent, or
broken off) from an ended one; `DeliveryChoice` sends `auto` to the long-poll when a proxy buffers or cuts
streams, and back later; `watch` and `longpoll` never switch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from rrm.agent.client import DirectorClient, StreamCut, UnexpectedResponse
from rrm.agent.delivery import WATCH_RETRY_SECONDS, DeliveryChoice
from rrm.core.hashing import state_hash
from rrm.wire import watch
from rrm.wire.protocol import DesiredState, dumps

COMPONENT = {
    "apiVersion": "dapr.io/v1alpha1",
    "kind": "Component",
    "metadata": {"name": "a"},
    "spec": {"type": "state.in-memory", "version": "v1"},
}
STATE = DesiredState(hash=state_hash([COMPONENT], []), components=[COMPONENT])
OPEN = watch.open_frame(15.0, 300.0)


def streaming(*chunks: bytes, then_hang: bool = False) -> Callable[[httpx.Request], httpx.Response]:
    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk
        if then_hang:
            await asyncio.Event().wait()

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == watch.PATH
        assert request.headers["authorization"] == "Bearer jwt-renewed"
        return httpx.Response(200, headers={"content-type": watch.MEDIA_TYPE}, content=body())

    return handler


def states(*chunks: bytes, first_frame_timeout: float = 5.0, then_hang: bool = False) -> list[DesiredState]:
    def bearer(renew: bool = False, now: float | None = None) -> str:
        return "jwt-renewed" if renew else "jwt-cached"

    transport = httpx.MockTransport(streaming(*chunks, then_hang=then_hang))
    client = DirectorClient(["http://a"], bearer=bearer, transport=transport)

    async def read() -> list[DesiredState]:
        async with asyncio.timeout(10):
            try:
                return [state async for state in client.watch_desired(None, first_frame_timeout)]
            finally:
                await client.close()

    return asyncio.run(read())


def test_each_state_is_yielded_verified_until_the_end_frame() -> None:
    frame = watch.state_frame(STATE.hash, dumps(STATE))
    got = states(OPEN, frame[:10], frame[10:] + watch.KEEP_ALIVE_FRAME, watch.end_frame("token-expired"))
    assert got == [STATE]


def test_a_state_that_does_not_match_its_hash_is_refused() -> None:
    forged = DesiredState(hash=STATE.hash, components=[{**COMPONENT, "spec": {"type": "x"}}])
    with pytest.raises(UnexpectedResponse, match="does not match"):
        states(OPEN, watch.state_frame(STATE.hash, dumps(forged)), watch.end_frame("shutdown"))


def test_a_stream_with_no_frame_is_cut_unopened() -> None:
    with pytest.raises(StreamCut) as cut:
        states(first_frame_timeout=0.2, then_hang=True)
    assert cut.value.answered and not cut.value.opened and not cut.value.delivered


def test_a_stream_whose_headers_never_come_is_cut_unanswered() -> None:
    async def silent(request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("never answered")

    client = DirectorClient(["http://a"], bearer=lambda **_: "jwt", transport=httpx.MockTransport(silent))

    async def read() -> None:
        try:
            async for _ in client.watch_desired(None, 0.2):
                pass
        finally:
            await client.close()

    with pytest.raises(StreamCut) as cut:
        asyncio.run(read())
    assert not cut.value.answered and not cut.value.opened


def test_a_stream_that_breaks_off_without_its_end_frame_is_cut() -> None:
    with pytest.raises(StreamCut) as cut:
        states(OPEN)
    assert cut.value.opened and not cut.value.delivered
    with pytest.raises(StreamCut) as cut:
        states(OPEN, watch.KEEP_ALIVE_FRAME)
    assert cut.value.delivered


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_auto_falls_back_at_once_when_no_frame_came_and_tries_the_stream_again_later() -> None:
    clock = Clock()
    choice = DeliveryChoice("auto", clock)
    assert choice.watching()
    choice.cut(StreamCut("silent"))
    assert not choice.watching()
    clock.now += WATCH_RETRY_SECONDS
    assert choice.watching()


def test_auto_takes_an_unanswered_stream_as_a_cut_not_a_buffering_proxy() -> None:
    choice = DeliveryChoice("auto", Clock())
    choice.cut(StreamCut("no answer", answered=False))
    assert not choice.watching(), "one long-poll, which waits its turn at a busy director"
    assert choice.watching(), "then the stream again"
    choice.cut(StreamCut("cut", opened=True, delivered=True))
    choice.cut(StreamCut("no answer", answered=False))
    assert not choice.watching() and choice.watching(), "a stream that delivered breaks the row"
    choice.cut(StreamCut("no answer", answered=False))
    assert not choice.watching() and not choice.watching(), "a proxy holding the headers back: long-polls"


def test_auto_falls_back_after_two_streams_in_a_row_cut_before_any_frame() -> None:
    choice = DeliveryChoice("auto", Clock())
    choice.cut(StreamCut("cut", opened=True))
    assert choice.watching(), "one cut is a network blip"
    choice.cut(StreamCut("cut", opened=True, delivered=True))
    choice.cut(StreamCut("cut", opened=True))
    assert choice.watching(), "a stream that delivered breaks the row"
    choice.cut(StreamCut("cut", opened=True))
    assert not choice.watching()


@pytest.mark.parametrize("mode", ["watch", "longpoll"])
def test_a_chosen_delivery_never_switches(mode: Any) -> None:
    choice = DeliveryChoice(mode, Clock())
    for _ in range(3):
        choice.cut(StreamCut("silent"))
    assert choice.watching() is (mode == "watch")
