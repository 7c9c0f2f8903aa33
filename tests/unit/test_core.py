"""The pure domain: placement, rendering, the desired-state hash, diffing and name rules."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rrm.core.canonical import canonical_json, sha256_hex
from rrm.core.diff import diff
from rrm.core.hashing import state_hash, state_hash_of_parts
from rrm.core.names import dns1123_label_error
from rrm.core.placement import component_matches, place
from rrm.core.render import DeliveredCache, SecretValue, render_desired_state
from rrm.core.resources import StoredComponent
from rrm.core.selectors import SelectorError


def component(
    name: str,
    selector: str | None = "",
    revision: int = 1,
    secrets: tuple[str, ...] = (),
    **extra: Any,
) -> StoredComponent:
    annotations = {"note": "kept"} if selector is None else {"rrm.io/selector": selector, "note": "kept"}
    manifest: dict[str, Any] = {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name, "annotations": annotations, "labels": {"team": "a"}},
        "spec": {
            "type": "state.redis",
            "version": "v1",
            "metadata": [{"name": "redisHost", "value": "localhost:6379"}]
            + [{"name": f"{s}-field", "secretKeyRef": {"name": s, "key": "password"}} for s in secrets],
        },
        **extra,
    }
    return StoredComponent(name=name, revision=revision, manifest=manifest)


def secret(name: str, revision: int = 1, **data: str) -> SecretValue:
    return SecretValue(name=name, revision=revision, data=data or {"password": "s3cret"})


# --- placement -----------------------------------------------------------------------------------------


def test_component_without_selector_reaches_no_runtime() -> None:
    unplaced = component("unplaced", selector=None)
    assert place([unplaced], {}) == []
    assert place([unplaced], {"env": "prod"}) == []


def test_empty_selector_reaches_every_runtime() -> None:
    everywhere = component("everywhere", selector="")
    assert place([everywhere], {}) == [everywhere]
    assert place([everywhere], {"env": "prod", "zone": "eu"}) == [everywhere]


def test_placement_follows_the_selector() -> None:
    prod = component("prod", selector="env=prod")
    not_canary = component("stable", selector="!canary, env in (prod,dev)")
    unplaced = component("unplaced", selector=None)
    components = [prod, not_canary, unplaced]
    assert place(components, {"env": "prod"}) == [prod, not_canary]
    assert place(components, {"env": "dev"}) == [not_canary]
    assert place(components, {"env": "prod", "canary": ""}) == [prod]
    assert place(components, {}) == []
    assert component_matches(prod, {"env": "prod"}) and not component_matches(prod, {"env": "dev"})


def test_a_non_string_selector_annotation_is_no_selector() -> None:
    odd = StoredComponent("odd", 1, {"metadata": {"name": "odd", "annotations": {"rrm.io/selector": 1}}})
    assert place([odd], {}) == []


def test_an_invalid_stored_selector_raises_selector_error() -> None:
    with pytest.raises(SelectorError):
        place([component("broken", selector="env in (")], {"env": "prod"})


# --- rendering -----------------------------------------------------------------------------------------


def test_render_sorts_components_and_rewrites_rrm_metadata() -> None:
    placed = [component("zeta", revision=7), component("alpha", selector="env=prod", revision=3)]
    original = copy.deepcopy([c.manifest for c in placed])
    state = render_desired_state(placed, {})
    assert [m["metadata"]["name"] for m in state.components] == ["alpha", "zeta"]
    alpha = state.components[0]["metadata"]
    assert alpha["annotations"] == {"note": "kept", "rrm.io/revision": "3"}
    assert alpha["labels"] == {"team": "a", "app.kubernetes.io/managed-by": "rrm"}
    assert state.components[1]["metadata"]["annotations"]["rrm.io/revision"] == "7"
    assert state.components[0]["spec"] == placed[1].manifest["spec"]
    assert [c.manifest for c in placed] == original  # the stored manifests are left alone


def test_render_handles_missing_annotations_and_labels() -> None:
    bare = StoredComponent("bare", 2, {"kind": "Component", "metadata": {"name": "bare"}, "spec": {}})
    metadata = render_desired_state([bare], {}).components[0]["metadata"]
    assert metadata["annotations"] == {"rrm.io/revision": "2"}
    assert metadata["labels"] == {"app.kubernetes.io/managed-by": "rrm"}


def test_render_delivers_only_referenced_secrets() -> None:
    placed = [component("a", secrets=("db",)), component("b", secrets=("db", "cache"))]
    secrets = {name: secret(name) for name in ("db", "cache", "unrelated")}
    state = render_desired_state(placed, secrets)
    assert [s.name for s in state.secrets] == ["cache", "db"]
    assert render_desired_state([component("c")], secrets).secrets == []


def test_component_with_its_own_secret_store_gets_no_rrm_secrets() -> None:
    own_store = component("vaulted", secrets=("db",), auth={"secretStore": "vault"})
    state = render_desired_state([own_store], {"db": secret("db")})
    assert state.secrets == []
    assert state.components[0]["auth"] == {"secretStore": "vault"}


def test_render_hash_is_the_state_hash_of_what_is_delivered() -> None:
    state = render_desired_state([component("a", secrets=("db",))], {"db": secret("db", revision=4)})
    assert state.hash == state_hash(state.components, [("db", 4)])


# --- hashing -------------------------------------------------------------------------------------------


def manifest(name: str, **spec: Any) -> dict[str, Any]:
    return {"kind": "Component", "metadata": {"name": name}, "spec": spec}


def test_state_hash_is_order_independent() -> None:
    a, b = manifest("a", type="state.redis"), manifest("b", type="pubsub.redis")
    assert state_hash([a, b], [("x", 1), ("y", 2)]) == state_hash([b, a], [("y", 2), ("x", 1)])


def test_state_hash_changes_with_content() -> None:
    base = state_hash([manifest("a", type="state.redis")], [("x", 1)])
    assert state_hash([manifest("a", type="state.postgresql")], [("x", 1)]) != base
    assert state_hash([manifest("a", type="state.redis")], [("x", 2)]) != base
    assert state_hash([manifest("a", type="state.redis")], [("y", 1)]) != base
    assert state_hash([manifest("a", type="state.redis")], []) != base
    assert state_hash([], [("x", 1)]) != base
    assert len(base) == 64 and int(base, 16) >= 0


def test_rendered_hash_changes_with_component_revision() -> None:
    assert render_desired_state([component("a", revision=1)], {}).hash != (
        render_desired_state([component("a", revision=2)], {}).hash
    )


SECRET_DATA = st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=16), min_size=1, max_size=4)


@given(SECRET_DATA, SECRET_DATA, st.integers(min_value=1, max_value=10**6))
def test_state_hash_ignores_secret_values(
    first: dict[str, str], second: dict[str, str], revision: int
) -> None:
    placed = [component("a", secrets=("db",))]
    one = render_desired_state(placed, {"db": SecretValue("db", revision, first)})
    two = render_desired_state(placed, {"db": SecretValue("db", revision, second)})
    assert one.hash == two.hash
    bumped = render_desired_state(placed, {"db": SecretValue("db", revision + 1, second)})
    assert bumped.hash != one.hash


@given(st.permutations([manifest(n, v=i) for i, n in enumerate("abcde")]))
def test_state_hash_ignores_component_order(ordering: list[dict[str, Any]]) -> None:
    assert state_hash(ordering, [("s", 1)]) == state_hash(
        sorted(ordering, key=lambda m: m["metadata"]["name"]), [("s", 1)]
    )


def test_state_hash_accepts_any_string_json_can_carry() -> None:
    assert len(state_hash([manifest("a", note="\ud800")], [])) == 64


# --- diff ----------------------------------------------------------------------------------------------

KEYED = st.dictionaries(st.sampled_from("abcdefgh"), st.integers(0, 3), max_size=8)


@given(KEYED, KEYED)
def test_applying_the_changeset_to_actual_yields_desired(
    desired: dict[str, int], actual: dict[str, int]
) -> None:
    changes = diff(desired, actual)
    result = dict(actual)
    for key in changes.delete:
        del result[key]
    result.update(changes.create)
    result.update(changes.update)
    assert result == desired
    assert changes.empty is (desired == actual)
    assert changes.delete == {k: v for k, v in actual.items() if k not in desired}
    parts = [changes.create, changes.update, changes.unchanged]
    assert sorted(k for part in parts for k in part) == sorted(desired)  # a partition of desired's keys
    assert all(actual[k] == v for k, v in changes.unchanged.items())


def test_diff_examples() -> None:
    changes = diff({"a": 1, "b": 2, "c": 3}, {"b": 2, "c": 4, "d": 5})
    assert (changes.create, changes.update, changes.delete, changes.unchanged) == (
        {"a": 1},
        {"c": 3},
        {"d": 5},
        {"b": 2},
    )
    assert diff({}, {}).empty and diff({"a": 1}, {"a": 1}).empty and not diff({}, {"a": 1}).empty


# --- names ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "statestore", "redis-1", "1a", "a" * 63])
def test_valid_names(name: str) -> None:
    assert dns1123_label_error(name) is None


@pytest.mark.parametrize("name", ["", "a" * 64, "Redis", "-a", "a-", "a_b", "a.b", "a b", None, 7])
def test_invalid_names(name: object) -> None:
    assert dns1123_label_error(name) is not None


def test_a_trailing_newline_is_not_a_valid_name() -> None:
    assert dns1123_label_error("redis\n") is not None


def test_the_hash_from_each_components_canonical_json_is_the_state_hash() -> None:
    manifests = [
        {"metadata": {"name": "b"}, "spec": {"x": "ü\u2028", "n": [1, 2.5, None, True]}},
        {"metadata": {"name": "a"}, "spec": {"nested": {"z": 1, "a": {"k": '"quoted"'}}}},
        {"metadata": {"name": "a"}, "spec": {}},  # names alike keep their order, as in state_hash
        {"spec": {}},
    ]
    secrets = [("db", 3), ("cache", 1)]
    parts = [(str(m.get("metadata", {}).get("name", "")), canonical_json(m)) for m in manifests]
    assert state_hash_of_parts(parts, secrets) == state_hash(manifests, secrets)
    assert state_hash_of_parts([], []) == state_hash([], [])
    ordered = sorted(manifests, key=lambda m: str(m.get("metadata", {}).get("name", "")))
    spelled = sha256_hex({"components": ordered, "secrets": sorted([n, r] for n, r in secrets)})
    assert state_hash(manifests, secrets) == spelled, "the format every agent version computes"


def test_a_render_reuses_a_components_part_only_for_that_very_object() -> None:
    first = component("a", revision=1)
    cache: DeliveredCache = {}
    render_desired_state([first], {}, cache)
    known = cache["a", 1]
    render_desired_state([first], {}, cache)
    assert cache["a", 1] is known
    other = component("a", revision=1, extra="changed")  # the same name and revision, another object
    state = render_desired_state([other], {}, cache)
    assert state == render_desired_state([other], {})
    assert cache["a", 1].source is other
