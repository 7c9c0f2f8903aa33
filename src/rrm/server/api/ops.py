"""Probes and metrics. Probes are open (kubelets call them); metrics need a token like the API."""

from __future__ import annotations

import asyncio
import contextlib
import time

from fastapi import APIRouter, Depends, HTTPException, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from rrm.server.api.common import reader
from rrm.server.metrics import collected
from rrm.server.state import ServerState, server_state

router = APIRouter(tags=["operations"])
PROBE_AFTER_SECONDS = 10.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: ServerState = Depends(server_state)) -> dict[str, str]:
    """Ready when the database answers and takes writes: after a write failed for lack of space, not ready
    until one gets through again. With no failure for `PROBE_AFTER_SECONDS` this probe tries a small write
    itself, so that a replica nobody writes to (it is not ready) recovers; a small write may pass where the
    others still fail, so it waits for such a quiet spell rather than overrule recent failures."""
    if not state.ready:
        raise HTTPException(503, "starting")
    try:
        await asyncio.to_thread(state.db.ping)
    except Exception as exc:
        raise HTTPException(503, f"database unreachable: {type(exc).__name__}") from exc
    db = state.db
    if db.out_of_space is not None and time.monotonic() - db.out_of_space_at >= PROBE_AFTER_SECONDS:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(db.probe_write)
    failure = db.out_of_space
    if failure is not None:
        raise HTTPException(503, f"store out of space, writes fail: {failure}")
    return {"status": "ready"}


@router.get("/metrics", dependencies=[Depends(reader)])
async def metrics() -> Response:
    return Response(generate_latest(collected()), media_type=CONTENT_TYPE_LATEST)
