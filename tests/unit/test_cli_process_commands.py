"""`rrm server` and `rrm agent` hand their options to the entry points unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import rrm.agent
import rrm.server
from rrm.cli.app import app


def test_server_builds_its_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    received: list[Any] = []
    monkeypatch.setattr(rrm.server, "serve", received.append)
    result = CliRunner().invoke(
        app,
        [
            "server",
            "--host",
            "0.0.0.0",
            "--port",
            "9000",
            "--data-dir",
            str(tmp_path),
            "--log-level",
            "debug",
        ],
    )
    assert result.exit_code == 0, result.output
    (settings,) = received
    assert (settings.host, settings.port, settings.data_dir, settings.database_url, settings.log_level) == (
        "0.0.0.0",
        9000,
        tmp_path,
        None,
        "debug",
    )


def test_server_defaults_to_the_data_dir_rule(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    received: list[Any] = []
    monkeypatch.setattr(rrm.server, "serve", received.append)
    monkeypatch.setenv("RRM_DATA_DIR", str(tmp_path))
    assert CliRunner().invoke(app, ["server", "--database-url", "sqlite:///x.db"]).exit_code == 0
    assert received[0].data_dir == tmp_path and received[0].database_url == "sqlite:///x.db"


def test_agent_passes_its_config_and_exit_code(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    received: list[Any] = []

    def fake_run(config: Any) -> int:
        received.append(config)
        return 2

    monkeypatch.setattr(rrm.agent, "run_agent", fake_run)
    monkeypatch.setenv("RRM_PAIRING_TOKEN", "pt-env")
    monkeypatch.setenv("DAPR_API_TOKEN", "dapr-env")
    result = CliRunner().invoke(
        app,
        [
            "agent",
            "--director",
            "http://a:8080",
            "--director",
            "http://b:8080",
            "--state-dir",
            str(tmp_path),
            "--resources-path",
            str(tmp_path / "c"),
            "--dapr-http-port",
            "3500",
            "--reload-command",
            "true",
            "--wait",
            "5",
            "--heartbeat-interval",
            "2",
        ],
    )
    assert result.exit_code == 2, result.output
    (config,) = received
    assert config.director_urls == ["http://a:8080", "http://b:8080"]
    assert (config.token, config.dapr_api_token, config.target) == ("pt-env", "dapr-env", "selfhosted")
    assert (config.state_dir, config.resources_path, config.dapr_http_port) == (
        tmp_path,
        tmp_path / "c",
        3500,
    )
    assert (config.reload_command, config.wait_seconds, config.heartbeat_interval) == ("true", 5.0, 2.0)


def test_agent_requires_a_director_and_a_state_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rrm.agent, "run_agent", lambda config: pytest.fail("must not start"))
    assert CliRunner().invoke(app, ["agent", "--state-dir", "/tmp/x"]).exit_code == 2
    assert CliRunner().invoke(app, ["agent", "--director", "http://a"]).exit_code == 2
