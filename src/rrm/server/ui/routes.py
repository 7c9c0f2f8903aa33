"""The dashboard at /ui: server-rendered pages over the same reads as the admin API.

Every page has a twin under /ui/fragments that renders only its live region; the page's script re-fetches
it when the event stream reports a change the page shows. Nothing here writes: a viewer token can use all
of it. Without a dashboard session a page redirects to the sign-in form and a fragment answers 401.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader
from sqlalchemy.orm import Session

from rrm.core.selectors import SelectorError, parse_selector
from rrm.server import queries
from rrm.server.sessions import DashboardSessions
from rrm.server.state import ServerState, server_state
from rrm.server.ui import present

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
templates.filters.update(age=present.age, selector=present.format_selector, yaml=present.manifest_yaml)
templates.globals.update(condition=present.condition, CONDITION_TYPES=present.CONDITION_TYPES)

router = APIRouter(prefix=UI_PATH, include_in_schema=False)


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


def _sign_in(request: Request, state: ServerState, token: str, target: str | None) -> Response:
    cookie = state.sessions.issue(token.strip())
    if cookie is None:
        return _html("login.html", {"next": _safe_next(target), "error": "That token is not valid."}, 401)
    response = RedirectResponse(_safe_next(target), status_code=303, headers=HEADERS)
    state.sessions.set_cookie(response, cookie, request)
    return response


@router.get("/login")
async def login_form(
    request: Request,
    token: str | None = None,
    next: str | None = None,
    state: ServerState = Depends(server_state),
) -> Response:
    """The form; with `?token=` (the one-click link `rrm demo` prints) it signs in and redirects, so the
    token leaves the address bar at once."""
    if token is not None:
        return _sign_in(request, state, token, next)
    return _html("login.html", {"next": _safe_next(next)})


@router.post("/login")
async def login(request: Request, state: ServerState = Depends(server_state)) -> Response:
    """The form's post (urlencoded `token` and `next`)."""
    body = await request.body()
    form = parse_qs(body.decode(errors="replace")) if len(body) <= MAX_FORM_BYTES else {}
    token, target = form.get("token", [""]), form.get("next", [UI_PATH])
    return _sign_in(request, state, token[0], target[0])


@router.post("/logout")
async def logout() -> Response:
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


View = Callable[[ServerState, Session, Request], Page]


def _register(path: str, fragment: str, view: View) -> None:
    """The page at `path` and its live region at /ui/fragments`fragment`."""

    async def page(
        request: Request, role: str = Depends(signed_in_role), state: ServerState = Depends(server_state)
    ) -> Response:
        shown = await queries.read(state, lambda session: view(state, session, request))
        live = FRAGMENTS_PATH + fragment.format(
            **{k: quote(v, safe="") for k, v in request.path_params.items()}
        )
        if request.url.query:
            live += f"?{request.url.query}"
        context = {**shown.context, "page": shown, "role": role, "live_url": live}
        return _html("page.html", context, shown.status)

    async def part(request: Request, state: ServerState = Depends(server_state)) -> Response:
        shown = await queries.read(state, lambda session: view(state, session, request))
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


def runtime_page(state: ServerState, session: Session, request: Request) -> Page:
    name = request.path_params["name"]
    detail = queries.runtime(state, session, name)
    if detail is None:
        return _missing(f"runtime {name}", "runtimes")
    context = {
        "runtime": detail,
        "results": present.component_results(detail),
        "events": list(reversed(detail["events"])),
    }
    return Page("runtime", name, "runtimes", context, subjects=f"runtime/{name} component/ secret/")


def components_page(state: ServerState, session: Session, _: Request) -> Page:
    context = {"components": queries.components(state, session), "secrets": queries.secrets(session)}
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
    context = {
        "name": name,
        "component": view,
        "history": history,
        "diff": diff,
        "diff_from": old,
        "diff_to": new,
    }
    return Page("component", name, "components", context, subjects=f"component/{name} runtime/ secret/")


def _revision(request: Request, parameter: str, revisions: dict[int, Any], default: int) -> int:
    value = request.query_params.get(parameter, "")
    return int(value) if value.isdigit() and int(value) in revisions else default


_register("", "/fleet", fleet_page)
_register("/runtimes", "/runtimes", runtimes_page)
_register("/runtimes/{name}", "/runtimes/{name}", runtime_page)
_register("/components", "/components", components_page)
_register("/components/{name}", "/components/{name}", component_page)
