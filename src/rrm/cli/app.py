"""The `rrm` typer app: process commands (`server`, `agent`, `demo`) plus the admin API commands.

`rrm.cli.main` is the entry point: it loads this module for every command but `rrm agent`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from rrm.cli import (
    accounts,
    agent_command,
    compass,
    environment_broker,
    environments,
    install,
    manage,
    rollouts,
    server_command,
    tokens,
    views,
)
from rrm.cli.client import AdminClient
from rrm.cli.common import add_delete_command, add_get_command

app = typer.Typer(
    name="rrm",
    help="Remote Runtime Manager: declare Dapr resources and secrets once, deliver them to a fleet.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# `rrm server` and `rrm agent` parse their own arguments (and --help); typer passes them on untouched.
OWN_COMMAND_LINE: dict[str, Any] = {
    "add_help_option": False,
    "context_settings": {"allow_extra_args": True, "ignore_unknown_options": True},
}


@app.command("server", help=server_command.SUMMARY, **OWN_COMMAND_LINE)
def server(ctx: typer.Context) -> None:
    """The server reads its command line from `ServerSettings`' declarations (`rrm.cli.server_command`)."""
    server_command.main(ctx.args)


@app.command("agent", help=agent_command.SUMMARY, **OWN_COMMAND_LINE)
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

    settings = ServerSettings.from_env(data_dir=data_dir, database_url=database_url)
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
for _kind, _remove in (
    ("runtime", AdminClient.delete_runtime),
    ("component", AdminClient.delete_component),
    ("secret", AdminClient.delete_secret),
):
    add_delete_command(manage.delete_app, _kind, _remove)
compass.register(app, manage.runtime_app, views.get_app, views.describe_app, manage.delete_app)
app.add_typer(rollouts.rollout_app, name="rollout")
environments.register(app, views.get_app, views.describe_app)
app.add_typer(environment_broker.environment_broker_app, name="environment-broker")
accounts.register(views.get_app)
add_get_command(
    views.get_app,
    "rollouts",
    AdminClient.list_rollouts,
    rollouts.rollouts_table,
    "The newest rollout of every component: state, revisions, wave, ready and failed runtimes.",
)
add_get_command(
    views.get_app,
    "rolloutpolicies",
    AdminClient.list_rollout_policies,
    rollouts.policies_table,
    "Rollout policies and the components that name them.",
)
add_delete_command(
    manage.delete_app,
    "rolloutpolicy",
    AdminClient.delete_rollout_policy,
    "Refused while a component still names it.",
)
