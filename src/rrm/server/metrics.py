"""Prometheus metrics of the control plane, on one registry served at `/metrics`.

Under `rrm server --workers N` (N > 1) prometheus-client runs in its multiprocess mode (the supervisor sets
`PROMETHEUS_MULTIPROC_DIR` before this module is imported): each worker writes its values to files there,
and `/metrics`, whichever worker answers, adds them up: counters and histograms summed over every worker
that ever ran, gauges of held requests summed over the live ones, the leader's gauges from the leader.
"""

import os
from typing import cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess

REGISTRY = CollectorRegistry()


def collected() -> CollectorRegistry:
    """The registry to serve: this process's, or, under several workers, all of theirs added up."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


class LeaderGauge(Gauge):
    """A gauge the leader publishes whole each pass (clear, then set). `clear` zeroes the series first:
    a worker's multiprocess file keeps a value its process no longer has, and a zero is what it meant."""

    def clear(self) -> None:
        with self._lock:
            for child in self._metrics.values():
                cast(Gauge, child).set(0)
            self._metrics = {}


LONGPOLLS_WAITING = Gauge(
    "rrm_longpolls_waiting", "Agent long-polls held open", registry=REGISTRY, multiprocess_mode="livesum"
)
FEED_CATCH_UP_SECONDS = Histogram(
    "rrm_feed_catch_up_seconds", "Time to apply committed changes to memory", registry=REGISTRY
)
DESIRED_STATE_RESPONSES = Counter(
    "rrm_desired_state_responses", "Desired-state answers by HTTP status", ["status"], registry=REGISTRY
)
WATCH_STREAMS = Gauge(
    "rrm_watch_streams", "Agent watch streams open", registry=REGISTRY, multiprocess_mode="livesum"
)
WATCH_FRAMES = Counter(
    "rrm_watch_frames", "Frames written on watch streams, by kind", ["kind"], registry=REGISTRY
)
STATUS_REPORTS = Counter("rrm_status_reports", "Status reports received from agents", registry=REGISTRY)
ADMIN_WRITES = Counter(
    "rrm_admin_writes", "Resources created, updated or deleted", ["kind", "action"], registry=REGISTRY
)
LEADER = Gauge(
    "rrm_leader",
    "1 on the replica that runs the singleton work (workers: 1 while one of them does)",
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
RUNTIMES = LeaderGauge(
    "rrm_runtimes",
    "Runtimes by condition and status",
    ["condition", "status"],
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
# progressive rollouts (rrm.server.rollouts)
ROLLOUTS = LeaderGauge(
    "rrm_rollouts",
    "Rollouts by state (on the leader)",
    ["state"],
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
ROLLOUT_WAVES_STARTED = Counter(
    "rrm_rollout_waves_started", "Rollout waves started (first waves included)", registry=REGISTRY
)
ROLLOUT_EVENTS = Counter(
    "rrm_rollout_events", "Rollout transitions, by event type", ["event"], registry=REGISTRY
)
# provisioning (rrm.server.provisioning)
OPERATIONS = LeaderGauge(
    "rrm_operations",
    "Provisioning operations by type and state (on the leader)",
    ["type", "state"],
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
OPERATION_STAGE_SECONDS = Histogram(
    "rrm_operation_stage_seconds",
    "Time from a stage's first attempt to its end",
    ["plan", "stage"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
    registry=REGISTRY,
)
