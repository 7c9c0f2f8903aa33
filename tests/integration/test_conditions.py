"""Runtime conditions and the sidecar's own report, as the control plane shows them."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .harness import (
    Fleet,
    apply,
    component,
    condition,
    condition_true,
    expect_status,
    http_binding,
    synced,
)

pytestmark = pytest.mark.integration

CONDITIONS = ("Connected", "Synced", "Ready")


def sidecar_names(detail: dict[str, Any]) -> set[str]:
    return {c["name"] for c in (detail.get("sidecar") or {}).get("components") or []}


def all_true(detail: dict[str, Any]) -> bool:
    return all(condition_true(detail, kind) for kind in CONDITIONS)


def test_conditions_become_true_and_the_sidecar_report_lists_what_it_loaded(
    fleet: Fleet, admin: httpx.Client
) -> None:
    daprd = fleet.daprd("cond-1", api_token="cond-dapr-api-token")
    fleet.agent("cond-1", {"t-cond": "yes"}, daprd=daprd)  # the default heartbeat, a minute
    apply(
        admin,
        [
            http_binding("cond-web", "t-cond=yes", "http://cond.invalid/"),
            component("cond-memory", "t-cond=yes", type="state.in-memory", metadata=[]),
        ],
    )
    wanted = {"cond-web", "cond-memory"}
    detail = fleet.wait_runtime(
        "cond-1", lambda d: all_true(d) and synced(d) and wanted <= sidecar_names(d), "all conditions True"
    )
    sidecar = detail["sidecar"]
    assert sidecar["reachable"] is True and sidecar["app_id"] == "cond-1"
    assert {c["name"]: c["type"] for c in sidecar["components"]}.items() >= {
        "cond-web": "bindings.http",
        "cond-memory": "state.in-memory",
    }.items()
    assert wanted <= daprd.loaded_names()
    results = {r["name"]: r["state"] for r in detail["resources"]}
    assert results.get("cond-web") == "applied" and results.get("cond-memory") == "applied", results
    assert detail["last_seen"] and detail["agent_version"]
    assert sorted(c["name"] for c in detail["desired_components"]) == sorted(wanted)
    shown = expect_status(admin.get("/api/v1/components/cond-web"), 200).json()
    assert shown["runtimes"] == [{"name": "cond-1", "ready": True}]

    expect_status(admin.delete("/api/v1/components/cond-memory"), 204)
    fleet.wait_runtime(
        "cond-1",
        lambda d: all_true(d) and "cond-memory" not in sidecar_names(d) and "cond-web" in sidecar_names(d),
        "the sidecar report drops the deleted component once daprd does, long before a heartbeat",
        timeout=15,
    )


def test_connected_turns_false_after_three_missed_heartbeats(fleet: Fleet, admin: httpx.Client) -> None:
    # The rule is about the heartbeat, so this agent beats every second instead of the default minute.
    agent = fleet.agent("cond-gone", {"t-cond": "gone"}, heartbeat_interval=1.0)
    fleet.wait_runtime("cond-gone", lambda d: condition_true(d, "Connected"), "Connected")
    agent.stop()
    gone = fleet.wait_runtime(
        "cond-gone",
        lambda d: (condition(d, "Connected") or {}).get("status") == "False",
        "Connected False after 3 missed heartbeats",
        timeout=20,
    )
    assert (condition(gone, "Connected") or {}).get("reason"), "Connected False without a reason"


def test_ready_waits_until_the_sidecar_loads_what_was_written(fleet: Fleet, admin: httpx.Client) -> None:
    daprd = fleet.daprd("cond-reload", hot_reload=False)
    agent = fleet.agent("cond-reload", {"t-cond": "reload"}, daprd=daprd)
    apply(admin, [http_binding("cond-reload-web", "t-cond=reload", "http://one.invalid/")])
    detail = fleet.wait_runtime(
        "cond-reload",
        lambda d: synced(d) and (d.get("sidecar") or {}).get("reachable") is True,
        "Synced, with a sidecar report",
    )
    assert "cond-reload-web" not in sidecar_names(detail), "daprd without hot reload cannot have loaded it"
    ready = condition(detail, "Ready") or {}
    assert ready.get("status") != "True", f"Ready although the sidecar did not load the component: {ready}"
    assert "cond-reload-web" in (ready.get("message") or ""), f"Ready does not name what is missing: {ready}"

    agent.stop()
    agent.reload_command = f"kill -HUP {daprd.pid}"
    agent.start()
    apply(admin, [http_binding("cond-reload-web", "t-cond=reload", "http://two.invalid/")])
    fleet.wait_runtime(
        "cond-reload",
        lambda d: synced(d) and all_true(d) and "cond-reload-web" in sidecar_names(d),
        "Ready once the reload command made daprd load the component",
    )
    assert "cond-reload-web" in daprd.loaded_names()
    reload = fleet.wait_runtime("cond-reload", lambda d: d.get("reload") is not None, "a reload result")[
        "reload"
    ]
    assert reload["exit_code"] == 0 and reload["command"] == agent.reload_command
