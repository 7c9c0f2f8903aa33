"""`rrm token create|list|revoke`: tokens for the admin API and the dashboard, e.g. read-only viewer tokens
or tokens that expire; the control plane keeps only their hashes and names them by id."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from rrm.cli.arguments import parse_duration
from rrm.cli.common import OUTPUT_OPTION, OutputFormat, admin_api, emit, fail, shown_once
from rrm.cli.views import age

token_app = typer.Typer(
    help="Create, list and revoke tokens for the admin API and the dashboard.", no_args_is_help=True
)


class Role(enum.StrEnum):
    admin = "admin"
    viewer = "viewer"


@token_app.command("create")
def create_token(
    ctx: typer.Context,
    role: Role = typer.Option(..., "--role", help="admin (read and write) or viewer (read only)"),
    description: str = typer.Option("", "--description", help="what the token is for"),
    ttl: str | None = typer.Option(None, "--ttl", help="lifetime: 3600, 30m, 24h, 90d; default: no expiry"),
    output: OutputFormat = OUTPUT_OPTION,
    data_dir: Path | None = typer.Option(
        None,
        "--data-dir",
        help="write the token into the database of the control plane with this data dir, not through its "
        "API: the way back in when no admin token works any more",
    ),
    database_url: str | None = typer.Option(
        None, "--database-url", help="as --data-dir, for a control plane on this database (PostgreSQL)"
    ),
) -> None:
    """Create a token; it is shown only this once (the control plane keeps its hash)."""
    ttl_seconds = parse_duration(ttl) if ttl is not None else None
    if data_dir is not None or database_url is not None:
        from rrm.cli.offline_tokens import NoDatabase, create_in_database

        try:
            created = create_in_database(data_dir, database_url, role.value, description, ttl_seconds)
        except NoDatabase as exc:
            fail(str(exc))
    else:
        with admin_api(ctx) as api:
            created = api.create_token(role.value, description, ttl_seconds)
    emit(created, output, created_text)


def created_text(created: Mapping[str, Any]) -> str:
    fields = [
        ("token", created["token"]),
        ("id", created["id"]),
        ("role", created["role"]),
        ("expires", created["expires_at"] or "never"),
    ]
    return shown_once(
        fields, "Shown only this once. Use it as RRM_TOKEN, or to sign in to the dashboard at /ui."
    )


@token_app.command("list")
def list_tokens(ctx: typer.Context, output: OutputFormat = OUTPUT_OPTION) -> None:
    """Every token by id, role, description and expiry (never the token itself)."""
    with admin_api(ctx) as api:
        tokens = api.list_tokens()
    emit(tokens, output, tokens_table)


@token_app.command("revoke")
def revoke_token(
    ctx: typer.Context,
    token_id: str = typer.Argument(..., metavar="ID", help="the id `rrm token list` shows"),
    output: OutputFormat = OUTPUT_OPTION,
) -> None:
    """Revoke a token: it stops working, and the dashboard sessions signed in with it end."""
    with admin_api(ctx) as api:
        revoked = api.revoke_token(token_id)
    emit(revoked, output, lambda token: f"token {token['id']} ({token['role']}) revoked")


def tokens_table(tokens: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("ID", "ROLE", "DESCRIPTION", "CREATED", "EXPIRES"):
        table.add_column(column, overflow="fold")
    for token in tokens:
        table.add_row(
            Text(token["id"]),
            Text(token["role"]),
            Text(token.get("description") or "-"),
            Text(age(token.get("created_at"))),
            expiry(token.get("expires_at")),
        )
    return table


def expiry(expires_at: str | None, now: datetime | None = None) -> Text:
    """`never`, `in 23h` or `expired 5m ago`."""
    if not expires_at:
        return Text("never", style="dim")
    seconds = int((datetime.fromisoformat(expires_at) - (now or datetime.now(UTC))).total_seconds())
    if seconds <= 0:
        return Text(f"expired {age(expires_at)}", style="red")
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return Text(f"in {seconds // size}{unit}")
    return Text(f"in {seconds}s")
