"""Published benchmark figures come from committed results files, and an unfinished benchmark is not met.

BENCHMARKS.md's figures and the README's sizing paragraph must be exactly what `make bench-report` writes
from the results files committed at HEAD: a hand edit or a copy left stale by a newer results file fails here.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, whose benchmarks/ this tests
from benchmarks import publish, report


@pytest.mark.parametrize("path", [publish.BENCHMARKS_MD, publish.README], ids=lambda p: p.name)
def test_published_figures_are_what_make_bench_report_writes(path: Any) -> None:
    expected = publish.rendered()[path]
    assert path.read_text() == expected, (
        f"{path.name} differs from what `make bench-report` writes from the committed results files: run it "
        "(after committing the results file of the run) instead of editing the figures by hand"
    )


def _latency(p99: float, count: int) -> dict[str, Any]:
    return {"count": count, "p50": p99 / 2, "p90": p99 * 0.9, "p99": p99, "max": p99}


def _propagation(
    size: int, p99: float, updates: int = 3, lost: int = 0, incomplete: str = ""
) -> dict[str, Any]:
    etcd = {"status": "ok", "latency_from_request": _latency(0.1, size * 3), "lost": 0, "failed_watches": 0}
    return {
        "size": size,
        "rounds": 3,
        "rrm": {
            "latency": _latency(p99, size * updates - lost),
            "latency_from_request": _latency(p99, size * updates - lost),
            "lost": lost,
            "incomplete": incomplete,
            "server": {"seconds": 30.0, "cpu_cores": 0.5},
        },
        "etcd": etcd,
    }


def _run(*entries: dict[str, Any], smoke: int | None = None) -> dict[str, Any]:
    return {
        "smoke": smoke,
        "asked": {"propagation": {"sizes": [e["size"] for e in entries], "rounds": 3}},
        "propagation": list(entries),
    }


def _row(rows: list[dict[str, Any]], starts: str) -> dict[str, Any]:
    return next(r for r in rows if r["target"].startswith(starts))


def test_a_complete_propagation_run_is_judged_on_its_p99_from_the_request() -> None:
    rows = report.targets(_run(_propagation(1000, 0.25), _propagation(10000, 3.5)))
    assert _row(rows, "real agents, 1,000 runtimes: propagation p99")["met"] is True
    slow = _row(rows, "real agents, 10,000 runtimes: propagation p99")
    assert slow["met"] is False and slow["measured"] == "3.500 s"


def test_a_run_that_stopped_after_its_first_update_is_not_met_with_the_reason() -> None:
    stopped = _propagation(1000, 0.1, updates=1, incomplete="stopped after update 1: timed out")
    results = _run(stopped)
    row = _row(report.targets(results), "real agents, 1,000 runtimes: propagation p99")
    assert row["met"] is False and "stopped after update 1" in row["measured"]
    assert report.incomplete(results) == ["propagation at 1,000: stopped after update 1: timed out"]


def test_fewer_updates_than_asked_or_lost_updates_are_not_met() -> None:
    short = _run(_propagation(1000, 0.1, updates=2))
    assert "2 of 3 updates" in _row(report.targets(short), "real agents, 1,000")["measured"]
    lossy = _run(_propagation(1000, 0.1, lost=5))
    row = _row(report.targets(lossy), "real agents, 1,000")
    assert row["met"] is False and "5 updates lost" in row["measured"]


def test_a_size_asked_for_but_not_run_makes_the_run_incomplete() -> None:
    results = _run(_propagation(1000, 0.1))
    results["asked"]["propagation"]["sizes"] = [1000, 10000]
    assert report.incomplete(results) == ["propagation at 10,000: not run"]
    row = _row(report.targets(results), "real agents, 10,000")
    assert row["met"] is False and row["measured"].startswith("not measured")


def test_a_smoke_run_measures_no_target() -> None:
    rows = report.targets(_run(_propagation(1000, 0.1), smoke=20))
    assert rows and all(r["met"] is False for r in rows)
    assert all(r["measured"].startswith("not measured: smoke run, N = 20") for r in rows)


def test_every_target_row_names_its_clock() -> None:
    everything_absent = {"asked": {name: {"sizes": [], "rounds": None} for name in report.BENCHMARKS}}
    rows = report.targets(everything_absent) + report.targets(_run(_propagation(1000, 0.1)))
    assert {r["target"].split(",")[0] for r in rows} >= {"real agents", "reconnect storm", "component writes"}
    assert all(r["clock"] for r in rows)
    assert all(r["met"] is False for r in rows if r["measured"].startswith("not measured"))


def test_the_cpu_per_update_is_reported_per_1000_agents() -> None:
    rows = report.targets(_run(_propagation(10000, 1.0)))
    row = _row(rows, "real agents, 10,000 runtimes: control-plane CPU-seconds per update")
    # 0.5 core over 30 s, 3 updates, 10 thousands of agents
    assert row["met"] is None and row["measured"] == "0.500 CPU-s"


def test_the_results_file_leaves_out_per_sample_arrays_and_keeps_the_figures() -> None:
    results = {
        "propagation": [{"times": [0.1] * 1000, "latency": _latency(0.2, 1000), "rounds": [{"lost": 0}]}]
    }
    small = report.compact(copy.deepcopy(results))
    assert small == {"propagation": [{"latency": _latency(0.2, 1000), "rounds": [{"lost": 0}]}]}


def test_publishing_takes_each_benchmark_from_its_newest_measured_run() -> None:
    def file(path: str, date: str, smoke: int | None, *names: str) -> publish.ResultsFile:
        results: dict[str, Any] = {"machine": {"date": date}, "smoke": smoke}
        return publish.ResultsFile(path, results | {name: [] for name in names})

    old = file("a.json", "2026-12-01T10:00:00+0000", None, "propagation", "storm")
    new = file("b.json", "2026-12-02T10:00:00+0000", None, "storm")
    smoke = file("c.json", "2026-12-03T10:00:00+0000", 20, "storm", "ready")
    chosen = publish.sources([old, new, smoke])
    assert chosen["propagation"] is old and chosen["storm"] is new and chosen["ready"] is smoke
    assert chosen["footprint"] is None


def _minimal(size: int, rrm_p99: float, etcd_p99: float, etcd_status: str = "ok") -> dict[str, Any]:
    def mode(p99: float, status: str = "ok") -> dict[str, Any]:
        return {
            "status": status,
            "latency": _latency(p99, size * 3),
            "rounds": [{"lost": 0}] * 3,
            "lost": 0,
            "server_cpu_seconds_per_update_per_1000": 0.2,
            "load_generator_cpu_seconds_per_client_update": 0.0001,
        } | ({} if status == "ok" else {"reason": "etcd is not installed"})

    ratio = {"p99": round(rrm_p99 / etcd_p99, 2)}
    return {
        "size": size,
        "rrm_watch": mode(rrm_p99),
        "rrm_status": mode(rrm_p99),
        "etcd": mode(etcd_p99, etcd_status),
        "ratio": {"rrm_watch": ratio, "rrm_status": ratio},
    }


def test_minimal_clients_are_measured_against_etcd_in_the_same_run() -> None:
    results = {"asked": {"minimal": {"sizes": [1000], "rounds": 3}}, "minimal": [_minimal(1000, 0.3, 0.2)]}
    row = _row(report.targets(results), "minimal-protocol clients, 1,000 runtimes: propagation p99")
    assert row["met"] is False and row["measured"].endswith("1.50 x")
    results["minimal"] = [_minimal(1000, 0.1, 0.2, etcd_status="unavailable")]
    row = _row(report.targets(results), "minimal-protocol clients, 1,000 runtimes: propagation p99")
    assert row["met"] is False and "etcd: unavailable: etcd is not installed" in row["measured"]
