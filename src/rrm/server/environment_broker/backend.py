"""Where the Environment Broker's callers, catalog and records come from: platforms authenticate with the
credentials `rrm environment-broker credentials NAME` issued (only the password's sha256 is kept), every
platform gets the same catalog, and a platform's records are the environments it ordered, nothing else."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from rrm.server.auth import matches_hash
from rrm.server.broker.models import Catalog
from rrm.server.broker.routes import BrokerBackend
from rrm.server.broker.service import Answer, BrokerRequest, valid_id
from rrm.server.environment_broker.catalog import broker_catalog
from rrm.server.provisioning.engine import Engine
from rrm.server.state import ServerState, utcnow
from rrm.store import environment_broker as store
from rrm.store import provisioning as provisioning_store
from rrm.store.tables import BrokeredEnvironment, EnvironmentRow


@dataclass
class PlatformRecords:
    """One platform's environments inside one transaction; another platform's ids are simply not there."""

    state: ServerState
    engine: Engine
    session: Session
    platform: str
    region: str | None  # the platform region its credentials name
    now: datetime

    def brokered(self, instance_id: str) -> tuple[BrokeredEnvironment, EnvironmentRow] | None:
        ordered = store.brokered(self.session, instance_id)
        if ordered is None or ordered.platform != self.platform:
            return None
        environment = provisioning_store.environment(self.session, instance_id)
        return None if environment is None else (ordered, environment)

    def taken(self, instance_id: str) -> bool:
        """Whether any environment has this id (another platform's, or one made through the API)."""
        return provisioning_store.environment(self.session, instance_id) is not None


Request = BrokerRequest[PlatformRecords]
Found = tuple[BrokeredEnvironment, EnvironmentRow]


def found(request: Request, instance_id: str, *, archived: bool = False) -> Found | None:
    """The platform's environment of that id; a deleted one only when `archived` is asked for."""
    hit = request.records.brokered(instance_id) if valid_id(instance_id) else None
    if hit is None or (hit[1].archived_at is not None and not archived):
        return None
    return hit


def request_hash(*parts: Any) -> str:
    """What makes a request the same one again, without keeping its (possibly secret) parameters."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class EnvironmentBrokerBackend(BrokerBackend[PlatformRecords]):
    realm = "rrm environment broker"

    def __init__(self, state: ServerState, engine: Engine) -> None:
        self._state = state
        self._engine = engine
        self._catalog = broker_catalog(engine.catalog)

    def authenticate(self, username: str, password: str) -> str | None:
        with self._state.db.read() as session:
            row = store.platform(session, username)
            return row.name if row is not None and matches_hash(password, row.password_hash) else None

    def catalog(self, caller: str) -> Catalog:
        return self._catalog

    def transact(self, caller: str, work: Callable[[PlatformRecords], Answer]) -> Answer:
        with self._state.db.write() as session:
            row = store.platform(session, caller)
            region = row.region if row is not None else None
            return work(PlatformRecords(self._state, self._engine, session, caller, region, utcnow()))
