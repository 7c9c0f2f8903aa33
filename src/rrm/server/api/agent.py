"""The agent API. The runtime is always the one whose key signed the request; no path names a runtime."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from sqlalchemy.orm import Session
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from rrm.server.api.common import BoundedRoute, failure_response
from rrm.server.api.watch import watch_desired_state
from rrm.server.auth import PAIRING_TOKEN_PREFIX, bearer, bearer_token, token_hash
from rrm.server.fleet import RuntimeEntry
from rrm.server.limits import read_body
from rrm.server.metrics import DESIRED_STATE_RESPONSES, STATUS_REPORTS
from rrm.server.rotation import (
    CHALLENGE_SECONDS,
    KEY_PURPOSE,
    ChallengeRefused,
    check_challenge,
    issue_challenge,
)
from rrm.server.state import ServerState, server_state, state_of, utcnow
from rrm.store import repositories as repo
from rrm.store.tables import RuntimeKey
from rrm.wire import protocol
from rrm.wire.agent_auth import key_id, load_public_key, rotation_proof_is_valid

log = logging.getLogger("rrm.server.agent_api")
T = TypeVar("T")
JSON = "application/json"
router = APIRouter(prefix="/agent/v1", tags=["agent"], route_class=BoundedRoute)


async def calling_runtime(request: Request) -> RuntimeEntry:
    """The runtime whose key signed the request (a dependency, and called by the plain endpoints)."""
    return await state_of(request).agent_auth.runtime(bearer(request))


def _documented(
    request: type[Any] | None,
    answer: type[Any] | None,
    status: int = 200,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The OpenAPI description of a route's request and answer bodies, from the protocol's Structs."""
    answered: dict[str, Any] = {"description": "OK"}
    if answer is not None:
        answered["content"] = {JSON: {"schema": protocol.schema(answer)}}
    openapi_extra = dict(extra or {})
    if request is not None:
        openapi_extra["requestBody"] = {
            "required": True,
            "content": {JSON: {"schema": protocol.schema(request)}},
        }
        openapi_extra.setdefault("responses", {})["422"] = {"description": "detail[].loc names the field"}
    return {"status_code": status, "responses": {status: answered}, "openapi_extra": openapi_extra}


async def body_of(request: Request, kind: type[T]) -> T:
    """The JSON body as `kind`: 422 naming the field if it is nested too deep (`rrm.core.bounded`, whose
    `request.json()` says where) or not what the protocol allows (which also refuses lone surrogates)."""
    await request.json()
    try:
        return protocol.decode(kind, await request.body())
    except protocol.WireError as exc:
        raise HTTPException(422, [_problem(exc)]) from None


def _problem(exc: protocol.WireError) -> dict[str, Any]:
    return {"loc": ["body", *exc.path], "msg": exc.message, "type": "value_error"}


def _answer(body: object, status: int = 200) -> Response:
    return Response(protocol.dumps(body), status, media_type=JSON)


@router.post("/pair", **_documented(protocol.PairRequest, protocol.PairResponse, 201))
async def pair(request: Request, state: ServerState = Depends(server_state)) -> Response:
    body = await body_of(request, protocol.PairRequest)
    try:
        load_public_key(body.public_key)
        kid = key_id(body.public_key)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    if not body.token.startswith(PAIRING_TOKEN_PREFIX):
        raise HTTPException(401, "invalid pairing token")

    def write() -> tuple[str, str, str] | None:
        now = utcnow()
        with state.db.write() as session:
            runtime_id = repo.consume_pairing_token(session, token_hash(body.token), now)
            if runtime_id is None:
                return None
            row = repo.runtime_by_id(session, runtime_id)
            if row is None:
                return None
            _refuse_key_of_another_runtime(session, kid, runtime_id)
            repo.replace_runtime_key(session, runtime_id, kid, body.public_key, now)
            repo.record_change(session, repo.ENTITY_RUNTIME, runtime_id, now)
            repo.record_event(
                session,
                "RuntimePaired",
                f"runtime/{row.name}",
                f"agent {body.agent_version or '?'} paired, key {kid}",
                now,
            )
            return row.id, row.name, row.kind

    paired = await asyncio.to_thread(write)
    if paired is None:
        raise HTTPException(401, "pairing token unknown, already used or expired")
    runtime_id, name, kind = paired
    state.fleet.set_key(runtime_id, kid, body.public_key)
    await state.fleet.catch_up()
    log.info("runtime %s paired (key %s)", name, kid)
    answer = protocol.PairResponse(runtime_id=runtime_id, runtime_name=name, kind=kind, key_id=kid)  # type: ignore[arg-type]
    return _answer(answer, 201)


