"""`GET /agent/v1/applications`: the applications the calling runtime can see, page by page.

The runtime is the one whose key signed the request. Pages follow application names; the cursor is opaque
to the agent, and there is no cap on the total.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query

from rrm.core.bounded import decode_json
from rrm.server.api.agent import calling_runtime
from rrm.server.compass.views import application_view
from rrm.server.fleet import RuntimeEntry
from rrm.server.state import ServerState, server_state

DEFAULT_PAGE = 100
MAX_PAGE = 500

router = APIRouter(prefix="/agent/v1", tags=["agent"])


def encode_cursor(after: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        after = decode_json(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))["after"]
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:  # DecodeError is a ValueError
        raise HTTPException(400, "invalid cursor: pass back the next_cursor of the previous page") from exc
    if not isinstance(after, str):
        raise HTTPException(400, "invalid cursor: pass back the next_cursor of the previous page")
    return after


@router.get("/applications")
async def applications(
    cursor: str | None = None,
    limit: int = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE),
    runtime: RuntimeEntry = Depends(calling_runtime),
    state: ServerState = Depends(server_state),
) -> dict[str, Any]:
    """`{"items": [application], "next_cursor": str | null}`; null when this is the last page."""
    registry = state.fleet.registry
    scenarios = registry.scenarios_of(runtime.id, dict(runtime.labels))
    after = decode_cursor(cursor) if cursor else None
    remaining = [app for app in registry.visible(scenarios) if after is None or app.name > after]
    page = remaining[:limit]
    more = len(remaining) > limit
    return {
        "items": [application_view(app, scenarios) for app in page],
        "next_cursor": encode_cursor(page[-1].name) if more else None,
    }
