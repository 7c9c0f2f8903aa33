"""The `rrm` typer app: process commands (`server`, `agent`, `demo`) plus the admin API commands."""

from __future__ import annotations

from pathlib import Path

import typer

from rrm.cli import compass, config, install, manage, rollouts, tokens, views

LOG_LEVEL_OPTION = typer.Option("info", "--log-level", help="debug, info, warning or error")

app = typer.Typer(
    name="rrm",
    help="Remote Runtime Manager: declare Dapr resources and secrets once, deliver them to a fleet.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def server(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8080, "--port"),
    data_dir: Path = typer.Option(None, "--data-dir", help="default: $RRM_DATA_DIR, else ~/.local/share/rrm"),
    database_url: str = typer.Option(None, "--database-url", help="default: SQLite in the data dir"),
    log_level: str = LOG_LEVEL_OPTION,
) -> None:
    """Run the control plane (blocks until SIGTERM or Ctrl-C)."""
    from rrm.server import ServerSettings, serve

    serve(
        ServerSettings(
            host=host,
            port=port,
            data_dir=data_dir or config.default_data_dir(),
            database_url=database_url,
            log_level=log_level,
        )
    )


@app.command()
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


@app.command()
def migrate(
    data_dir: Path = typer.Option(None, "--data-dir", help="default: $RRM_DATA_DIR, else ~/.local/share/rrm"),
    database_url: str = typer.Option(None, "--database-url", help="default: $RRM_DATABASE_URL, else SQLite"),
) -> None:
    """Bring the database schema up to date and exit (`rrm server` also does it on start)."""
    from rrm.server import ServerSettings
    from rrm.store import Database

    settings = ServerSettings(data_dir=data_dir or config.default_data_dir(), database_url=database_url)
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    Database(settings.resolved_database_url).migrate()
    typer.echo("database schema is up to date")


@app.command()
def demo(
    once: bool = typer.Option(False, "--once", help="exit after showing the result"),
    port: int = typer.Option(None, "--port", help="default: a free port"),
    data_dir: Path = typer.Option(None, "--data-dir", help="default: a fresh temporary directory"),
) -> None:
    """Start a control plane and three agents locally, apply the logging binding, show where it landed."""
    from rrm.cli.demo import run_demo

    raise typer.Exit(run_demo(once=once, port=port, data_dir=data_dir))


app.command("apply")(manage.apply)
manage.runtime_app.command("manifest")(install.runtime_manifest)
app.add_typer(manage.runtime_app, name="runtime")
app.add_typer(manage.label_app, name="label")
app.add_typer(manage.delete_app, name="delete")
app.add_typer(manage.rollback_app, name="rollback")
app.add_typer(tokens.token_app, name="token")
app.add_typer(views.get_app, name="get")
app.add_typer(views.describe_app, name="describe")
app.add_typer(views.history_app, name="history")
compass.register(app, manage.runtime_app, views.get_app, views.describe_app, manage.delete_app)
app.add_typer(rollouts.rollout_app, name="rollout")
views.get_app.command("rollouts")(rollouts.get_rollouts)
views.get_app.command("rolloutpolicies")(rollouts.get_rollout_policies)
manage.delete_app.command("rolloutpolicy")(rollouts.delete_rollout_policy)


def main() -> None:
    app(prog_name="rrm")
