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
    last_seen: Mapped[datetime]  # any contact: a report or a long-poll
    reported_at: Mapped[datetime | None]  # the last report (the leader re-reads `report` only when it moved)
    reported_by: Mapped[str | None] = mapped_column(String(32))  # the StatusWriter (process) that wrote it


Index("ix_runtime_status_last_seen", RuntimeStatus.last_seen, RuntimeStatus.reported_by)


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
    """Only the sha256 of an admin or viewer token is kept; past `expires_at` it is refused."""

    __tablename__ = "admin_tokens"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]


class DashboardSession(Base):
    """A dashboard sign-in: the cookie holds the session id, this row its sha256. Sign-out deletes the row,
    so every replica stops accepting the cookie at once; revoking the token deletes its sessions."""

    __tablename__ = "dashboard_sessions"
    session_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_hash: Mapped[str] = mapped_column(
        ForeignKey("admin_tokens.token_hash", ondelete="CASCADE"), index=True
    )
    expires_at: Mapped[datetime]
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


# progressive rollouts (issue 7) -----------------------------------------------------------------------


class RolloutPolicyRow(Base):
    """A `rrm.io/v1` RolloutPolicy, its spec normalised (`rrm.core.rollouts.RolloutPolicy.spec`)."""

    __tablename__ = "rollout_policies"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    spec: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Rollout(Base):
    """One rollout of a component's revision; at most one per component is active (progressing, paused).

    `waves` is `[{"group", "runtimes": [runtime id]}]`, planned when it starts; `wave_starts` the ISO time
    each started wave started (its length is the number started); `pinned` what runtimes outside started
    waves keep (runtime id → revision or null), set when it superseded another rollout. `version` grows
    with every write, so the controller never overwrites an operator's action and the fleets know which
    state they rendered.
    """

    __tablename__ = "rollouts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    component: Mapped[str] = mapped_column(String(63), index=True)
    from_revision: Mapped[int | None] = mapped_column(Integer)
    to_revision: Mapped[int] = mapped_column(Integer)
    policy_name: Mapped[str] = mapped_column(String(63))
    policy: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(16), index=True)
    waves: Mapped[list[Any]]
    wave_starts: Mapped[list[Any]]
    deadline_from: Mapped[datetime | None]
    ready_since: Mapped[datetime | None]
    failures: Mapped[dict[str, Any]]
    pinned: Mapped[dict[str, Any]]
    message: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]


# Compass: applications, scenarios, label definitions; the System Broker's credentials and records -------


class Application(Base):
    """The manifest without credential values; those are one AES-GCM blob (bundle name → fields)."""

    __tablename__ = "applications"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    uid: Mapped[str] = mapped_column(String(36), unique=True)
    revision: Mapped[int] = mapped_column(Integer)
    manifest: Mapped[dict[str, Any]]
    labels: Mapped[dict[str, Any]]
    scenarios: Mapped[list[Any]]
    credentials: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime]


class Scenario(Base):
    __tablename__ = "scenarios"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    created_at: Mapped[datetime]


class ScenarioAssignment(Base):
    """Automatic assignment: runtimes whose labels match `selector` are in the scenario."""

    __tablename__ = "scenario_assignments"
    scenario: Mapped[str] = mapped_column(ForeignKey("scenarios.name"), primary_key=True)
    selector: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime]


class RuntimeScenario(Base):
    """A runtime put in a scenario explicitly."""

    __tablename__ = "runtime_scenarios"
    runtime_id: Mapped[str] = mapped_column(ForeignKey("runtimes.id", ondelete="CASCADE"), primary_key=True)
    scenario: Mapped[str] = mapped_column(ForeignKey("scenarios.name"), primary_key=True)


class LabelDefinition(Base):
    """A JSON Schema every value of the label `key` must satisfy, on runtimes and applications."""

    __tablename__ = "label_definitions"
    key: Mapped[str] = mapped_column(String(317), primary_key=True)
    schema: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime]


class BrokerCredential(Base):
    """HTTP Basic credentials a runtime calls the System Broker with; only the password's sha256 is kept."""

    __tablename__ = "broker_credentials"
    runtime_id: Mapped[str] = mapped_column(ForeignKey("runtimes.id", ondelete="CASCADE"), primary_key=True)
    username: Mapped[str] = mapped_column(String(63), unique=True)
    password_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]