def _refuse_key_of_another_runtime(session: Session, kid: str, runtime_id: str) -> None:
    """409 (rolling the transaction back, a pairing token's use included) when another runtime holds the key:
    a public key identifies one runtime."""
    holder = session.get(RuntimeKey, kid)
    if holder is not None and holder.runtime_id != runtime_id:
        raise HTTPException(409, f"public_key: key {kid} is already another runtime's; make a new key pair")


async def desired_state(request: Request) -> Response:
    """`GET /agent/v1/desired-state?wait=S`, `If-None-Match`: the state, or 304 when it is still that one
    after at most S seconds. Every agent holds one of these at all times, so it is a plain Starlette
    endpoint: FastAPI's dependency and parameter machinery would cost more than the work itself."""
    state, runtime = state_of(request), await calling_runtime(request)
    wait = _wait_seconds(request.query_params.get("wait", "0"))
    state.status_writer.touch(runtime.id)
    etag = request.headers.get("if-none-match")
    delivery = await state.fleet.wait_for_change(runtime.id, etag, min(wait, state.settings.max_wait_seconds))
    if delivery is None:
        DESIRED_STATE_RESPONSES.labels("304").inc()
        return Response(status_code=304, headers={"ETag": etag or ""})
    DESIRED_STATE_RESPONSES.labels("200").inc()
    return Response(content=delivery.body, media_type="application/json", headers={"ETag": delivery.etag})


def _wait_seconds(value: str) -> float:
    try:
        wait = float(value)
    except ValueError:
        wait = math.nan
    if not wait >= 0 or math.isinf(wait):
        raise HTTPException(
            422, [{"loc": ["query", "wait"], "msg": "must be a number of seconds, 0 or more"}]
        )
    return wait


STATUS_PATH = f"{router.prefix}/status"


