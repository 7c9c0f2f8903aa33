"""The agent's hash check takes the canonical JSON of unchanged components from the last state it checked:
it must still judge every state exactly as `state_hash` does."""

from __future__ import annotations

from typing import Any

from rrm.agent.verify import state_is_authentic
from rrm.core.hashing import state_hash
from rrm.wire.protocol import DeliveredSecret, DesiredState


def component(name: str, url: str) -> dict[str, Any]:
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name},
        "spec": {"type": "bindings.http", "version": "v1", "metadata": [{"name": "url", "value": url}]},
    }


def state(*components: dict[str, Any], secrets: list[DeliveredSecret] | None = None) -> DesiredState:
    secrets = secrets or []
    return DesiredState(
        hash=state_hash(components, [(s.name, s.revision) for s in secrets]),
        components=list(components),
        secrets=secrets,
    )


def test_consecutive_states_sharing_components_are_judged_as_the_hash_says() -> None:
    a, b = component("a", "http://a/1"), component("b", "http://b/1")
    first = state(a, b)
    assert state_is_authentic(first)

    changed = component("b", "http://b/2")
    assert state_is_authentic(state(a, changed))
    assert state_is_authentic(state(changed, a)), "the hash sorts by name"
    assert state_is_authentic(state(a, a)), "a component twice counts twice"
    secret = DeliveredSecret(name="s", revision=2, data={"k": "v"})
    assert state_is_authentic(state(a, changed, secrets=[secret]))


def test_a_component_changed_under_an_old_hash_is_refused_though_the_others_are_remembered() -> None:
    a, b = component("a", "http://a/1"), component("b", "http://b/1")
    assert state_is_authentic(state(a, b))

    tampered = DesiredState(hash=state(a, b).hash, components=[a, component("b", "http://evil/")])
    assert not state_is_authentic(tampered)
    renamed = DesiredState(hash=state(a, b).hash, components=[a, {**b, "metadata": {"name": "c"}}])
    assert not state_is_authentic(renamed)
    assert not state_is_authentic(DesiredState(hash=state(a, b).hash, components=[a]))
    assert state_is_authentic(state(a, b)), "the memo holds no judgement, only canonical JSON"
