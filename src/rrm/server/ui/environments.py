"""What the dashboard's Environments pages read, in one read transaction: the environments (as the admin API
shows them) with their latest operation, the global accounts to filter by, and one environment with every
operation's stages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from rrm.server.provisioning.views import environment_detail, environment_view
from rrm.server.state import ServerState
from rrm.store import provisioning as store
from rrm.store.tables import EnvironmentRow

PAGE_SIZE = 200  # environments on the list page; the filter narrows a longer list
ACTIVE_OPERATION_STATES = ("pending", "in progress")


@dataclass(frozen=True)
class EnvironmentList:
    environments: list[dict[str, Any]]
    total: int  # how many match, of which at most PAGE_SIZE are listed
    global_accounts: list[str]  # every global account with an environment, for the filter


def environment_list(
    state: ServerState, session: Session, global_account: str | None, include_archived: bool
) -> EnvironmentList:
    where = store.EnvironmentFilter(include_archived=include_archived, global_account=global_account)
    rows, total = store.environments(session, where, 0, PAGE_SIZE)
    operations = store.operations_of(session, [row.id for row in rows])
    views = [environment_view(state, row, operations[row.id]) for row in rows]
    return EnvironmentList(views, total, global_accounts(session))


def global_accounts(session: Session) -> list[str]:
    query = (
        select(EnvironmentRow.global_account)
        .where(EnvironmentRow.global_account.is_not(None))
        .distinct()
        .order_by(EnvironmentRow.global_account)
    )
    return [account for account in session.scalars(query) if account]


def environment(state: ServerState, session: Session, name: str) -> dict[str, Any] | None:
    """The environment of that name (the active one, else the one deleted last) with every operation."""
    row = store.latest_environment(session, name)
    return None if row is None else environment_detail(state, session, row)


def in_progress(environment: dict[str, Any]) -> bool:
    """Whether an operation is still running: a waiting stage's progress ("12 of ~30 min") is no event."""
    return any(o["state"] in ACTIVE_OPERATION_STATES for o in environment.get("operations", []))
