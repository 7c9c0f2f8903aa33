"""The dashboard at /ui: server-rendered pages over the same reads as the admin API.

Every page has a twin under /ui/fragments that renders only its live region; the page's script re-fetches
it when the event stream reports a change the page shows. Nothing here writes but signing in and out: a
viewer token can use all of it. Without a dashboard session a page redirects to the sign-in form and a
fragment answers 401. Every request that changes state must come from the dashboard's own pages.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader
from sqlalchemy.orm import Session

from rrm.core.scenarios import BINDING_PREFIX
from rrm.core.selectors import SelectorError, parse_selector
from rrm.server import queries
from rrm.server.compass import views as compass
from rrm.server.rollouts import views as rollout_views
from rrm.server.sessions import DashboardSessions
from rrm.server.state import ServerState, server_state, utcnow
from rrm.server.ui import environments as environment_reads
from rrm.server.ui import present
from rrm.server.ui.same_origin import refuse_cross_site
from rrm.store import compass as compass_store

UI_PATH = "/ui"
STATIC_PATH = f"{UI_PATH}/static"
FRAGMENTS_PATH = f"{UI_PATH}/fragments"
LOGIN_PATH = f"{UI_PATH}/login"
MAX_FORM_BYTES = 4096

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

templates = Environment(
    loader=PackageLoader("rrm.server.ui", "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
)
templates.filters.update(
    age=present.age,
    selector=present.format_selector,
    yaml=present.manifest_yaml,
    countdown=present.countdown,
    seconds_until=present.seconds_until,
    took=present.took,
)
templates.globals.update(
    condition=present.condition,
    CONDITION_TYPES=present.CONDITION_TYPES,
    wave_progress=present.wave_progress,
    BINDING_PREFIX=BINDING_PREFIX,
)

router = APIRouter(prefix=UI_PATH, include_in_schema=False, dependencies=[Depends(refuse_cross_site)])


def static_files() -> StaticFiles:
    return StaticFiles(directory=Path(__file__).parent / "static")


def _html(template: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    body = templates.get_template(template).render(context)
    return HTMLResponse(body, status_code=status, headers=HEADERS)


# signing in --------------------------------------------------------------------------------------------


class SignInRequired(Exception):
    """A dashboard request without a valid session."""


def signed_in_role(request: Request, state: ServerState = Depends(server_state)) -> str:
    """The role of the signed-in token (admin or viewer); both may see everything here."""
    role = state.sessions.role_of(request)
    if role is None:
        raise SignInRequired()
    return role


async def sign_in_required(request: Request, _: Exception) -> Response:
    if request.url.path.startswith(FRAGMENTS_PATH):
        return Response("sign in again", status_code=401, media_type="text/plain", headers=HEADERS)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{LOGIN_PATH}?next={quote(target, safe='')}", status_code=303, headers=HEADERS)


def _safe_next(target: str | None) -> str:
    """Only a dashboard path, so the sign-in form cannot send anyone elsewhere."""
    if (
        target
        and (target == UI_PATH or target.startswith((f"{UI_PATH}/", f"{UI_PATH}?")))
        and "\\" not in target
    ):
        return target
    return UI_PATH


async def _sign_in(request: Request, state: ServerState, token: str, target: str | None) -> Response:
    session_id = await asyncio.to_thread(state.sessions.issue, token.strip())
    if session_id is None:
        return _html("login.html", {"next": _safe_next(target), "error": "That token is not valid."}, 401)
    response = RedirectResponse(_safe_next(target), status_code=303, headers=HEADERS)
    state.sessions.set_cookie(response, session_id, request)
    return response


@router.get("/login")
async def login_form(request: Request, next: str | None = None) -> Response:
    """The form. The one-click link (`rrm demo` prints it) is `/ui/login#token=…`: the browser keeps the part
    after `#` to itself, and the page's script posts it. A token in the query string, which access logs and
    proxies keep, signs nobody in."""
    if "token" in request.query_params:
        error = "Sign-in links carry the token after #, not in the address the server sees. Paste it here."
        return _html("login.html", {"next": _safe_next(next), "error": error}, 400)
    return _html("login.html", {"next": _safe_next(next)})


@router.post("/login")
async def login(request: Request, state: ServerState = Depends(server_state)) -> Response:
    """The form's post (urlencoded `token` and `next`)."""
    body = await request.body()
    form = parse_qs(body.decode(errors="replace")) if len(body) <= MAX_FORM_BYTES else {}
    token, target = form.get("token", [""]), form.get("next", [UI_PATH])
    return await _sign_in(request, state, token[0], target[0])


