"""`rrm agent` takes its own short way in: it loads what an agent needs and nothing of the control plane, the
admin commands or their libraries, while its usage, help and errors stay those of the full CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Libraries of the control plane and of the admin CLI that an agent process has no use for.
NOT_FOR_AGENTS = (
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "jinja2",
    "jsonschema",
    "prometheus_client",
    "rich",
    "pygments",
    "jwt",  # the agent signs its tokens with cryptography alone; PyJWT verifies them on the control plane
    "rrm.server",
    "rrm.store",
    "rrm.cli.app",
    "rrm.cli.manage",
    "rrm.cli.views",
)

# Not in a self-hosted agent either: it speaks the protocol with msgspec (`rrm.wire.protocol`) and reads a
# plain command line without typer, which reads every value with pydantic. The kubernetes client needs
# pydantic itself.
PYDANTIC = ("pydantic", "pydantic_core")

LOADED_MODULES = """
import atexit, json, sys
atexit.register(lambda: print(json.dumps(sorted(sys.modules))))
from rrm.cli.main import main
main()
"""


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RRM_", "DAPR_"))}
    env["COLUMNS"] = "100"
    return env


def agent_modules(tmp_path: Path, *args: str) -> set[str]:
    """The modules a `rrm agent` process has loaded when it exits: not paired and without a pairing token, it
    stops (exit code 2) only after it has made its target and its director client."""
    argv = ["rrm", "agent", "--director", "http://127.0.0.1:9", "--state-dir", str(tmp_path / "state"), *args]
    result = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.argv = {argv!r}\n{LOADED_MODULES}"],
        capture_output=True,
        text=True,
        env=environment(),
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


def loaded(modules: set[str], name: str) -> bool:
    return name in modules or any(module.startswith(f"{name}.") for module in modules)


def test_a_selfhosted_agent_loads_nothing_of_the_control_plane_or_the_admin_cli(tmp_path: Path) -> None:
    modules = agent_modules(tmp_path, "--target", "selfhosted", "--resources-path", str(tmp_path / "res"))

    assert {"rrm.agent.runner", "rrm.agent.targets.selfhosted", "rrm.wire.protocol", "httpx"} <= modules
    assert [name for name in NOT_FOR_AGENTS + PYDANTIC if loaded(modules, name)] == []
    assert not loaded(modules, "kubernetes")


def test_only_the_kubernetes_target_loads_the_kubernetes_client(tmp_path: Path) -> None:
    modules = agent_modules(tmp_path, "--target", "kubernetes", "--kubeconfig", str(tmp_path / "missing"))

    assert loaded(modules, "kubernetes")
    # the kubernetes package loads jsonschema itself (`kubernetes.dynamic`), whatever part of it one uses
    assert [name for name in NOT_FOR_AGENTS if loaded(modules, name) and name != "jsonschema"] == []


def run_rrm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rrm", *args], capture_output=True, text=True, env=environment(), timeout=120
    )


def run_full_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The same command line through the full typer app, as `rrm` ran every command before."""
    code = f"from rrm.cli.app import app\napp({list(args)!r}, prog_name='rrm')"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment(), timeout=120
    )


@pytest.mark.parametrize(
    "args",
    [
        ("agent", "--help"),
        ("agent",),
        ("agent", "--bogus"),
        ("agent", "--director", "http://a", "--state-dir", "s", "--wait", "soon"),
    ],
)
def test_agent_usage_help_and_errors_are_those_of_the_full_cli(args: tuple[str, ...]) -> None:
    short, full = run_rrm(*args), run_full_cli(*args)

    assert (short.returncode, short.stdout, short.stderr) == (full.returncode, full.stdout, full.stderr)
    assert "rrm agent" in short.stdout + short.stderr


def test_the_full_cli_still_lists_agent_among_its_commands() -> None:
    result = run_rrm("--help")

    assert result.returncode == 0
    rows = [line for line in result.stdout.splitlines() if line.startswith("│ ") and line[2] not in " -"]
    commands = [row.split()[1] for row in rows]
    assert commands[:4] == ["server", "agent", "migrate", "demo"]
