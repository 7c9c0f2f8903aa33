"""The selfhosted target: files daprd can read, written atomically, pruned only within rrm's own prefix."""

from __future__ import annotations

import json
import os
import stat
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from rrm.agent.config import AgentConfig, ConfigurationError
from rrm.agent.targets import make_target
from rrm.agent.targets.base import ApplyOutcome
from rrm.agent.targets.selfhosted import SelfHostedTarget, secrets_tag
from rrm.core.diff import diff
from rrm.core.hashing import state_hash
from rrm.wire.protocol import DeliveredSecret, DesiredState

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "standins"))

import fake_daprd


def component(name: str, *, metadata: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name, "annotations": {"rrm.io/revision": "3"}},
        "spec": {"type": "state.redis", "version": "v1", "metadata": metadata or []},
        **extra,
    }


def with_secret_ref(name: str, secret: str = "redis", key: str = "password") -> dict[str, Any]:
    return component(
        name,
        metadata=[
            {"name": "redisHost", "value": "localhost:6379"},
            {"name": "redisPassword", "secretKeyRef": {"name": secret, "key": key}},
        ],
    )


ROTATION = (
    DeliveredSecret(name="redis", revision=1, data={"password": "old"}),
    DeliveredSecret(name="redis", revision=2, data={"password": "new"}),
)


def make_state(
    components: list[dict[str, Any]], secrets: list[DeliveredSecret] | None = None
) -> DesiredState:
    secrets = secrets or []
    return DesiredState(
        hash=state_hash(components, [(s.name, s.revision) for s in secrets]),
        components=components,
        secrets=secrets,
    )


@pytest.fixture
def target(tmp_path: Path) -> SelfHostedTarget:
    target = SelfHostedTarget(tmp_path / "resources", tmp_path / "state")
    target.prepare()
    return target


