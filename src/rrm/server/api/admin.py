"""The admin API used by the CLI and the dashboard. Writers commit, then catch the fleet up, so the next
read already shows the write (and the long-polls of the runtimes concerned are woken)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.orm import Session
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from rrm.core.bounded import DecodeError, decode_json
from rrm.core.labels import validate_labels
from rrm.core.names import dns1123_label_error
from rrm.core.resources import secret_refs
from rrm.core.scenarios import DEFAULT_SCENARIO
from rrm.core.selectors import SelectorError, parse_selector
from rrm.server import queries
from rrm.server.api.common import (
    BoundedRoute,
    failure_response,
    found_or_404,
    read_found,
    reader,
    write,
    writer,
)
from rrm.server.apply import Conflict, InvalidInput, Problem, revalidate_for_rollback
from rrm.server.auth import PAIRING_TOKEN_PREFIX, ROLE_ADMIN, bearer_token, new_token, token_hash
from rrm.server.compass import views as compass_views
from rrm.server.compass.apply import apply_all
from rrm.server.compass.labels import check_runtime_labels, check_runtime_scenarios
from rrm.server.limits import read_body, replay_body
from rrm.server.metrics import ADMIN_WRITES
from rrm.server.queries import read
from rrm.server.registration import add_runtime
from rrm.server.state import ServerState, server_state, utcnow
from rrm.server.writes import Discard
from rrm.store import compass as compass_store
from rrm.store import repositories as repo
from rrm.store.tables import Runtime
from rrm.wire.protocol import RUNTIME_KINDS, dumps

T = TypeVar("T")
MAX_TOKEN_TTL = 30 * 24 * 3600


router = APIRouter(prefix="/api/v1", tags=["admin"], dependencies=[Depends(reader)], route_class=BoundedRoute)


def _runtime_or_404(session: Session, name: str) -> Runtime:
    return found_or_404(repo.runtime_by_name(session, name), f"runtime {name!r} not found")


# runtimes ---------------------------------------------------------------------------------------------


class RegisterRuntime(BaseModel):
    name: str
    kind: str
    labels: dict[str, str] = {}
    token_ttl_seconds: int = Field(3600, ge=1, le=MAX_TOKEN_TTL)
    scenarios: list[str] = Field(default_factory=lambda: [DEFAULT_SCENARIO])  # as applications


class IssueToken(BaseModel):
    ttl_seconds: int = Field(3600, ge=1, le=MAX_TOKEN_TTL)


class LabelChange(BaseModel):
    set: dict[str, str] = {}
    remove: list[str] = []


def _issue_token(session: Session, row: Runtime, ttl: int) -> dict[str, Any]:
    now = utcnow()
    token = new_token(PAIRING_TOKEN_PREFIX)
    expires = now + timedelta(seconds=ttl)
    repo.add_pairing_token(session, row.id, token_hash(token), expires, now)
    repo.record_event(
        session, "PairingTokenIssued", f"runtime/{row.name}", f"expires {expires.isoformat()}", now
    )
    return {"pairing_token": token, "expires_at": expires.isoformat()}


@router.get("/runtimes")
async def list_runtimes(
    selector: str | None = None, state: ServerState = Depends(server_state)
) -> list[dict[str, Any]]:
    try:
        parsed = parse_selector(selector) if selector else None
    except SelectorError as exc:
        raise HTTPException(422, [Problem(None, "", "", "selector", str(exc)).as_dict()]) from exc

    return await read(state, lambda session: queries.runtimes(state, session, parsed))


@router.post("/runtimes", status_code=201, dependencies=[Depends(writer)])
async def register_runtime(
    body: RegisterRuntime, state: ServerState = Depends(server_state)
) -> dict[str, Any]:
    problems = []
    if (error := dns1123_label_error(body.name)) is not None:
        problems.append(Problem(None, "Runtime", body.name, "name", error))
    if body.kind not in RUNTIME_KINDS:
        problems.append(
            Problem(None, "Runtime", body.name, "kind", f"must be one of {', '.join(RUNTIME_KINDS)}")
        )
    problems += [Problem(None, "Runtime", body.name, f, m) for f, m in validate_labels(body.labels)]
    if problems:
        raise HTTPException(422, [p.as_dict() for p in problems])

    def work(session: Session) -> tuple[Runtime, dict[str, Any]]:
        if repo.runtime_by_name(session, body.name) is not None:
            raise Conflict(f"runtime {body.name!r} already exists")
        check_runtime_labels(session, body.name, body.labels)
        check_runtime_scenarios(session, body.name, body.scenarios)
        scenarios = ", ".join(body.scenarios) or "none"
        row = add_runtime(
            session, body.name, body.kind, body.labels, body.scenarios, utcnow(), f"scenarios {scenarios}"
        )
        return row, _issue_token(session, row, body.token_ttl_seconds)

    row, token = await write(state, work)
    ADMIN_WRITES.labels("runtime", "created").inc()
    view = await read(state, lambda s: queries.runtime_views(state, s, [row])[0])
    entry = compass_views.runtime_named(state.fleet, row.name)
    scenarios = compass_views.runtime_scenarios_view(state.fleet, entry) if entry else None
    return {"runtime": view, "scenarios": scenarios, **token}


@router.get("/runtimes/{name}")
async def get_runtime(name: str, state: ServerState = Depends(server_state)) -> dict[str, Any]:
    return await read_found(state, lambda s: queries.runtime(state, s, name), f"runtime {name!r} not found")


@router.delete("/runtimes/{name}", status_code=204, dependencies=[Depends(writer)])
async def delete_runtime(name: str, state: ServerState = Depends(server_state)) -> Response:
    def work(session: Session) -> None:
        row = _runtime_or_404(session, name)
        now = utcnow()
        session.delete(row)
        repo.record_change(session, repo.ENTITY_RUNTIME, row.id, now)
        repo.record_event(session, "RuntimeDeleted", f"runtime/{name}", "deleted", now)
        state.fleet.forget_keys(row.id)

    await write(state, work)
    ADMIN_WRITES.labels("runtime", "deleted").inc()
    return Response(status_code=204)


@router.patch("/runtimes/{name}/labels", dependencies=[Depends(writer)])
async def label_runtime(
    name: str, body: LabelChange, state: ServerState = Depends(server_state)
) -> dict[str, Any]:
    problems = validate_labels(body.set)
    if problems:
        raise HTTPException(422, [Problem(None, "Runtime", name, f, m).as_dict() for f, m in problems])

    def work(session: Session) -> Runtime:
        row = _runtime_or_404(session, name)
        labels = {k: v for k, v in row.labels.items() if k not in body.remove}
        labels.update(body.set)
        if labels != row.labels:
            check_runtime_labels(session, name, labels)
            now = utcnow()
            row.labels, row.updated_at = labels, now
            repo.record_change(session, repo.ENTITY_RUNTIME, row.id, now)
            repo.record_event(
                session,
                "RuntimeLabelled",
                f"runtime/{name}",
                ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "no labels",
                now,
            )
        return row

    row = await write(state, work)
    return await read(state, lambda s: queries.runtime_views(state, s, [row])[0])


@router.post("/runtimes/{name}/token", status_code=201, dependencies=[Depends(writer)])
async def issue_token(
    name: str, body: IssueToken, state: ServerState = Depends(server_state)
) -> dict[str, Any]:
    return await write(state, lambda s: _issue_token(s, _runtime_or_404(s, name), body.ttl_seconds))


@router.post("/runtimes/{name}/revoke", dependencies=[Depends(writer)])
async def revoke_runtime(name: str, state: ServerState = Depends(server_state)) -> dict[str, Any]:
    def work(session: Session) -> Runtime:
        row = _runtime_or_404(session, name)
        now = utcnow()
        repo.delete_runtime_keys(session, row.id)
        repo.delete_pairing_tokens(session, row.id)
        compass_store.delete_broker_credential(session, row.id)
        repo.record_change(session, repo.ENTITY_RUNTIME, row.id, now)
        repo.record_event(session, "RuntimeRevoked", f"runtime/{name}", "credentials revoked", now)
        return row

    row = await write(state, work)
    state.fleet.forget_keys(row.id)
    ADMIN_WRITES.labels("runtime", "revoked").inc()
    return await read(state, lambda s: queries.runtime_views(state, s, [row])[0])


# resources --------------------------------------------------------------------------------------------


class ApplyRequest(BaseModel):
    documents: list[Any]
    dry_run: bool = False
    strict: bool = False


@router.post("/apply", dependencies=[Depends(writer)])
async def apply(body: ApplyRequest, state: ServerState = Depends(server_state)) -> Response:
    def work(session: Session) -> Any:
        outcome = apply_all(
            session, state.box, body.documents, state.rollouts, dry_run=body.dry_run, now=utcnow()
        )
        if body.strict and outcome.warnings:
            raise InvalidInput(outcome.warnings)
        if body.dry_run:
            raise Discard(outcome)
        return outcome

    outcome = await write(state, work)
    for result in outcome.results:
        if result.action != "unchanged" and not body.dry_run:
            ADMIN_WRITES.labels(result.kind.lower(), result.action).inc()
    answer = {
        "results": [r.as_dict() for r in outcome.results],
        "warnings": [w.as_dict() for w in outcome.warnings],
    }
    # encoded here: plain JSON data needs none of FastAPI's conversion, which costs more than the encoding
    return Response(dumps(answer), media_type="application/json")


APPLY_PATH = "/api/v1/apply"


class ApplyFastPath:
    """Serves `POST /api/v1/apply` before the request enters FastAPI when nothing about it is unusual: an
    admin token whose grant is cached, a JSON body that decodes and is a valid `ApplyRequest`. Anything else
    (no or unknown token, a read-only one, a body FastAPI would refuse) goes through the app with the body
    replayed, so every refusal is answered there, as before. The app's middleware, route matching and
    dependency solving were about a quarter of the control plane's CPU per one-component apply.

    The write itself is the route's own (`apply`); its refusals are answered as the app answers them: an
    `HTTPException` as `{"detail": ...}` with its status, a failing store as 503, anything else logged and
    answered 500."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self._state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != APPLY_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        if body is None:
            return  # the client went away before sending its body: nobody to answer
        request = self._usual_request(Headers(scope=scope), body)
        if request is None:
            await self.app(scope, replay_body(body, receive), send)
            return
        try:
            response = await apply(request, self._state)
        except Exception as exc:
            response = failure_response(exc, scope, self._state.db)
        await response(scope, receive, send)

    def _usual_request(self, headers: Headers, body: bytes) -> ApplyRequest | None:
        """The request, when the app would take it as it is; None when the app must answer it."""
        if headers.get("content-type", "").partition(";")[0].strip().lower() != "application/json":
            return None
        try:
            known, role = self._state.admin_auth.fresh_role(bearer_token(headers.get("authorization", "")))
        except HTTPException:  # no bearer token, or an expired one
            return None
        if not known or role != ROLE_ADMIN:
            return None
        try:
            return ApplyRequest.model_validate(decode_json(body))
        except (DecodeError, ValidationError):
            return None