@router.post("/logout")
async def logout(request: Request, state: ServerState = Depends(server_state)) -> Response:
    """Ends the session in the database, so its cookie stops working on every replica at once."""
    await asyncio.to_thread(state.sessions.end, request)
    response = RedirectResponse(LOGIN_PATH, status_code=303, headers=HEADERS)
    DashboardSessions.clear_cookie(response)
    return response


# pages ---------------------------------------------------------------------------------------------------


@dataclass
class Page:
    """What one page shows: `template` names `fragments/<template>.html` (its live region)."""

    template: str
    title: str
    nav: str
    context: dict[str, Any] = field(default_factory=dict)
    subjects: str = ""  # event subjects that concern the page ("runtime/x" exact, "component/" prefix)
    status: int = 200


View = Callable[[ServerState, Request], Awaitable[Page]]
SessionView = Callable[[ServerState, Session, Request], Page]


def in_session(view: SessionView) -> View:
    """A view that only reads the database: it runs in one read transaction off the event loop."""

    async def run(state: ServerState, request: Request) -> Page:
        return await queries.read(state, lambda session: view(state, session, request))

    return run


def _register(path: str, fragment: str, view: View) -> None:
    """The page at `path` and its live region at /ui/fragments`fragment`."""

    async def page(
        request: Request, role: str = Depends(signed_in_role), state: ServerState = Depends(server_state)
    ) -> Response:
        # read before the page, so that the live region follows every event the page may not show yet
        events_after = await state.events.latest_id()
        shown = await view(state, request)
        live = FRAGMENTS_PATH + fragment.format(
            **{k: quote(v, safe="") for k, v in request.path_params.items()}
        )
        if request.url.query:
            live += f"?{request.url.query}"
        context = {
            **shown.context,
            "page": shown,
            "role": role,
            "live_url": live,
            "events_after": events_after,
        }
        return _html("page.html", context, shown.status)

    async def part(request: Request, state: ServerState = Depends(server_state)) -> Response:
        shown = await view(state, request)
        return _html(f"fragments/{shown.template}.html", shown.context, shown.status)

    router.add_api_route(path, page, methods=["GET"], response_class=HTMLResponse)
    router.add_api_route(
        f"/fragments{fragment}",
        part,
        methods=["GET"],
        response_class=HTMLResponse,
        dependencies=[Depends(signed_in_role)],
    )


def _missing(what: str, nav: str) -> Page:
    return Page("missing", "Not found", nav, {"what": what}, status=404)


def fleet_page(state: ServerState, session: Session, _: Request) -> Page:
    runtimes = queries.runtimes(state, session, None)
    summary = present.fleet_summary(runtimes, queries.components(state, session))
    return Page("fleet", "Fleet", "fleet", {"summary": summary})


def runtimes_page(state: ServerState, session: Session, request: Request) -> Page:
    text = request.query_params.get("selector", "").strip()
    try:
        selector = parse_selector(text) if text else None
    except SelectorError as exc:
        context = {"runtimes": [], "selector": text, "error": str(exc)}
        return Page("runtimes", "Runtimes", "runtimes", context, status=422)
    runtimes = queries.runtimes(state, session, selector)
    return Page("runtimes", "Runtimes", "runtimes", {"runtimes": runtimes, "selector": text, "error": None})


def stored_runtime_page(state: ServerState, session: Session, request: Request) -> Page:
    """The runtime page with what the database knows; `runtime_page` adds what only memory knows."""
    name = request.path_params["name"]
    detail = queries.runtime(state, session, name)
    if detail is None:
        return _missing(f"runtime {name}", "runtimes")
    context = {
        "runtime": detail,
        "results": present.component_results(detail),
        "events": list(reversed(detail["events"])),
        "scenarios": None,
        "applications": [],
        "bindings": {},
    }
    subjects = f"runtime/{name} component/ secret/ application/ scenario/"
    return Page("runtime", name, "runtimes", context, subjects=subjects)


