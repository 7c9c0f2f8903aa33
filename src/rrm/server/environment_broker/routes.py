"""The Environment Broker's HTTP surface: the shared OSB router (authentication, version check, error
bodies) at `/environments`, with this broker's backend and operations; and the admin API that issues a
platform's credentials."""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from rrm.core.names import dns1123_label_error
from rrm.server.api.common import BoundedRoute, write, writer
from rrm.server.apply import Conflict, InvalidInput, Problem
from rrm.server.auth import token_hash
from rrm.server.broker import routes as broker
from rrm.server.environment_broker import bindings, instances
from rrm.server.environment_broker.backend import EnvironmentBrokerBackend
from rrm.server.provisioning.engine import Engine
from rrm.server.state import ServerState, server_state, utcnow
from rrm.store import environment_broker as store
from rrm.store import repositories as repo

BROKER_PATH = "/environments"
PASSWORD_PREFIX = "rrmep_"


class EnvironmentOperations:
    """The OSB operations of this broker, for the shared router."""

    provision = staticmethod(instances.provision)
    fetch_instance = staticmethod(instances.fetch_instance)
    update = staticmethod(instances.update)
    deprovision = staticmethod(instances.deprovision)
    instance_last_operation = staticmethod(instances.instance_last_operation)
    bind = staticmethod(bindings.bind)
    fetch_binding = staticmethod(bindings.fetch_binding)
    unbind = staticmethod(bindings.unbind)
    binding_last_operation = staticmethod(bindings.binding_last_operation)


def install(app: FastAPI, state: ServerState, engine: Engine) -> None:
    broker.install(app, EnvironmentBrokerBackend(state, engine), EnvironmentOperations(), BROKER_PATH)
    app.include_router(router)


router = APIRouter(prefix="/api/v1", tags=["environment broker"], route_class=BoundedRoute)


class CredentialsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rotate: bool = False
    region: str | None = Field(None, min_length=1, max_length=63, pattern=r"^[a-z0-9][-a-z0-9]*$")


@router.post(
    "/environment-broker/platforms/{name}/credentials", status_code=201, dependencies=[Depends(writer)]
)
async def platform_credentials(
    name: str, body: CredentialsRequest, request: Request, state: ServerState = Depends(server_state)
) -> dict[str, Any]:
    """HTTP Basic credentials for platform NAME, shown this once (only the password's sha256 is kept).
    Existing ones are replaced only with `rotate`; each platform sees only the instances it ordered. The
    platform's `region` (KEB's platform region, such as cf-eu11) picks accounts by the HAP rules."""
    if (error := dns1123_label_error(name)) is not None:
        raise InvalidInput([Problem(None, "Platform", name, "name", error)])
    password = PASSWORD_PREFIX + secrets.token_urlsafe(32)

    def work(session: Session) -> str | None:
        existing = store.platform(session, name)
        if existing is not None and not body.rotate:
            raise Conflict(f"platform {name!r} already has credentials; rotate them to get new ones")
        region = body.region or (existing.region if existing is not None else None)  # rotation keeps it
        now = utcnow()
        store.set_platform(session, name, token_hash(password), region, now)
        what = "rotated" if existing is not None else "issued"
        repo.record_event(session, f"PlatformCredentials{what.capitalize()}", f"platform/{name}", what, now)
        return region

    region = await write(state, work)
    return {
        "platform": name,
        "region": region,
        "username": name,
        "password": password,
        "broker_url": str(request.base_url).rstrip("/") + BROKER_PATH,
    }
