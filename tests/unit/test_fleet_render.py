"""The renderer: one render per placement, shared by the runtimes placed alike; its caches kept until the
feed says what they depend on changed (the rules in rrm.server.fleet's docstring)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fleet_fixtures import component

from rrm.core import render as render_module
from rrm.core.render import SecretValue
from rrm.core.resources import StoredComponent
from rrm.core.rollouts import Assignment
from rrm.core.scenarios import Application, Bundle
from rrm.server.compass.registry import RegisteredApplication, Registry, RegistryChanges
from rrm.server.fleet.feed import FeedChange, RuntimeEntry
from rrm.server.fleet.render import Delivery, PlacementKey, Renderer
from rrm.server.rollouts.records import RolloutDelivery
from rrm.server.secretbox import SecretBox


@dataclass
class Sources:
    """The feed's caches, as plain dicts."""

    runtimes: dict[str, RuntimeEntry] = field(default_factory=dict)
    components: dict[str, StoredComponent] = field(default_factory=dict)
    secrets: dict[str, SecretValue] = field(default_factory=dict)
    rollouts: dict[str, RolloutDelivery] = field(default_factory=dict)
    registry: Registry = field(default_factory=lambda: Registry(SecretBox(os.urandom(32))))

    def runtime(self, runtime_id: str, **labels: str) -> None:
        self.runtimes[runtime_id] = RuntimeEntry(
            runtime_id, runtime_id, "selfhosted", tuple(sorted(labels.items()))
        )

    def add(self, *components: StoredComponent) -> None:
        self.components.update({c.name: c for c in components})


def delivered(delivery: Delivery) -> dict[str, str]:
    return {
        c["metadata"]["name"]: c["metadata"]["annotations"]["rrm.io/revision"]
        for c in body(delivery)["components"]
    }


def body(delivery: Delivery) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(delivery.body)
    return decoded


def test_runtimes_placed_alike_share_one_delivery_and_others_get_theirs() -> None:
    sources = Sources()
    for runtime_id, env in (("a", "prod"), ("b", "prod"), ("c", "dev")):
        sources.runtime(runtime_id, env=env)
    sources.add(component("everywhere"), component("prod-only", "env=prod"))
    groups = list(Renderer(sources).by_group())
    assert sorted(ids for _, ids in groups) == [["a", "b"], ["c"]]
    by_runtime = {rid: delivery for delivery, ids in groups for rid in ids}
    assert by_runtime["a"] is by_runtime["b"]
    assert delivered(by_runtime["a"]) == {"everywhere": "1", "prod-only": "1"}
    assert delivered(by_runtime["c"]) == {"everywhere": "1"}
    assert by_runtime["a"].components == (("everywhere", 1, "state.redis"), ("prod-only", 1, "state.redis"))
    assert by_runtime["a"].etag == f'"{by_runtime["a"].hash}"'


def test_deliveries_of_some_runtimes_skip_those_gone() -> None:
    sources = Sources()
    sources.runtime("a", env="prod")
    sources.runtime("b", env="prod")
    sources.add(component("c1"))
    renderer = Renderer(sources)
    found = dict(renderer.deliveries(["a", "gone", "b"]))
    assert list(found) == ["a", "b"]
    assert found["a"] is found["b"]
    assert found["a"] is next(renderer.by_group())[0]  # the same render the groups get


def test_placement_key_names_labels_rollout_revisions_and_scenarios() -> None:
    sources = Sources()
    sources.runtime("a", env="prod")
    sources.rollouts["c1"] = RolloutDelivery(Assignment(1, 2, frozenset({"a"})), {})
    sources.registry.merge(RegistryChanges(runtime_scenarios={"a": ("blue",)}), full=False)
    key = Renderer(sources).placement_key("a", sources.runtimes["a"])
    assert key == PlacementKey(labels=(("env", "prod"),), rollout_revisions=(("c1", 2),), scenarios=("blue",))
    assert hash(key) == hash(PlacementKey((("env", "prod"),), (("c1", 2),), ("blue",)))


def test_a_rollout_hands_each_runtime_its_revision() -> None:
    sources = Sources()
    sources.runtime("early")
    sources.runtime("late")
    old, new = component("c1", revision=1), component("c1", revision=2)
    sources.add(new)
    sources.rollouts["c1"] = RolloutDelivery(Assignment(1, 2, frozenset({"early"})), {1: old, 2: new})
    found = dict(Renderer(sources).deliveries(["early", "late"]))
    assert delivered(found["early"]) == {"c1": "2"}
    assert delivered(found["late"]) == {"c1": "1"}


