"""The pieces of `rrm demo` that need no processes: its manifest, when the fleet counts as settled."""

from __future__ import annotations

from pathlib import Path

from rrm.cli.demo import example_manifest, secrets_file_of, unsettled
from rrm.cli.manifests import parse_documents


def runtime(name: str, count: int, **statuses: str) -> dict[str, object]:
    return {
        "name": name,
        "component_count": count,
        "conditions": [{"type": kind, "status": status} for kind, status in statuses.items()],
    }


def test_the_shipped_example_is_the_concepts_logging_binding() -> None:
    secret, component = parse_documents(example_manifest(), "example")
    assert (secret["kind"], secret["metadata"]["name"], list(secret["stringData"])) == (
        "Secret",
        "logging-credentials",
        ["token"],
    )
    assert component["metadata"]["annotations"] == {"rrm.io/selector": "env=prod"}
    assert component["spec"]["type"] == "bindings.http"
    metadata = {item["name"]: item for item in component["spec"]["metadata"]}
    assert metadata["url"]["value"] == "https://logging.example.com/ingest"
    assert metadata["securityToken"]["secretKeyRef"] == {"name": "logging-credentials", "key": "token"}
    assert metadata["securityTokenHeader"]["value"] == "X-Api-Token"


def test_the_fleet_settles_only_when_prod_is_ready_and_dev_is_synced_and_empty() -> None:
    prod = [runtime("prod-eu", 1, Ready="True"), runtime("prod-us", 1, Ready="True")]
    assert unsettled([*prod, runtime("dev-1", 0, Synced="True")]) == []
    assert unsettled([*prod, runtime("dev-1", 1, Synced="True")]) == ["dev-1"]
    assert unsettled([*prod, runtime("dev-1", 0, Synced="Unknown")]) == ["dev-1"]
    assert unsettled([prod[0], runtime("prod-us", 1, Ready="False"), runtime("dev-1", 0, Synced="True")]) == [
        "prod-us"
    ]
    assert unsettled([runtime("prod-eu", 0, Ready="True")]) == ["prod-eu", "prod-us", "dev-1"]


def test_the_secrets_file_is_found_through_the_local_file_store(tmp_path: Path) -> None:
    (tmp_path / "rrm-logging.yaml").write_text("kind: Component\nspec: {type: bindings.http}\n")
    (tmp_path / "rrm-secrets.yaml").write_text(
        "kind: Component\nspec:\n  type: secretstores.local.file\n  metadata:\n"
        "    - {name: secretsFile, value: /state/secrets.json}\n"
    )
    assert secrets_file_of(tmp_path) == Path("/state/secrets.json")
    assert secrets_file_of(tmp_path / "missing") is None