def record_file_events(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on, `write <file>` and `delete <file>` in the order the selfhosted target does them."""
    import rrm.agent.targets.selfhosted as selfhosted

    events: list[str] = []
    real_write, real_remove = selfhosted.write_atomic, selfhosted.remove_durably

    def recording_write(path: Path, data: bytes, mode: int) -> None:
        events.append(f"write {path.name}")
        real_write(path, data, mode)

    def recording_remove(path: Path) -> None:
        events.append(f"delete {path.name}")
        real_remove(path)

    monkeypatch.setattr(selfhosted, "write_atomic", recording_write)
    monkeypatch.setattr(selfhosted, "remove_durably", recording_remove)
    return events


def sync(target: SelfHostedTarget, state: DesiredState, *, prune: bool = True) -> ApplyOutcome:
    return target.apply(diff(target.render(state), target.observe()), state, prune=prune)


def yaml_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.suffix in (".yaml", ".yml"))


def test_each_component_becomes_one_file_daprd_can_read(target: SelfHostedTarget) -> None:
    outcome = sync(target, make_state([component("cache"), component("store", scopes=["app1"])]))

    assert yaml_files(target.resources_path) == ["rrm-cache.yaml", "rrm-store.yaml"]
    document = yaml.safe_load((target.resources_path / "rrm-store.yaml").read_text())
    assert document == {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": "store", "annotations": {"rrm.io/revision": "3"}},
        "spec": {"type": "state.redis", "version": "v1", "metadata": []},
        "scopes": ["app1"],
    }
    assert [(r.name, r.state, r.revision) for r in outcome.resources] == [
        ("cache", "applied", 3),
        ("store", "applied", 3),
    ]
    assert outcome.changed


def test_missing_spec_metadata_is_written_as_empty_list(target: SelfHostedTarget) -> None:
    manifest = component("bare")
    del manifest["spec"]["metadata"]
    sync(target, make_state([manifest]))

    text = (target.resources_path / "rrm-bare.yaml").read_text()
    assert yaml.safe_load(text)["spec"]["metadata"] == []


def test_a_second_sync_of_the_same_state_changes_nothing(target: SelfHostedTarget) -> None:
    state = make_state([component("cache")])
    sync(target, state)

    assert diff(target.render(state), target.observe()).empty
    assert not sync(target, state).changed


def test_writes_go_through_a_temp_file_daprd_ignores(
    target: SelfHostedTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rrm.agent.atomic as atomic

    renames: list[tuple[str, str]] = []
    real_replace = atomic.os.replace

    def recording_replace(src: Any, dst: Any) -> None:
        renames.append((Path(src).name, Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", recording_replace)
    sync(target, make_state([component("cache")]))

    assert renames == [(".rrm-cache.yaml.tmp", "rrm-cache.yaml")]
    assert Path(renames[0][0]).suffix not in (".yaml", ".yml")


def test_prune_removes_only_files_with_rrm_prefix(target: SelfHostedTarget) -> None:
    foreign = target.resources_path / "mine.yaml"
    foreign.write_text(yaml.safe_dump(component("other")))
    (target.resources_path / "notes.txt").write_text("keep me")
    sync(target, make_state([component("a"), component("b")]))

    outcome = sync(target, make_state([component("a")]))

    assert yaml_files(target.resources_path) == ["mine.yaml", "rrm-a.yaml"]
    assert (target.resources_path / "notes.txt").exists()
    assert outcome.changed


def test_without_prune_nothing_is_deleted(target: SelfHostedTarget) -> None:
    sync(target, make_state([component("a"), component("b")]))

    sync(target, make_state([component("a")]), prune=False)

    assert yaml_files(target.resources_path) == ["rrm-a.yaml", "rrm-b.yaml"]


def test_observe_sees_only_own_files(target: SelfHostedTarget) -> None:
    (target.resources_path / "foreign.yaml").write_text(yaml.safe_dump(component("x")))
    sync(target, make_state([component("a")]))

    assert set(target.observe()) == {"rrm-a.yaml"}


def test_observe_skips_temp_files_and_directories_and_sees_yml_and_secrets_files(
    target: SelfHostedTarget,
) -> None:
    sync(target, make_state([with_secret_ref("a")], [ROTATION[0]]))
    (target.resources_path / "rrm-b.yml").write_text(yaml.safe_dump(component("b")))
    (target.resources_path / ".rrm-c.yaml.tmp").write_text(yaml.safe_dump(component("c")))
    (target.resources_path / "rrm-d.yaml").mkdir()

    observed = target.observe()

    secrets_file = f"secrets/secrets-{secrets_tag([ROTATION[0]])}.json"
    store_file = f"rrm-secrets-{secrets_tag([ROTATION[0]])}.store.yaml"
    assert set(observed) == {"rrm-a.yaml", "rrm-b.yml", store_file, secrets_file}
    assert observed["rrm-b.yml"]["metadata"]["name"] == "b"
    assert observed[secrets_file] == {"redis": {"password": "old"}}


def test_observe_of_directories_not_there_yet_is_empty(tmp_path: Path) -> None:
    target = SelfHostedTarget(tmp_path / "resources", tmp_path / "state")

    assert target.observe() == {}


def test_hand_edited_file_is_seen_as_changed(target: SelfHostedTarget) -> None:
    state = make_state([component("a")])
    sync(target, state)
    (target.resources_path / "rrm-a.yaml").write_text("apiVersion: dapr.io/v1alpha1\nkind: Compo")

    changes = diff(target.render(state), target.observe())

    assert list(changes.update) == ["rrm-a.yaml"]


def test_secrets_go_to_a_0600_file_outside_the_resources_path(target: SelfHostedTarget) -> None:
    secret = DeliveredSecret(name="redis", revision=1, data={"password": "s3cret"})
    sync(target, make_state([with_secret_ref("cache")], [secret]))

    tag = secrets_tag([secret])
    secrets_file = target.secrets_dir / f"secrets-{tag}.json"
    assert json.loads(secrets_file.read_text()) == {"redis": {"password": "s3cret"}}
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.secrets_dir.stat().st_mode) == 0o700
    assert not secrets_file.is_relative_to(target.resources_path)
    for path in target.resources_path.iterdir():
        assert "s3cret" not in path.read_text()

    store = yaml.safe_load((target.resources_path / f"rrm-secrets-{tag}.store.yaml").read_text())
    assert store["metadata"]["name"] == f"rrm-secrets-{tag}"
    assert store["spec"]["type"] == "secretstores.local.file"
    assert {m["name"]: m["value"] for m in store["spec"]["metadata"]} == {
        "secretsFile": str(secrets_file),
        "multiValued": "true",
    }
    assert Path(str(secrets_file)).is_absolute()
    dependent = yaml.safe_load((target.resources_path / "rrm-cache.yaml").read_text())
    assert dependent["auth"] == {"secretStore": f"rrm-secrets-{tag}"}


def test_secret_rotation_changes_store_name_and_dependent_auth(target: SelfHostedTarget) -> None:
    own_store = component("external", metadata=[{"name": "x", "secretKeyRef": {"name": "vault", "key": "k"}}])
    own_store["auth"] = {"secretStore": "vault-store"}
    old, new = ROTATION
    sync(target, make_state([with_secret_ref("cache"), component("plain"), own_store], [old]))
    plain_before = (target.resources_path / "rrm-plain.yaml").read_text()

    sync(target, make_state([with_secret_ref("cache"), component("plain"), own_store], [new]))

    old_tag, new_tag = secrets_tag([old]), secrets_tag([new])
    assert old_tag != new_tag
    assert yaml_files(target.resources_path) == [
        "rrm-cache.yaml",
        "rrm-external.yaml",
        "rrm-plain.yaml",
        f"rrm-secrets-{new_tag}.store.yaml",
    ]
    assert sorted(p.name for p in target.secrets_dir.iterdir()) == [f"secrets-{new_tag}.json"]
    cache = yaml.safe_load((target.resources_path / "rrm-cache.yaml").read_text())
    assert cache["auth"]["secretStore"] == f"rrm-secrets-{new_tag}"
    external = yaml.safe_load((target.resources_path / "rrm-external.yaml").read_text())
    assert external["auth"] == {"secretStore": "vault-store"}
    assert (target.resources_path / "rrm-plain.yaml").read_text() == plain_before


def test_rotation_writes_new_store_before_dependents_and_deletes_old_last(
    target: SelfHostedTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = ROTATION
    sync(target, make_state([with_secret_ref("cache"), component("gone")], [old]))
    events = record_file_events(monkeypatch)

    sync(target, make_state([with_secret_ref("cache")], [new]))

    old_tag, new_tag = secrets_tag([old]), secrets_tag([new])
    assert events == [
        f"write secrets-{new_tag}.json",
        f"write rrm-secrets-{new_tag}.store.yaml",
        "write rrm-cache.yaml",
        "delete rrm-gone.yaml",
        f"delete rrm-secrets-{old_tag}.store.yaml",
        f"delete secrets-{old_tag}.json",
    ]


def definitions(directory: Path) -> Counter[str]:
    """How often each component name is defined in `directory`, read as daprd reads it (the stand-in)."""
    return Counter(str(m["metadata"]["name"]) for m in fake_daprd.read_components(directory))


def test_a_component_named_like_the_store_keeps_its_own_file(target: SelfHostedTarget) -> None:
    old, new = ROTATION
    tag = secrets_tag([old])
    state = make_state([with_secret_ref("cache"), component(f"secrets-{tag}")], [old])

    outcome = sync(target, state)

    assert yaml_files(target.resources_path) == [
        "rrm-cache.yaml",
        f"rrm-secrets-{tag}.store.yaml",
        f"rrm-secrets-{tag}.yaml",
    ]
    assert definitions(target.resources_path) == {"cache": 1, f"secrets-{tag}": 1, f"rrm-secrets-{tag}": 1}
    assert {r.name: r.state for r in outcome.resources} == {"cache": "applied", f"secrets-{tag}": "applied"}
    assert diff(target.render(state), target.observe()).empty

    sync(target, make_state([with_secret_ref("cache"), component(f"secrets-{tag}")], [new]))

    assert f"rrm-secrets-{tag}.yaml" in yaml_files(target.resources_path)
    assert f"rrm-secrets-{tag}.store.yaml" not in yaml_files(target.resources_path)


def upgraded_agent(target: SelfHostedTarget, store_tag: str) -> SelfHostedTarget:
    """A fresh target on `target`'s directories after the store file got the name earlier agents gave it."""
    resources = target.resources_path
    (resources / f"rrm-secrets-{store_tag}.store.yaml").rename(
        resources / f"rrm-rrm-secrets-{store_tag}.yaml"
    )
    upgraded = SelfHostedTarget(resources, target.secrets_dir.parent)
    upgraded.prepare()
    return upgraded


@pytest.mark.parametrize("prune", [True, False])
def test_an_earlier_agents_store_file_is_renamed_and_never_defined_twice(
    target: SelfHostedTarget, monkeypatch: pytest.MonkeyPatch, prune: bool
) -> None:
    secret = DeliveredSecret(name="redis", revision=1, data={"password": "s3cret"})
    state = make_state([with_secret_ref("cache")], [secret])
    sync(target, state)
    tag = secrets_tag([secret])
    upgraded = upgraded_agent(target, tag)
    resources = upgraded.resources_path
    steps: list[tuple[str, Counter[str]]] = []
    real_replace = os.replace

    def recording_replace(src: Any, dst: Any) -> None:
        real_replace(src, dst)
        steps.append((f"{Path(src).name} -> {Path(dst).name}", definitions(resources)))

    monkeypatch.setattr(os, "replace", recording_replace)
    outcome = sync(upgraded, state, prune=prune)

    assert (
        f"rrm-rrm-secrets-{tag}.yaml -> rrm-secrets-{tag}.store.yaml",
        Counter({"cache": 1, f"rrm-secrets-{tag}": 1}),
    ) in steps
    assert [step for step, counts in steps if max(counts.values()) > 1] == []
    assert yaml_files(resources) == ["rrm-cache.yaml", f"rrm-secrets-{tag}.store.yaml"]
    assert {r.name: r.state for r in outcome.resources} == {"cache": "applied"}
    assert diff(upgraded.render(state), upgraded.observe()).empty


def test_an_earlier_agents_store_of_old_secrets_is_pruned_as_a_store(
    target: SelfHostedTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = ROTATION
    sync(target, make_state([with_secret_ref("cache")], [old]))
    old_tag, new_tag = secrets_tag([old]), secrets_tag([new])
    upgraded = upgraded_agent(target, old_tag)
    events = record_file_events(monkeypatch)

    sync(upgraded, make_state([with_secret_ref("cache")], [new]))

    assert events == [
        f"write secrets-{new_tag}.json",
        f"write rrm-secrets-{new_tag}.store.yaml",
        "write rrm-cache.yaml",
        f"delete rrm-rrm-secrets-{old_tag}.yaml",
        f"delete secrets-{old_tag}.json",
    ]
    assert upgraded.component_name(f"rrm-rrm-secrets-{old_tag}.yaml") is None
    assert definitions(upgraded.resources_path) == {"cache": 1, f"rrm-secrets-{new_tag}": 1}


def test_component_whose_secret_was_not_delivered_is_not_written(target: SelfHostedTarget) -> None:
    outcome = sync(target, make_state([with_secret_ref("cache", secret="absent"), component("ok")]))

    assert yaml_files(target.resources_path) == ["rrm-ok.yaml"]
    failed = {r.name: r.message for r in outcome.resources if r.state == "failed"}
    assert "absent/password" in failed["cache"]


def test_conflict_with_a_foreign_file_is_reported_and_not_written(target: SelfHostedTarget) -> None:
    foreign = {**component("cache"), "spec": {"type": "state.in-memory", "version": "v1", "metadata": []}}
    (target.resources_path / "hand-made.yml").write_text(
        "apiVersion: v1\nkind: Other\n---\n" + yaml.safe_dump(foreign)
    )

    outcome = sync(target, make_state([component("cache"), component("other")]))

    assert yaml_files(target.resources_path) == ["hand-made.yml", "rrm-other.yaml"]
    results = {r.name: r for r in outcome.resources}
    assert results["cache"].state == "failed"
    assert "hand-made.yml" in results["cache"].message
    assert results["other"].state == "applied"


def test_a_component_that_cannot_be_created_does_not_keep_old_secret_stores(target: SelfHostedTarget) -> None:
    old, new = ROTATION
    sync(target, make_state([with_secret_ref("cache")], [old]))
    foreign = {**component("blocked"), "spec": {"type": "state.in-memory", "version": "v1", "metadata": []}}
    (target.resources_path / "hand-made.yaml").write_text(yaml.safe_dump(foreign))

    outcome = sync(target, make_state([with_secret_ref("cache"), component("blocked")], [new]))

    assert {r.name: r.state for r in outcome.resources} == {"cache": "applied", "blocked": "failed"}
    new_tag = secrets_tag([new])
    assert yaml_files(target.resources_path) == [
        "hand-made.yaml",
        "rrm-cache.yaml",
        f"rrm-secrets-{new_tag}.store.yaml",
    ]
    assert sorted(p.name for p in target.secrets_dir.iterdir()) == [f"secrets-{new_tag}.json"]


def test_prepare_creates_resources_path_and_removes_own_leftover_temp_files(tmp_path: Path) -> None:
    resources = tmp_path / "does" / "not" / "exist"
    target = SelfHostedTarget(resources, tmp_path / "state")
    target.prepare()
    (resources / ".rrm-cache.yaml.tmp").write_text("half")
    (resources / ".someone-else.tmp").write_text("theirs")
    (target.secrets_dir / ".secrets-abc.json.tmp").write_text("{")

    target.prepare()

    assert sorted(p.name for p in resources.iterdir()) == [".someone-else.tmp"]
    assert list(target.secrets_dir.iterdir()) == []


def test_reload_command_runs_once_after_a_change_and_not_when_nothing_changed(tmp_path: Path) -> None:
    marker = tmp_path / "reloads"
    target = SelfHostedTarget(
        tmp_path / "resources", tmp_path / "state", reload_command=f"echo reloaded >> {marker}; echo done"
    )
    target.prepare()
    state = make_state([component("a"), component("b")])

    first = sync(target, state)
    second = sync(target, state)

    assert first.reload is not None and first.reload.exit_code == 0 and "done" in first.reload.output
    assert second.reload is None
    assert marker.read_text() == "reloaded\n"


def test_make_target_rejects_unknown_target_and_missing_resources_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="unknown target"):
        make_target(AgentConfig(director_urls=["http://x"], state_dir=tmp_path, target="mainframe"))
    with pytest.raises(ConfigurationError, match="resources-path"):
        make_target(AgentConfig(director_urls=["http://x"], state_dir=tmp_path))
    assert isinstance(
        make_target(
            AgentConfig(director_urls=["http://x"], state_dir=tmp_path, resources_path=tmp_path / "r")
        ),
        SelfHostedTarget,
    )


def test_failed_secrets_write_keeps_dependents_and_old_store_untouched(
    target: SelfHostedTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rrm.agent.targets.selfhosted as selfhosted

    old, new = ROTATION
    sync(target, make_state([with_secret_ref("cache")], [old]))
    before = {p.name: p.read_bytes() for p in target.resources_path.iterdir()}
    real_write = selfhosted.write_atomic

    def failing_secrets_write(path: Path, data: bytes, mode: int) -> None:
        if path.suffix == ".json":
            raise OSError(28, "No space left on device")
        real_write(path, data, mode)

    monkeypatch.setattr(selfhosted, "write_atomic", failing_secrets_write)
    outcome = sync(target, make_state([with_secret_ref("cache"), component("plain")], [new]))

    results = {r.name: r for r in outcome.resources}
    assert results["cache"].state == "failed" and "No space left" in results["cache"].message
    assert results["plain"].state == "applied"
    after = {p.name: p.read_bytes() for p in target.resources_path.iterdir()}
    assert after == {**before, "rrm-plain.yaml": after["rrm-plain.yaml"]}
    assert sorted(p.name for p in target.secrets_dir.iterdir()) == [f"secrets-{secrets_tag([old])}.json"]


def test_each_state_renders_as_a_fresh_target_renders_it_though_unchanged_components_are_not_rendered_again(
    target: SelfHostedTarget,
) -> None:
    old, new = ROTATION
    states = [
        make_state([component("a"), with_secret_ref("cache")], [old]),
        make_state([component("a", metadata=[{"name": "x", "value": "1"}]), with_secret_ref("cache")], [old]),
        make_state([component("a", metadata=[{"name": "x", "value": "1"}]), with_secret_ref("cache")], [new]),
        make_state([component("a"), with_secret_ref("cache"), component("-bad")], [new]),
        make_state([with_secret_ref("cache")], []),
    ]
    rendered = []
    for state in states:
        rendered.append(target.render(state))
        fresh = SelfHostedTarget(target.resources_path, target.secrets_dir.parent)
        assert rendered[-1] == fresh.render(state)
        assert target._plan(state).rejected == fresh._plan(state).rejected

    assert rendered[1]["rrm-cache.yaml"] is rendered[0]["rrm-cache.yaml"], "unchanged: not rendered again"
    assert rendered[2]["rrm-cache.yaml"]["auth"] != rendered[1]["rrm-cache.yaml"]["auth"], "a new store"
