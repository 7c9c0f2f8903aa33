"""Components reach exactly the runtimes whose labels match, as files daprd accepts; pruning spares others."""

from __future__ import annotations

from typing import Any

import httpx
import jsonschema
import pytest
import yaml

from rrm.dapr import component_crd_schema

from .harness import (
    Fleet,
    apply,
    component,
    components_on_disk,
    expect_status,
    http_binding,
    metadata_value,
    relabel,
    resource_documents,
    rrm_files,
    secret,
    secret_stores,
    secrets_file_of,
    synced,
)

pytestmark = pytest.mark.integration


def url_of(components: dict[str, dict[str, Any]], name: str) -> Any:
    return metadata_value(components.get(name, {}), "url")


def revision_of(manifest: dict[str, Any]) -> int:
    return int(manifest["metadata"]["annotations"]["rrm.io/revision"])


def test_create_update_delete_reach_only_matching_runtimes(fleet: Fleet, admin: httpx.Client) -> None:
    prod = fleet.agent("deliv-prod", {"t-deliv": "prod"})
    dev = fleet.agent("deliv-dev", {"t-deliv": "dev"})

    apply(
        admin,
        [
            http_binding("deliv-web", "t-deliv=prod", "http://v1.invalid/"),
            http_binding("deliv-dev-only", "t-deliv in (dev)", "http://dev.invalid/"),
        ],
    )
    on_prod = fleet.wait_files(prod, lambda c: url_of(c, "deliv-web") == "http://v1.invalid/", "created")
    assert "deliv-dev-only" not in on_prod
    assert on_prod["deliv-web"]["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "rrm"
    fleet.wait_files(dev, lambda c: "deliv-dev-only" in c, "the dev component reaches dev")
    fleet.wait_runtime("deliv-dev", synced, "dev Synced")
    assert "deliv-web" not in components_on_disk(dev.resources_path)
    selected = expect_status(admin.get("/api/v1/runtimes", params={"selector": "t-deliv=prod"}), 200).json()
    assert [r["name"] for r in selected] == ["deliv-prod"]
    shown = expect_status(admin.get("/api/v1/components/deliv-web"), 200).json()
    assert [r["name"] for r in shown["runtimes"]] == ["deliv-prod"] and shown["matched"] == 1

    apply(admin, [http_binding("deliv-web", "t-deliv=prod", "http://v2.invalid/")])
    updated = fleet.wait_files(prod, lambda c: url_of(c, "deliv-web") == "http://v2.invalid/", "updated")
    assert revision_of(updated["deliv-web"]) > revision_of(on_prod["deliv-web"])

    expect_status(admin.delete("/api/v1/components/deliv-web"), 204)
    fleet.wait_files(prod, lambda c: "deliv-web" not in c, "deleted")
    fleet.wait_runtime("deliv-prod", synced, "prod Synced after the delete")
    assert set(components_on_disk(dev.resources_path)) == {"deliv-dev-only"}


def test_relabelling_moves_components_in_and_out(fleet: Fleet, admin: httpx.Client) -> None:
    agent = fleet.agent("move-1", {"t-move": "a"})
    apply(
        admin,
        [
            http_binding("move-on-a", "t-move=a", "http://a.invalid/"),
            http_binding("move-on-b", "t-move=b", "http://b.invalid/"),
        ],
    )
    fleet.wait_files(agent, lambda c: set(c) == {"move-on-a"}, "only the component for label a")

    relabel(admin, "move-1", {"t-move": "b"})
    fleet.wait_files(agent, lambda c: set(c) == {"move-on-b"}, "relabelled to b: a's component leaves")

    relabel(admin, "move-1", remove=["t-move"])
    fleet.wait_files(agent, lambda c: c == {}, "label removed: nothing matches")
    fleet.wait_runtime("move-1", lambda d: synced(d) and d["component_count"] == 0, "Synced with none")


def test_pruning_removes_only_rrm_files(fleet: Fleet, admin: httpx.Client) -> None:
    resources = fleet.workdir / "prune-1" / "resources"
    resources.mkdir(parents=True)
    foreign = {
        "local-cache.yaml": component("foreign-cache", None, type="state.in-memory", metadata=[]),
        "notes.txt": "not a resource",
        "team.yml": component("foreign-http", None),
    }
    for name, content in foreign.items():
        text = content if isinstance(content, str) else yaml.safe_dump(content)
        (resources / name).write_text(text)
    before = {name: (resources / name).read_bytes() for name in foreign}

    agent = fleet.agent("prune-1", {"t-prune": "yes"})
    apply(
        admin,
        [
            http_binding("prune-keep", "t-prune=yes", "http://keep.invalid/"),
            http_binding("prune-drop", "t-prune=yes", "http://drop.invalid/"),
        ],
    )
    fleet.wait_files(agent, lambda c: {"prune-keep", "prune-drop"} <= set(c), "both delivered")

    expect_status(admin.delete("/api/v1/components/prune-drop"), 204)
    fleet.wait_files(agent, lambda c: "prune-drop" not in c, "the deleted component pruned")
    assert {"prune-keep", "foreign-cache", "foreign-http"} <= set(components_on_disk(resources))

    expect_status(admin.delete("/api/v1/components/prune-keep"), 204)
    fleet.wait_files(
        agent, lambda c: set(c) == {"foreign-cache", "foreign-http"}, "every rrm component pruned"
    )
    fleet.wait_runtime("prune-1", synced, "Synced with nothing placed")
    assert not [p for p in rrm_files(resources) if p.suffix in (".yaml", ".yml")]
    assert {name: (resources / name).read_bytes() for name in foreign} == before, "a foreign file changed"


def test_every_written_file_validates_against_the_component_crd(fleet: Fleet, admin: httpx.Client) -> None:
    agent = fleet.agent("crd-1", {"t-crd": "yes"})
    apply(
        admin,
        [
            secret("crd-credentials", {"password": "crd-pw-1", "token": "crd-token-1"}),
            component(
                "crd-redis",
                "t-crd=yes",
                type="state.redis",
                metadata=[
                    {"name": "redisHost", "value": "localhost:6379"},
                    {"name": "redisPassword", "secretKeyRef": {"name": "crd-credentials", "key": "password"}},
                    {"name": "redisDB", "value": 5},
                    {"name": "enableTLS", "value": False},
                ],
            ),
            component("crd-memory", "t-crd=yes", type="state.in-memory", metadata=[], scopes=["app-1"]),
            http_binding(
                "crd-http", "t-crd=yes", "http://crd.invalid/", token_ref=("crd-credentials", "token")
            ),
        ],
    )
    fleet.wait_files(agent, lambda c: {"crd-redis", "crd-memory", "crd-http"} <= set(c), "all delivered")
    fleet.wait_runtime("crd-1", synced, "Synced")

    schema = component_crd_schema()
    written = [d for d in resource_documents(agent.resources_path) if d.path.name.startswith("rrm-")]
    assert written, "the agent wrote no rrm- files"
    for doc in written:
        errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(doc.manifest), key=str)
        assert not errors, f"{doc.path.name}: {[f'{list(e.absolute_path)}: {e.message}' for e in errors]}"
        assert doc.manifest["metadata"]["name"] and doc.manifest["kind"] == "Component"
    on_disk = components_on_disk(agent.resources_path)
    assert on_disk["crd-memory"]["spec"]["metadata"] == [] and on_disk["crd-memory"]["scopes"] == ["app-1"]
    stores = secret_stores(agent.resources_path)
    assert len(stores) == 1, f"expected one rrm secret store, found {sorted(stores)}"
    for name in ("crd-redis", "crd-http"):
        assert on_disk[name]["auth"]["secretStore"] in stores, f"{name} does not name the rrm secret store"
    secrets_file = secrets_file_of(next(iter(stores.values())))
    assert secrets_file.is_absolute() and secrets_file.is_file(), f"secretsFile {secrets_file}"
    assert "crd-pw-1" not in "".join(d.path.read_text() for d in written), "a secret value in YAML"
