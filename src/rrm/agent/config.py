"""What an agent needs to know to run: where the directors are, where it keeps its state, what it manages.

`AgentConfig` is the one definition of the agent's settings: each field's default, its `rrm agent` flag and
environment variable. The command line (`rrm.agent.command_line`), the loop's own defaults and the README's
agent table all read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rrm.core.settings import setting

HotReload = Literal["auto", "on", "off"]
DeliveryMode = Literal["auto", "watch", "longpoll"]


class ConfigurationError(Exception):
    """The agent cannot start with this configuration; the operator has to change something (exit code 2)."""


@dataclass
class AgentConfig:
    director_urls: list[str] = setting(flag="--director", help="control plane URL; repeatable")
    state_dir: Path = setting(flag="--state-dir", help="where the agent keeps its key and cache")
    target: str = setting("selfhosted", flag="--target", help="selfhosted or kubernetes")
    token: str | None = setting(
        None,
        flag="--token",
        env="RRM_PAIRING_TOKEN",
        help="single-use pairing token, needed only before the first pairing",
        secret=True,
    )
    resources_path: Path | None = setting(None, flag="--resources-path", help="daprd's resources directory")
    dapr_http_port: int | None = setting(
        None, flag="--dapr-http-port", help="to ask the sidecar what it loaded"
    )
    dapr_api_token: str | None = setting(
        None, flag="--dapr-api-token", env="DAPR_API_TOKEN", help="the sidecar's API token", secret=True
    )
    reload_command: str | None = setting(None, flag="--reload-command", help="run after each change")
    wait_seconds: float = setting(30.0, flag="--wait", help="long-poll wait in seconds")
    delivery: DeliveryMode = setting(
        "auto",
        flag="--delivery",
        help="auto (the watch stream; the long-poll where a proxy cuts or buffers it), watch or longpoll",
    )
    heartbeat_interval: float = setting(
        60.0,
        flag="--heartbeat-interval",
        help="most seconds between heartbeats (fewer where the channel brings contact sooner): a look at "
        "the sidecar, and a status report if it differs from the last one or the control plane has not "
        "heard from the agent otherwise",
    )
    reconcile_interval: float = setting(
        60.0, flag="--reconcile-interval", help="seconds between full reconciles that put back hand edits"
    )
    load_deadline: float = setting(
        60.0,
        flag="--load-deadline",
        help="seconds the sidecar has to load an apply before it counts as failed",
    )
    health_port: int | None = setting(
        None, flag="--health-port", help="serve /livez and /readyz on this port"
    )
    kubeconfig: Path | None = setting(None, flag="--kubeconfig", help="kubernetes: default in-cluster config")
    namespaces: list[str] = setting(
        flag="--namespace",
        factory=list,
        help="kubernetes: namespace it may write to, repeatable; the first is the default",
    )
    hot_reload: HotReload = setting(
        "auto",
        flag="--hot-reload",
        help="kubernetes: auto, on (never restart workloads) or off (always restart)",
    )
    restart_min_interval: float = setting(
        30.0, flag="--restart-min-interval", help="kubernetes: seconds between two restarts of one workload"
    )
    log_level: str = setting("info", flag="--log-level", help="debug, info, warning or error")
    rotate_interval: float = field(default=86400.0)  # the age of the key at which the agent rotates it
