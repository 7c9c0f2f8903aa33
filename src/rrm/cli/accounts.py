"""`rrm get accounts`: the Hyperscaler Account Pool's bindings, as Gardener holds them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from rrm.cli.common import OUTPUT_OPTION, OutputFormat, admin_api, emit


def get_accounts(ctx: typer.Context, output: OutputFormat = OUTPUT_OPTION) -> None:
    """Each binding of the account pool: type, tenant, shared, euAccess, dirty, the clusters using it."""
    with admin_api(ctx) as api:
        accounts = api._request("GET", "/api/v1/accounts")
    emit(accounts, output, accounts_table)


def accounts_table(accounts: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("NAME", "KIND", "TYPE", "TENANT", "SHARED", "EU ACCESS", "DIRTY", "CLUSTERS", "CLEANUP"):
        table.add_column(column, overflow="fold")
    for account in accounts:
        users = sorted({*account.get("environments", []), *account.get("clusters", [])})
        dirty = Text("dirty", style="yellow") if account["dirty"] else Text("-")
        table.add_row(
            account["name"],
            account["kind"],
            account.get("hyperscalerType") or "-",
            account.get("tenant") or "-",
            "yes" if account["shared"] else "-",
            "yes" if account["euAccess"] else "-",
            dirty,
            f"{len(users)}" + (f" ({', '.join(users)})" if users else ""),
            _cleanup(account),
        )
    return table


def _cleanup(account: Mapping[str, Any]) -> Text:
    if account.get("cleanupError"):
        return Text(f"failed {account.get('cleanupFailedAt')}: {account['cleanupError']}", style="red")
    return Text("waiting for cleanup" if account["dirty"] else "-")


def register(get_app: typer.Typer) -> None:
    get_app.command("accounts")(get_accounts)
