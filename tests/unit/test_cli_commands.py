"""The `rrm` admin commands against a recorded fake of the admin API (docs/api.md)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from rrm.cli.app import app
from rrm.cli.client import AdminClient

URL = "http://cp.test:8080"

RUNTIME = {
    "id": "rt-1",
    "name": "prod-eu",
    "kind": "selfhosted",
    "labels": {"env": "prod", "region": "eu"},
    "conditions": [
        {
            "type": "Connected",
            "status": "True",
            "reason": "Heartbeat",
            "message": "",
            "last_transition": None,
        },
        {"type": "Synced", "status": "True", "reason": "Applied", "message": "", "last_transition": None},
        {
            "type": "Ready",
            "status": "False",
            "reason": "NotLoaded",
            "message": "logging not loaded",
            "last_transition": None,
        },
    ],
    "last_seen": None,
    "component_count": 1,
    "desired_hash": "abc",
    "applied_hash": "abc",
    "agent_version": "0.1.0",
    "paired": True,
}

Handler = Callable[[httpx.Request], httpx.Response]


class FakeApi:
    """Answers by (method, path) and remembers every request."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.routes: dict[tuple[str, str], httpx.Response] = {}

    def on(self, method: str, path: str, status: int = 200, body: Any = None) -> None:
        self.routes[(method, path)] = (
            httpx.Response(status, json=body) if body is not None else httpx.Response(status)
        )

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.routes.get(
            (request.method, request.url.path), httpx.Response(404, json={"detail": "no route"})
        )

    def body(self, index: int = -1) -> Any:
        return json.loads(self.requests[index].content)

    def client(self) -> AdminClient:
        return AdminClient(URL, "admin-secret", transport=httpx.MockTransport(self))


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


def run(api: FakeApi, *args: str, stdin: str | None = None) -> Any:
    return CliRunner().invoke(app, list(args), obj=api.client(), input=stdin)


def test_get_runtimes_sends_the_selector_and_the_admin_token(api: FakeApi) -> None:
    api.on("GET", "/api/v1/runtimes", body=[RUNTIME])
    result = run(api, "get", "runtimes", "-l", "env=prod")
    assert result.exit_code == 0, result.output
    request = api.requests[0]
    assert request.url.params["selector"] == "env=prod"
    assert request.headers["authorization"] == "Bearer admin-secret"
    for column in ("NAME", "KIND", "LABELS", "CONNECTED", "SYNCED", "READY", "LAST-SEEN", "COMPONENTS"):
        assert column in result.stdout
    assert "prod-eu" in result.stdout and "env=prod,region=eu" in result.stdout and "never" in result.stdout


@pytest.mark.parametrize("loader", [json.loads, yaml.safe_load], ids=["json", "yaml"])
def test_output_formats_print_the_api_answer_as_is(api: FakeApi, loader: Callable[[str], Any]) -> None:
    api.on("GET", "/api/v1/runtimes", body=[RUNTIME])
    fmt = "json" if loader is json.loads else "yaml"
    result = run(api, "get", "runtimes", "-o", fmt)
    assert result.exit_code == 0, result.output
    assert loader(result.stdout) == [RUNTIME]


def test_an_unknown_output_format_is_a_usage_error(api: FakeApi) -> None:
    result = run(api, "get", "runtimes", "-o", "xml")
    assert result.exit_code == 2
    assert api.requests == []


def test_get_components_and_secrets_tables(api: FakeApi) -> None:
    api.on(
        "GET",
        "/api/v1/components",
        body=[
            {
                "name": "logging",
                "type": "bindings.http",
                "version": "v1",
                "revision": 3,
                "selector": "env=prod",
                "matched": 2,
                "ready": 1,
                "secrets": ["logging-credentials"],
                "updated_at": None,
            }
        ],
    )
    api.on(
        "GET",
        "/api/v1/secrets",
        body=[
            {
                "name": "logging-credentials",
                "keys": ["token"],
                "revision": 1,
                "used_by": ["logging"],
                "updated_at": None,
            }
        ],
    )
    components = run(api, "get", "components")
    assert components.exit_code == 0, components.output
    assert (
        "SELECTOR" in components.stdout
        and "env=prod" in components.stdout
        and "bindings.http" in components.stdout
    )
    secrets = run(api, "get", "secrets")
    assert secrets.exit_code == 0, secrets.output
    assert "USED-BY" in secrets.stdout and "token" in secrets.stdout and "logging" in secrets.stdout


