"""The fleet put together: a change the feed reads reaches the keys, the renders and the long-polls."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fleet_fixtures import Store

from rrm.server.fleet import Delivery, Fleet


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path)


async def long_poll(fleet: Fleet, runtime_id: str) -> asyncio.Task[Delivery | None]:
    """A long-poll of an agent holding the runtime's current state, already waiting."""
    current = fleet.delivery(runtime_id)
    assert current is not None
    task = asyncio.create_task(fleet.wait_for_change(runtime_id, current.etag, 60))
    await asyncio.sleep(0)
    assert not task.done()
    return task


def test_a_loaded_fleet_serves_each_runtime_its_state_and_knows_its_key(store: Store) -> None:
    prod = store.runtime("prod", key_id="k1", env="prod")
    dev = store.runtime("dev", env="dev")
    store.component("everywhere")
    store.component("prod-only", selector="env=prod")
    fleet = Fleet(store.db, store.box, delivery_window=0)
    asyncio.run(fleet.load())
    prod_state, dev_state = fleet.delivery(prod), fleet.delivery(dev)
    assert prod_state is not None and dev_state is not None
    assert [c[0] for c in prod_state.components] == ["everywhere", "prod-only"]
    assert [c[0] for c in dev_state.components] == ["everywhere"]
    known = fleet.key("k1")
    assert known is not None and known[0] == prod
    assert fleet.paired(prod) and not fleet.paired(dev)
    assert set(fleet.runtimes) == {prod, dev}


def test_a_component_change_wakes_the_long_polls_of_the_runtimes_it_concerns(store: Store) -> None:
    prod = store.runtime("prod", env="prod")
    dev = store.runtime("dev", env="dev")
    fleet = Fleet(store.db, store.box, delivery_window=0)

    async def scenario() -> tuple[Delivery | None, bool]:
        await fleet.load()
        prod_poll, dev_poll = await long_poll(fleet, prod), await long_poll(fleet, dev)
        version = fleet.deliveries_version
        store.component("prod-only", selector="env=prod")
        await fleet.catch_up()
        assert fleet.deliveries_version > version
        woken = await asyncio.wait_for(prod_poll, 10)
        await asyncio.sleep(0)
        dev_waits = not dev_poll.done()
        fleet.close()
        return woken, dev_waits and await dev_poll is None

    woken, dev_still_waited = asyncio.run(scenario())
    assert woken is not None and [c[0] for c in woken.components] == ["prod-only"]
    assert dev_still_waited


def test_a_runtime_changed_alone_gets_its_new_placement(store: Store) -> None:
    moving = store.runtime("moving", env="dev")
    store.component("prod-only", selector="env=prod")
    fleet = Fleet(store.db, store.box, delivery_window=0)
    asyncio.run(fleet.load())
    store.relabel(moving, env="prod")
    asyncio.run(fleet.catch_up())
    moved = fleet.delivery(moving)
    assert moved is not None and [c[0] for c in moved.components] == ["prod-only"]


def test_a_runtime_deleted_answers_its_long_poll_and_loses_its_key_and_state(store: Store) -> None:
    runtime_id = store.runtime("doomed", key_id="k1")
    fleet = Fleet(store.db, store.box, delivery_window=0)

    async def scenario() -> Delivery | None:
        await fleet.load()
        poll = await long_poll(fleet, runtime_id)
        store.delete_runtime(runtime_id)
        await fleet.catch_up()
        return await asyncio.wait_for(poll, 10)

    assert asyncio.run(scenario()) is None
    assert fleet.delivery(runtime_id) is None
    assert fleet.key("k1") is None
    assert runtime_id not in fleet.runtimes
