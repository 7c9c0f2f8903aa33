"""The OSB HTTP surface, shared by the System Broker (under `/broker` of the control plane) and the Static
System Broker (`rrm static-broker`): authentication, the `X-Broker-API-Version` check, request parsing and
OSB error bodies. What each request means is a `BrokerOperations` (`rrm.server.broker.service` for these two,
`rrm.server.environment_broker.operations` for the Environment Broker); where the catalog, callers and
records come from is a `BrokerBackend`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from rrm.core.bounded import DecodeError, decode_json
from rrm.server.broker import service
from rrm.server.broker.models import BrokerError, Catalog
from rrm.server.broker.service import Answer, BrokerRequest, Removal

API_VERSION = "2.17"
MIN_MINOR = 13  # 2.13 to 2.17: later minor versions only add optional fields
VERSION_HEADER = "X-Broker-API-Version"
REQUEST_IDENTITY_HEADER = "X-Broker-API-Request-Identity"
_VERSION = re.compile(r"^(\d+)\.(\d+)$")
Records = TypeVar("Records")


class BrokerBackend(ABC, Generic[Records]):
    """Where a broker's callers, catalog and records come from. `caller` is whatever `authenticate`
    returned; every caller sees only its own catalog and records."""

    realm = "rrm broker"

    @abstractmethod
    def authenticate(self, username: str, password: str) -> str | None:
        """The caller the credentials belong to, or None (runs in a worker thread)."""

    @abstractmethod
    def catalog(self, caller: str) -> Catalog:
        """The caller's catalog (runs on the event loop; must not block)."""

    @abstractmethod
    def transact(self, caller: str, work: Callable[[Records], Answer]) -> Answer:
        """Run `work` on the caller's records in one transaction (runs in a worker thread)."""


class BrokerOperations(Protocol[Records]):
    """What each OSB request means, over one caller's records; the router parses and authenticates, and
    checks the ids and the required query of a deprovision or unbind."""

    def provision(
        self, request: BrokerRequest[Records], instance_id: str, body: Any, accepts_incomplete: bool
    ) -> Answer: ...
    def fetch_instance(self, request: BrokerRequest[Records], instance_id: str) -> Answer: ...
    def update(
        self, request: BrokerRequest[Records], instance_id: str, body: Any, accepts_incomplete: bool
    ) -> Answer: ...
    def deprovision(self, request: BrokerRequest[Records], instance_id: str, removal: Removal) -> Answer: ...
    def instance_last_operation(
        self, request: BrokerRequest[Records], instance_id: str, operation: str | None
    ) -> Answer: ...
    def bind(
        self,
        request: BrokerRequest[Records],
        instance_id: str,
        binding_id: str,
        body: Any,
        accepts_incomplete: bool,
    ) -> Answer: ...
    def fetch_binding(self, request: BrokerRequest[Records], instance_id: str, binding_id: str) -> Answer: ...
    def unbind(
        self, request: BrokerRequest[Records], instance_id: str, binding_id: str, removal: Removal
    ) -> Answer: ...
    def binding_last_operation(
        self, request: BrokerRequest[Records], instance_id: str, binding_id: str, operation: str | None
    ) -> Answer: ...


def install(
    app: FastAPI,
    backend: BrokerBackend[Records],
    operations: BrokerOperations[Records],
    prefix: str = "",
) -> None:
    """Serve the broker at `prefix` (its broker URL) and answer BrokerError with OSB error bodies."""
    app.include_router(broker_router(backend, operations), prefix=prefix)
    app.add_exception_handler(BrokerError, _error_answer)  # type: ignore[arg-type]


async def _error_answer(request: Request, exc: BrokerError) -> Response:
    headers = {"WWW-Authenticate": f'Basic realm="{BrokerBackend.realm}"'} if exc.status == 401 else {}
    return _json(request, exc.status, exc.body, headers)