def test_describe_runtime_explains_conditions_and_results(api: FakeApi) -> None:
    detail = {
        **RUNTIME,
        "resources": [
            {"kind": "Component", "name": "logging", "state": "failed", "message": "bad url", "revision": 2}
        ],
        "sidecar": {
            "reachable": True,
            "app_id": "orders",
            "runtime_version": "1.18.3",
            "components": [{"name": "statestore", "type": "state.redis", "version": "v1"}],
            "error": "",
        },
        "reload": {"command": "systemctl reload daprd", "exit_code": 3, "output": "unit not found"},
        "drift": [
            {"resource": "rrm-logging.yaml", "change": "modified", "detected_at": "2024-01-01T00:00:00Z"}
        ],
        "desired_components": [{"name": "logging", "revision": 2, "type": "bindings.http"}],
        "message": "",
    }
    api.on("GET", "/api/v1/runtimes/prod-eu", body=detail)
    result = run(api, "describe", "runtime", "prod-eu")
    assert result.exit_code == 0, result.output
    for text in (
        "NotLoaded",
        "logging not loaded",
        "in sync",
        "bad url",
        "failed",
        "statestore",
        "1.18.3",
        "systemctl reload daprd",
        "unit not found",
        "rrm-logging.yaml",
        "modified",
    ):
        assert text in result.stdout


def test_describe_runtime_shows_per_component_applied_loaded_or_failed_and_since_when(api: FakeApi) -> None:
    def since(seconds: int) -> str:
        return (datetime.now(UTC) - timedelta(seconds=seconds)).isoformat()

    resources = [
        {"name": "loaded-one", "state": "applied", "loaded": True, "since": since(125)},
        {"name": "waiting-one", "state": "applied", "loaded": False, "message": "written", "since": since(3)},
        {
            "name": "refused-one",
            "state": "failed",
            "loaded": False,
            "message": "not loaded",
            "since": since(7200),
        },
        {"name": "unseen-one", "state": "applied", "loaded": None, "since": None},
    ]
    detail = {
        **RUNTIME,
        "resources": [{"kind": "Component", **r} for r in resources],
        "desired_components": [
            {"name": r["name"], "revision": 1, "type": "bindings.http"} for r in resources
        ],
    }
    api.on("GET", "/api/v1/runtimes/prod-eu", body=detail)
    result = run(api, "describe", "runtime", "prod-eu")
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.split() and "-one" in line}
    assert "loaded by the sidecar" in rows["loaded-one"] and "2m ago" in rows["loaded-one"]
    assert "applied, not loaded yet" in rows["waiting-one"] and "3s ago" in rows["waiting-one"]
    assert "failed, not loaded" in rows["refused-one"] and "2h ago" in rows["refused-one"]
    assert "not loaded" in rows["refused-one"]
    assert "applied" in rows["unseen-one"] and "loaded" not in rows["unseen-one"]


def test_a_422_prints_one_line_per_error_and_exits_1(api: FakeApi, tmp_path: Path) -> None:
    manifest = tmp_path / "bad.yaml"
    manifest.write_text("apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: logging}\n")
    api.on(
        "POST",
        "/api/v1/apply",
        status=422,
        body={
            "detail": [
                {
                    "document": 0,
                    "kind": "Component",
                    "name": "logging",
                    "field": "spec.type",
                    "message": "is required",
                },
                {
                    "document": 0,
                    "kind": "Component",
                    "name": "logging",
                    "field": "spec.metadata",
                    "message": "is required",
                },
            ]
        },
    )
    result = run(api, "apply", "-f", str(manifest))
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: document 0 (Component/logging): spec.type: is required",
        "error: document 0 (Component/logging): spec.metadata: is required",
    ]
    assert result.stdout == ""


