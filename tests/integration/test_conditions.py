"""Runtime conditions and the sidecar's own report, as the control plane shows them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .databases import database_for
from .harness import (
    Fleet,
    ServerProcess,
    apply,
    component,
    condition,
    condition_true,
    expect_status,
    holds_for,
    http_binding,
    runtime,
    synced,
)

pytestmark = pytest.mark.integration

CONDITIONS = ("Connected", "Synced", "Ready")
KEEP_ALIVE = 2.0  # `own_server`'s --watch-keep-alive: a watch stream's frames come more often than heartbeats
IDLE_HEARTBEAT = 3.0  # the idle agent's --heartbeat-interval, above the keep-alive (contact every 2 s)


@pytest.fixture
def own_server(tmp_path: Path, backend: str) -> Iterator[ServerProcess]:
    """In this module, the server of one test writes a keep-alive on each quiet watch stream every second."""
    directory = tmp_path / "own-server"
    with database_for(backend) as database_url:
        process = ServerProcess(
            directory / "data",
            directory / "server.log",
            database_url=database_url,
            options=["--watch-keep-alive", f"{KEEP_ALIVE:g}"],
        )
        process.start()
        try:
            yield process
        finally:
            process.stop()


def counted(admin: httpx.Client, name: str) -> float:
    """The value of the unlabelled metric `name` in /metrics."""
    found = re.search(rf"^{re.escape(name)} (\S+)$", expect_status(admin.get("/metrics"), 200).text, re.M)
    assert found is not None, f"/metrics has no {name}"
    return float(found.group(1))


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


def test_an_idle_agent_on_its_watch_stream_stays_connected_without_repeating_its_report(
    own_server: ServerProcess, fleet: Fleet
) -> None:
    """The control plane counts each frame of the watch stream as contact: an idle agent's heartbeat looks
    at the sidecar and sends nothing while its report is unchanged, and sends what the sidecar changed."""
    admin = own_server.admin
    daprd = fleet.daprd("cond-idle")
    fleet.agent("cond-idle", {"t-cond": "idle"}, daprd=daprd, heartbeat_interval=IDLE_HEARTBEAT)
    apply(admin, [http_binding("cond-idle-web", "t-cond=idle", "http://idle.invalid/")])
    fleet.wait_runtime(
        "cond-idle", lambda d: all_true(d) and "cond-idle-web" in sidecar_names(d), "all conditions True"
    )
    fleet.wait_until(lambda: counted(admin, "rrm_watch_streams") >= 1, "the agent's watch stream to open")
    reports = counted(admin, "rrm_status_reports_total")

    def connected_without_a_report() -> bool:
        detail = runtime(admin, "cond-idle")
        return condition_true(detail, "Connected") and counted(admin, "rrm_status_reports_total") == reports

    holds_for(
        connected_without_a_report,
        2 * IDLE_HEARTBEAT + 1,
        lambda: fleet.explain("the idle agent sent a report, or went Connected=False without one"),
    )

    daprd.stop()
    detail = fleet.wait_runtime(
        "cond-idle",
        lambda d: (d.get("sidecar") or {}).get("reachable") is False,
        "a heartbeat reports the sidecar unreachable",
        timeout=2 * IDLE_HEARTBEAT + 5,
    )
    assert counted(admin, "rrm_status_reports_total") > reports
    assert (condition(detail, "Ready") or {}).get("status") == "False"


def test_an_agent_with_a_short_long_poll_wait_stays_connected_between_keep_alives_of_its_stream(
    own_server: ServerProcess, fleet: Fleet
) -> None:
    """Each frame of the watch stream is contact, so the stream's keep-alive, not the long-poll's wait, is
    how often the control plane hears from a watching agent: with the wait's 0.2 s reported, the runtime
    went Connected=False between keep-alives two seconds apart."""
    admin = own_server.admin
    fleet.agent("cond-short-wait", {"t-cond": "short-wait"}, wait=0.2)
    fleet.wait_until(lambda: counted(admin, "rrm_watch_streams") >= 1, "the agent's watch stream to open")
    fleet.wait_runtime("cond-short-wait", lambda d: condition_true(d, "Connected"), "Connected")
    holds_for(
        lambda: condition_true(runtime(admin, "cond-short-wait"), "Connected"),
        3 * KEEP_ALIVE,
        lambda: fleet.explain("the watching agent went Connected=False between keep-alives"),
    )
