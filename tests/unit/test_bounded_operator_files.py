"""The provisioning code reads operator files and kubeconfigs with the bounded YAML loader
(`rrm.core.bounded`): an alias bomb or a nesting past the bound is refused, naming the problem, before
anything is built from it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rrm.core.bounded import MAX_DEPTH
from rrm.server.environment_broker.kubeconfigs import kubeconfig_with_token
from rrm.server.provisioning.backends.base import BackendFailure
from rrm.server.provisioning.backends.kubernetes import delete_objects
from rrm.server.provisioning.garden import load_client
from rrm.server.provisioning.plans import PlanError, load_plans

ALIAS_BOMB = "\n".join(
    [
        'a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]',
        *(f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]" for p, n in zip("abcd", "bcde", strict=True)),
        "plans: []",
    ]
)
DEEP = "plans: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)


@pytest.mark.parametrize(("text", "problem"), [(ALIAS_BOMB, "aliases expand"), (DEEP, "nested deeper")])
def test_a_plans_file_beyond_the_bounds_is_refused(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "plans.yaml"
    path.write_text(text)
    with pytest.raises(PlanError, match=problem):
        load_plans(path)


def test_a_garden_kubeconfig_beyond_the_bounds_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "garden.kubeconfig"
    path.write_text(ALIAS_BOMB)
    with pytest.raises(ValueError, match=r"not a usable kubeconfig: .*aliases expand"):
        load_client(path)


def test_a_cluster_kubeconfig_beyond_the_bounds_is_refused() -> None:
    with pytest.raises(BackendFailure, match="nested deeper"):
        delete_objects(DEEP, [])
    with pytest.raises(yaml.YAMLError, match="aliases expand"):
        kubeconfig_with_token(ALIAS_BOMB, "user", "token")
