"""Assembles one control-plane process: database, migrations, keys, the fleet view, routes, tasks."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import resource
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import uvicorn
from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from sqlalchemy.exc import OperationalError

import rrm
from rrm.dapr.catalog import known_component_types
from rrm.server import ui
from rrm.server.access_log import redact_query_strings
from rrm.server.api import admin, agent, ops, rollouts, stream, tokens
from rrm.server.api.common import signed_in_reader
from rrm.server.apply import RolloutHooks
from rrm.server.auth import ADMIN_TOKEN_PREFIX, ROLE_ADMIN, AdminAuth, AgentAuth, new_token, token_hash
from rrm.server.broker import registry as system_broker
from rrm.server.broker import routes as broker
from rrm.server.broker import service as broker_service
from rrm.server.compass import agent_api as compass_agent_api
from rrm.server.compass import routes as compass
from rrm.server.environment_broker import routes as environment_broker
from rrm.server.environment_broker.trials import run_trial_expiry
from rrm.server.eventstream import EventBroadcaster
from rrm.server.fleet import Fleet
from rrm.server.housekeeping import run_housekeeping
from rrm.server.limits import BodyLimitGuard, control_plane_limits
from rrm.server.provisioning import routes as provisioning_routes
from rrm.server.provisioning.catalog import build_catalog
from rrm.server.provisioning.engine import Engine
from rrm.server.rollouts import lifecycle
from rrm.server.secretbox import SecretBox, load_or_create_key, write_private_file
from rrm.server.sessions import DashboardSessions
from rrm.server.settings import ServerSettings
from rrm.server.state import ServerState, utcnow
from rrm.server.status_writer import StatusWriter
from rrm.server.store_errors import store_failure_handler
from rrm.server.stored_selectors import warn_about_stored_selectors
from rrm.server.wakeups import WorkerWakeups
from rrm.server.writes import WriteBatcher
from rrm.store import Database
from rrm.store import repositories as repo
from rrm.store.database import startup_problem
from rrm.store.leadership import Leadership

log = logging.getLogger("rrm.server")
ADMIN_TOKEN_FILE = "admin-token"


def ensure_admin_token(db: Database, settings: ServerSettings) -> None:
    """On first start, create an admin token and keep only its hash. The token is `RRM_BOOTSTRAP_ADMIN_TOKEN`
    when set (replicas on Kubernetes get it from a Secret), else a new one handed over in a 0600 file."""
    with db.write() as session:
        if not repo.admin_token_hashes(session):
            token = settings.bootstrap_admin_token or new_token(ADMIN_TOKEN_PREFIX)
            repo.add_admin_token(session, token_hash(token), ROLE_ADMIN, "created on first start", utcnow())
            if settings.bootstrap_admin_token:
                log.info("stored the admin token from RRM_BOOTSTRAP_ADMIN_TOKEN")
            else:
                path = settings.data_dir / ADMIN_TOKEN_FILE
                write_private_file(path, token.encode() + b"\n")
                log.info("created the first admin token in %s", path)


def build_state(settings: ServerSettings) -> ServerState:
    # plans and account rules are read first: a bad file is refused before anything is stored
    catalog = build_catalog(settings, settings.resolved_database_url.startswith("sqlite"))
    # Dapr's component schemas (every contrib metadata.yaml, ~80 ms) are read now, not by the first component
    # write after a start, which took 0.1 s instead of 5 ms for it
    known_component_types()
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    db = Database(settings.resolved_database_url)
    db.migrate()
    box = SecretBox(load_or_create_key(settings.data_dir, settings.secret_key))
    fleet = Fleet(db, box, settings.delivery_window_seconds)
    ensure_admin_token(db, settings)
    warn_about_stored_selectors(db)
    admin_auth = AdminAuth(db)
    state = ServerState(
        settings=settings,
        db=db,
        box=box,
        fleet=fleet,
        admin_auth=admin_auth,
        agent_auth=AgentAuth(fleet),
        events=EventBroadcaster(db),
        sessions=DashboardSessions(db, admin_auth),
        status_writer=StatusWriter(db),
        writes=WriteBatcher(db, fleet),
        rollouts=RolloutHooks(lifecycle.on_component_revision, lifecycle.revisions_kept_by_rollouts),
    )
    state.provisioning = Engine(state, catalog)
    return state


def lifespan_of(
    state: ServerState, wakeups: WorkerWakeups | None = None
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Loads the fleet view and runs the background tasks while the app serves; stops them after.
    `wakeups`: a worker of several on SQLite tells its siblings of its commits and hears theirs."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        if wakeups is not None:
            wakeups.listen(loop, state.fleet.nudge)
            state.db.on_change_committed = wakeups.tell_siblings
        await state.fleet.load()
        listener = None
        if not state.db.is_sqlite:
            from rrm.store.notifications import ChangeListener  # psycopg: only on PostgreSQL

            listener = ChangeListener(state.db.url, lambda: loop.call_soon_threadsafe(state.fleet.nudge))
            listener.start()
        leadership = Leadership(state.db.url, state.db.sqlite_path)
        tasks = [
            asyncio.create_task(state.fleet.follow(state.settings.feed_poll_seconds)),
            asyncio.create_task(run_housekeeping(state, leadership)),
            asyncio.create_task(state.events.run()),
            asyncio.create_task(state.status_writer.run()),
        ]
        if state.provisioning is not None:
            tasks.append(asyncio.create_task(state.provisioning.run(leadership)))
            tasks.append(asyncio.create_task(run_trial_expiry(state, leadership)))
        state.ready = True
        try:
            yield
        finally:
            state.ready = False
            state.fleet.close()
            state.events.close()
            if listener is not None:
                await asyncio.to_thread(listener.stop)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if wakeups is not None:
                wakeups.close(loop)
            state.db.dispose()

    return lifespan


def create_app(state: ServerState, wakeups: WorkerWakeups | None = None) -> FastAPI:
    app = FastAPI(
        title="rrm control plane",
        version=rrm.__version__,
        lifespan=lifespan_of(state, wakeups),
        openapi_url=None,  # served by `install_api_docs`, behind authentication
        docs_url=None,
        redoc_url=None,
    )
    app.state.rrm = state
    app.include_router(ops.router)
    app.include_router(admin.router)
    app.include_router(tokens.router)
    app.include_router(rollouts.router)
    app.include_router(agent.router)
    app.router.routes.extend(agent.PLAIN_ROUTES)
    app.include_router(stream.router)
    app.include_router(ui.router)
    app.include_router(compass.router)
    app.include_router(provisioning_routes.router)
    app.include_router(compass_agent_api.router)
    broker.install(app, system_broker.RegistryBackend(state), broker_service, compass.BROKER_PATH)
    if state.provisioning is not None:
        environment_broker.install(app, state, state.provisioning)
    app.mount(ui.STATIC_PATH, ui.static_files(), name="ui-static")
    app.add_exception_handler(ui.SignInRequired, ui.sign_in_required)
    app.add_exception_handler(OperationalError, store_failure_handler)
    install_api_docs(app)
    return app


def install_api_docs(app: FastAPI) -> None:
    """`/openapi.json` and `/docs` (Swagger UI), for an admin or viewer token or a signed-in session."""

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(signed_in_reader)])
    async def openapi() -> dict[str, Any]:
        return app.openapi()

    @app.get("/docs", include_in_schema=False, dependencies=[Depends(signed_in_reader)])
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} API")


def serve(settings: ServerSettings) -> None:
    """Run the control plane: in this process for one worker, else as a supervisor of `settings.workers`
    worker processes sharing one listening socket (rrm.server.workers)."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    state = _prepared_state(settings)
    log.info(
        "rrm %s control plane on http://%s:%d, data in %s, database %s, open-file limit %d, %d worker(s)",
        rrm.__version__,
        settings.host,
        settings.port,
        settings.data_dir,
        state.db.url.split("@")[-1],
        raise_open_file_limit(),
        settings.workers,
    )
    config = _uvicorn_config(settings, state, None)
    redact_query_strings()
    if settings.workers == 1:
        _Server(config, state).run()
        return
    from rrm.server.workers import Supervisor

    state.db.dispose()  # each worker opens its own; the supervisor keeps no connection across fork
    listening = config.bind_socket()
    Supervisor(settings.workers, lambda slot: _run_worker(settings, slot, listening)).run()


