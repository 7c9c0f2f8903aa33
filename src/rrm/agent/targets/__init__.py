"""Targets: how a desired state becomes native objects on one kind of runtime."""

from __future__ import annotations

from rrm.agent.config import AgentConfig, ConfigurationError
from rrm.agent.targets.base import Target
from rrm.agent.targets.kubernetes import KubernetesTarget
from rrm.agent.targets.selfhosted import SelfHostedTarget

TARGETS: dict[str, type[Target]] = {
    SelfHostedTarget.name: SelfHostedTarget,
    KubernetesTarget.name: KubernetesTarget,
}


def make_target(config: AgentConfig) -> Target:
    target = TARGETS.get(config.target)
    if target is None:
        raise ConfigurationError(f"unknown target {config.target!r}; known: {', '.join(sorted(TARGETS))}")
    return target.from_config(config)
