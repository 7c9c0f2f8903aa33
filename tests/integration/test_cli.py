"""The `rrm` CLI as an operator runs it, against a real server (RRM_URL / RRM_TOKEN)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .harness import ServerProcess, child_env, component_names, expect_status, http_binding, register

pytestmark = pytest.mark.integration


def rrm(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = child_env({"RRM_URL": server.url, "RRM_TOKEN": server.admin_token})
    return subprocess.run(
        [sys.executable, "-m", "rrm", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (
        f"{result.args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


def test_get_apply_history_rollback(server: ServerProcess, tmp_path: Path) -> None:
    register(server.admin, "cli-runtime", labels={"t-cli": "yes"})
    listed = json.loads(ok(rrm(server, "get", "runtimes", "-o", "json")))
    assert "cli-runtime" in [r["name"] for r in listed]

    manifest = tmp_path / "web.yaml"
    for url in ("http://one.invalid/", "http://two.invalid/"):
        manifest.write_text(yaml.safe_dump(http_binding("cli-web", "t-cli=yes", url)))
        ok(rrm(server, "apply", "-f", str(manifest)))
    assert "cli-web" in component_names(server.admin)

    history = yaml.safe_load(ok(rrm(server, "history", "component", "cli-web", "-o", "yaml")))
    assert [h["revision"] for h in history] == [2, 1]
    assert history[1]["manifest"]["spec"]["metadata"][0]["value"] == "http://one.invalid/"

    ok(rrm(server, "rollback", "component", "cli-web", "--to-revision", "1"))
    shown = expect_status(server.admin.get("/api/v1/components/cli-web"), 200).json()
    assert shown["revision"] == 3
    assert shown["manifest"]["spec"]["metadata"][0]["value"] == "http://one.invalid/"


def test_refused_apply_exits_nonzero_and_names_the_field(server: ServerProcess, tmp_path: Path) -> None:
    bad = http_binding("cli-bad", "t-cli=yes", "http://x.invalid/")
    bad["spec"]["type"] = "bindings.no-such-binding"
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(yaml.safe_dump(bad))
    result = rrm(server, "apply", "-f", str(manifest))
    assert result.returncode == 1, result
    assert "spec.type" in result.stderr
    assert "cli-bad" not in component_names(server.admin)


def test_a_wrong_token_is_refused(server: ServerProcess) -> None:
    env = child_env({"RRM_URL": server.url, "RRM_TOKEN": "wrong"})
    result = subprocess.run(
        [sys.executable, "-m", "rrm", "get", "runtimes"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0 and "401" in result.stderr, result
