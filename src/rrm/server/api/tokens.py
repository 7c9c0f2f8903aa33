"""`/api/v1/tokens`: admin and viewer tokens are created (optionally expiring), listed and revoked, by
admins only. A token is shown once, at creation; afterwards it is named by its id, the first hex digits of
its sha256, which is all the control plane keeps of it."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from rrm.server.api.common import BoundedRoute, write, writer
from rrm.server.apply import Conflict
from rrm.server.auth import ADMIN_TOKEN_PREFIX, ROLE_ADMIN, new_token, token_hash
from rrm.server.metrics import ADMIN_WRITES
from rrm.server.queries import read
from rrm.server.state import ServerState, server_state, utcnow
from rrm.store import repositories as repo
from rrm.store import tokens as token_store
from rrm.store.tables import AdminToken

MAX_TOKEN_TTL = 366 * 24 * 3600
MIN_ID_LENGTH = 8

router = APIRouter(prefix="/api/v1", tags=["admin"], dependencies=[Depends(writer)], route_class=BoundedRoute)


class CreateToken(BaseModel):
    role: Literal["admin", "viewer"]
    description: str = Field("", max_length=200)
    ttl_seconds: int | None = Field(None, ge=1, le=MAX_TOKEN_TTL, description="lifetime; none: no expiry")


def token_view(row: AdminToken, now: datetime) -> dict[str, Any]:
    return {
        "id": token_store.token_id(row.token_hash),
        "role": row.role,
        "description": row.description,
        "created_at": row.created_at.isoformat(),
        "expires_at": row.expires_at.isoformat() if row.expires_at else None,
        "expired": row.expires_at is not None and row.expires_at <= now,
    }


@router.post("/tokens", status_code=201)
async def create_token(body: CreateToken, state: ServerState = Depends(server_state)) -> dict[str, Any]:
    """A new admin or viewer token, shown this once; only its hash is stored."""
    token = new_token(ADMIN_TOKEN_PREFIX)
    hashed = token_hash(token)
    now = utcnow()
    expires = now + timedelta(seconds=body.ttl_seconds) if body.ttl_seconds else None

    def work(session: Session) -> dict[str, Any]:
        row = token_store.add_token(session, hashed, body.role, body.description, now, expires)
        message = f"role {body.role}" + (f": {body.description}" if body.description else "")
        repo.record_event(session, "TokenCreated", f"token/{token_store.token_id(hashed)}", message, now)
        return {"token": token, **token_view(row, now)}

    created = await write(state, work)
    state.admin_auth.remember(hashed, token_store.Grant(body.role, expires))
    ADMIN_WRITES.labels("token", "created").inc()
    return created


@router.get("/tokens")
async def list_tokens(state: ServerState = Depends(server_state)) -> list[dict[str, Any]]:
    """Every token by id, role, description and expiry; never the token."""
    now = utcnow()
    return await read(state, lambda s: [token_view(row, now) for row in token_store.all_tokens(s)])


TOKEN_ID = Path(
    pattern=f"^[0-9a-f]{{{MIN_ID_LENGTH},64}}$",
    description=f"the token's id as listed (at least {MIN_ID_LENGTH} of its hex digits)",
)


@router.delete("/tokens/{token_id}")
async def revoke_token(
    token_id: str = TOKEN_ID, state: ServerState = Depends(server_state)
) -> dict[str, Any]:
    """The token stops working at once on this replica and within seconds on the others; the dashboard
    sessions signed in with it end at once everywhere. The last admin token that has not expired stays."""
    now = utcnow()

    def work(session: Session) -> tuple[str, dict[str, Any]]:
        rows = token_store.tokens_with_id(session, token_id)
        if not rows:
            raise HTTPException(404, f"token {token_id!r} not found")
        if len(rows) > 1:
            raise Conflict(f"{len(rows)} tokens have ids starting with {token_id!r}: give more digits")
        row = rows[0]
        if row.role == ROLE_ADMIN and not token_store.other_live_admin_tokens(session, row.token_hash, now):
            raise Conflict("this is the last admin token: create another before revoking it")
        token_store.delete_token(session, row.token_hash)
        view = token_view(row, now)
        repo.record_event(session, "TokenRevoked", f"token/{view['id']}", f"role {row.role}", now)
        return row.token_hash, view

    hashed, revoked = await write(state, work)
    state.admin_auth.remember(hashed, None)
    ADMIN_WRITES.labels("token", "revoked").inc()
    return revoked