def test_a_string_detail_names_the_status(api: FakeApi) -> None:
    api.on("DELETE", "/api/v1/secrets/logging-credentials", status=409, body={"detail": "used by logging"})
    result = run(api, "delete", "secret", "logging-credentials")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: used by logging (HTTP 409)"


def test_an_unreachable_control_plane_is_named() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    client = AdminClient(URL, "t", transport=httpx.MockTransport(refuse))
    result = CliRunner().invoke(app, ["get", "runtimes"], obj=client)
    assert result.exit_code == 1
    assert f"cannot reach the control plane at {URL} (is `rrm server` running?)" in result.stderr


def test_apply_sends_every_document_of_files_directories_and_stdin_in_order(
    api: FakeApi, tmp_path: Path
) -> None:
    directory = tmp_path / "manifests"
    directory.mkdir()
    (directory / "b.yml").write_text("kind: Component\nmetadata: {name: b}\n")
    (directory / "a.yaml").write_text(
        "---\nkind: Secret\nmetadata: {name: a1}\n---\n---\nkind: Component\nmetadata: {name: a2}\n"
    )
    (directory / "notes.txt").write_text("kind: Ignored\n")
    single = tmp_path / "single.yaml"
    single.write_text("kind: Component\nmetadata: {name: single}\n")
    api.on(
        "POST",
        "/api/v1/apply",
        body={
            "results": [
                {"kind": "Secret", "name": "a1", "action": "created", "revision": 1},
                {"kind": "Component", "name": "a2", "action": "unchanged", "revision": 4},
            ],
            "warnings": [
                {
                    "document": 2,
                    "kind": "Component",
                    "name": "b",
                    "field": "spec.metadata[0].name",
                    "message": "unknown field",
                }
            ],
        },
    )
    result = run(
        api,
        "apply",
        "-f",
        str(directory),
        "-f",
        str(single),
        "-f",
        "-",
        "--dry-run",
        "--strict",
        stdin="kind: Component\nmetadata: {name: piped}\n",
    )
    assert result.exit_code == 0, result.output
    body = api.body()
    assert [doc["metadata"]["name"] for doc in body["documents"]] == ["a1", "a2", "b", "single", "piped"]
    assert body["dry_run"] is True and body["strict"] is True
    assert result.stdout.splitlines() == [
        "secret/a1 created (revision 1) (dry run)",
        "component/a2 unchanged (revision 4) (dry run)",
    ]
    assert "warning: document 2 (Component/b): spec.metadata[0].name: unknown field" in result.stderr