def test_renders_are_kept_until_a_component_or_secret_changes() -> None:
    sources = Sources()
    sources.runtime("a")
    sources.add(component("c1", secret="db"))
    sources.secrets["db"] = SecretValue("db", 1, {"password": "one"})
    renderer = Renderer(sources)
    first = next(renderer.by_group())[0]
    sources.secrets["db"] = SecretValue("db", 2, {"password": "two"})
    renderer.invalidate(FeedChange(full=False, rollouts=True))  # keeps the renders
    assert next(renderer.by_group())[0] is first
    renderer.invalidate(FeedChange(full=False, content=True))
    second = next(renderer.by_group())[0]
    assert second.hash != first.hash
    assert body(second)["secrets"] == [{"name": "db", "revision": 2, "data": {"password": "two"}}]


def test_a_component_change_renders_again_only_the_placements_it_touches() -> None:
    sources = Sources()
    sources.runtime("p", env="prod")
    sources.runtime("d", env="dev")
    sources.add(component("shared"), component("prod-only", "env=prod"))
    renderer = Renderer(sources)
    before = {ids[0]: delivery for delivery, ids in renderer.by_group()}
    sources.add(component("prod-only", "env=prod", revision=2))
    renderer.invalidate(FeedChange(full=False, content=True))
    after = {ids[0]: delivery for delivery, ids in renderer.by_group()}
    assert after["d"] is before["d"]
    assert delivered(after["p"]) == {"shared": "1", "prod-only": "2"}
    sources.add(component("shared", revision=2))
    renderer.invalidate(FeedChange(full=False, content=True))
    assert delivered(dict(renderer.deliveries(["d"]))["d"]) == {"shared": "2"}


def test_placement_groups_are_kept_until_a_runtime_rollout_or_compass_change() -> None:
    sources = Sources()
    sources.runtime("a")
    renderer = Renderer(sources)
    assert [ids for _, ids in renderer.by_group()] == [["a"]]
    sources.runtime("b")
    renderer.invalidate(FeedChange(full=False, content=True))  # keeps the groups
    assert [ids for _, ids in renderer.by_group()] == [["a"]]
    renderer.invalidate(FeedChange(full=False, runtimes=("b",)))
    assert [ids for _, ids in renderer.by_group()] == [["a", "b"]]


def test_a_runtime_in_an_applications_scenario_gets_its_binding() -> None:
    sources = Sources()
    sources.runtime("in")
    sources.runtime("out")
    application = Application("shop", 3, frozenset({"blue"}), (Bundle("api", "https://shop.example.com"),))
    registered = RegisteredApplication(application, "uid", {}, {}, datetime.now(UTC))
    changes = RegistryChanges(applications={"shop": registered}, runtime_scenarios={"in": ("blue",)})
    sources.registry.merge(changes, full=False)
    found = dict(Renderer(sources).deliveries(["in", "out"]))
    assert len(delivered(found["in"])) == 1
    assert delivered(found["out"]) == {}


def test_a_component_change_makes_only_that_components_part_of_the_body_anew(monkeypatch: Any) -> None:
    """The delivered manifest and canonical JSON of each component revision are made once: re-rendering
    after one component changed makes that component's part alone, and the body and hash are those of a
    render from scratch."""
    sources = Sources()
    sources.runtime("a", env="prod")
    sources.add(component("c1", "env=prod"), component("c2", "env=prod"), component("c3", "env=prod"))
    renderer = Renderer(sources)
    next(renderer.by_group())
    made: list[str] = []
    original = render_module.delivered

    def counting(c: StoredComponent) -> render_module.Delivered:
        made.append(c.name)
        return original(c)

    monkeypatch.setattr(render_module, "delivered", counting)
    sources.add(component("c2", "env=prod", revision=2))
    renderer.invalidate(FeedChange(full=False, content=True))
    again = next(renderer.by_group())[0]
    assert made == ["c2"]
    fresh = next(Renderer(sources).by_group())[0]
    assert (again.hash, again.body) == (fresh.hash, fresh.body)
