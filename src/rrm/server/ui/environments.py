"""What the dashboard's Environments pages read, in one read transaction: the environments (as the admin API
shows them) with their latest operation and the platform that ordered them, the global accounts to filter
by, and one environment with every operation's stages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from rrm.server.provisioning.views import environment_detail, environment_view
from rrm.server.state import ServerState
from rrm.store import provisioning as store
from rrm.store.tables import BrokeredEnvironment, EnvironmentRow

PAGE_SIZE = 200  # environments on the list page; the filter narrows a longer list


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
    ids = [row.id for row in rows]
    operations, platforms = store.operations_of(session, ids), platforms_of(session, ids)
    views = [{**environment_view(state, r, operations[r.id]), "platform": platforms.get(r.id)} for r in rows]
    return EnvironmentList(views, total, global_accounts(session))


def platforms_of(session: Session, environment_ids: list[str]) -> dict[str, str]:
    """Which platform ordered each environment through the Environment Broker (the others came through
    the admin API)."""
    query = select(BrokeredEnvironment.environment_id, BrokeredEnvironment.platform).where(
        BrokeredEnvironment.environment_id.in_(environment_ids)
    )
    return {environment_id: platform for environment_id, platform in session.execute(query)}


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
    if row is None:
        return None
    platform = platforms_of(session, [row.id]).get(row.id)
    return {**environment_detail(state, session, row), "platform": platform}