def _json(request: Request, status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    headers = dict(headers or {})
    identity = request.headers.get(REQUEST_IDENTITY_HEADER)
    if identity:
        headers[REQUEST_IDENTITY_HEADER] = identity
    return JSONResponse(body, status_code=status, headers=headers)


def _credentials(request: Request) -> tuple[str, str]:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        raise BrokerError(401, "HTTP Basic authentication is required")
    try:
        username, separator, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise BrokerError(401, "malformed HTTP Basic credentials") from exc
    if not separator or not username or any(ord(c) < 32 for c in username + password):
        raise BrokerError(401, "malformed HTTP Basic credentials")
    return username, password


def check_version(request: Request) -> None:
    """A missing header is a bad request; a version this broker does not speak fails the precondition."""
    value = request.headers.get(VERSION_HEADER)
    if value is None:
        raise BrokerError(400, f"the {VERSION_HEADER} header is required; this broker speaks {API_VERSION}")
    match = _VERSION.match(value.strip())
    if not match or int(match.group(1)) != 2 or int(match.group(2)) < MIN_MINOR:
        raise BrokerError(
            412,
            f"{VERSION_HEADER} {value!r} is not supported: use 2.{MIN_MINOR} or later 2.x ({API_VERSION})",
        )


def _flag(request: Request, name: str) -> bool:
    value = request.query_params.get(name)
    if value is None:
        return False
    if value not in ("true", "false"):
        raise BrokerError(400, f"the query parameter {name} must be true or false")
    return value == "true"


def _required(request: Request, name: str) -> str:
    value = request.query_params.get(name)
    if not value:
        raise BrokerError(400, f"the query parameter {name} is required")
    return value


async def _body(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        raise BrokerError(400, "a JSON request body is required")
    try:
        return decode_json(raw)
    except DecodeError as exc:
        raise BrokerError(400, f"the request body is not acceptable: {exc}") from None


class _Dispatch(Generic[Records]):
    """Authenticates a request (then checks its API version), and runs its operation on the caller's
    records in a worker thread."""

    def __init__(self, backend: BrokerBackend[Records]) -> None:
        self.backend = backend

    async def caller_of(self, request: Request) -> str:
        username, password = _credentials(request)
        caller = await asyncio.to_thread(self.backend.authenticate, username, password)
        if caller is None:
            raise BrokerError(401, "unknown broker credentials")
        check_version(request)
        return caller

    async def writing(self, request: Request) -> tuple[str, bool, Any]:
        """The caller, `accepts_incomplete` and the body of a provision, update or bind."""
        caller = await self.caller_of(request)
        return caller, _flag(request, "accepts_incomplete"), await _body(request)

    async def removing(self, request: Request) -> tuple[str, Removal]:
        """The caller and the query of a deprovision or unbind, after checking the ids in its path."""
        caller = await self.caller_of(request)
        for kind, value in request.path_params.items():
            service.check_id(kind, value)
        removal = Removal(
            _required(request, "service_id"),
            _required(request, "plan_id"),
            _flag(request, "accepts_incomplete"),
        )
        return caller, removal

    async def run(
        self, request: Request, caller: str, operation: Callable[[BrokerRequest[Records]], Answer]
    ) -> Response:
        catalog = self.backend.catalog(caller)

        def work(records: Records) -> Answer:
            return operation(BrokerRequest(records, catalog, time.time()))

        status, body = await asyncio.to_thread(self.backend.transact, caller, work)
        headers = {"Retry-After": service.RETRY_AFTER} if body.get("state") == "in progress" else None
        return _json(request, status, body, headers)


def broker_router(backend: BrokerBackend[Records], operations: BrokerOperations[Records]) -> APIRouter:
    router = APIRouter(tags=["broker"])
    dispatch = _Dispatch(backend)

    @router.get("/v2/catalog")
    async def catalog(request: Request) -> Response:
        caller = await dispatch.caller_of(request)
        return _json(request, 200, backend.catalog(caller).document())

    _instance_routes(router, dispatch, operations)
    _binding_routes(router, dispatch, operations)
    return router


def _instance_routes(
    router: APIRouter, dispatch: _Dispatch[Records], operations: BrokerOperations[Records]
) -> None:
    @router.get("/v2/service_instances/{instance_id}/last_operation")
    async def instance_last_operation(request: Request, instance_id: str) -> Response:
        caller, operation = await dispatch.caller_of(request), request.query_params.get("operation")
        return await dispatch.run(
            request, caller, lambda r: operations.instance_last_operation(r, instance_id, operation)
        )

    instance = "/v2/service_instances/{instance_id}"
    router.add_api_route(
        instance, _writing(dispatch, operations.provision), methods=["PUT"], name="provision"
    )
    router.add_api_route(instance, _writing(dispatch, operations.update), methods=["PATCH"], name="update")

    @router.get("/v2/service_instances/{instance_id}")
    async def fetch_instance(request: Request, instance_id: str) -> Response:
        caller = await dispatch.caller_of(request)
        return await dispatch.run(request, caller, lambda r: operations.fetch_instance(r, instance_id))

    @router.delete("/v2/service_instances/{instance_id}")
    async def deprovision(request: Request, instance_id: str) -> Response:
        caller, removal = await dispatch.removing(request)
        return await dispatch.run(request, caller, lambda r: operations.deprovision(r, instance_id, removal))


def _writing(
    dispatch: _Dispatch[Records], operation: Callable[[BrokerRequest[Records], str, Any, bool], Answer]
) -> Callable[[Request, str], Awaitable[Response]]:
    """The route of a provision or an update of an instance."""

    async def route(request: Request, instance_id: str) -> Response:
        caller, asynchronous, body = await dispatch.writing(request)
        return await dispatch.run(request, caller, lambda r: operation(r, instance_id, body, asynchronous))

    return route


def _binding_routes(
    router: APIRouter, dispatch: _Dispatch[Records], operations: BrokerOperations[Records]
) -> None:
    @router.get("/v2/service_instances/{instance_id}/service_bindings/{binding_id}/last_operation")
    async def binding_last_operation(request: Request, instance_id: str, binding_id: str) -> Response:
        caller, operation = await dispatch.caller_of(request), request.query_params.get("operation")
        return await dispatch.run(
            request,
            caller,
            lambda r: operations.binding_last_operation(r, instance_id, binding_id, operation),
        )

    @router.put("/v2/service_instances/{instance_id}/service_bindings/{binding_id}")
    async def bind(request: Request, instance_id: str, binding_id: str) -> Response:
        caller, asynchronous, body = await dispatch.writing(request)
        return await dispatch.run(
            request, caller, lambda r: operations.bind(r, instance_id, binding_id, body, asynchronous)
        )

    @router.get("/v2/service_instances/{instance_id}/service_bindings/{binding_id}")
    async def fetch_binding(request: Request, instance_id: str, binding_id: str) -> Response:
        caller = await dispatch.caller_of(request)
        return await dispatch.run(
            request, caller, lambda r: operations.fetch_binding(r, instance_id, binding_id)
        )

    @router.delete("/v2/service_instances/{instance_id}/service_bindings/{binding_id}")
    async def unbind(request: Request, instance_id: str, binding_id: str) -> Response:
        caller, removal = await dispatch.removing(request)
        return await dispatch.run(
            request, caller, lambda r: operations.unbind(r, instance_id, binding_id, removal)
        )
