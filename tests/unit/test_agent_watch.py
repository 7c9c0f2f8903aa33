"""The agent on the watch stream: the client yields the stream's opening (the delivery window) and each
verified state and tells a cut stream (silent, or broken off) from an ended one; `NewestState` hands out
only the newest state, at most one per window; `DeliveryChoice` sends `auto` to the long-poll when a proxy
buffers or cuts streams, and back later; `watch` and `longpoll` never switch."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from rrm.agent.cache import DesiredStateCache
from rrm.agent.client import DirectorClient, StreamCut, StreamOpened, UnexpectedResponse
from rrm.agent.delivery import WATCH_RETRY_SECONDS, DeliveryChoice
from rrm.agent.loop import Agent
from rrm.agent.pacing import NewestState
from rrm.agent.targets.selfhosted import SelfHostedTarget
from rrm.core.hashing import state_hash
from rrm.wire import watch
from rrm.wire.protocol import DesiredState, StatusReport, dumps

COMPONENT = {
    "apiVersion": "dapr.io/v1alpha1",
    "kind": "Component",
    "metadata": {"name": "a"},
    "spec": {"type": "state.in-memory", "version": "v1"},
}
STATE = DesiredState(hash=state_hash([COMPONENT], []), components=[COMPONENT])
OPEN = watch.open_frame(15.0, 300.0, 1.0)


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


def states(
    *chunks: bytes, first_frame_timeout: float = 5.0, then_hang: bool = False
) -> list[StreamOpened | DesiredState]:
    def bearer(renew: bool = False, now: float | None = None) -> str:
        return "jwt-renewed" if renew else "jwt-cached"

    transport = httpx.MockTransport(streaming(*chunks, then_hang=then_hang))
    client = DirectorClient(["http://a"], bearer=bearer, transport=transport)

    async def read() -> list[StreamOpened | DesiredState]:
        async with asyncio.timeout(10):
            try:
                return [state async for state in client.watch_desired(None, first_frame_timeout)]
            finally:
                await client.close()

    return asyncio.run(read())


def test_each_state_is_yielded_verified_until_the_end_frame() -> None:
    frame = watch.state_frame(STATE.hash, dumps(STATE))
    got = states(OPEN, frame[:10], frame[10:] + watch.KEEP_ALIVE_FRAME, watch.end_frame("token-expired"))
    assert got == [StreamOpened(1.0, 15.0), STATE]


def test_an_open_frame_without_a_window_is_a_window_of_zero() -> None:
    """A control plane from before the window was announced: the agent takes each state as it comes."""
    older = watch.open_frame(15.0, 300.0)
    assert b"delivery_window" not in older
    assert states(older, watch.end_frame("shutdown")) == [StreamOpened(0.0, 15.0)]
    with pytest.raises(UnexpectedResponse, match="malformed open frame"):
        states(b'event: open\ndata: {"keep_alive": 15, "delivery_window": "soon"}\n\n')


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


class ManualTime(Clock):
    """A clock the test moves; a sleep on it lasts until the next move (its sleeper checks the time again)."""

    def __init__(self) -> None:
        super().__init__()
        self._moved = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        await self._moved.wait()

    def advance(self, seconds: float) -> None:
        self.now += seconds
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()


def state_of(name: str) -> DesiredState:
    component = {**COMPONENT, "metadata": {"name": name}}
    return DesiredState(hash=state_hash([component], []), components=[component])


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def settle() -> None:
    """Let every task that can run do so."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_state_offered_later_supersedes_the_one_held() -> None:
    async def scenario() -> None:
        newest = NewestState(clock=Clock())
        newest.window = 1.0
        for name in ("a", "b", "c"):
            newest.offer(state_of(name))
        assert await newest.next() == state_of("c"), "the first take is not held"

    asyncio.run(scenario())


