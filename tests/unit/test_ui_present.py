"""How the dashboard shapes the admin API's views: attention order, counts, revision diffs."""

from __future__ import annotations

from typing import Any

from rrm.server.ui.present import component_results, fleet_summary, revision_diff


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
