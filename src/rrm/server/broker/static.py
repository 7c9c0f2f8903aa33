"""The Static System Broker: the same OSB API as the System Broker, served from a catalog file to a
standalone runtime that is not connected to the registry (`rrm static-broker`).

One caller, with the HTTP Basic credentials given on start. Instances and bindings live in memory, or in
a JSON file (`--state`) written atomically after each change so they survive a restart. Plans are ready at
once: provisioning and binding complete synchronously.
"""

from __future__ import annotations

import copy
import hmac
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

import rrm
from rrm.server.broker import routes, service
from rrm.server.broker.catalog_file import load_catalog
from rrm.server.broker.models import (
    Binding,
    BrokerRecords,
    Catalog,
    Instance,
    Plan,
    binding_from,
    instance_from,
)
from rrm.server.limits import BodyLimitGuard, static_broker_limits
from rrm.server.secretbox import write_private_file

log = logging.getLogger("rrm.server.broker.static")
CALLER = "platform"


class CatalogFileBackend(routes.BrokerBackend[BrokerRecords]):
    realm = "rrm static broker"

    def __init__(
        self, catalog: Catalog, username: str, password: str, state_file: Path | None = None
    ) -> None:
        self._catalog = catalog
        self._username = username
        self._password = password
        self._state_file = state_file
        self._lock = threading.Lock()
        self._data: dict[str, Any] = {"instances": {}, "bindings": {}}
        if state_file is not None and state_file.exists():
            self._data = json.loads(state_file.read_text())

    def authenticate(self, username: str, password: str) -> str | None:
        known = hmac.compare_digest(username.encode(), self._username.encode())
        known &= hmac.compare_digest(password.encode(), self._password.encode())
        return CALLER if known else None

    def catalog(self, caller: str) -> Catalog:
        return self._catalog

    def transact(self, caller: str, work: Callable[[BrokerRecords], service.Answer]) -> service.Answer:
        """Work on a copy; it replaces the data (and the file) only when the work succeeded."""
        with self._lock:
            records = _MemoryRecords(copy.deepcopy(self._data))
            answer = work(records)
            if records.changed:
                self._data = records.data
                if self._state_file is not None:
                    write_private_file(self._state_file, json.dumps(self._data, sort_keys=True).encode())
            return answer


class _MemoryRecords:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.changed = False

    def instance(self, instance_id: str) -> Instance | None:
        record = self.data["instances"].get(instance_id)
        return instance_from(record) if record else None

    def save_instance(self, instance: Instance) -> None:
        self.data["instances"][instance.id] = instance.record()
        self.changed = True

    def delete_instance(self, instance_id: str) -> None:
        self.data["instances"].pop(instance_id, None)
        self.data["bindings"].pop(instance_id, None)
        self.changed = True

    def binding(self, instance_id: str, binding_id: str) -> Binding | None:
        record = self.data["bindings"].get(instance_id, {}).get(binding_id)
        return binding_from(record) if record else None

    def save_binding(self, binding: Binding) -> None:
        self.data["bindings"].setdefault(binding.instance_id, {})[binding.id] = binding.record()
        self.changed = True

    def delete_binding(self, instance_id: str, binding_id: str) -> None:
        self.data["bindings"].get(instance_id, {}).pop(binding_id, None)
        self.changed = True

    def plan_ready(self, plan: Plan) -> bool:
        return True


def create_static_app(backend: CatalogFileBackend) -> FastAPI:
    app = FastAPI(title="rrm static system broker", version=rrm.__version__)
    routes.install(app, backend, service)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def serve_static(
    catalog_file: Path, host: str, port: int, username: str, password: str, state_file: Path | None
) -> None:
    """Check the catalog (CatalogError when it is not servable), then serve until SIGTERM or Ctrl-C."""
    catalog = load_catalog(catalog_file)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s %(message)s")
    log.info(
        "static system broker on http://%s:%d: %d service offering(s) from %s, records %s",
        host,
        port,
        len(catalog.offerings),
        catalog_file,
        state_file or "in memory",
    )
    backend = CatalogFileBackend(catalog, username, password, state_file)
    app = BodyLimitGuard(create_static_app(backend), static_broker_limits())
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
