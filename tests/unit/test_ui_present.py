"""How the dashboard shapes the admin API's views: attention order, counts, revision diffs, countdowns and
a rollout wave's progress."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from rrm.server.ui.present import (
    component_results,
    countdown,
    fleet_summary,
    revision_diff,
    seconds_until,
    took,
    wave_progress,
)


def runtime(name: str, kind: str = "selfhosted", **statuses: str) -> dict[str, Any]:
    conditions = [
        {"type": t, "status": statuses.get(t, "True"), "reason": f"{t}Reason", "message": f"{t} says"}
        for t in ("Connected", "Synced", "Ready")
    ]
    return {"name": name, "kind": kind, "conditions": conditions}


def test_attention_lists_not_connected_first_then_not_synced_then_not_ready() -> None:
    runtimes = [
        runtime("a-not-ready", Ready="False"),
        runtime("b-fine"),
        runtime("c-not-synced", Synced="False", Ready="False"),
        runtime("d-offline", "kubernetes", Connected="False", Ready="Unknown"),
    ]
    summary = fleet_summary(runtimes, [])
    assert [a.runtime["name"] for a in summary.attention] == ["d-offline", "c-not-synced", "a-not-ready"]
    offline = summary.attention[0]
    assert offline.failing["reason"] == "ConnectedReason" and offline.also == ["Ready"]
    assert summary.by_condition["Connected"] == {"True": 3, "False": 1}
    assert summary.by_condition["Ready"] == {"True": 1, "False": 2, "Unknown": 1}
    assert summary.by_kind == {"kubernetes": {"total": 1, "Ready": 0}, "selfhosted": {"total": 3, "Ready": 1}}


def test_components_not_ready_everywhere_are_singled_out() -> None:
    components = [{"name": "ok", "matched": 2, "ready": 2}, {"name": "lagging", "matched": 3, "ready": 1}]
    assert [c["name"] for c in fleet_summary([], components).components_not_ready] == ["lagging"]


def test_results_pair_desired_components_with_what_the_agent_reported() -> None:
    detail = {
        "desired_components": [
            {"name": "a", "type": "bindings.http", "revision": 3},
            {"name": "b", "revision": 1},
        ],
        "resources": [
            {"kind": "Component", "name": "a", "state": "failed", "message": "boom", "revision": 2},
            {"kind": "Component", "name": "rrm-secrets-x", "state": "applied"},
        ],
    }
    rows = component_results(detail)
    assert [(r.name, r.revision, r.state, r.message) for r in rows] == [
        ("a", "3 (applied 2)", "failed", "boom"),
        ("b", "1", "not reported", ""),
        ("Component/rrm-secrets-x", "", "applied", ""),
    ]


def test_the_diff_of_two_revisions_marks_changed_lines_and_a_deletion_empties_everything() -> None:
    old = {"spec": {"metadata": [{"name": "url", "value": "http://one/"}]}}
    new = {"spec": {"metadata": [{"name": "url", "value": "http://two/"}]}}
    lines = revision_diff(old, new, ("revision 1", "revision 2"))
    assert [(line.kind, line.text) for line in lines if line.kind in ("add", "del")] == [
        ("del", "-    value: http://one/"),
        ("add", "+    value: http://two/"),
    ]
    assert lines[0].kind == "file" and lines[2].kind == "hunk"
    deleted = revision_diff(new, None, ("revision 2", "revision 3"))
    assert all(line.kind != "add" for line in deleted) and any(line.kind == "del" for line in deleted)
    assert revision_diff(old, old, ("1", "1")) == []


def test_countdowns_round_up_to_whole_seconds_so_zero_means_the_time_is_up() -> None:
    assert [countdown(s) for s in (0.2, 0, -3, 59.01, 90.5, 3600)] == ["1s", "0s", "0s", "1m", "1m31s", "1h"]
    assert countdown(None) == "-"


def test_a_stage_shows_tenths_of_a_second_while_short_then_whole_units() -> None:
    assert [took(s) for s in (0.061, 1.25, 9.94, 12.4, 95.6, 3600.2)] == [
        "0.1s",
        "1.2s",
        "9.9s",
        "12s",
        "1m36s",
        "1h",
    ]
    assert took(None) == "-"
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert seconds_until((now + timedelta(seconds=42)).isoformat(), now) == 42
    assert seconds_until((now - timedelta(seconds=5)).isoformat(), now) == 0
    assert seconds_until("2026-01-01T00:00:30", now) == 30  # naive means UTC
    assert seconds_until(None, now) is None and seconds_until("soon", now) is None


def test_a_waves_progress_counts_its_runtimes_by_how_far_they_got() -> None:
    states = ["ready", "ready", "failed", "updating", "pending", "gone"]
    wave = {"total": 6, "ready": 2, "failed": 1, "runtimes": [{"state": s} for s in states]}
    progress = wave_progress(wave)
    assert (progress.total, progress.ready, progress.failed, progress.updating) == (6, 2, 1, 1)
