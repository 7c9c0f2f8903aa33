"""The self-hosted target does each update's work once: a state is planned once for its render and its apply,
and a file the agent wrote, or read before, is not parsed again until its bytes change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rrm.agent.drift import drift_records
from rrm.agent.targets import yaml_files
from rrm.agent.targets.selfhosted import SelfHostedTarget
from rrm.core.diff import diff
from rrm.core.hashing import state_hash
from rrm.wire.protocol import DesiredState


def component(name: str, revision: int) -> dict[str, Any]:
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name, "annotations": {"rrm.io/revision": str(revision)}},
        "spec": {"type": "state.redis", "version": "v1", "metadata": [{"name": "a", "value": "b"}]},
    }


def state_of(*components: dict[str, Any]) -> DesiredState:
    return DesiredState(hash=state_hash(list(components), []), components=list(components), secrets=[])


def reconcile(target: SelfHostedTarget, state: DesiredState) -> None:
    target.apply(diff(target.render(state), target.observe()), state, prune=True)


@pytest.fixture
def target(tmp_path: Path) -> SelfHostedTarget:
    target = SelfHostedTarget(tmp_path / "resources", tmp_path / "state")
    target.prepare()
    return target


def test_a_state_is_planned_once_for_render_and_apply(
    target: SelfHostedTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    planned: list[str] = []
    plan_anew = SelfHostedTarget._plan_anew

    def counting(self: SelfHostedTarget, state: DesiredState) -> Any:
        planned.append(state.hash)
        return plan_anew(self, state)

    monkeypatch.setattr(SelfHostedTarget, "_plan_anew", counting)
    first, second = state_of(component("a", 1)), state_of(component("a", 2))

    reconcile(target, first)
    reconcile(target, first)
    reconcile(target, second)

    assert planned == [first.hash, second.hash]
    assert target.observe()["rrm-a.yaml"]["metadata"]["annotations"] == {"rrm.io/revision": "2"}


def test_files_are_parsed_only_when_their_bytes_changed(
    target: SelfHostedTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[bytes] = []
    parse = yaml_files.parse_document
    monkeypatch.setattr(yaml_files, "parse_document", lambda data: parsed.append(data) or parse(data))
    reconcile(target, state_of(component("a", 1), component("b", 1)))
    after_apply = target.observe()
    assert parsed == []  # what the agent wrote is known without reading it back

    path = target.resources_path / "rrm-b.yaml"
    path.write_text(path.read_text().replace("state.redis", "state.memory"))
    edited = target.observe()

    assert len(parsed) == 1
    assert [(r.resource, r.change, r.fields) for r in drift_records(after_apply, edited)] == [
        ("rrm-b.yaml", "modified", ["spec.type"])
    ]