def _prepared_state(settings: ServerSettings) -> ServerState:
    """The state of a process, built with everything done once at first start (migrations, the secret key,
    the first admin token): done here, before any worker starts, no two workers race to do it."""
    try:
        return build_state(settings)
    except (OSError, OperationalError) as exc:
        raise SystemExit(f"rrm server: {startup_problem(exc)}") from None
    except ValueError as exc:  # a plans file that cannot be used
        raise SystemExit(f"rrm server: {exc}") from None


def _uvicorn_config(
    settings: ServerSettings, state: ServerState, wakeups: WorkerWakeups | None
) -> uvicorn.Config:
    limits = control_plane_limits(
        settings.max_apply_bytes, compass.BROKER_PATH, environment_broker.BROKER_PATH
    )
    app = BodyLimitGuard(admin.ApplyFastPath(agent.AgentFastPath(create_app(state, wakeups)), state), limits)
    return uvicorn.Config(app, **uvicorn_options(settings))


def uvicorn_options(settings: ServerSettings) -> dict[str, Any]:
    """How `rrm server` runs uvicorn, apart from the app (the status path benchmark's HTTP floor uses it)."""
    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "timeout_graceful_shutdown": 5,
        "timeout_keep_alive": 75,  # longer than the agents keep idle connections (10 s): they close first
        "backlog": 16384,  # a fleet reconnecting after a restart at once (the kernel caps it at somaxconn)
        "access_log": settings.access_log,
    }


def _run_worker(settings: ServerSettings, slot: int, listening: socket.socket) -> None:
    """One worker process: a full replica on the supervisor's listening socket. On SQLite it binds its
    wake-up socket; failing that (another server on the same file) it follows the feed by polling."""
    state = _prepared_state(settings)
    wakeups = None
    if state.db.sqlite_path is not None:
        try:
            wakeups = WorkerWakeups(state.db.sqlite_path, slot, settings.workers)
        except OSError as exc:
            log.warning("worker %d: no wake-ups from its siblings (%s); polling the change feed", slot, exc)
    _Server(_uvicorn_config(settings, state, wakeups), state).run(sockets=[listening])


def raise_open_file_limit() -> int:
    """Lift the soft open-file limit to the hard one: each agent holds a connection open (two while it
    reports), and a soft limit of 1,024, common by default, would refuse agents from about 500 on."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, exc)
            return soft
    return hard


class _Server(uvicorn.Server):
    """Answers held long-polls (304) and ends event streams as soon as shutdown starts, instead of waiting
    out their timeouts."""

    def __init__(self, config: uvicorn.Config, state: ServerState) -> None:
        super().__init__(config)
        self._state = state

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Once started, what start-up built (the modules, the app, the fleet view) is moved out of the
        garbage collector's sight (`gc.freeze`): it lives as long as the process, and each full collection
        walked all of it again (about 126,000 objects after the imports alone; a full collection of them
        took 150-220 ms on a loaded 2-core machine, ~0 once frozen)."""
        await super().startup(sockets)
        gc.freeze()

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        self._state.fleet.close()
        self._state.events.close()
        await super().shutdown(sockets)
