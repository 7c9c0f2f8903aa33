"""What every admin route shares: the role checks and the write path (one transaction off the event loop,
then the fleet's memory brought up to date, so the next read already shows the write)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

from rrm.server.apply import Conflict, InvalidInput
from rrm.server.auth import ROLE_ADMIN, bearer
from rrm.server.state import ServerState, server_state

T = TypeVar("T")


def reader(request: Request, state: ServerState = Depends(server_state)) -> str:
    role = state.admin_auth.role(bearer(request))
    if role is None:
        raise HTTPException(401, "invalid admin token", headers={"WWW-Authenticate": "Bearer"})
    return role


def writer(role: str = Depends(reader)) -> str:
    if role != ROLE_ADMIN:
        raise HTTPException(403, "this token may only read")
    return role


async def write(state: ServerState, work: Callable[[Session], T]) -> T:
    """Run `work` in a write transaction off the event loop (committed together with the writes that arrive
    beside it), then bring the fleet's memory up to date; answers only after the commit."""
    try:
        return await state.writes.submit(work)
    except InvalidInput as exc:
        raise HTTPException(422, [p.as_dict() for p in exc.problems]) from exc
    except Conflict as exc:
        raise HTTPException(409, str(exc)) from exc