def test_apply_names_the_file_and_line_of_a_yaml_error(api: FakeApi, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: Component\n metadata: {}\n")
    result = run(api, "apply", "-f", str(broken))
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {broken}:2: mapping values are not allowed here"
    assert api.requests == []


@pytest.mark.parametrize(
    ("content", "expected"),
    [("", "no documents"), ("- a\n- b\n", "not a mapping")],
    ids=["empty", "list"],
)
def test_apply_refuses_inputs_without_mappings(
    api: FakeApi, tmp_path: Path, content: str, expected: str
) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(content)
    result = run(api, "apply", "-f", str(path))
    assert result.exit_code == 2
    assert expected in result.stderr
    assert api.requests == []


def test_apply_without_a_file_or_with_a_missing_one_is_a_usage_error(api: FakeApi, tmp_path: Path) -> None:
    assert run(api, "apply").exit_code == 2
    missing = run(api, "apply", "-f", str(tmp_path / "nope.yaml"))
    assert missing.exit_code == 2 and "no such file or directory" in missing.stderr


def registered(name: str = "edge-7", kind: str = "selfhosted", token: str = "pt-123") -> dict[str, Any]:
    """The admin API's answer to `POST /api/v1/runtimes` (docs/api.md)."""
    return {
        "runtime": {**RUNTIME, "name": name, "kind": kind},
        "scenarios": {"runtime": name, "explicit": ["DEFAULT"], "effective": ["DEFAULT", "PROD"]},
        "pairing_token": token,
        "expires_at": "2030-01-01T00:00:00Z",
    }


def test_register_prints_the_token_the_scenarios_and_the_agent_command(api: FakeApi) -> None:
    api.on("POST", "/api/v1/runtimes", status=201, body=registered())
    result = run(
        api,
        "runtime",
        "register",
        "edge-7",
        "--kind",
        "selfhosted",
        "-l",
        "env=prod",
        "-l",
        "tier=1",
        "--ttl",
        "30m",
    )
    assert result.exit_code == 0, result.output
    assert api.body() == {
        "name": "edge-7",
        "kind": "selfhosted",
        "labels": {"env": "prod", "tier": "1"},
        "token_ttl_seconds": 1800,
    }
    assert "rt-1" in result.stdout and "pt-123" in result.stdout and "2030-01-01T00:00:00Z" in result.stdout
    assert "scenarios:      DEFAULT, PROD" in result.stdout
    assert (
        f"rrm agent --director {URL} --token pt-123 --state-dir ./rrm-agent-edge-7 --target selfhosted"
        " --resources-path ./components"
    ) in result.stdout


def test_register_sends_the_scenarios_given_instead_of_the_default(api: FakeApi) -> None:
    api.on("POST", "/api/v1/runtimes", status=201, body=registered())
    args = ["runtime", "register", "edge-7", "--kind", "selfhosted", "--scenario", "PROD", "--scenario", "EU"]
    result = run(api, *args)
    assert result.exit_code == 0, result.output
    assert api.body()["scenarios"] == ["PROD", "EU"]


@pytest.mark.parametrize("loader", [json.loads, yaml.safe_load], ids=["json", "yaml"])
def test_register_prints_the_api_answer_as_is_for_scripts(api: FakeApi, loader: Callable[[str], Any]) -> None:
    api.on("POST", "/api/v1/runtimes", status=201, body=registered())
    fmt = "json" if loader is json.loads else "yaml"
    result = run(api, "runtime", "register", "edge-7", "--kind", "selfhosted", "-o", fmt)
    assert result.exit_code == 0, result.output
    assert loader(result.stdout) == registered()


def test_register_a_kubernetes_runtime_names_the_manifest_command(api: FakeApi) -> None:
    api.on("POST", "/api/v1/runtimes", status=201, body=registered("prod-eu", "kubernetes", "pt-9"))
    result = run(api, "runtime", "register", "prod-eu", "--kind", "kubernetes")
    assert result.exit_code == 0, result.output
    assert f"rrm runtime manifest prod-eu --director {URL} | kubectl apply -f -" in result.stdout
    assert f"--director {URL} --token pt-9" in result.stdout
    assert "rrm agent" not in result.stdout
    assert api.body()["token_ttl_seconds"] == 3600


def test_register_a_cloudfoundry_runtime_names_the_broker_credentials_command(api: FakeApi) -> None:
    api.on("POST", "/api/v1/runtimes", status=201, body=registered("cf-1", "cloudfoundry", "pt-4"))
    result = run(api, "runtime", "register", "cf-1", "--kind", "cloudfoundry")
    assert result.exit_code == 0, result.output
    assert "pt-4" in result.stdout and "rrm runtime broker-credentials cf-1" in result.stdout


@pytest.mark.parametrize("ttl", ["0", "1x", "-5", "soon"])
def test_a_bad_ttl_is_a_usage_error(api: FakeApi, ttl: str) -> None:
    result = run(api, "runtime", "register", "x", "--kind", "selfhosted", "--ttl", ttl)
    assert result.exit_code == 2
    assert api.requests == []


def test_register_requires_a_kind_and_refuses_label_removal(api: FakeApi) -> None:
    assert run(api, "runtime", "register", "x").exit_code == 2
    assert run(api, "runtime", "register", "x", "--kind", "selfhosted", "-l", "env-").exit_code == 2
    assert api.requests == []


def test_token_and_revoke(api: FakeApi) -> None:
    api.on("GET", "/api/v1/runtimes/prod-eu", body=RUNTIME)
    api.on(
        "POST",
        "/api/v1/runtimes/prod-eu/token",
        status=201,
        body={"pairing_token": "pt-2", "expires_at": "x"},
    )
    api.on("POST", "/api/v1/runtimes/prod-eu/revoke", body=RUNTIME)
    token = run(api, "runtime", "token", "prod-eu", "--ttl", "2h")
    assert token.exit_code == 0, token.output
    assert api.body() == {"ttl_seconds": 7200}
    assert "--token pt-2" in token.stdout
    revoke = run(api, "runtime", "revoke", "prod-eu")
    assert revoke.exit_code == 0 and api.requests[-1].url.path == "/api/v1/runtimes/prod-eu/revoke"


def test_a_new_pairing_token_as_json(api: FakeApi) -> None:
    api.on("GET", "/api/v1/runtimes/prod-eu", body=RUNTIME)
    pairing = {"pairing_token": "pt-2", "expires_at": "x"}
    api.on("POST", "/api/v1/runtimes/prod-eu/token", status=201, body=pairing)
    result = run(api, "runtime", "token", "prod-eu", "-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == pairing


def test_label_sets_and_removes(api: FakeApi) -> None:
    api.on(
        "PATCH", "/api/v1/runtimes/dev-1/labels", body={**RUNTIME, "name": "dev-1", "labels": {"env": "prod"}}
    )
    result = run(api, "label", "runtime", "dev-1", "env=prod", "region-")
    assert result.exit_code == 0, result.output
    assert api.body() == {"set": {"env": "prod"}, "remove": ["region"]}
    assert "env=prod" in result.stdout


def test_label_refuses_a_malformed_argument(api: FakeApi) -> None:
    result = run(api, "label", "runtime", "dev-1", "no_equals_sign")
    assert result.exit_code == 2
    assert "no_equals_sign" in result.stderr
    assert api.requests == []


@pytest.mark.parametrize(
    "kind,path", [("runtime", "runtimes"), ("component", "components"), ("secret", "secrets")]
)
def test_delete(api: FakeApi, kind: str, path: str) -> None:
    api.on("DELETE", f"/api/v1/{path}/thing", status=204)
    result = run(api, "delete", kind, "thing")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{kind}/thing deleted"


def test_history_and_rollback(api: FakeApi) -> None:
    history = [
        {
            "revision": 2,
            "created_at": "2024-01-02T00:00:00Z",
            "action": "updated",
            "manifest": {"kind": "Component"},
        },
        {
            "revision": 1,
            "created_at": "2024-01-01T00:00:00Z",
            "action": "created",
            "manifest": {"kind": "Component"},
        },
    ]
    api.on("GET", "/api/v1/components/logging/history", body=history)
    api.on("POST", "/api/v1/components/logging/rollback", body={"name": "logging", "revision": 3})
    shown = run(api, "history", "component", "logging")
    assert shown.exit_code == 0 and "updated" in shown.stdout and "created" in shown.stdout
    as_yaml = run(api, "history", "component", "logging", "-o", "yaml")
    assert yaml.safe_load(as_yaml.stdout) == history
    rolled = run(api, "rollback", "component", "logging", "--to-revision", "1")
    assert rolled.exit_code == 0, rolled.output
    assert api.body() == {"revision": 1}
    assert "new revision 3" in rolled.stdout
    assert run(api, "rollback", "component", "logging").exit_code == 2


def test_describe_component_shows_runtimes_and_manifest(api: FakeApi) -> None:
    api.on(
        "GET",
        "/api/v1/components/logging",
        body={
            "name": "logging",
            "type": "bindings.http",
            "version": "v1",
            "revision": 1,
            "selector": "",
            "matched": 2,
            "ready": 2,
            "secrets": [],
            "updated_at": None,
            "manifest": {"spec": {"type": "bindings.http"}},
            "runtimes": [{"name": "prod-us", "ready": True}],
        },
    )
    result = run(api, "describe", "component", "logging")
    assert result.exit_code == 0, result.output
    assert "<all>" in result.stdout and "prod-us" in result.stdout and "type: bindings.http" in result.stdout