def test_a_state_is_handed_out_a_window_after_the_previous_take_at_the_soonest() -> None:
    async def scenario() -> None:
        time = ManualTime()
        newest = NewestState(clock=time, sleep=time.sleep)
        newest.window = 1.0
        newest.taken()
        newest.offer(state_of("a"))
        taking = asyncio.create_task(newest.next())
        time.advance(0.5)
        await settle()
        newest.offer(state_of("b"))
        time.advance(0.25)
        await settle()
        assert not taking.done(), f"handed out {time.now} s after the previous take"
        time.advance(0.25)
        assert await taking == state_of("b"), "the newest when the window ended"
        newest.taken()
        newest.window = 0.0  # the next stream's control plane announces none
        newest.offer(state_of("c"))
        assert await newest.next() == state_of("c")

    asyncio.run(scenario())


def test_an_ended_stream_hands_out_what_it_held_then_nothing() -> None:
    async def scenario() -> None:
        newest = NewestState(clock=Clock())
        newest.begin()
        newest.offer(state_of("a"))
        newest.end()
        assert await newest.next() == state_of("a")
        assert await newest.next() is None
        newest.begin()
        newest.end()
        assert await newest.next() is None

    asyncio.run(scenario())


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


def test_a_stream_the_director_ended_cleanly_starts_the_count_of_cuts_anew() -> None:
    """A restart ends every stream cleanly; a stream cut while the director comes back must not add to a
    cut from long before and send the agent to the long-poll for WATCH_RETRY_SECONDS."""
    choice = DeliveryChoice("auto", Clock())
    choice.cut(StreamCut("cut", opened=True))
    choice.ended()
    choice.cut(StreamCut("cut", opened=True))
    assert choice.watching()
    choice.cut(StreamCut("cut", opened=True))
    assert not choice.watching()


@pytest.mark.parametrize("mode", ["watch", "longpoll"])
def test_a_chosen_delivery_never_switches(mode: Any) -> None:
    choice = DeliveryChoice(mode, Clock())
    for _ in range(3):
        choice.cut(StreamCut("silent"))
    assert choice.watching() is (mode == "watch")


# --- the agent's reader and taker ---------------------------------------------------------------------------

Step = StreamOpened | DesiredState | asyncio.Event | Exception


class ScriptedStream:
    """One watch stream from a script: frames in turn, an event waited for, an exception raised; then it
    ends cleanly (its end frame)."""

    def __init__(self, *script: Step) -> None:
        self.script = script
        self.reports: list[StatusReport] = []

    async def watch_desired(
        self, etag: str | None, first_frame_timeout: float
    ) -> AsyncIterator[StreamOpened | DesiredState]:
        for step in self.script:
            if isinstance(step, asyncio.Event):
                await step.wait()
            elif isinstance(step, Exception):
                raise step
            else:
                yield step

    async def report_status(self, report: StatusReport) -> None:
        self.reports.append(report)


class RecordingAgent(Agent):
    """Notes each take (the clock's time, the state), and holds each apply until `applying` is set."""

    def __init__(self, tmp_path: Path, stream: ScriptedStream, time: Clock) -> None:
        target = SelfHostedTarget(tmp_path / "resources", tmp_path / "state")
        target.prepare()
        client: DirectorClient = stream  # type: ignore[assignment]
        super().__init__(client, target, DesiredStateCache(tmp_path / "state"))
        self.time = time
        self.takes: list[tuple[float, DesiredState]] = []
        self.applying = asyncio.Event()
        self.applying.set()

    async def _take(self, fetched: DesiredState) -> None:
        self.takes.append((self.time(), fetched))
        await super()._take(fetched)
        await self.applying.wait()


