"""The leader's gauges (rrm_runtimes, rrm_rollouts, rrm_operations), published whole each pass."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from rrm.server.metrics import LeaderGauge


def test_a_leader_gauge_takes_labels_and_clear_drops_its_series() -> None:
    gauge = LeaderGauge("t_runtimes", "test", ["condition", "status"], registry=CollectorRegistry())
    gauge.labels("Ready", "True").set(3)
    assert [s.value for s in next(iter(gauge.collect())).samples] == [3]
    gauge.clear()
    gauge.labels("Ready", "False").set(1)
    samples = next(iter(gauge.collect())).samples
    assert [(s.labels["status"], s.value) for s in samples] == [("False", 1)]
