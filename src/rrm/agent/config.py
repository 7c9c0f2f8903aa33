"""What an agent needs to know to run: where the directors are, where it keeps its state, what it manages."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

HotReload = Literal["auto", "on", "off"]


class ConfigurationError(Exception):
    """The agent cannot start with this configuration; the operator has to change something (exit code 2)."""


@dataclass
class AgentConfig:
    director_urls: list[str]
    state_dir: Path
    target: str = "selfhosted"
    token: str | None = None
    resources_path: Path | None = None
    dapr_http_port: int | None = None
    dapr_api_token: str | None = None
    reload_command: str | None = None
    wait_seconds: float = 30.0
    heartbeat_interval: float = 60.0
    log_level: str = "info"
    rotate_interval: float = 86400.0
    reconcile_interval: float = 60.0
    load_deadline: float = 60.0
    health_port: int | None = None
    kubeconfig: Path | None = None
    namespaces: list[str] = field(default_factory=list)
    hot_reload: HotReload = "auto"
    restart_min_interval: float = 30.0
