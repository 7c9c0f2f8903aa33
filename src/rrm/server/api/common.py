"""What every admin route shares: bounded decoding of JSON bodies, the role checks and the write path (one
transaction off the event loop, then the fleet's memory brought up to date, so the next read already shows
the write)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from fastapi import Depends, HTTPException, Request, Response
from fastapi.routing import APIRoute
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.types import Scope

from rrm.core.bounded import DecodeError, decode_json
from rrm.server.apply import Conflict, InvalidInput
from rrm.server.auth import ROLE_ADMIN, bearer
from rrm.server.queries import read
from rrm.server.state import ServerState, server_state
from rrm.server.store_errors import store_failure_response
from rrm.store import Database

T = TypeVar("T")


class BoundedRequest(Request):
    """A request whose JSON body is decoded by `rrm.core.bounded`: 422 naming the field nested too deep
    (or the body, when it is not UTF-8 JSON), never a `RecursionError`."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                self._json = decode_json(await self.body())
            except DecodeError as exc:
                problem = {"loc": ["body", *exc.path], "msg": exc.message, "type": "value_error"}
                raise HTTPException(422, [problem]) from None
        return self._json


class BoundedRoute(APIRoute):
    """The route class of the admin routers: FastAPI decodes their bodies through `BoundedRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def bounded(request: Request) -> Response:
            return await handler(BoundedRequest(request.scope, request.receive, request._send))

        return bounded


async def reader(request: Request, state: ServerState = Depends(server_state)) -> str:
    """Async: a token whose grant is cached (every request of a token but one per `AdminAuth`'s freshness)
    costs no hop to a thread; only a database read takes one. The hop was a quarter of the event loop's
    work per admin write."""
    known, role = state.admin_auth.fresh_role(bearer(request))
    if not known:
        return await asyncio.to_thread(_read_role, request, state)
    return _granted(role)


def _read_role(request: Request, state: ServerState) -> str:
    return _granted(state.admin_auth.role(bearer(request)))


def _granted(role: str | None) -> str:
    if role is None:
        raise HTTPException(401, "invalid admin token", headers={"WWW-Authenticate": "Bearer"})
    return role


def signed_in_reader(request: Request, state: ServerState = Depends(server_state)) -> str:
    """An admin or viewer token, or else a signed-in dashboard session: a browser opening `/docs` or the
    event stream sends the session cookie, not a token."""
    if "authorization" in request.headers:
        return _read_role(request, state)
    role = state.sessions.role_of(request)
    if role is None:
        raise HTTPException(401, "sign in or send an admin token", headers={"WWW-Authenticate": "Bearer"})
    return role


async def writer(role: str = Depends(reader)) -> str:
    """Async: a dependency without I/O costs no hop to FastAPI's thread pool."""
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


def found_or_404(value: T | None, missing: str) -> T:
    """`value`, or a 404 saying what is missing."""
    if value is None:
        raise HTTPException(404, missing)
    return value


async def read_found(state: ServerState, work: Callable[[Session], T | None], missing: str) -> T:
    """A read whose None answer is a 404 saying what is missing."""
    return found_or_404(await read(state, work), missing)


def failure_response(exc: Exception, scope: Scope, db: Database) -> Response:
    """The answer to an exception of an endpoint served before the app (`AgentFastPath`, `ApplyFastPath`),
    as the app's exception handlers give it: an `HTTPException` (FastAPI's or Starlette's) as
    `{"detail": ...}` with its status and headers, a failing store as 503, anything else logged and 500."""
    if isinstance(exc, StarletteHTTPException):
        return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)
    if isinstance(exc, OperationalError):
        return store_failure_response(exc, db)
    logging.getLogger("rrm.server.api").error("%s %s failed", scope["method"], scope["path"], exc_info=exc)
    return PlainTextResponse("Internal Server Error", status_code=500)
