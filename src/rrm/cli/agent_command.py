"""`rrm agent`: the command, and the short way into it that loads nothing of the rest of the CLI.

An agent runs on every runtime for as long as the runtime lives, so what its process holds in memory
matters: `main` builds a typer app with only this command (usage, help and errors read exactly as in the full
CLI) and never imports the admin commands, rich, the server or its libraries.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

LOG_LEVEL_OPTION = typer.Option("info", "--log-level", help="debug, info, warning or error")


def agent(
    director: list[str] = typer.Option(..., "--director", help="control plane URL; repeatable"),
    token: str = typer.Option(None, "--token", envvar="RRM_PAIRING_TOKEN", help="single-use pairing token"),
    state_dir: Path = typer.Option(..., "--state-dir", help="where the agent keeps its key and cache"),
    target: str = typer.Option("selfhosted", "--target"),
    resources_path: Path = typer.Option(None, "--resources-path", help="daprd's resources directory"),
    dapr_http_port: int = typer.Option(None, "--dapr-http-port", help="to ask the sidecar what it loaded"),
    dapr_api_token: str = typer.Option(None, "--dapr-api-token", envvar="DAPR_API_TOKEN"),
    reload_command: str = typer.Option(None, "--reload-command", help="run after each change"),
    wait: float = typer.Option(30.0, "--wait", help="long-poll wait in seconds"),
    heartbeat_interval: float = typer.Option(
        60.0, "--heartbeat-interval", help="seconds between status reports when nothing changed"
    ),
    reconcile_interval: float = typer.Option(
        60.0, "--reconcile-interval", help="seconds between full reconciles that put back hand edits"
    ),
    health_port: int = typer.Option(None, "--health-port", help="serve /livez and /readyz on this port"),
    kubeconfig: Path = typer.Option(None, "--kubeconfig", help="kubernetes: default in-cluster config"),
    namespace: list[str] = typer.Option(
        [], "--namespace", help="kubernetes: namespace it may write to, repeatable; the first is the default"
    ),
    hot_reload: str = typer.Option(
        "auto", "--hot-reload", help="kubernetes: auto, on (never restart workloads) or off (always restart)"
    ),
    restart_min_interval: float = typer.Option(
        30.0, "--restart-min-interval", help="kubernetes: seconds between two restarts of one workload"
    ),
    log_level: str = LOG_LEVEL_OPTION,
) -> None:
    """Run the agent of one runtime (blocks until SIGTERM or Ctrl-C)."""
    from rrm.agent import AgentConfig, run_agent

    raise typer.Exit(
        run_agent(
            AgentConfig(
                director_urls=director,
                state_dir=state_dir,
                target=target,
                token=token,
                resources_path=resources_path,
                dapr_http_port=dapr_http_port,
                dapr_api_token=dapr_api_token,
                reload_command=reload_command,
                wait_seconds=wait,
                heartbeat_interval=heartbeat_interval,
                reconcile_interval=reconcile_interval,
                health_port=health_port,
                kubeconfig=kubeconfig,
                namespaces=namespace,
                hot_reload=hot_reload,  # type: ignore[arg-type]  # checked by run_agent
                restart_min_interval=restart_min_interval,
                log_level=log_level,
            )
        )
    )


def main(args: list[str]) -> None:
    """Run `rrm agent ARGS…` (`args` start with "agent") with only this command loaded."""
    _skip_httpx_command_line()
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.callback()(_group)
    app.command("agent")(agent)
    app(args, prog_name="rrm")


def _group() -> None:
    """A callback makes the app a group, so the command is addressed as `rrm agent`, as in the full CLI."""


def _skip_httpx_command_line() -> None:
    """httpx imports its own command-line client (click, rich and pygments: about 5 MB) whenever those are
    installed, and rrm's CLI installs them. The agent never runs it: a None entry in `sys.modules` makes that
    optional import fail, and httpx defines a stub `httpx.main` instead. Nothing else changes in httpx."""
    if "httpx" not in sys.modules:
        sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
