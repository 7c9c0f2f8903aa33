"""How a request is answered when the store fails under it: a JSON 503, never a bare 500 and a dropped
connection. Out of space is said as such (SQLite: "database or disk is full", PostgreSQL: disk_full); the
transaction was rolled back, so nothing of the request was stored and it can be sent again."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from rrm.server.state import state_of
from rrm.store.database import Database, out_of_space

log = logging.getLogger("rrm.server.store")
RETRY_AFTER_SECONDS = 30


def store_failure_response(exc: Exception, db: Database) -> JSONResponse:
    """503 for a database error (`sqlalchemy.exc.OperationalError`): out of space (which `/readyz` then
    reports), or unavailable."""
    db.note_failure(exc)
    if out_of_space(exc):
        log.error("store out of space: %s", exc)
        detail = "the store is out of space: nothing of this request was stored; retry once space is freed"
    else:
        log.error("store unavailable: %s", exc)
        detail = "the store is unavailable: nothing of this request was stored; retry later"
    return JSONResponse({"detail": detail}, 503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


async def store_failure_handler(request: Request, exc: Exception) -> Response:
    """The app's exception handler for `sqlalchemy.exc.OperationalError`."""
    return store_failure_response(exc, state_of(request).db)
