"""`ServerSettings.from_env` is the one reader of the server's environment: a flag wins over its variable,
an empty variable counts as unset, a wrong one is refused naming it, secrets stay out of the repr."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import rrm.server
from rrm.cli.app import app
from rrm.server.settings import ServerSettings

SECRETS = {"RRM_SECRET_KEY": "c2VjcmV0LWtleQ", "RRM_BOOTSTRAP_ADMIN_TOKEN": "rrm-admin-bootstrap"}


def test_every_variable_is_read(tmp_path: Path) -> None:
    settings = ServerSettings.from_env(
        {
            "RRM_DATA_DIR": str(tmp_path),
            "RRM_DATABASE_URL": "postgresql://db/rrm",
            "RRM_MAX_APPLY_BYTES": "1024",
            "RRM_ACCESS_LOG": "1",
            **SECRETS,
        }
    )

    assert (settings.data_dir, settings.resolved_database_url) == (tmp_path, "postgresql://db/rrm")
    assert (settings.max_apply_bytes, settings.access_log) == (1024, True)
    assert (settings.secret_key, settings.bootstrap_admin_token) == tuple(SECRETS.values())


def test_a_flag_wins_over_its_variable_and_an_empty_variable_is_unset(tmp_path: Path) -> None:
    environ = {"RRM_DATA_DIR": "/from/env", "RRM_DATABASE_URL": "", "RRM_BOOTSTRAP_ADMIN_TOKEN": ""}

    settings = ServerSettings.from_env(environ, data_dir=tmp_path, database_url=None)

    assert settings.data_dir == tmp_path
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / 'rrm.db'}"
    assert settings.bootstrap_admin_token is None


def test_the_defaults_read_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RRM_DATA_DIR", "/from/env")
    monkeypatch.setenv("RRM_ACCESS_LOG", "1")

    settings = ServerSettings()

    assert settings.data_dir == Path.home() / ".local" / "share" / "rrm"
    assert settings.access_log is False


def test_secrets_are_not_in_the_repr() -> None:
    shown = repr(ServerSettings.from_env(SECRETS))

    assert all(value not in shown for value in SECRETS.values())


def test_rrm_server_reads_durations_and_refuses_what_is_out_of_range(monkeypatch: pytest.MonkeyPatch) -> None:
    received: list[Any] = []
    monkeypatch.setattr(rrm.server, "serve", received.append)

    assert CliRunner().invoke(app, ["server", "--trial-lifetime", "2h", "--delivery-window=0"]).exit_code == 0
    assert (received[0].trial_lifetime_seconds, received[0].delivery_window_seconds) == (7200, 0.0)
    for wrong in (
        ["--delivery-window", "-1"],
        ["--trial-lifetime", "soon"],
        ["--hap-cleanup-interval", "0.5"],
    ):
        result = CliRunner().invoke(app, ["server", *wrong])
        assert result.exit_code == 2, wrong
        assert wrong[0] in result.output


def test_rrm_server_names_a_wrong_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rrm.server, "serve", lambda settings: pytest.fail("must not start"))
    monkeypatch.setenv("RRM_MAX_APPLY_BYTES", "4MB")

    result = CliRunner().invoke(app, ["server"])

    assert result.exit_code == 1
    assert "RRM_MAX_APPLY_BYTES" in str(result.exception) + result.output