class StatusReports:
    """`PUT /agent/v1/status` with a `StatusReport`: 204 once it is committed.

    Every agent sends one after every change and on every heartbeat, so it is a bare ASGI app, served by
    `AgentFastPath` before the request enters FastAPI: the token taken from the raw headers (a verified
    token is a dictionary lookup), the body decoded once by msgspec and handed to the status writer as
    received (its fingerprint), no Request or Response object. Errors are raised as the other endpoints
    raise them; whoever serves it (`AgentFastPath`, or the app for a request that reaches it) answers them.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state: ServerState = scope["app"].state.rrm
        runtime = await state.agent_auth.runtime(_bearer_of(scope))
        body = await read_body(receive)
        if body is None:
            return  # the agent is gone: nothing stored, nobody to answer
        try:
            report = protocol.decode(protocol.StatusReport, body)
        except protocol.WireError as exc:
            raise HTTPException(422, [_problem(exc)]) from None
        await state.status_writer.submit(runtime.id, runtime.name, report, body)
        STATUS_REPORTS.inc()
        await send({"type": "http.response.start", "status": 204, "headers": []})  # as Starlette's 204
        await send({"type": "http.response.body", "body": b""})


def _bearer_of(scope: Scope) -> str:
    """The bearer token in the raw headers (the first `authorization`, as Starlette's headers read it)."""
    value = next((v for name, v in scope["headers"] if name == b"authorization"), b"")
    return bearer_token(value.decode("latin-1"))


report_status = StatusReports()

# the plain endpoints, added to the app beside `router` by rrm.server.app, and served ahead of the app by
# `AgentFastPath`
PLAIN_ROUTES = [
    Route(f"{router.prefix}/desired-state", desired_state, methods=["GET"]),
    Route(STATUS_PATH, report_status, methods=["PUT"]),
    Route(f"{router.prefix}/desired-state/watch", watch_desired_state, methods=["GET"]),
]


class DescribedOnly(BoundedRoute):
    """A plain endpoint's entry in `/openapi.json`; the route never matches a request (`PLAIN_ROUTES` and
    `AgentFastPath` serve it)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        return Match.NONE, {}


_WAIT = {"name": "wait", "in": "query", "schema": {"type": "number", "minimum": 0, "default": 0}}
_ETAG = {"name": "If-None-Match", "in": "header", "schema": {"type": "string"}}
_NOT_MODIFIED = {"304": {"description": "still the state in If-None-Match after `wait` seconds"}}
router.add_api_route(
    "/desired-state",
    desired_state,
    methods=["GET"],
    route_class_override=DescribedOnly,
    summary="The runtime's desired state, or 304 when it is still the one in If-None-Match after `wait` s",
    **_documented(
        None, protocol.DesiredState, extra={"parameters": [_WAIT, _ETAG], "responses": _NOT_MODIFIED}
    ),
)
router.add_api_route(
    "/desired-state/watch",
    watch_desired_state,
    methods=["GET"],
    route_class_override=DescribedOnly,
    summary="The runtime's desired states as a stream of server-sent events (docs/api.md, Watch stream)",
    **_documented(None, None, extra={"parameters": [_ETAG]}),
)


async def _status_described(request: Request) -> Response:
    """What `/openapi.json` describes `PUT /agent/v1/status` by; never called (`StatusReports` serves it)."""
    raise HTTPException(405)


router.add_api_route(
    "/status",
    _status_described,
    methods=["PUT"],
    route_class_override=DescribedOnly,
    name="report_status",
    description="A `StatusReport`, answered once it is committed; every agent's heartbeat too.",
    summary="Report the applied state (also the heartbeat); 204 once it is committed",
    **_documented(protocol.StatusReport, None, 204),
)


class AgentFastPath:
    """Serves the plain agent endpoints before the request enters FastAPI, and everything else through it.

    Every agent holds a long-poll open at all times and re-arms it every wait interval, so in a large idle
    fleet the app's middleware stack and its route matching (the plain routes come after every other route)
    would be most of the work; each resumption of a waiting long-poll would walk that stack again.
    Errors are answered as the app would answer them: an `HTTPException` as `{"detail": ...}` with its
    status and headers, a failing store as 503 (`rrm.server.store_errors`), anything else logged and
    answered 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._endpoints: dict[tuple[str, str], Callable[[Request], Awaitable[Response]]] = {
            (route.path, method): route.endpoint
            for route in PLAIN_ROUTES
            if route.endpoint is not report_status
            for method in route.methods or ()
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == STATUS_PATH and scope["method"] == "PUT":
            scope["app"] = self.app  # where the endpoints find the server state
            try:
                await report_status(scope, receive, send)
            except Exception as exc:
                await failure_response(exc, scope, scope["app"].state.rrm.db)(scope, receive, send)
            return
        endpoint = self._endpoints.get((scope["path"], scope["method"]))
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        scope["app"] = self.app
        try:
            response = await endpoint(Request(scope, receive, send))
        except Exception as exc:
            response = failure_response(exc, scope, scope["app"].state.rrm.db)
        await response(scope, receive, send)


@router.post("/rotate/challenge", **_documented(None, protocol.RotateChallenge))
async def rotation_challenge(
    runtime: RuntimeEntry = Depends(calling_runtime), state: ServerState = Depends(server_state)
) -> Response:
    """A nonce to sign with the current key over the new one: a bearer token alone cannot replace the key."""
    nonce = issue_challenge(state.box.derive_key(KEY_PURPOSE), runtime.id)
    return _answer(protocol.RotateChallenge(nonce=nonce, expires_in=CHALLENGE_SECONDS))


@router.post("/rotate", **_documented(protocol.RotateRequest, protocol.RotateResponse))
async def rotate(
    request: Request,
    runtime: RuntimeEntry = Depends(calling_runtime),
    state: ServerState = Depends(server_state),
) -> Response:
    body = await body_of(request, protocol.RotateRequest)
    try:
        kid = key_id(body.public_key)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    try:
        check_challenge(state.box.derive_key(KEY_PURPOSE), body.nonce, runtime.id)
    except (ValueError, TypeError) as exc:  # ChallengeRefused, or a payload that does not decode
        detail = str(exc) if isinstance(exc, ChallengeRefused) else "nonce: malformed"
        raise HTTPException(403, detail) from None

    def write() -> None:
        now = utcnow()
        with state.db.write() as session:
            current = repo.keys_of(session, runtime.id)
            if not any(_proves(row, body, runtime.id) for row in current):
                raise HTTPException(403, "proof: not the current key's signature over this rotation")
            if kid in {row.key_id for row in current}:
                raise HTTPException(409, "public_key: this is the key in force already")
            _refuse_key_of_another_runtime(session, kid, runtime.id)
            repo.replace_runtime_key(session, runtime.id, kid, body.public_key, now)
            repo.record_change(session, repo.ENTITY_RUNTIME, runtime.id, now)
            repo.record_event(session, "RuntimeKeyRotated", f"runtime/{runtime.name}", f"new key {kid}", now)

    await asyncio.to_thread(write)
    state.fleet.set_key(runtime.id, kid, body.public_key)
    return _answer(protocol.RotateResponse(key_id=kid))


def _proves(current: RuntimeKey, body: protocol.RotateRequest, runtime_id: str) -> bool:
    public_key = load_public_key(current.public_key)
    return rotation_proof_is_valid(public_key, body.proof, runtime_id, body.nonce, body.public_key)