class BrokerInstance(Base):
    """A service instance of one runtime; ids are the platform's, so they are unique per runtime only."""

    __tablename__ = "broker_instances"
    runtime_id: Mapped[str] = mapped_column(ForeignKey("runtimes.id", ondelete="CASCADE"), primary_key=True)
    instance_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    record: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime]


class BrokerBinding(Base):
    __tablename__ = "broker_bindings"
    runtime_id: Mapped[str] = mapped_column(ForeignKey("runtimes.id", ondelete="CASCADE"), primary_key=True)
    instance_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    binding_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    record: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime]


# provisioning (issue 15): environments and their durable, stage-wise operations ------------------------


class EnvironmentRow(Base):
    """A request for a runtime. Secret parameters (a BYO kubeconfig) and what the engine must keep secret
    (a fetched kubeconfig) are one AES-GCM blob, never returned; `data` holds what the stages recorded
    (the claimed account, the local agent's directory). Archived rows stay for `--all` and history."""

    __tablename__ = "environments"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), index=True)
    plan: Mapped[str] = mapped_column(String(63))
    region: Mapped[str | None] = mapped_column(String(63))
    labels: Mapped[dict[str, Any]]
    parameters: Mapped[dict[str, Any]]
    sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    global_account: Mapped[str | None] = mapped_column(String(255), index=True)
    subaccount: Mapped[str | None] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(24), index=True)
    runtime_id: Mapped[str | None] = mapped_column(String(36))
    data: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    archived_at: Mapped[datetime | None]


class OperationRow(Base):
    """One provisioning, deprovisioning or update of an environment; `next_run_at` is when the engine
    should look at it again (the earliest of its current stage's next attempt and deadlines)."""

    __tablename__ = "operations"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    environment_id: Mapped[str] = mapped_column(ForeignKey("environments.id", ondelete="CASCADE"), index=True)
    type: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), index=True)
    request: Mapped[dict[str, Any]]
    description: Mapped[str] = mapped_column(Text)
    last_error: Mapped[str | None] = mapped_column(Text)
    left_behind: Mapped[list[Any]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    deadline_at: Mapped[datetime]
    next_run_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class OperationStageRow(Base):
    """One stage of an operation, with everything its retries and deadline depend on, so a restarted
    control plane resumes it with the same deadline and retry window."""

    __tablename__ = "operation_stages"
    operation_id: Mapped[str] = mapped_column(
        ForeignKey("operations.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))
    best_effort: Mapped[bool]
    deadline_seconds: Mapped[float]
    attempts: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime | None]
    deadline_at: Mapped[datetime | None]
    next_attempt_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text)


class PlatformCredential(Base):
    """HTTP Basic credentials one platform (a marketplace) calls the Environment Broker with; the username
    is the platform's name, only the password's sha256 is kept."""

    __tablename__ = "environment_broker_platforms"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(64))
    region: Mapped[str | None] = mapped_column(String(63))  # the platform region (KEB's), for the HAP rules
    created_at: Mapped[datetime]


class BrokeredEnvironment(Base):
    """An environment a platform ordered: the OSB instance id is the environment's id. `request_hash` is
    the sha256 of what made the provision request (so the same PUT again is recognised without keeping a
    secret parameter); `expired_at` marks a trial past its lifetime (suspended for good)."""

    __tablename__ = "brokered_environments"
    environment_id: Mapped[str] = mapped_column(
        ForeignKey("environments.id", ondelete="CASCADE"), primary_key=True
    )
    platform: Mapped[str] = mapped_column(String(63), index=True)
    service_id: Mapped[str] = mapped_column(String(255))
    plan_id: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    context: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    expired_at: Mapped[datetime | None]


class EnvironmentBinding(Base):
    """A kubeconfig issued to a platform for an environment: a ServiceAccount in the runtime's cluster
    whose token expires at `expires_at`; unbinding deletes the ServiceAccount, which revokes the token."""

    __tablename__ = "environment_bindings"
    environment_id: Mapped[str] = mapped_column(
        ForeignKey("brokered_environments.environment_id", ondelete="CASCADE"), primary_key=True
    )
    binding_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    service_account: Mapped[str] = mapped_column(String(63))
    request_hash: Mapped[str] = mapped_column(String(64))
    sealed: Mapped[bytes] = mapped_column(LargeBinary)  # the kubeconfig, encrypted, for a repeated bind
    expires_at: Mapped[datetime]
    created_at: Mapped[datetime]
