"""The watch stream: its frames read back whatever the chunking, and the hub writes one placement group's
streams the same bytes object, framed once, within the delivery window, ending as the rules say."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, MutableMapping
from typing import Any, TypeVar

import pytest

from rrm.server.fleet.longpoll import KeepAliveClock, LongPollHub
from rrm.server.fleet.render import Delivery
from rrm.wire import watch
from rrm.wire.watch import KEEP_ALIVE_FRAME, Frame, FrameError, FrameReader

T = TypeVar("T")
BODY = b'{"hash":"abc","components":[{"a":"x\\ny"}],"secrets":[]}'


def run(awaitable: Awaitable[T]) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(10):
            return await awaitable

    return asyncio.run(bounded())


def test_frames_read_back_whatever_the_chunks() -> None:
    stream = (
        watch.open_frame(15.0, 299.5)
        + watch.state_frame("abc", BODY)
        + KEEP_ALIVE_FRAME
        + watch.end_frame("token-expired")
    )
    expected = [
        Frame("open", data=b'{"keep_alive": 15.0, "expires_in": 299.5}'),
        Frame("state", "abc", BODY),
        Frame("keep-alive"),
        Frame("end", data=b'{"reason": "token-expired"}'),
    ]
    for size in (1, 2, 7, len(stream)):
        reader = FrameReader()
        frames = [f for i in range(0, len(stream), size) for f in reader.feed(stream[i : i + size])]
        assert frames == expected, size
        assert not reader.pending
    assert json.loads(expected[1].data) == json.loads(BODY), "the body is carried as it is"


def test_a_frame_is_the_body_framed_without_encoding_it_again() -> None:
    frame = watch.state_frame("abc", BODY)
    assert frame == b"event: state\nid: abc\ndata: " + BODY + b"\n\n"


def test_the_reader_refuses_an_endless_frame_and_a_line_without_a_field() -> None:
    with pytest.raises(FrameError, match="longer than 16 bytes"):
        FrameReader(max_frame_bytes=16).feed(b"data: " + b"x" * 20)
    with pytest.raises(FrameError, match="without a field name"):
        FrameReader().feed(b"garbage\n\n")


def delivery(hash_: str) -> Delivery:
    return Delivery(hash=hash_, body=b'{"hash":"%s"}' % hash_.encode(), components=())


async def next_frame(frames: AsyncGenerator[bytes]) -> bytes:
    return await anext(frames)


def streams(hub: LongPollHub, *runtime_ids: str, etag: str | None = None) -> list[AsyncGenerator[bytes]]:
    return [hub.watch(r, etag, time.monotonic() + 60, keep_alive=30) for r in runtime_ids]


def test_a_group_s_streams_are_written_one_framed_body_the_same_bytes_object(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    framed: list[str] = []

    def counted(state_hash: str, body: bytes) -> bytes:
        framed.append(state_hash)
        return watch.state_frame(state_hash, body)

    monkeypatch.setattr("rrm.server.fleet.render.state_frame", counted)
    hub = LongPollHub(0.0)
    first = delivery("a")
    hub.deliver(first, ["r1", "r2", "r3"])

    async def scenario() -> list[bytes]:
        r1, r2, r3 = streams(hub, "r1", "r2", "r3", etag='"a"')
        waits = [asyncio.create_task(next_frame(s)) for s in (r1, r2, r3)]
        await asyncio.sleep(0)
        second = delivery("b")
        hub.deliver(second, ["r1", "r2"])
        await asyncio.sleep(0.05)
        assert not waits[2].done(), "r3's state did not change, yet its stream was written"
        waits[2].cancel()
        return [await waits[0], await waits[1]]

    one, two = run(scenario())
    assert one is two, "each stream of the group got its own copy"
    assert framed == ["b"], "framed more than once for the group"
    assert one == watch.state_frame("b", delivery("b").body)


def test_a_stream_keeps_alive_then_ends_when_its_token_expires() -> None:
    hub = LongPollHub(0.0)
    hub.deliver(delivery("a"), ["r1"])

    async def scenario() -> list[bytes]:
        frames = hub.watch("r1", None, time.monotonic() + 0.25, keep_alive=0.1)
        return [frame async for frame in frames]

    frames = run(scenario())
    assert frames[0] == delivery("a").frame, "a new stream without a state gets it at once"
    assert frames[-1] == watch.end_frame("token-expired")
    assert frames[1:-1] and all(f is KEEP_ALIVE_FRAME for f in frames[1:-1])


def test_a_stream_ends_when_the_hub_closes_and_when_the_runtime_goes() -> None:
    hub = LongPollHub(0.0)
    hub.deliver(delivery("a"), ["r1", "r2"])

    async def scenario() -> tuple[bytes, bytes]:
        r1, r2 = streams(hub, "r1", "r2", etag='"a"')
        gone = asyncio.create_task(next_frame(r1))
        await asyncio.sleep(0)
        hub.withdraw("r1")
        first = await gone
        closing = asyncio.create_task(next_frame(r2))
        await asyncio.sleep(0)
        hub.close()
        return first, await closing

    gone, closing = run(scenario())
    assert gone == watch.end_frame("runtime-gone")
    assert closing == watch.end_frame("shutdown")


def test_the_delivery_window_holds_a_stream_s_second_state_then_sends_the_newest() -> None:
    window = 0.3
    hub = LongPollHub(window)
    hub.deliver(delivery("a"), ["r1"])

    async def scenario() -> tuple[list[bytes], float]:
        (frames,) = streams(hub, "r1", etag='"old"')
        first = await next_frame(frames)
        sent = time.monotonic()
        hub.deliver(delivery("b"), ["r1"])
        hub.deliver(delivery("c"), ["r1"])
        second = await next_frame(frames)
        return [first, second], time.monotonic() - sent

    (first, second), held = run(scenario())
    assert first == delivery("a").frame and second == delivery("c").frame
    assert held >= window * 0.9, f"the second state went out {held:.2f} s after the first"


def test_idle_streams_share_the_keep_alive_timers_and_each_keeps_alive_after_its_interval() -> None:
    interval, count = 0.2, 200
    hub = LongPollHub(0.0)
    hub.deliver(delivery("a"), [f"r{i}" for i in range(count)])

    async def scenario() -> tuple[list[float], int]:
        loop = asyncio.get_running_loop()
        armed = 0
        call_at = loop.call_at

        def counted(*args: Any, **kwargs: Any) -> asyncio.TimerHandle:
            nonlocal armed
            armed += 1
            return call_at(*args, **kwargs)

        loop.call_at = counted  # type: ignore[method-assign]
        opened = time.monotonic()
        frames = [hub.watch(f"r{i}", '"a"', opened + 60, interval) for i in range(count)]
        firsts = await asyncio.gather(*(next_frame(f) for f in frames))
        waited = time.monotonic() - opened
        assert all(frame is KEEP_ALIVE_FRAME for frame in firsts)
        for f in frames:
            await f.aclose()
        return [waited], armed

    (waited,), armed = run(scenario())
    assert waited >= interval * 0.9, f"a keep-alive came {waited:.3f} s after the stream opened"
    assert armed <= 2 * KeepAliveClock.SLOTS, f"{armed} timers armed for {count} idle streams"


def test_a_wait_that_ends_leaves_nothing_behind_in_the_hub() -> None:
    hub = LongPollHub(0.0)
    hub.deliver(delivery("a"), ["r1"])

    async def scenario() -> None:
        assert await hub.wait_for_change("r1", '"a"', 0.01) is None  # timed out
        waiting = asyncio.create_task(hub.wait_for_change("r1", '"a"', 60))
        await asyncio.sleep(0)
        waiting.cancel()  # the agent went away
        with pytest.raises(asyncio.CancelledError):
            await waiting

    run(scenario())
    assert not hub._waiters, "a finished wait is still listed, and would be kept until the runtime changes"


def test_a_stream_s_window_counts_from_when_the_previous_frame_s_write_completed() -> None:
    window, writing = 0.3, 0.2
    hub = LongPollHub(window)
    hub.deliver(delivery("a"), ["r1"])

    async def scenario() -> float:
        (frames,) = streams(hub, "r1", etag='"old"')
        await next_frame(frames)
        hub.deliver(delivery("b"), ["r1"])
        await asyncio.sleep(writing)  # a slow write of the first frame: the stream resumes only after it
        written = time.monotonic()
        assert await next_frame(frames) == delivery("b").frame
        return time.monotonic() - written

    held = run(scenario())
    assert held >= window * 0.9, f"the second state went out {held:.2f} s after the first one was written"


def test_the_end_frame_ends_the_response_in_the_same_message() -> None:
    """So the agent finds the response complete with its end frame and keeps the connection."""

    async def frames(*_: Any) -> AsyncGenerator[bytes]:
        yield KEEP_ALIVE_FRAME
        yield watch.end_frame("token-expired")

    sent: list[dict[str, Any]] = []
    run(_stream(frames, "key", sent))
    bodies = [(m["body"], m["more_body"]) for m in sent if m["type"] == "http.response.body"]
    assert [b[:11] for b, _ in bodies] == [b"event: open", KEEP_ALIVE_FRAME[:11], b"event: end\n"]
    assert [more for _, more in bodies] == [True, True, False]


def test_a_stream_that_ends_early_closes_its_frames_at_once() -> None:
    """A revoked key ends the stream while its frames could go on: their generator (and the hub's wait in
    it) is closed before the response returns, not whenever the garbage collector finds it."""
    closed: list[bool] = []
    sent: list[dict[str, Any]] = []

    async def frames(*_: Any) -> AsyncGenerator[bytes]:
        try:
            while True:
                yield KEEP_ALIVE_FRAME
        finally:
            closed.append(True)

    async def scenario() -> list[bool]:
        await _stream(frames, None, sent)  # the key is gone
        return list(closed)

    assert run(scenario()) == [True]
    assert sent[-1]["body"] == watch.end_frame("runtime-gone") and sent[-1]["more_body"] is False


async def _stream(
    frames: Callable[..., AsyncGenerator[bytes]], key: str | None, sent: list[dict[str, Any]]
) -> None:
    """One `WatchResponse` over `frames`, its runtime's key `key`, to an agent that stays; what it sends
    goes to `sent`."""
    from types import SimpleNamespace

    from rrm.server.api.watch import WatchResponse

    state: Any = SimpleNamespace(
        fleet=SimpleNamespace(watch=frames, key=lambda _: key),
        status_writer=SimpleNamespace(touch=lambda _: None),
        settings=SimpleNamespace(watch_keep_alive_seconds=30.0, delivery_window_seconds=1.0),
    )

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()  # the agent stays
        return {}

    await WatchResponse(state, "r1", "k1", None, 60.0)({}, receive, send)
