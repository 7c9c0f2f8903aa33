"""Compass and broker helpers for integration tests: Application manifests, scenarios, broker clients."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from .harness import DEADLINE, ManagedProcess, expect_status, free_port, wait_until

OSB_VERSION = "2.17"


def application(
    name: str,
    bundles: Sequence[Mapping[str, Any]] | None = None,
    *,
    scenarios: Sequence[str] | None = None,
    labels: Mapping[str, str] | None = None,
    base_url: str | None = None,
    apis: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """An `rrm.io/v1` Application; one bundle `main` with header credentials unless told otherwise."""
    spec: dict[str, Any] = {
        "description": f"{name} for tests",
        "provider": "ACME",
        "baseUrl": base_url or f"https://{name}.example.com",
        "bundles": list(bundles)
        if bundles is not None
        else [
            {
                "name": "main",
                "credentials": {"type": "header", "header": "X-Api-Key", "token": f"{name}-token"},
            }
        ],
    }
    if scenarios is not None:
        spec["scenarios"] = list(scenarios)
    if apis is not None:
        spec["apis"] = list(apis)
    metadata: dict[str, Any] = {"name": name}
    if labels:
        metadata["labels"] = dict(labels)
    return {"apiVersion": "rrm.io/v1", "kind": "Application", "metadata": metadata, "spec": spec}


def create_scenario(admin: httpx.Client, name: str) -> None:
    expect_status(admin.post("/api/v1/scenarios", json={"name": name}), 201)


def put_in_scenarios(
    admin: httpx.Client, runtime: str, add: Sequence[str] = (), remove: Sequence[str] = ()
) -> Any:
    body = {"add": list(add), "remove": list(remove)}
    return expect_status(admin.patch(f"/api/v1/runtimes/{runtime}/scenarios", json=body), 200).json()


def broker_client(admin: httpx.Client, runtime: str) -> httpx.Client:
    """A client of the System Broker with the runtime's own (fresh) broker credentials."""
    answer = expect_status(
        admin.post(f"/api/v1/runtimes/{runtime}/broker-credentials", json={"rotate": True}), 201
    )
    creds = answer.json()
    return httpx.Client(
        base_url=creds["broker_url"],
        auth=(creds["username"], creds["password"]),
        headers={"X-Broker-API-Version": OSB_VERSION},
        timeout=30,
    )


def catalog_names(broker: httpx.Client) -> list[str]:
    return sorted(s["name"] for s in expect_status(broker.get("/v2/catalog"), 200).json()["services"])


def offering(broker: httpx.Client, name: str) -> dict[str, Any]:
    services = expect_status(broker.get("/v2/catalog"), 200).json()["services"]
    return dict(next(s for s in services if s["name"] == name))


class StaticBrokerProcess(ManagedProcess):
    """`rrm static-broker` on 127.0.0.1 with a catalog file."""

    def __init__(
        self, catalog: Path, log_path: Path, username: str, password: str, state: Path | None = None
    ):
        super().__init__("rrm static-broker", log_path)
        self.catalog = catalog
        self.port = free_port()
        self.username, self.password = username, password
        self.state = state

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [sys.executable, "-m", "rrm", "static-broker", "--catalog", str(self.catalog)]
        args += ["--port", str(self.port), "--username", self.username]
        if self.state is not None:
            args += ["--state", str(self.state)]
        self._launch(args, {"RRM_BROKER_PASSWORD": self.password})
        wait_until(self._healthy, DEADLINE, lambda: f"the static broker did not start:\n{self.tail()}")

    def _healthy(self) -> bool:
        self.ensure_running()
        return httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            auth=(self.username, self.password),
            headers={"X-Broker-API-Version": OSB_VERSION},
            timeout=30,
        )