@router.get("/components")
async def list_components(state: ServerState = Depends(server_state)) -> list[dict[str, Any]]:
    return await read(state, lambda session: queries.components(state, session))


@router.get("/components/{name}")
async def get_component(name: str, state: ServerState = Depends(server_state)) -> dict[str, Any]:
    return await read_found(
        state, lambda s: queries.component(state, s, name), f"component {name!r} not found"
    )


@router.get("/components/{name}/history")
async def component_history(name: str, state: ServerState = Depends(server_state)) -> list[dict[str, Any]]:
    history = await read(state, lambda session: queries.component_history(session, name))
    if not history:
        raise HTTPException(404, f"component {name!r} has no history")
    return history


class Rollback(BaseModel):
    revision: int = Field(ge=1)


@router.post("/components/{name}/rollback", dependencies=[Depends(writer)])
async def rollback_component(
    name: str, body: Rollback, state: ServerState = Depends(server_state)
) -> dict[str, Any]:
    def work(session: Session) -> dict[str, Any]:
        old = repo.component_revision(session, name, body.revision)
        if old is None or old.manifest is None:
            raise HTTPException(404, f"component {name!r} has no revision {body.revision} with content")
        revalidate_for_rollback(session, old.manifest)
        now = utcnow()
        live = repo.component(session, name)
        previous = live.revision if live else None
        revision = repo.write_component_revision(session, name, old.manifest, "rollback", now)
        state.rollouts.on_component_revision(session, name, old.manifest, revision, previous, now)
        repo.record_event(
            session,
            "ComponentRolledBack",
            f"component/{name}",
            f"revision {revision} restores revision {body.revision}",
            now,
        )
        return {"name": name, "revision": revision, "restored": body.revision}

    result = await write(state, work)
    ADMIN_WRITES.labels("component", "rollback").inc()
    return result


