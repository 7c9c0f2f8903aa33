"""What a daprd sidecar's Prometheus metrics say about its components.

On Kubernetes the sidecar's API (`/v1.0/metadata`) listens on the pod's localhost only; its metrics are
served on the pod IP (`dapr.io/metrics-port`, default 9090; off with `dapr.io/enable-metrics: "false"`).
daprd (`pkg/diagnostics/service_monitoring.go`) counts, per sidecar:

- `dapr_runtime_component_init_total{app_id, component}`: successful initialisations per component *type*
  (`component` is `spec.type`, e.g. `state.redis`); a hot reload of a changed component counts again;
- `dapr_runtime_component_init_fail_total{app_id, component, reason, componentName}`: failed ones per
  component, `reason` being the stage that failed (`creation`: no such type/version in daprd's registry,
  `init`: the component's own initialisation).

`dapr_runtime_component_loaded{app_id}` is declared too, but no code path of daprd records it, so it is
never served; per-name success is not counted either, which is why loading is judged by type counts.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

INIT_TOTAL = "dapr_runtime_component_init_total"
INIT_FAIL_TOTAL = "dapr_runtime_component_init_fail_total"
# name{labels} value [timestamp], Prometheus text exposition format 0.0.4
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
_ESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


class MetricsError(ValueError):
    """The answer is not Prometheus text."""


@dataclass(frozen=True)
class ComponentMetrics:
    """One sidecar's counters: successful inits per component type, failed ones per name and reason."""

    inits: dict[str, float] = field(default_factory=dict)
    failures: dict[str, dict[str, float]] = field(default_factory=dict)

    def new_failures(self, name: str, before: ComponentMetrics | None) -> list[str]:
        """The reasons `name` failed with since `before` (every one when there is no `before`)."""
        old = (before.failures if before else {}).get(name, {})
        return sorted(r for r, n in self.failures.get(name, {}).items() if n > old.get(r, 0.0))


def parse_labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    position = 0
    while position < len(text):
        match = _LABEL.match(text, position)
        if match is None or match.end() == position:
            raise MetricsError(f"bad label set {{{text}}}")
        labels[match[1]] = re.sub(r"\\[\\\"n]", lambda m: _ESCAPES[m[0]], match[2])
        position = match.end()
    return labels


def parse_component_metrics(text: str) -> ComponentMetrics:
    """The component counters in a `/metrics` answer; other metrics are skipped."""
    inits: dict[str, float] = defaultdict(float)
    failures: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            raise MetricsError(f"not a sample line: {line[:100]!r}")
        name = match[1]
        if name not in (INIT_TOTAL, INIT_FAIL_TOTAL):
            continue
        labels = parse_labels(match[2] or "")
        try:
            value = float(match[3])
        except ValueError as exc:
            raise MetricsError(f"bad value in {line[:100]!r}") from exc
        if name == INIT_TOTAL:
            inits[labels.get("component", "")] += value
        else:
            failures[labels.get("componentName", "")][labels.get("reason", "")] += value
    return ComponentMetrics(dict(inits), {n: dict(r) for n, r in failures.items()})
