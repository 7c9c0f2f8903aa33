"""`rrm runtime manifest NAME` against a real control plane: valid objects, a pairing token that works."""

from __future__ import annotations

import subprocess
import sys

import kubernetes_validate
import pytest
import yaml

from .harness import ServerProcess, child_env, pair, register

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def backend() -> str:
    """The agent and the CLI do not care which database the control plane uses: SQLite only."""
    return "sqlite"


def manifest(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = child_env({"RRM_URL": server.url, "RRM_TOKEN": server.admin_token})
    return subprocess.run(
        [sys.executable, "-m", "rrm", "runtime", "manifest", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_printed_manifests_are_valid_and_carry_a_fresh_pairing_token(server: ServerProcess) -> None:
    register(server.admin, "manifest-k8s", kind="kubernetes")
    done = manifest(
        server, "manifest-k8s", "--target-namespace", "shop", "--director", "http://rrm.cluster.local:8080"
    )
    assert done.returncode == 0, done.stderr
    objects = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    assert [o["kind"] for o in objects] == [
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Secret",
        "PersistentVolumeClaim",
        "Deployment",
    ]
    for obj in objects:
        kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)
        kubernetes_validate.validate(obj, "1.29.0", strict=True)

    settings = next(o for o in objects if o["kind"] == "Secret")["stringData"]
    assert settings["RRM_DIRECTOR_URL"] == "http://rrm.cluster.local:8080"
    identity = pair(server.url, settings["RRM_PAIRING_TOKEN"])  # fresh, single-use, accepted
    assert identity.runtime_name == "manifest-k8s"


def test_runtimes_that_are_not_kubernetes_get_no_manifest(server: ServerProcess) -> None:
    register(server.admin, "manifest-host", kind="selfhosted")
    done = manifest(server, "manifest-host")
    assert done.returncode == 1
    assert "of kind selfhosted" in done.stderr
    assert not done.stdout
