"""The objects one control-plane process shares between its routes and background tasks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from fastapi import Request

from rrm.server.apply import RolloutHooks
from rrm.server.auth import AdminAuth, AgentAuth
from rrm.server.eventstream import EventBroadcaster
from rrm.server.fleet import Fleet
from rrm.server.secretbox import SecretBox
from rrm.server.sessions import DashboardSessions
from rrm.server.settings import ServerSettings
from rrm.server.status_writer import StatusWriter
from rrm.server.writes import WriteBatcher
from rrm.store import Database

if TYPE_CHECKING:
    from rrm.server.provisioning.engine import Engine


@dataclass
class ServerState:
    settings: ServerSettings
    db: Database
    box: SecretBox
    fleet: Fleet
    admin_auth: AdminAuth
    agent_auth: AgentAuth
    events: EventBroadcaster
    sessions: DashboardSessions
    status_writer: StatusWriter
    writes: WriteBatcher
    rollouts: RolloutHooks  # how a stored component revision reaches the rollout controller
    ready: bool = False
    provisioning: Engine | None = None  # set when the app is created


def state_of(request: Request) -> ServerState:
    state: ServerState = request.app.state.rrm
    return state


async def server_state(request: Request) -> ServerState:
    """The dependency; async, so FastAPI does not hop to its thread pool for it on every request."""
    return state_of(request)


def utcnow() -> datetime:
    return datetime.now(UTC)
