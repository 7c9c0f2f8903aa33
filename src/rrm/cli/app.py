"""The `rrm` typer app: process commands (`server`, `agent`, `demo`) plus the admin API commands.

`rrm.cli.main` is the entry point: it loads this module for every command but `rrm agent`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from rrm.cli import (
    accounts,
    agent_command,
    compass,
    config,
    environment_broker,
    environments,
    install,
    manage,
    rollouts,
    tokens,
    views,
)
from rrm.cli.arguments import parse_duration

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
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error"),
    delivery_window: float = typer.Option(
        1.0, "--delivery-window", min=0.0, help="seconds; a runtime gets at most one new state per window"
    ),
    plans: Path = typer.Option(None, "--plans", help="provisioning plans (YAML); default: local, kubernetes"),
    public_url: str = typer.Option(
        None, "--public-url", help="this control plane's URL as the agents it installs reach it"
    ),
    gardener_kubeconfig: Path = typer.Option(
        None, "--gardener-kubeconfig", help="the garden cluster; adds the gardener-* and trial plans"
    ),
    gardener_namespace: str = typer.Option(None, "--gardener-namespace", help="garden-PROJECT"),
    hap_rules: Path = typer.Option(None, "--hap-rules", help="Hyperscaler Account Pool rules (KEB syntax)"),
    hap_cleanup_command: str = typer.Option(
        None, "--hap-cleanup-command", help="run with a dirty binding's name; exit 0 returns it to the pool"
    ),
    hap_cleanup_interval: float = typer.Option(600.0, "--hap-cleanup-interval", min=1.0, help="seconds"),
    trial_lifetime: str = typer.Option(
        "14d", "--trial-lifetime", help="a trial environment is suspended for good after this (30m, 14d)"
    ),
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
            delivery_window_seconds=delivery_window,
            plans_file=plans,
            public_url=public_url,
            gardener_kubeconfig=gardener_kubeconfig,
            gardener_namespace=gardener_namespace,
            hap_rules_file=hap_rules,
            hap_cleanup_command=hap_cleanup_command,
            hap_cleanup_interval=hap_cleanup_interval,
            trial_lifetime_seconds=parse_duration(trial_lifetime),
        )
    )


@app.command(
    "agent",
    help=agent_command.SUMMARY,
    add_help_option=False,
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def agent(ctx: typer.Context) -> None:
    """The agent reads its own command line (`rrm.cli.agent_command`), here as when started on its own."""
    agent_command.main(["agent", *ctx.args])


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
environments.register(app, views.get_app, views.describe_app)
app.add_typer(environment_broker.environment_broker_app, name="environment-broker")
accounts.register(views.get_app)
views.get_app.command("rollouts")(rollouts.get_rollouts)
views.get_app.command("rolloutpolicies")(rollouts.get_rollout_policies)
manage.delete_app.command("rolloutpolicy")(rollouts.delete_rollout_policy)
