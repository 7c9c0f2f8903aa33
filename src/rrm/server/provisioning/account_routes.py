"""`GET /api/v1/accounts`: every binding of the Hyperscaler Account Pool, as Gardener holds it (type, tenant,
shared, euAccess, dirty, the environments and clusters using it, the last cleanup failure)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, HTTPException

from rrm.server.api.common import BoundedRoute, reader
from rrm.server.provisioning.backends.base import BackendFailure, RetryLater
from rrm.server.state import ServerState, server_state

router = APIRouter(tags=["environments"], dependencies=[Depends(reader)], route_class=BoundedRoute)


@router.get("/accounts")
async def list_accounts(state: ServerState = Depends(server_state)) -> list[dict[str, Any]]:
    pools = {} if state.provisioning is None else state.provisioning.catalog.account_pools
    listed = [(name, pool) for name, pool in pools.items() if hasattr(pool, "accounts")]
    if not listed:
        raise HTTPException(
            404, "this control plane has no account pool (rrm server --gardener-kubeconfig … adds one)"
        )
    accounts: list[dict[str, Any]] = []
    for name, pool in listed:
        try:
            found = await asyncio.to_thread(pool.accounts)  # type: ignore[attr-defined]
        except (RetryLater, BackendFailure) as exc:
            raise HTTPException(503, f"account pool {name}: {exc}") from exc
        accounts += [{"pool": name, **account} for account in found]
    return accounts
