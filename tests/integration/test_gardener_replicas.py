"""Two control-plane replicas on one PostgreSQL database provisioning Gardener environments at once: each
tenant's account is claimed once. Its own module so that it runs beside the other Gardener tests."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from .databases import fresh_postgres_database
from .gardener import GardenerApiServer, GardenerServer
from .harness import Fleet
from .test_environments import request

pytestmark = pytest.mark.integration


def test_two_replicas_provisioning_20_environments_for_10_tenants_claim_one_account_each(
    tmp_path: Path,
) -> None:
    """Half the requests through each replica of one PostgreSQL database, all at once."""
    garden = GardenerApiServer(tmp_path, create_seconds=1.0)
    with fresh_postgres_database() as database_url:
        servers: list[GardenerServer] = []
        fleet: Fleet | None = None
        try:
            garden.start()
            for index in range(12):
                garden.binding(f"aws-{index:02d}")
            for index in range(2):
                data = tmp_path / f"replica-{index}"
                if servers:
                    data.mkdir(parents=True)
                    for name in ("admin-token", "secret-key"):
                        shutil.copy(servers[0].data_dir / name, data / name)
                server = GardenerServer(
                    garden, [], data, tmp_path / f"replica-{index}.log", database_url=database_url
                )
                server.start()
                servers.append(server)
            fleet = Fleet(servers[0], tmp_path / "fleet")
            fleet.processes += [garden, servers[1]]
            with ThreadPoolExecutor(20) as pool:
                list(pool.map(lambda i: request(
                    servers[i % 2].admin, f"gr-{i}", "gardener-aws", tenant={"globalAccount": f"ga-{i % 10}"}
                ), range(20)))  # fmt: skip

            def all_created() -> list[dict[str, Any]]:
                shoots = garden.shoots()
                return shoots if len(shoots) == 20 else []

            shoots = fleet.wait_until(all_created, "not every environment got its Shoot", timeout=120)
            by_tenant: dict[str, set[str]] = {}
            for shoot in shoots:
                tenant = shoot["metadata"]["labels"]["rrm.io/global-account"]
                by_tenant.setdefault(tenant, set()).add(shoot["spec"]["secretBindingName"])
            assert all(len(accounts) == 1 for accounts in by_tenant.values()), by_tenant
            assert len(by_tenant) == 10 and len(set().union(*by_tenant.values())) == 10
            tenants = [b["metadata"]["labels"].get("tenantName") for b in garden.bindings().values()]
            assert sorted(t for t in tenants if t) == sorted(f"ga-{i}" for i in range(10))
        finally:
            if fleet is not None:
                fleet.close()
            garden.stop()
            for server in servers:
                server.stop()
