"""Where the CLI finds the control plane and its token, and how refusals read."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from rrm.cli import config
from rrm.cli.app import app
from rrm.cli.client import AdminClient, format_field_error


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("RRM_URL", "RRM_TOKEN", "RRM_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def recording_transport(seen: list[httpx.Request]) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=[])

    return httpx.MockTransport(answer)


def test_the_token_comes_from_the_data_dir_file_when_rrm_token_is_unset(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = clean_env / "data"
    data_dir.mkdir()
    (data_dir / "admin-token").write_text("from-file\n")
    monkeypatch.setenv("RRM_DATA_DIR", str(data_dir))
    seen: list[httpx.Request] = []
    AdminClient.from_environment(recording_transport(seen)).list_runtimes()
    assert seen[0].headers["authorization"] == "Bearer from-file"
    assert str(seen[0].url) == "http://127.0.0.1:8080/api/v1/runtimes"


def test_the_default_data_dir_is_under_home(clean_env: Path) -> None:
    token_file = clean_env / "home" / ".local" / "share" / "rrm" / "admin-token"
    token_file.parent.mkdir(parents=True)
    token_file.write_text("home-token")
    assert config.admin_token() == "home-token"


def test_rrm_token_and_rrm_url_win(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (clean_env / "admin-token").write_text("from-file")
    monkeypatch.setenv("RRM_DATA_DIR", str(clean_env))
    monkeypatch.setenv("RRM_TOKEN", "from-env")
    monkeypatch.setenv("RRM_URL", "https://cp.example.com/")
    seen: list[httpx.Request] = []
    AdminClient.from_environment(recording_transport(seen)).list_components()
    assert seen[0].headers["authorization"] == "Bearer from-env"
    assert str(seen[0].url) == "https://cp.example.com/api/v1/components"


def test_no_token_anywhere_is_a_usage_error_naming_the_file(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RRM_DATA_DIR", str(clean_env / "empty"))
    result = CliRunner().invoke(app, ["get", "runtimes"])
    assert result.exit_code == 2
    assert "RRM_TOKEN" in result.stderr and str(clean_env / "empty" / "admin-token") in result.stderr


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (
            {
                "document": 1,
                "kind": "Component",
                "name": "x",
                "field": "spec.type",
                "message": "unknown type",
            },
            "document 1 (Component/x): spec.type: unknown type",
        ),
        (
            {"document": None, "kind": "Runtime", "name": "r", "field": "labels.env", "message": "bad value"},
            "Runtime/r: labels.env: bad value",
        ),
        ({"document": None, "kind": None, "name": None, "field": None, "message": "just this"}, "just this"),
        ({"loc": ["body", "name"], "msg": "Field required", "type": "missing"}, "body.name: Field required"),
    ],
)
def test_field_errors_read_as_one_line(error: dict[str, object], line: str) -> None:
    assert format_field_error(error) == line


def test_server_and_agent_help_list_their_options() -> None:
    server = CliRunner().invoke(app, ["server", "--help"])
    assert server.exit_code == 0
    for option in ("--host", "--port", "--data-dir", "--database-url", "--log-level"):
        assert option in server.stdout
    agent = CliRunner().invoke(app, ["agent", "--help"])
    assert agent.exit_code == 0
    for option in (
        "--director",
        "--token",
        "--state-dir",
        "--target",
        "--resources-path",
        "--dapr-http-port",
        "--dapr-api-token",
        "--reload-command",
        "--wait",
        "--heartbeat-interval",
    ):
        assert option in agent.stdout
