"""The daprd stand-in behaves as its docstring says, so tests that rely on it cannot pass vacuously."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import fake_daprd
import httpx
import pytest
import yaml

STANDIN = Path(fake_daprd.__file__)


def component(
    name: str,
    type: str = "bindings.http",
    items: list[dict[str, Any]] | None = None,
    *,
    version: str = "v1",
    ignoreErrors: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": type, "version": version, "metadata": items or []}
    if ignoreErrors:
        spec["ignoreErrors"] = True
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name},
        "spec": spec,
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


def test_a_component_scoped_to_other_apps_is_not_loaded(tmp_path: Path) -> None:
    """pkg/internal/loader/disk/disk.go `filterManifests`: non-empty scopes without our app id: skipped."""
    write(tmp_path / "a.yaml", component("mine", scopes=["x", "app"]), component("theirs", scopes=["x"]))
    write(tmp_path / "b.yaml", component("everyone"))
    sidecar = fake_daprd.Sidecar(tmp_path, app_id="app")
    sidecar.reload()
    assert [c["name"] for c in sidecar.metadata_components()] == ["everyone", "mine"]

    write(tmp_path / "a.yaml", component("mine", scopes=["x"]))
    sidecar.reload()
    assert [c["name"] for c in sidecar.metadata_components()] == ["everyone"], "out of scope: closed"
    assert sidecar.errors() == {}, "a component out of scope is skipped, not failed"


def test_an_unknown_type_or_version_fails_init_in_daprds_words_and_is_not_listed(tmp_path: Path) -> None:
    """pkg/runtime/processor/components.go `processComponentAndDependents` and `processComponents`, the
    registries' `Create` (pkg/components/state/registry.go) and pkg/runtime/processor/binding/binding.go
    `Init`: the error is logged, the component is not registered; `ignoreErrors: true` keeps daprd up."""
    write(
        tmp_path / "a.yaml",
        component("web"),
        component("old-web", "bindings.http", version="v9", ignoreErrors=True),
        component("nosuch", "state.nosuch", ignoreErrors=True),
        component("typo", "stat.redis", ignoreErrors=True),
        component("memory", "state.in-memory"),
    )
    sidecar = fake_daprd.Sidecar(tmp_path)
    sidecar.reload()
    assert [c["name"] for c in sidecar.metadata_components()] == ["memory", "web"]
    init = "[INIT_COMPONENT_FAILURE]: initialization error occurred for"
    assert sidecar.errors() == {
        "old-web": f"process component old-web error: {init} old-web (bindings.http/v9): "
        "couldn't find binding old-web (bindings.http/v9)",
        "nosuch": f"process component nosuch error: {init} nosuch (state.nosuch/v1): "
        "[CREATE_COMPONENT_FAILURE]: initialization error occurred for nosuch (state.nosuch/v1): "
        "couldn't find state store state.nosuch/v1",
        "typo": "process component typo error: incorrect type stat.redis",
    }
    assert sidecar.resolved("nosuch")[0] == 404

    write(tmp_path / "a.yaml", component("web"), component("old-web", "bindings.http", version="v1"))
    sidecar.reload()
    assert [c["name"] for c in sidecar.metadata_components()] == ["old-web", "web"]
    assert sidecar.errors() == {}, "a fixed or removed component's error is gone"


def test_a_failed_component_is_tried_again_only_when_its_manifest_changes(tmp_path: Path) -> None:
    """pkg/runtime/hotreload/differ: a pass initialises what differs from what daprd holds; a file event
    triggers a pass (loader/disk/disk.go), so an unchanged manifest that failed is not retried at once."""
    resources = tmp_path / "resources"
    resources.mkdir()
    values = tmp_path / "secrets.json"
    broken = {**store("store", values), "spec": {**store("store", values)["spec"], "ignoreErrors": True}}
    write(resources / "a.yaml", broken)
    sidecar = fake_daprd.Sidecar(resources)
    sidecar.reload()
    assert "No such file" in sidecar.errors()["store"]

    values.write_text(json.dumps({"creds": {"token": "v1"}}))
    sidecar.reload()
    assert sidecar.metadata_components() == [], "an unchanged manifest was initialised again"
    broken["spec"]["metadata"].append({"name": "nestedSeparator", "value": ":"})
    write(resources / "a.yaml", broken)
    sidecar.reload()
    assert [c["name"] for c in sidecar.metadata_components()] == ["store"] and sidecar.errors() == {}


def test_a_changed_component_is_unlisted_while_it_initialises_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pkg/runtime/hotreload/reconciler/components.go `update`: a changed component is closed, then queued
    for init; differ.AreSame ignores labels and annotations, so an annotation bump changes nothing."""
    write(tmp_path / "a.yaml", component("other"), component("web", items=[{"name": "url", "value": "v1"}]))
    sidecar = fake_daprd.Sidecar(tmp_path, init_delay=0.3)
    listed_during_init: list[list[str]] = []

    def initialising(seconds: float) -> None:
        assert seconds == 0.3
        listed_during_init.append([c["name"] for c in sidecar.metadata_components()])

    monkeypatch.setattr(fake_daprd, "time", SimpleNamespace(sleep=initialising))
    sidecar.reload()
    assert listed_during_init == [[], ["other"]]

    changed = component("web", items=[{"name": "url", "value": "v2"}])
    write(tmp_path / "a.yaml", component("other"), changed)
    sidecar.reload()
    assert listed_during_init[2:] == [["other"]], (
        "the old revision stayed listed while the new one initialised"
    )
    assert [c["name"] for c in sidecar.metadata_components()] == ["other", "web"]

    changed["metadata"]["annotations"] = {"rrm.io/revision": "3"}
    write(tmp_path / "a.yaml", component("other"), changed)
    sidecar.reload()
    assert len(listed_during_init) == 3, "an annotation change re-initialised the component"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v1.0/healthz").status_code == 204
    except httpx.TransportError:
        return False


