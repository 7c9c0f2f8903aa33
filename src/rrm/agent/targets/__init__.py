"""Targets: how a desired state becomes native objects on one kind of runtime.

Only the configured target is imported: a self-hosted agent never loads the Kubernetes client.
"""

from __future__ import annotations

import importlib

from rrm.agent.config import AgentConfig, ConfigurationError
from rrm.agent.targets.base import Target

TARGETS: dict[str, str] = {
    "selfhosted": "rrm.agent.targets.selfhosted:SelfHostedTarget",
    "kubernetes": "rrm.agent.targets.kubernetes:KubernetesTarget",
}


def make_target(config: AgentConfig) -> Target:
    path = TARGETS.get(config.target)
    if path is None:
        raise ConfigurationError(f"unknown target {config.target!r}; known: {', '.join(sorted(TARGETS))}")
    module, _, name = path.partition(":")
    target: type[Target] = getattr(importlib.import_module(module), name)
    return target.from_config(config)
