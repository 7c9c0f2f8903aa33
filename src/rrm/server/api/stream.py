"""`GET /api/v1/events/stream`: the events table as server-sent events, for `rrm get events --watch` and
the dashboard. An admin or viewer token (Bearer) or a dashboard session may read it."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse

from rrm.server.api.common import signed_in_reader
from rrm.server.state import ServerState, server_state

RETRY_MILLISECONDS = 2000

router = APIRouter(prefix="/api/v1", tags=["admin"])


async def _start(state: ServerState, after: int | None, last_event_id: str | None) -> int:
    """Where to resume: the browser's Last-Event-ID after a reconnect, else `after`, else the newest event
    now (fixed before the answer starts, so nothing recorded after the request is missed)."""
    if last_event_id is not None and last_event_id.strip().isdigit():
        return int(last_event_id)
    return after if after is not None else await state.events.latest_id()


@router.get("/events/stream", dependencies=[Depends(signed_in_reader)], response_class=StreamingResponse)
async def event_stream(
    request: Request,
    after: int | None = Query(None, ge=0, description="send events after this id; default: from now on"),
    last_event_id: str | None = Header(None),
    state: ServerState = Depends(server_state),
) -> StreamingResponse:
    start = await _start(state, after, last_event_id)

    async def body() -> AsyncIterator[str]:
        yield f"retry: {RETRY_MILLISECONDS}\n\n"
        async with contextlib.aclosing(state.events.subscribe(start)) as batches:
            async for batch in batches:
                if await request.is_disconnected():
                    return
                if not batch:
                    yield ": keepalive\n\n"
                    continue
                yield "".join(f"id: {e['id']}\ndata: {json.dumps(e)}\n\n" for e in batch)

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