async def runtime_page(state: ServerState, request: Request) -> Page:
    """What the database knows of the runtime, and from the fleet's memory (on the event loop, as the
    admin API reads it) its scenarios and the applications it sees."""
    shown = await in_session(stored_runtime_page)(state, request)
    entry = compass.runtime_named(state.fleet, request.path_params["name"])
    if shown.status == 200 and entry is not None:
        applications = compass.runtime_applications(state.fleet, entry)
        shown.context["scenarios"] = compass.runtime_scenarios_view(state.fleet, entry)
        shown.context["applications"] = applications
        shown.context["bindings"] = {b["binding"]: a["name"] for a in applications for b in a["bundles"]}
    return shown


def components_page(state: ServerState, session: Session, _: Request) -> Page:
    grace = state.settings.heartbeat_grace
    rollouts = rollout_views.rollout_list(session, state.fleet, utcnow(), grace)
    context = {
        "components": queries.components(state, session),
        "secrets": queries.secrets(session),
        "rollouts": {r["component"]: r for r in rollouts},
    }
    return Page("components", "Components", "components", context)


def component_page(state: ServerState, session: Session, request: Request) -> Page:
    name = request.path_params["name"]
    view = queries.component(state, session, name)
    history = queries.component_history(session, name)
    if view is None and not history:
        return _missing(f"component {name}", "components")
    revisions = {entry["revision"]: entry for entry in history}
    newest = history[0]["revision"]
    new = _revision(request, "to", revisions, newest)
    old = _revision(request, "from", revisions, max((r for r in revisions if r < new), default=new))
    diff = present.revision_diff(
        revisions[old]["manifest"], revisions[new]["manifest"], (f"revision {old}", f"revision {new}")
    )
    grace = state.settings.heartbeat_grace
    context = {
        "name": name,
        "component": view,
        "rollout": rollout_views.rollout_detail(session, state.fleet, name, utcnow(), grace),
        "history": history,
        "diff": diff,
        "diff_from": old,
        "diff_to": new,
    }
    return Page("component", name, "components", context, subjects=f"component/{name} runtime/ secret/")


def _revision(request: Request, parameter: str, revisions: dict[int, Any], default: int) -> int:
    value = request.query_params.get(parameter, "")
    return int(value) if value.isdigit() and int(value) in revisions else default


async def applications_page(state: ServerState, _: Request) -> Page:
    """Applications with the runtimes that see them, and the scenarios that connect the two: the fleet's
    memory read on the event loop, as the admin API reads it. Credentials show only as their type."""
    names = await queries.read(state, compass_store.scenario_names)
    context = {
        "applications": compass.application_list(state.fleet),
        "scenarios": compass.scenario_views(state.fleet, names),
    }
    subjects = "application/ scenario/ runtime/"
    return Page("applications", "Applications", "applications", context, subjects=subjects)


def environments_page(state: ServerState, session: Session, request: Request) -> Page:
    """Environments with their state, plan and tenant, filterable by global account."""
    account = request.query_params.get("globalAccount", "").strip()
    include_archived = request.query_params.get("all") == "1"
    listed = environment_reads.environment_list(state, session, account or None, include_archived)
    context = {"listed": listed, "global_account": account, "include_archived": include_archived}
    return Page("environments", "Environments", "environments", context, subjects="environment/")


def environment_page(state: ServerState, session: Session, request: Request) -> Page:
    """One environment with its operations' stages as a timeline."""
    name = request.path_params["name"]
    detail = environment_reads.environment(state, session, name)
    if detail is None:  # not yet, maybe: the page shows it once it is requested
        missing = _missing(f"environment {name}", "environments")
        missing.subjects = f"environment/{name}"
        return missing
    context = {
        "environment": detail,
        "events": list(reversed(detail["events"])),
    }
    return Page("environment", name, "environments", context, subjects=f"environment/{name}")


_register("", "/fleet", in_session(fleet_page))
_register("/runtimes", "/runtimes", in_session(runtimes_page))
_register("/runtimes/{name}", "/runtimes/{name}", runtime_page)
_register("/components", "/components", in_session(components_page))
_register("/components/{name}", "/components/{name}", in_session(component_page))
_register("/applications", "/applications", applications_page)
_register("/environments", "/environments", in_session(environments_page))
_register("/environments/{name}", "/environments/{name}", in_session(environment_page))
