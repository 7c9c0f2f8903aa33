"""Secret rotation reaches the files and a running daprd; secret values stay write-only everywhere else."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from .harness import (
    AgentProcess,
    FakeDaprd,
    Fleet,
    ServerProcess,
    apply,
    condition_true,
    expect_status,
    files_containing,
    http_binding,
    json_contains,
    resource_documents,
    secret,
    secret_stores,
    secrets_file_of,
    synced,
)

pytestmark = pytest.mark.integration


def store_of(components: dict[str, dict[str, Any]], name: str) -> str | None:
    return (components.get(name, {}).get("auth") or {}).get("secretStore")


def binding_with_secret(
    fleet: Fleet, admin: httpx.Client, prefix: str, value: str
) -> tuple[FakeDaprd, AgentProcess]:
    """Runtime `<prefix>-1` with a daprd, whose binding `<prefix>-http` takes its token from secret
    `<prefix>-credentials`; returns once daprd resolves `value` through rrm's secret store."""
    daprd = fleet.daprd(f"{prefix}-1")
    agent = fleet.agent(f"{prefix}-1", {f"t-{prefix}": "yes"}, daprd=daprd)
    credentials = f"{prefix}-credentials"
    binding = http_binding(
        f"{prefix}-http", f"t-{prefix}=yes", f"http://{prefix}.invalid/", token_ref=(credentials, "token")
    )
    apply(admin, [secret(credentials, {"token": value}), binding])
    fleet.wait_until(
        lambda: (daprd.resolved(f"{prefix}-http") or {}).get("securityToken") == value,
        "daprd resolves the first value through the rrm secret store",
    )
    return daprd, agent


def test_rotation_reaches_the_files_and_the_running_daprd(
    fleet: Fleet, server: ServerProcess, admin: httpx.Client
) -> None:
    old, new = f"old-{uuid.uuid4().hex}", f"new-{uuid.uuid4().hex}"
    daprd, agent = binding_with_secret(fleet, admin, "rot", old)
    first = fleet.wait_files(agent, lambda c: store_of(c, "rot-http") is not None, "dependent names a store")
    first_store = store_of(first, "rot-http")
    assert first_store in secret_stores(agent.resources_path)

    apply(admin, [secret("rot-credentials", {"token": new})])
    rotated = fleet.wait_files(
        agent,
        lambda c: store_of(c, "rot-http") not in (None, first_store),
        "the dependent component follows a secret store with a new name",
    )
    new_store = store_of(rotated, "rot-http")
    stores = secret_stores(agent.resources_path)
    assert new_store in stores, f"{new_store} is named by rot-http but not on disk: {sorted(stores)}"
    values = json.loads(secrets_file_of(stores[str(new_store)]).read_text())
    assert json_contains(values, new) and not json_contains(values, old), (
        "the new store's file has stale values"
    )
    fleet.wait_until(
        lambda: (daprd.resolved("rot-http") or {}).get("securityToken") == new,
        "the running daprd resolves the rotated value",
    )
    fleet.wait_files(agent, lambda c: first_store not in c, "the old secret store is pruned")
    fleet.wait_runtime("rot-1", lambda d: synced(d) and condition_true(d, "Ready"), "Synced and Ready")

    yaml_text = "".join(doc.path.read_text() for doc in resource_documents(agent.resources_path))
    assert old not in yaml_text and new not in yaml_text, "a secret value written into a YAML file"
    listed = {s["name"]: s for s in expect_status(admin.get("/api/v1/secrets"), 200).json()}
    assert listed["rot-credentials"]["keys"] == ["token"]
    assert listed["rot-credentials"]["used_by"] == ["rot-http"]
    assert listed["rot-credentials"]["revision"] >= 2
    for path in (
        "/api/v1/secrets",
        "/api/v1/components",
        "/api/v1/components/rot-http",
        "/api/v1/components/rot-http/history",
        "/api/v1/runtimes/rot-1",
        "/api/v1/events?limit=1000",
    ):
        body = expect_status(admin.get(path), 200).text
        assert old not in body and new not in body, f"{path} returns a secret value"
    at_rest = files_containing([server.data_dir], new)
    assert not at_rest, f"a secret value is stored in clear in {at_rest}"
    logged = [p for p in (server.log_path, agent.log_path) if new in p.read_text(errors="replace")]
    assert not logged, f"a secret value is logged in {logged}"


def test_an_upgraded_agent_renames_an_earlier_agents_store_file_while_daprd_runs(
    fleet: Fleet, admin: httpx.Client
) -> None:
    """Earlier agents named the store's file `rrm-rrm-secrets-<h>.yaml`; writing the new file beside it
    would define the store twice, which stops daprd."""
    value = f"v-{uuid.uuid4().hex}"
    daprd, agent = binding_with_secret(fleet, admin, "mig", value)
    agent.stop()
    [store] = [d for d in resource_documents(agent.resources_path) if d.name in secret_stores(d.path.parent)]
    assert store.path.name == f"{store.name}.store.yaml"
    legacy = store.path.with_name(f"rrm-{store.name}.yaml")
    store.path.rename(legacy)
    loaded_at = daprd.loaded_at(store.name)

    agent.start()
    fleet.wait_files(
        agent, lambda _: store.path.exists() and not legacy.exists(), "the store file is renamed"
    )
    fleet.wait_runtime("mig-1", lambda d: synced(d) and condition_true(d, "Ready"), "Synced and Ready")

    assert sorted(p.name for p in agent.resources_path.iterdir()) == ["rrm-mig-http.yaml", store.path.name]
    assert (daprd.resolved("mig-http") or {}).get("securityToken") == value
    assert daprd.loaded_at(store.name) == loaded_at, "the renamed store was initialised again"