@contextmanager
def running(resources: Path, *options: str) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """The stand-in as its own process: (process, url, log file); killed at the end if still running."""
    port = free_port()
    args = [sys.executable, str(STANDIN), "--port", str(port), "--resources-path", str(resources)]
    log = resources.parent / f"daprd-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen([*args, *options], stderr=out)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: healthy(url), f"the stand-in did not start: {log.read_text()}", process)
        yield process, url, log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_until(predicate: Callable[[], Any], message: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while not predicate():
        assert time.monotonic() < deadline and process.poll() is None, message
        time.sleep(0.05)


def names(url: str) -> list[str]:
    return [c["name"] for c in httpx.get(f"{url}/v1.0/metadata").json()["components"]]


def test_serves_metadata_behind_the_api_token_and_dies_on_a_duplicate_name(tmp_path: Path) -> None:
    """Duplicate: pkg/internal/loader/disk/disk.go `filterManifests` returns "duplicate definition", which
    pkg/runtime/hotreload/loader/disk/resource.go `run` returns as fatal ("failed to load resources")."""
    resources = tmp_path / "resources"
    resources.mkdir()
    write(resources / "a.yaml", component("one"))
    with running(resources, "--app-id", "x", "--api-token", "t") as (process, url, log):
        assert httpx.get(f"{url}/v1.0/metadata").status_code == 401
        body = httpx.get(f"{url}/v1.0/metadata", headers={"dapr-api-token": "t"}).json()
        assert body["id"] == "x" and body["enabledFeatures"] == ["HotReload"]
        assert body["components"] == [
            {"name": "one", "type": "bindings.http", "version": "v1", "capabilities": []}
        ]

        write(resources / "b.yaml", component("one"))
        assert process.wait(20) == 1
        assert "duplicate definition of Component name one (bindings.http/v1)" in log.read_text()


def test_keeps_a_connection_alive_for_the_next_question_as_go_net_http_does(tmp_path: Path) -> None:
    """daprd's API server is Go's net/http, which keeps HTTP/1.1 connections alive by default (Go 1.3 release
    notes: "the server does keep-alive (reuses connections for multiple requests) by default")."""
    resources = tmp_path / "resources"
    resources.mkdir()
    with running(resources) as (_, url, _), httpx.Client(base_url=url) as client:
        first = client.get("/v1.0/metadata")
        second = client.get("/v1.0/metadata")
    assert first.http_version == second.http_version == "HTTP/1.1"
    assert "close" not in first.headers.get("connection", "")
    assert first.extensions["network_stream"] is second.extensions["network_stream"]


def test_rescans_on_its_timer_not_on_a_request(tmp_path: Path) -> None:
    """daprd notices a change through its directory watch (pkg/runtime/hotreload/loader/disk/disk.go), never
    because someone asked for /v1.0/metadata."""
    resources = tmp_path / "resources"
    resources.mkdir()
    with running(resources, "--rescan-interval", "3600", "--init-delay", "0") as (process, url, _):
        write(resources / "a.yaml", component("one"))
        assert [names(url) for _ in range(5)] == [[]] * 5, "a request made the stand-in re-read the directory"
    with running(resources, "--init-delay", "0") as (process, url, _):
        write(resources / "b.yaml", component("two"))
        wait_until(lambda: names(url) == ["one", "two"], "the timer never picked the new file up", process)


def test_a_new_component_is_listed_only_after_its_initialisation(tmp_path: Path) -> None:
    """pkg/runtime/processor/components.go: a component is registered (and listed) once its Init returned."""
    resources = tmp_path / "resources"
    resources.mkdir()
    with running(resources, "--rescan-interval", "0.05", "--init-delay", "1.5") as (process, url, log):
        written = time.monotonic()
        write(resources / "a.yaml", component("one"))
        wait_until(lambda: names(url) == ["one"], "never loaded", process)
        assert time.monotonic() - written >= 1.5, "listed before its initialisation took its time"
        assert "Component loaded: one (bindings.http/v1)" in log.read_text()


def test_an_init_error_without_ignore_errors_shuts_daprd_down(tmp_path: Path) -> None:
    """pkg/runtime/processor/components.go `processComponents`: "Error processing component, daprd will
    exit gracefully"; the error ends the runtime. Until then the error is visible only in the log (and, for
    tests, at /test/init-errors): /v1.0/metadata has no field for it."""
    resources = tmp_path / "resources"
    resources.mkdir()
    write(resources / "a.yaml", component("one"), component("ignored", "state.nosuch", ignoreErrors=True))
    with running(resources, "--init-delay", "0") as (process, url, log):
        assert names(url) == ["one"]
        assert set(httpx.get(f"{url}/test/init-errors").json()) == {"ignored"}
        assert set(httpx.get(f"{url}/v1.0/metadata").json()) == {
            "id",
            "runtimeVersion",
            "enabledFeatures",
            "components",
        }
        write(resources / "b.yaml", component("two", "bindings.http", version="v2"))
        assert process.wait(20) == 1
        text = log.read_text()
        assert "Ignoring error processing component: process component ignored error:" in text
        assert (
            "Error processing component, daprd will exit gracefully: process component two error: "
            "[INIT_COMPONENT_FAILURE]: initialization error occurred for two (bindings.http/v2): "
            "couldn't find binding two (bindings.http/v2)"
        ) in text
