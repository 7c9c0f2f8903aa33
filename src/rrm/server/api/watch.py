"""`GET /agent/v1/desired-state/watch`: the runtime's desired states pushed on one streamed response
(frames: `rrm.wire.watch`). Authenticated once when it opens; it ends when that token expires, when the
runtime is deleted or its key revoked, or when the server stops. Served by `AgentFastPath`: no middleware
runs per frame, and a waiting stream holds no database connection and no thread, only an event."""

from __future__ import annotations

import asyncio
import time

from fastapi import HTTPException, Request, Response
from starlette.types import Receive, Scope, Send

from rrm.server.auth import bearer
from rrm.server.metrics import WATCH_FRAMES, WATCH_STREAMS
from rrm.server.state import ServerState, state_of
from rrm.wire.agent_auth import EXPIRED_TOKEN_MESSAGE
from rrm.wire.watch import KEEP_ALIVE_FRAME, MEDIA_TYPE, end_frame, open_frame

# each kind's child of the frame counter, looked up once rather than per frame
_STATES_WRITTEN, _KEEP_ALIVES_WRITTEN, _ENDS_WRITTEN = (
    WATCH_FRAMES.labels(kind) for kind in ("state", "keep-alive", "end")
)
_HEADERS = [
    (b"content-type", MEDIA_TYPE.encode()),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),  # nginx: pass each frame on at once, whatever proxy_buffering says
]


async def watch_desired_state(request: Request) -> Response:
    """`If-None-Match`: the state the agent holds; a different current state is its first state frame."""
    state = state_of(request)
    token = bearer(request)
    runtime = await state.agent_auth.runtime(token)
    verified = state.agent_auth.verified(token)
    expires_in = (verified[1] - time.time()) if verified is not None else 0.0
    if verified is None or expires_in <= 0:  # accepted within the verifier's leeway: nothing left to stream
        raise HTTPException(401, f"invalid runtime token: {EXPIRED_TOKEN_MESSAGE}")
    etag = request.headers.get("if-none-match")
    return WatchResponse(state, runtime.id, verified[0], etag, expires_in)


class WatchResponse(Response):
    """Writes the stream's frames until it ends or the agent goes away, whichever comes first."""

    def __init__(
        self, state: ServerState, runtime_id: str, key_id: str, etag: str | None, expires_in: float
    ) -> None:
        super().__init__(status_code=200)
        self._state, self._runtime_id, self._key_id = state, runtime_id, key_id
        self._etag, self._expires_in = etag, expires_in
        self._keep_alive = state.settings.watch_keep_alive_seconds
        self._window = state.settings.delivery_window_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The frames are written here rather than in a coroutine of its own, and their generator closed
        without an async context manager: each object an idle stream keeps is a few hundred bytes, times
        every agent. The end frame ends the response in the same write, so the agent finds the response
        complete with it and opens its next stream on the same connection."""
        await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
        WATCH_STREAMS.inc()
        writing = asyncio.current_task()
        assert writing is not None
        gone = asyncio.create_task(_cancel_when_gone(receive, writing))
        fleet, touch, runtime_id = self._state.fleet, self._state.status_writer.touch, self._runtime_id
        until = time.monotonic() + self._expires_in
        frames = fleet.watch(runtime_id, self._etag, until, self._keep_alive)
        try:
            opening = open_frame(self._keep_alive, self._expires_in, self._window)
            await send({"type": "http.response.body", "body": opening, "more_body": True})
            async for frame in frames:
                if fleet.key(self._key_id) is None:  # revoked (or rotated away) meanwhile
                    frame = end_frame("runtime-gone")
                touch(runtime_id)  # contact, as each long-poll counts
                ending = frame.startswith(b"event: end")
                await send({"type": "http.response.body", "body": frame, "more_body": not ending})
                if frame is KEEP_ALIVE_FRAME:
                    _KEEP_ALIVES_WRITTEN.inc()
                elif ending:
                    _ENDS_WRITTEN.inc()
                    break
                else:
                    _STATES_WRITTEN.inc()
            else:  # the frames ran out without an end frame
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not gone.done():  # cancelled from outside (the server stops): not ours to swallow
                raise
            writing.uncancel()  # the agent went away: the stream just ends
        finally:
            WATCH_STREAMS.dec()
            gone.cancel()
            await frames.aclose()  # at once, not when the garbage collector finds it (an early end)


async def _cancel_when_gone(receive: Receive, writing: asyncio.Task[None]) -> None:
    """Cancels the stream's writer once the agent has gone (writes to a closed connection are dropped
    silently, so only the receiving side notices). This runs only while the writer waits, so the
    cancellation always lands inside the writer's `try`."""
    while (await receive())["type"] != "http.disconnect":
        pass
    writing.cancel()