@router.delete("/components/{name}", status_code=204, dependencies=[Depends(writer)])
async def delete_component(name: str, state: ServerState = Depends(server_state)) -> Response:
    def work(session: Session) -> None:
        live = found_or_404(repo.component(session, name), f"component {name!r} not found")
        now = utcnow()
        previous = live.revision
        revision = repo.write_component_revision(session, name, None, "deleted", now)
        state.rollouts.on_component_revision(session, name, None, revision, previous, now)
        repo.record_event(session, "ComponentDeleted", f"component/{name}", f"revision {revision}", now)

    await write(state, work)
    ADMIN_WRITES.labels("component", "deleted").inc()
    return Response(status_code=204)


@router.get("/secrets")
async def list_secrets(state: ServerState = Depends(server_state)) -> list[dict[str, Any]]:
    return await read(state, queries.secrets)


@router.delete("/secrets/{name}", status_code=204, dependencies=[Depends(writer)])
async def delete_secret(name: str, state: ServerState = Depends(server_state)) -> Response:
    def work(session: Session) -> None:
        found_or_404(repo.secret(session, name), f"secret {name!r} not found")
        users = sorted(c.name for c in repo.all_components(session) if name in secret_refs(c.manifest))
        users += [
            f"{component} (revision {revision}, still handed out by its rollout)"
            for component, revision, manifest in state.rollouts.revisions_kept(session)
            if name in secret_refs(manifest)
        ]
        if users:
            raise Conflict(f"secret {name!r} is still referenced by component(s): {', '.join(users)}")
        now = utcnow()
        repo.delete_secret(session, name, now)
        repo.record_event(session, "SecretDeleted", f"secret/{name}", "deleted", now)

    await write(state, work)
    ADMIN_WRITES.labels("secret", "deleted").inc()
    return Response(status_code=204)


@router.get("/events")
async def list_events(
    after: int = 0,
    limit: int = Query(100, ge=1, le=1000),
    subject: str | None = None,
    state: ServerState = Depends(server_state),
) -> list[dict[str, Any]]:
    return await read(state, lambda session: queries.events(session, after, limit, subject))
