"""Admin and viewer tokens and the dashboard sessions signed in with them; only their sha256 is stored."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from rrm.store.tables import AdminToken, DashboardSession

TOKEN_ID_LENGTH = 12  # hex digits of the hash that name a token in lists, events and `rrm token revoke`


@dataclass(frozen=True)
class Grant:
    """What a token (or a session signed in with it) may do, and until when."""

    role: str
    expires_at: datetime | None

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


def token_id(token_hash: str) -> str:
    return token_hash[:TOKEN_ID_LENGTH]


def grant_of_token(session: Session, token_hash: str) -> Grant | None:
    row = session.get(AdminToken, token_hash)
    return None if row is None else Grant(row.role, row.expires_at)


def all_tokens(session: Session) -> Sequence[AdminToken]:
    return session.scalars(select(AdminToken).order_by(AdminToken.created_at, AdminToken.token_hash)).all()


def tokens_with_id(session: Session, id_: str) -> Sequence[AdminToken]:
    """The tokens whose hash starts with `id_` (a full id names one; a shorter prefix may name several)."""
    query = select(AdminToken).where(AdminToken.token_hash.startswith(id_, autoescape=True))
    return session.scalars(query).all()


def add_token(
    session: Session, token_hash: str, role: str, description: str, now: datetime, expires_at: datetime | None
) -> AdminToken:
    row = AdminToken(
        token_hash=token_hash, role=role, description=description, created_at=now, expires_at=expires_at
    )
    session.add(row)
    return row


def other_live_admin_tokens(session: Session, token_hash: str, now: datetime) -> int:
    """Admin tokens besides this one that have not expired: revoking the last would lock everyone out."""
    query = select(func.count()).where(
        AdminToken.role == "admin",
        AdminToken.token_hash != token_hash,
        or_(AdminToken.expires_at.is_(None), AdminToken.expires_at > now),
    )
    return int(session.scalar(query) or 0)


def delete_token(session: Session, token_hash: str) -> None:
    """The token and every dashboard session signed in with it."""
    session.execute(delete(DashboardSession).where(DashboardSession.token_hash == token_hash))
    session.execute(delete(AdminToken).where(AdminToken.token_hash == token_hash))


# dashboard sessions -----------------------------------------------------------------------------------


def add_session(
    session: Session, session_hash: str, token_hash: str, now: datetime, expires_at: datetime
) -> None:
    """A new session; the expired ones go at the same time, so sign-ins alone keep the table small."""
    session.execute(delete(DashboardSession).where(DashboardSession.expires_at <= now))
    session.add(
        DashboardSession(
            session_hash=session_hash, token_hash=token_hash, expires_at=expires_at, created_at=now
        )
    )


def grant_of_session(session: Session, session_hash: str, now: datetime) -> Grant | None:
    """The current role of the token a live session was signed in with; None once either has ended."""
    query = (
        select(AdminToken.role, AdminToken.expires_at)
        .join(DashboardSession, DashboardSession.token_hash == AdminToken.token_hash)
        .where(DashboardSession.session_hash == session_hash, DashboardSession.expires_at > now)
    )
    row = session.execute(query).first()
    if row is None:
        return None
    grant = Grant(row.role, row.expires_at)
    return None if grant.expired(now) else grant


def delete_session(session: Session, session_hash: str) -> None:
    session.execute(delete(DashboardSession).where(DashboardSession.session_hash == session_hash))
