"""`rrm token create`: more tokens for the admin API and the dashboard, e.g. read-only viewer tokens."""

from __future__ import annotations

import enum

import typer

from rrm.cli.common import admin_api

token_app = typer.Typer(help="Create tokens for the admin API and the dashboard.", no_args_is_help=True)


class Role(enum.StrEnum):
    admin = "admin"
    viewer = "viewer"


@token_app.command("create")
def create_token(
    ctx: typer.Context,
    role: Role = typer.Option(..., "--role", help="admin (read and write) or viewer (read only)"),
    description: str = typer.Option("", "--description", help="what the token is for"),
) -> None:
    """Create a token; it is shown only this once (the control plane keeps its hash)."""
    with admin_api(ctx) as api:
        created = api.create_token(role.value, description)
    typer.echo(f"token:  {created['token']}")
    typer.echo(f"role:   {created['role']}")
    typer.echo("Shown only this once. Use it as RRM_TOKEN, or to sign in to the dashboard at /ui.")
