"""Prometheus metrics of the control plane, on one registry served at `/metrics`."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()

LONGPOLLS_WAITING = Gauge("rrm_longpolls_waiting", "Agent long-polls held open", registry=REGISTRY)
FEED_CATCH_UP_SECONDS = Histogram(
    "rrm_feed_catch_up_seconds", "Time to apply committed changes to memory", registry=REGISTRY
)
DESIRED_STATE_RESPONSES = Counter(
    "rrm_desired_state_responses", "Desired-state answers by HTTP status", ["status"], registry=REGISTRY
)
WATCH_STREAMS = Gauge("rrm_watch_streams", "Agent watch streams open", registry=REGISTRY)
WATCH_FRAMES = Counter(
    "rrm_watch_frames", "Frames written on watch streams, by kind", ["kind"], registry=REGISTRY
)
STATUS_REPORTS = Counter("rrm_status_reports", "Status reports received from agents", registry=REGISTRY)
ADMIN_WRITES = Counter(
    "rrm_admin_writes", "Resources created, updated or deleted", ["kind", "action"], registry=REGISTRY
)
LEADER = Gauge("rrm_leader", "1 on the replica that runs the singleton work", registry=REGISTRY)
RUNTIMES = Gauge(
    "rrm_runtimes", "Runtimes by condition and status", ["condition", "status"], registry=REGISTRY
)
# progressive rollouts (rrm.server.rollouts)
ROLLOUTS = Gauge("rrm_rollouts", "Rollouts by state (on the leader)", ["state"], registry=REGISTRY)
ROLLOUT_WAVES_STARTED = Counter(
    "rrm_rollout_waves_started", "Rollout waves started (first waves included)", registry=REGISTRY
)
ROLLOUT_EVENTS = Counter(
    "rrm_rollout_events", "Rollout transitions, by event type", ["event"], registry=REGISTRY
)
# provisioning (rrm.server.provisioning)
OPERATIONS = Gauge(
    "rrm_operations", "Provisioning operations by type and state (on the leader)", ["type", "state"], registry=REGISTRY
)
OPERATION_STAGE_SECONDS = Histogram(
    "rrm_operation_stage_seconds",
    "Time from a stage's first attempt to its end",
    ["plan", "stage"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
    registry=REGISTRY,
)
