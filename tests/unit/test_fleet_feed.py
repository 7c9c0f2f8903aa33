"""The change-feed follower: what it reads into its caches, and what it says changed (which decides what the
caches built on it drop, by the rules in rrm.server.fleet's docstring)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from fleet_fixtures import Store, component

from rrm.core.render import SecretValue
from rrm.server.compass.registry import RegistryChanges
from rrm.server.fleet.feed import FeedChange, FleetFeed, Loaded, RuntimeEntry


def entry(runtime_id: str, **labels: str) -> RuntimeEntry:
    return RuntimeEntry(runtime_id, runtime_id, "selfhosted", tuple(sorted(labels.items())))


@pytest.mark.parametrize(
    ("change", "placements", "renders", "everyone"),
    [
        (FeedChange(full=True), True, True, True),
        (FeedChange(full=False, runtimes=("r1",)), True, False, False),
        (FeedChange(full=False, content=True), False, True, True),
        (FeedChange(full=False, rollouts=True), True, False, True),
        (FeedChange(full=False, registry=True), True, False, True),
        (FeedChange(full=False), False, False, False),
    ],
)
def test_what_a_change_makes_stale(
    change: FeedChange, placements: bool, renders: bool, everyone: bool
) -> None:
    assert (change.placements, change.renders, change.everyone) == (placements, renders, everyone)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path)


class Recorder:
    def __init__(self) -> None:
        self.changes: list[FeedChange] = []

    def __call__(self, change: FeedChange) -> None:
        self.changes.append(change)


def test_applying_replaces_and_drops_entries_and_says_what_changed(store: Store) -> None:
    feed = FleetFeed(store.db, store.box, Recorder())
    first = Loaded(seq=5, runtimes={"r1": entry("r1"), "r2": entry("r2")}, components={"c1": component("c1")})
    first.registry = RegistryChanges(runtime_scenarios={"r2": ("blue",)})
    feed.apply(first, full=False)
    second = Loaded(
        seq=6, runtimes={"r2": None}, keys={"r2": []}, secrets={"s": SecretValue("s", 1, {"k": "v"})}
    )
    change = feed.apply(second, full=False)
    assert change == FeedChange(full=False, runtimes=("r2",), keys={"r2": []}, content=True)
    assert list(feed.runtimes) == ["r1"]
    assert feed.registry.explicit_scenarios("r2") == ()  # a runtime gone leaves no scenarios behind
    assert list(feed.secrets) == ["s"]
    assert feed.apply(Loaded(seq=3, components={"c1": None}), full=False).content
    assert feed.components == {}
    assert feed.seq == 6  # never back


def test_a_runtime_s_own_scenarios_re_deliver_that_runtime_not_the_whole_fleet(store: Store) -> None:
    feed = FleetFeed(store.db, store.box, Recorder())
    feed.apply(Loaded(seq=1, runtimes={"r1": entry("r1")}), full=False)
    new = Loaded(seq=2, runtimes={"r2": entry("r2")})
    new.registry = RegistryChanges(runtime_scenarios={"r2": ("DEFAULT",), "r1": ("blue",)})
    change = feed.apply(new, full=False)
    assert change.runtimes == ("r2", "r1") and not change.everyone
    assert feed.registry.explicit_scenarios("r1") == ("blue",)
    assignment = Loaded(seq=3)
    assignment.registry = RegistryChanges(assignments={"blue": "env=prod"})
    assert feed.apply(assignment, full=False).everyone, "a scenario assignment may move any runtime"


def test_a_full_apply_replaces_everything_in_the_same_dicts(store: Store) -> None:
    feed = FleetFeed(store.db, store.box, Recorder())
    runtimes, components = feed.runtimes, feed.components
    feed.apply(
        Loaded(seq=1, runtimes={"old": entry("old")}, components={"old": component("old")}), full=False
    )
    feed.apply(Loaded(seq=2, runtimes={"new": entry("new")}), full=True)
    assert feed.runtimes is runtimes and list(runtimes) == ["new"]
    assert feed.components is components and components == {}


def test_loading_reads_every_runtime_with_its_key_and_every_component_and_secret(store: Store) -> None:
    paired = store.runtime("paired", key_id="k1", env="prod")
    unpaired = store.runtime("unpaired")
    store.component("c1", secret="db")
    store.secret("db", password="pw")
    recorder = Recorder()
    feed = FleetFeed(store.db, store.box, recorder)
    asyncio.run(feed.load())
    [change] = recorder.changes
    assert change.full
    assert set(change.runtimes) == {paired, unpaired}
    assert [kid for kid, _ in change.keys[paired]] == ["k1"]
    assert change.keys[unpaired] == []
    assert feed.runtimes[paired].labels == (("env", "prod"),)
    assert feed.components["c1"].revision == 1
    assert feed.secrets["db"].data == {"password": "pw"}
    assert feed.seq > 0


def test_catching_up_reads_only_what_changed_since(store: Store) -> None:
    kept = store.runtime("kept", key_id="k1")
    gone = store.runtime("gone", key_id="k2")
    store.component("c1")
    recorder = Recorder()
    feed = FleetFeed(store.db, store.box, recorder)
    asyncio.run(feed.load())
    asyncio.run(feed.catch_up())
    assert len(recorder.changes) == 1  # nothing new: nobody is told
    store.delete_runtime(gone)
    store.component("c1", selector="env=prod")
    asyncio.run(feed.catch_up())
    change = recorder.changes[-1]
    assert change == FeedChange(full=False, runtimes=(gone,), keys={gone: []}, content=True)
    assert list(feed.runtimes) == [kept]
    assert feed.components["c1"].revision == 2
    store.delete_component("c1")
    asyncio.run(feed.catch_up())
    assert feed.components == {}


def test_a_write_is_read_back_in_its_own_thread_hop(store: Store) -> None:
    """`write_then_catch_up` commits and reads what changed in one worker thread: when it returns, the
    caches hold the write."""
    recorder = Recorder()
    feed = FleetFeed(store.db, store.box, recorder)
    asyncio.run(feed.load())

    result = asyncio.run(feed.write_then_catch_up(lambda: store.component("c1")))

    assert result == 1
    assert feed.components["c1"].revision == 1
    assert recorder.changes[-1] == FeedChange(full=False, content=True)


def test_a_write_whose_read_back_fails_is_still_answered_and_left_to_the_follower(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder()
    feed = FleetFeed(store.db, store.box, recorder)
    asyncio.run(feed.load())

    def unreadable(after: int) -> Loaded | None:
        raise OSError("the database cannot be read just now")

    monkeypatch.setattr(feed, "_read_changes", unreadable)

    async def write_then_follow() -> int:
        revision = await feed.write_then_catch_up(lambda: store.component("c1"))
        assert "c1" not in feed.components
        monkeypatch.undo()  # readable again: the follower, nudged, catches up at once
        follower = asyncio.create_task(feed.follow(poll_seconds=3600))
        try:
            await asyncio.wait_for(_until(lambda: "c1" in feed.components), 10)
        finally:
            follower.cancel()
        return revision

    assert asyncio.run(write_then_follow()) == 1


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.01)
