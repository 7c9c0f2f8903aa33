"""The daprd stand-in behaves as its docstring says, so tests that rely on it cannot pass vacuously."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import fake_daprd
import httpx
import yaml

STANDIN = Path(fake_daprd.__file__)


def component(
    name: str, type: str = "bindings.http", items: list[dict[str, Any]] | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name},
        "spec": {"type": type, "version": "v1", "metadata": items or []},
        **extra,
    }


def store(name: str, secrets_file: Path) -> dict[str, Any]:
    items = [{"name": "secretsFile", "value": str(secrets_file)}, {"name": "multiValued", "value": "true"}]
    return component(name, "secretstores.local.file", items)


def user(store_name: str) -> dict[str, Any]:
    ref = {"name": "securityToken", "secretKeyRef": {"name": "creds", "key": "token"}}
    return component(
        "web", items=[{"name": "url", "value": "http://x"}, ref], auth={"secretStore": store_name}
    )


def write(path: Path, *docs: dict[str, Any]) -> None:
    path.write_text("\n---\n".join(yaml.safe_dump(d) for d in docs))


def test_loads_only_components_from_yaml_files_directly_in_the_directory(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", component("one"), {**component("typo"), "apiVersion": "dapr.io/v1"})
    write(tmp_path / "b.yml", component("two"), {**component("config"), "kind": "Configuration"})
    write(tmp_path / "c.yaml.tmp", component("temp"))
    (tmp_path / "d.yaml").write_text("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: [trunc")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "e.yaml", component("nested"))
    assert [m["metadata"]["name"] for m in fake_daprd.read_components(tmp_path)] == ["one", "two"]


def test_a_rotated_value_reaches_a_component_only_through_a_renamed_store(tmp_path: Path) -> None:
    resources = tmp_path / "resources"
    resources.mkdir()
    values = tmp_path / "secrets.json"
    values.write_text(json.dumps({"creds": {"token": "v1"}}))
    write(resources / "all.yaml", store("store-a", values), user("store-a"))
    sidecar = fake_daprd.Sidecar(resources)
    sidecar.reload()
    assert sidecar.resolved("web") == (
        200,
        {"name": "web", "metadata": {"url": "http://x", "securityToken": "v1"}, "errors": []},
    )

    values.write_text(json.dumps({"creds": {"token": "v2"}}))
    (resources / "all.yaml").touch()
    sidecar.reload()
    assert sidecar.resolved("web")[1]["metadata"]["securityToken"] == "v1", (
        "the store re-read an unchanged spec"
    )

    write(resources / "all.yaml", user("store-b"))
    sidecar.reload()
    assert sidecar.resolved("web")[0] == 404, "a component waiting for its store must not be listed"
    write(resources / "all.yaml", store("store-b", values), user("store-b"))
    sidecar.reload()
    assert sidecar.resolved("web")[1]["metadata"]["securityToken"] == "v2"
    assert [c["name"] for c in sidecar.metadata_components()] == ["store-b", "web"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v1.0/healthz").status_code == 204
    except httpx.TransportError:
        return False


def test_serves_metadata_behind_the_api_token_and_dies_on_a_duplicate_name(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", component("one"))
    port = free_port()
    args = [sys.executable, str(STANDIN), "--port", str(port), "--resources-path", str(tmp_path)]
    log = tmp_path / "daprd.log"
    with log.open("wb") as out:
        process = subprocess.Popen([*args, "--app-id", "x", "--api-token", "t"], stderr=out)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while not healthy(url):
            assert time.monotonic() < deadline and process.poll() is None, log.read_text()
            time.sleep(0.1)
        assert httpx.get(f"{url}/v1.0/metadata").status_code == 401
        body = httpx.get(f"{url}/v1.0/metadata", headers={"dapr-api-token": "t"}).json()
        assert body["id"] == "x" and body["enabledFeatures"] == ["HotReload"]
        assert body["components"] == [
            {"name": "one", "type": "bindings.http", "version": "v1", "capabilities": []}
        ]

        write(tmp_path / "b.yaml", component("one"))
        assert process.wait(20) == 1
        assert "duplicate" in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
