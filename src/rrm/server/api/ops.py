"""Probes and metrics. Probes are open (kubelets call them); metrics need a token like the API."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, HTTPException, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from rrm.server.api.common import reader
from rrm.server.metrics import REGISTRY
from rrm.server.state import ServerState, server_state

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: ServerState = Depends(server_state)) -> dict[str, str]:
    if not state.ready:
        raise HTTPException(503, "starting")
    try:
        await asyncio.to_thread(state.db.ping)
    except Exception as exc:
        raise HTTPException(503, f"database unreachable: {type(exc).__name__}") from exc
    return {"status": "ready"}


@router.get("/metrics", dependencies=[Depends(reader)])
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
