"""The schema. Alembic migrations under `migrations/` create exactly this."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Dialect, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite would hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime}


class Runtime(Base):
    __tablename__ = "runtimes"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    labels: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class PairingToken(Base):
    """Only the sha256 of a pairing token is kept; `used_at` makes it single-use."""

    __tablename__ = "pairing_tokens"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    runtime_id: Mapped[str] = mapped_column(ForeignKey("runtimes.id", ondelete="CASCADE"), index=True)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    created_at: Mapped[datetime]


class RuntimeKey(Base):
    """The public half of a runtime's key pair: enough to verify it, never to act as it."""

    __tablename__ = "runtime_keys"
    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    runtime_id: Mapped[str] = mapped_column(ForeignKey("runtimes.id", ondelete="CASCADE"), index=True)
    public_key: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


class RuntimeStatus(Base):
    __tablename__ = "runtime_status"
    runtime_id: Mapped[str] = mapped_column(ForeignKey("runtimes.id", ondelete="CASCADE"), primary_key=True)
    applied_hash: Mapped[str | None] = mapped_column(String(64))
    report: Mapped[dict[str, Any]]
    agent_version: Mapped[str] = mapped_column(String(64))
    heartbeat_interval: Mapped[float]
    last_seen: Mapped[datetime]


class RuntimeCondition(Base):
    """When each condition last changed, kept by the replica that runs the singleton work."""

    __tablename__ = "runtime_conditions"
    runtime_id: Mapped[str] = mapped_column(ForeignKey("runtimes.id", ondelete="CASCADE"), primary_key=True)
    type: Mapped[str] = mapped_column(String(16), primary_key=True)
    status: Mapped[str] = mapped_column(String(8))
    last_transition: Mapped[datetime]


class Component(Base):
    """The current revision of each live component; history lives in `component_revisions`."""

    __tablename__ = "components"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    revision: Mapped[int] = mapped_column(Integer)
    manifest: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime]


class ComponentRevision(Base):
    __tablename__ = "component_revisions"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    revision: Mapped[int] = mapped_column(Integer, primary_key=True)
    action: Mapped[str] = mapped_column(String(16))
    manifest: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime]


class Secret(Base):
    """Values are AES-GCM ciphertext; only key names are stored in the clear."""

    __tablename__ = "secrets"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    revision: Mapped[int] = mapped_column(Integer)
    keys: Mapped[list[Any]]
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime]


class AdminToken(Base):
    __tablename__ = "admin_tokens"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]


class Change(Base):
    """The change feed: one row per committed change, in commit order; replicas and caches follow it."""

    __tablename__ = "changes"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entity: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(63))
    created_at: Mapped[datetime]


class Event(Base):
    """What operators see: `rrm describe`, the event stream."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[datetime]
    type: Mapped[str] = mapped_column(String(48))
    subject: Mapped[str] = mapped_column(String(128))
    message: Mapped[str] = mapped_column(Text)


Index("ix_events_subject", Event.subject)