def test_the_agent_takes_the_newest_state_at_most_once_per_window(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Three states come less than a window after the first was taken: only the last is taken, a window
    after the first; the two between are never applied."""
    caplog.set_level(logging.INFO, logger="rrm.agent.pacing")
    more, rest = asyncio.Event(), asyncio.Event()
    a, b, c, d = (state_of(name) for name in "abcd")
    stream = ScriptedStream(StreamOpened(1.0, 15.0), a, more, b, c, rest, d)

    async def scenario() -> RecordingAgent:
        time = ManualTime()
        agent = RecordingAgent(tmp_path, stream, time)
        agent.watched = NewestState(clock=time, sleep=time.sleep)
        watching = asyncio.create_task(agent.watch_once())
        await until(lambda: len(agent.takes) == 1)
        more.set()
        time.advance(0.5)
        await settle()
        rest.set()
        time.advance(0.25)
        await settle()
        assert len(agent.takes) == 1, "a state taken within the window of the previous one"
        time.advance(0.25)
        async with asyncio.timeout(5):
            await watching
        return agent

    agent = asyncio.run(scenario())
    assert [(t, s.hash) for t, s in agent.takes] == [(0.0, a.hash), (1.0, d.hash)]
    assert agent.applied_hash == d.hash and agent.cache.load() == d
    assert sorted(p.name for p in (tmp_path / "resources").glob("*.yaml")) == ["rrm-d.yaml"]
    superseded = [r.getMessage() for r in caplog.records if "event=superseded" in r.getMessage()]
    assert len(superseded) == 2, superseded


def test_frames_are_read_while_a_state_is_applied_and_those_superseded_are_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A control plane that announces no window (older): no pacing, but an agent still busy applying reads
    on, and then takes only the newest state that came meanwhile, never an older one after it."""
    caplog.set_level(logging.INFO, logger="rrm.agent.pacing")
    later = asyncio.Event()
    a, b, c = (state_of(name) for name in "abc")
    stream = ScriptedStream(a, later, b, c)

    async def scenario() -> RecordingAgent:
        agent = RecordingAgent(tmp_path, stream, Clock())
        agent.applying.clear()  # the apply of `a` takes until the test says
        watching = asyncio.create_task(agent.watch_once())
        await until(lambda: len(agent.takes) == 1)
        later.set()
        await until(lambda: f"by={c.hash[:12]}" in caplog.text)  # read while `a` is still being applied
        agent.applying.set()
        async with asyncio.timeout(5):
            await watching
        return agent

    agent = asyncio.run(scenario())
    assert [s for _, s in agent.takes] == [a, c]
    assert agent.applied_hash == c.hash


def test_a_cut_stream_s_last_state_is_taken_before_the_cut_is_raised(tmp_path: Path) -> None:
    a, b = state_of("a"), state_of("b")
    cut = StreamCut("broke off", opened=True, delivered=True)
    stream = ScriptedStream(StreamOpened(0.0, 15.0), a, b, cut)

    async def scenario() -> RecordingAgent:
        agent = RecordingAgent(tmp_path, stream, Clock())
        with pytest.raises(StreamCut):
            async with asyncio.timeout(5):
                await agent.watch_once()
        return agent

    agent = asyncio.run(scenario())
    assert [s for _, s in agent.takes] == [b]
    assert agent.applied_hash == b.hash and agent.cache.load() == b


def test_a_stream_ended_by_the_director_leaves_its_connection_to_the_next_stream() -> None:
    """The end frame and the end of the response come together; the agent reads both, so it opens the next
    stream on the same connection instead of a new one per token lifetime."""
    ending = watch.end_frame("token-expired")
    answer = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    answer += b"".join(b"%x\r\n%s\r\n" % (len(frame), frame) for frame in (OPEN, ending)) + b"0\r\n\r\n"
    requests_per_connection: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests_per_connection.append(0)
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                requests_per_connection[-1] += 1
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def two_streams() -> list[list[StreamOpened | DesiredState]]:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = DirectorClient([f"http://127.0.0.1:{port}"], bearer=lambda renew=False, now=None: "jwt")
        try:
            async with asyncio.timeout(10):
                return [[s async for s in client.watch_desired(None, 5.0)] for _ in range(2)]
        finally:
            await client.close()
            server.close()

    assert asyncio.run(two_streams()) == [[StreamOpened(1.0, 15.0)]] * 2
    assert requests_per_connection == [2]
