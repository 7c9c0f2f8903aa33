"""Queries and writes, each on a caller's session so a whole request stays one transaction.

Every write that changes what a runtime should run also appends to the change feed (`record_change`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, cast

import msgspec
from sqlalchemy import (
    ColumnElement,
    String,
    Table,
    any_,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from rrm.store.database import CHANGE_RECORDED
from rrm.store.tables import (
    AdminToken,
    Change,
    Component,
    ComponentRevision,
    Event,
    PairingToken,
    Runtime,
    RuntimeCondition,
    RuntimeKey,
    RuntimeStatus,
    Secret,
    UTCDateTime,
)

ENTITY_RUNTIME = "runtime"
ENTITY_COMPONENT = "component"
ENTITY_SECRET = "secret"
ENTITY_ROLLOUT = "rollout"  # name = the component; its rollout state changed (rrm.store.rollouts)
# the table touched in bulk, for a Core statement (no ORM session synchronisation)
_STATUSES = cast(Table, RuntimeStatus.__table__)


# change feed and events -------------------------------------------------------------------------------


CHANGES_CHANNEL = "rrm_changes"
# The statements of the write path, built once: building and keying a statement costs more than running it.
_CHANGES = cast(Table, Change.__table__)
_INSERT_CHANGE = insert(_CHANGES)
_CHANGES_AFTER = (
    select(_CHANGES.c.seq, _CHANGES.c.entity, _CHANGES.c.name)
    .where(_CHANGES.c.seq > bindparam("seq"))
    .order_by(_CHANGES.c.seq)
    .limit(bindparam("limit"))
)


def record_change(session: Session, entity: str, name: str, now: datetime) -> None:
    """Append to the feed; on PostgreSQL also notify every replica, delivered when the transaction commits
    (on SQLite the database's commit hook tells the other workers of this machine)."""
    session.execute(_INSERT_CHANGE, {"entity": entity, "name": name, "created_at": now})
    session.info[CHANGE_RECORDED] = True  # SQLite: `Database.on_change_committed` wakes the other workers
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANGES_CHANNEL})


class ChangeRow(NamedTuple):
    seq: int
    entity: str
    name: str


def changes_after(session: Session, seq: int, limit: int = 10_000) -> list[ChangeRow]:
    rows = session.connection().execute(_CHANGES_AFTER, {"seq": seq, "limit": limit})
    return [ChangeRow(*row) for row in rows]


def last_change_seq(session: Session) -> int:
    return session.scalar(select(func.max(Change.seq))) or 0


def record_event(session: Session, type_: str, subject: str, message: str, now: datetime) -> None:
    session.add(Event(time=now, type=type_, subject=subject, message=message))


# Rows given as one JSON array parameter: one statement however many rows, and nothing converted in Python
# row by row. `_ROWS`: each element as `value` (SQLite: `key` is its position).
_ROWS = {
    "sqlite": "json_each(:rows)",
    "postgresql": "json_array_elements(CAST(:rows AS json)) WITH ORDINALITY AS r(value, key)",
}
_FIELD = {"sqlite": "json_extract(value, '$[{}]')", "postgresql": "value->>{}"}


def _json_rows_statement(session: Session, template: str) -> Any:
    """`template` for this database: `{rows}` the rows of the `:rows` parameter, `{0}`, `{1}`... the
    fields of each; `:now` is a time. Built once per database and template: a statement built anew is
    compiled anew."""
    return _json_rows_for(session.get_bind().dialect.name, template)


@functools.cache
def _json_rows_for(dialect: str, template: str) -> Any:
    fields = [_FIELD[dialect].format(i) for i in range(template.count("{") - 1)]
    sql = template.format(*fields, rows=_ROWS[dialect])
    return text(sql).bindparams(bindparam("now", type_=UTCDateTime()), bindparam("rows", type_=String()))


_INSERT_EVENTS = (
    "INSERT INTO events (time, type, subject, message) SELECT :now, {0}, {1}, {2} FROM {rows} ORDER BY key"
)


def record_events(session: Session, events: Sequence[tuple[str, str, str]], now: datetime) -> None:
    """Many (type, subject, message) events in one statement, in order, for the batch writers."""
    if events:
        parameters = {"rows": msgspec.json.encode(events).decode(), "now": now}
        session.connection().execute(_json_rows_statement(session, _INSERT_EVENTS), parameters)


def _among(session: Session, column: Any, values: Sequence[str]) -> ColumnElement[bool]:
    """`column IN values` with the values as one bound parameter (an array on PostgreSQL, a JSON array on
    SQLite), so the statement is the same whatever their number: no list of thousands of placeholders."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=postgresql.ARRAY(String)))
    listed = func.json_each(bindparam(None, json.dumps(list(values)), type_=String)).table_valued("value")
    return column.in_(select(listed.c.value))


def events_after(session: Session, after: int, limit: int, subject: str | None = None) -> Sequence[Event]:
    query = select(Event).where(Event.id > after)
    if subject is not None:
        query = query.where(Event.subject == subject)
    return session.scalars(query.order_by(Event.id).limit(limit)).all()


def recent_events(session: Session, subject: str, limit: int) -> list[Event]:
    query = select(Event).where(Event.subject == subject).order_by(Event.id.desc()).limit(limit)
    return list(reversed(session.scalars(query).all()))


# admin tokens -----------------------------------------------------------------------------------------


def admin_token_hashes(session: Session) -> dict[str, str]:
    return {t.token_hash: t.role for t in session.scalars(select(AdminToken))}


def add_admin_token(session: Session, token_hash: str, role: str, description: str, now: datetime) -> None:
    session.add(AdminToken(token_hash=token_hash, role=role, description=description, created_at=now))


# runtimes ---------------------------------------------------------------------------------------------


def runtime_by_name(session: Session, name: str) -> Runtime | None:
    return session.scalar(select(Runtime).where(Runtime.name == name))


def runtime_by_id(session: Session, runtime_id: str) -> Runtime | None:
    return session.get(Runtime, runtime_id)


def all_runtimes(session: Session) -> Sequence[Runtime]:
    return session.scalars(select(Runtime).order_by(Runtime.name)).all()


def statuses(session: Session) -> dict[str, RuntimeStatus]:
    return {s.runtime_id: s for s in session.scalars(select(RuntimeStatus))}


def status_of(session: Session, runtime_id: str) -> RuntimeStatus | None:
    return session.get(RuntimeStatus, runtime_id)


# The status path's statements (every status writer's flush, every leader's pass), built once per database:
# building a statement and its cache key costs more than running it. The runtimes they name are one bound
# parameter `ids` (`_ids_of`).
@functools.cache
def _ids_among(dialect: str, column: Any) -> ColumnElement[bool]:
    """`column IN :ids`, `ids` an array on PostgreSQL, a JSON array on SQLite (`_among`)."""
    if dialect == "postgresql":
        return cast(ColumnElement[bool], column == any_(bindparam("ids", type_=postgresql.ARRAY(String))))
    listed = func.json_each(bindparam("ids", type_=String)).table_valued("value")
    return cast(ColumnElement[bool], column.in_(select(listed.c.value)))


def _ids_of(session: Session, runtime_ids: Sequence[str]) -> list[str] | str:
    """The value of `_ids_among`'s `ids` for this database."""
    if session.get_bind().dialect.name == "postgresql":
        return list(runtime_ids)
    return msgspec.json.encode(runtime_ids).decode()


@functools.cache
def _touch_statuses_for(dialect: str) -> Any:
    among = _ids_among(dialect, _STATUSES.c.runtime_id)
    return update(_STATUSES).where(among).values(last_seen=bindparam("now", type_=UTCDateTime()))


def touch_statuses(session: Session, runtime_ids: Sequence[str], now: datetime) -> None:
    statement = _touch_statuses_for(session.get_bind().dialect.name)
    session.connection().execute(statement, {"ids": _ids_of(session, runtime_ids), "now": now})


@dataclass(frozen=True)
class Contact:
    """A status row without its report: what moves on every long-poll."""

    runtime_id: str
    last_seen: datetime
    reported_at: datetime | None
    heartbeat_interval: float
    applied_hash: str | None


def contacts_since(
    session: Session, since: datetime | None, not_reported_by: str | None = None
) -> list[Contact]:
    """Every status row, or only those whose `last_seen` is at or after `since`, without the report;
    with `not_reported_by`, only rows whose last report another writer (or none) wrote."""
    query = _contacts_query(since is not None, not_reported_by is not None)
    parameters = {"since": since, "writer": not_reported_by}
    return [Contact(*row) for row in session.connection().execute(query, parameters)]


@functools.cache
def _contacts_query(since: bool, not_reported_by: bool) -> Any:
    query = select(
        _STATUSES.c.runtime_id,
        _STATUSES.c.last_seen,
        _STATUSES.c.reported_at,
        _STATUSES.c.heartbeat_interval,
        _STATUSES.c.applied_hash,
    )
    if since:
        query = query.where(_STATUSES.c.last_seen >= bindparam("since", type_=UTCDateTime()))
    if not_reported_by:
        reporter = _STATUSES.c.reported_by
        query = query.where(reporter.is_(None) | (reporter != bindparam("writer", type_=String())))
    return query


@functools.cache
def _reports_query(dialect: str) -> Any:
    query = select(_STATUSES.c.runtime_id, _STATUSES.c.report)
    return query.where(_ids_among(dialect, _STATUSES.c.runtime_id))


def reports_of(session: Session, runtime_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    query = _reports_query(session.get_bind().dialect.name)
    rows = session.connection().execute(query, {"ids": _ids_of(session, runtime_ids)})
    return {runtime_id: report for runtime_id, report in rows}


_NEWLY_APPLIED = """
    SELECT {0} FROM {rows} LEFT JOIN runtime_status ON runtime_status.runtime_id = {0}
    WHERE runtime_status.applied_hash {distinct} {1}
"""


def newly_applied(session: Session, applied: Sequence[tuple[str, str]]) -> set[str]:
    """Of the (runtime id, applied hash) pairs, the runtimes whose stored applied hash is another (or that
    have no status yet): one query, which returns only those, not a row per runtime."""
    if not applied:
        return set()
    statement = _newly_applied_for(session.get_bind().dialect.name)
    rows = session.connection().execute(statement, {"rows": msgspec.json.encode(applied).decode()})
    return {runtime_id for (runtime_id,) in rows}


@functools.cache
def _newly_applied_for(dialect: str) -> Any:
    fields = [_FIELD[dialect].format(i) for i in range(2)]
    distinct = "IS DISTINCT FROM" if dialect == "postgresql" else "IS NOT"
    sql = _NEWLY_APPLIED.format(*fields, rows=_ROWS[dialect], distinct=distinct)
    return text(sql).bindparams(bindparam("rows", type_=String()))


def statuses_for(session: Session, runtime_ids: Sequence[str]) -> dict[str, RuntimeStatus]:
    query = select(RuntimeStatus).where(_among(session, RuntimeStatus.runtime_id, runtime_ids))
    return {s.runtime_id: s for s in session.scalars(query)}


_STATUS_UPSERT = """
    INSERT INTO runtime_status (runtime_id, applied_hash, report, agent_version, heartbeat_interval,
        last_seen, reported_at, reported_by)
    SELECT {values}, :now, :now, :reported_by FROM {rows}
    ON CONFLICT (runtime_id) DO UPDATE SET applied_hash = excluded.applied_hash, report = excluded.report,
        agent_version = excluded.agent_version, heartbeat_interval = excluded.heartbeat_interval,
        last_seen = excluded.last_seen, reported_at = excluded.reported_at, reported_by = excluded.reported_by
"""
_STATUS_FIELDS = ("runtime_id", "applied_hash", "report", "agent_version", "heartbeat_interval")
_SAVE_STATUSES = {
    "sqlite": _STATUS_UPSERT.format(
        values=", ".join(f"json_extract(value, '$.{f}')" for f in _STATUS_FIELDS),
        rows="json_each(:rows) WHERE true",  # WHERE: SQLite would read ON CONFLICT as a join's ON
    ),
    "postgresql": _STATUS_UPSERT.format(
        values=", ".join(f"r.{f}" for f in _STATUS_FIELDS),
        rows="json_to_recordset(CAST(:rows AS json)) AS r(runtime_id text, applied_hash text, report json,"
        " agent_version text, heartbeat_interval float8)",
    ),
}


def save_statuses(
    session: Session, statuses: Sequence[dict[str, Any]], now: datetime, reported_by: str | None = None
) -> None:
    """Each dict: runtime_id, applied_hash, report (JSON data or a msgspec Struct), agent_version,
    heartbeat_interval; seen `now`, written by the StatusWriter `reported_by`. One statement whose rows
    are one JSON parameter: nothing is converted in Python row by row."""
    if not statuses:
        return
    statement = _save_statuses_for(session.get_bind().dialect.name)
    parameters = {"rows": msgspec.json.encode(statuses).decode(), "now": now, "reported_by": reported_by}
    session.connection().execute(statement, parameters)


@functools.cache
def _save_statuses_for(dialect: str) -> Any:
    return text(_SAVE_STATUSES[dialect]).bindparams(
        bindparam("now", type_=UTCDateTime()), bindparam("rows", type_=String()), bindparam("reported_by")
    )


def condition_transitions(
    session: Session, runtime_ids: Sequence[str] | None = None
) -> dict[str, dict[str, tuple[str, datetime]]]:
    """runtime id → condition type → (status, last transition), for all runtimes or the ones named."""
    result: dict[str, dict[str, tuple[str, datetime]]] = {}
    query = select(RuntimeCondition)
    if runtime_ids is not None:
        query = query.where(_among(session, RuntimeCondition.runtime_id, runtime_ids))
    for row in session.scalars(query):
        result.setdefault(row.runtime_id, {})[row.type] = (row.status, row.last_transition)
    return result


_SAVE_CONDITIONS = """
    INSERT INTO runtime_conditions (runtime_id, type, status, last_transition)
    SELECT {0}, {1}, {2}, :now FROM {rows} WHERE true
    ON CONFLICT (runtime_id, type) DO UPDATE SET status = excluded.status, last_transition = :now
"""


def save_conditions(session: Session, changes: Sequence[tuple[str, str, str]], now: datetime) -> None:
    """(runtime id, condition type, status) that transitioned `now`."""
    if changes:
        parameters = {"rows": msgspec.json.encode(changes).decode(), "now": now}
        session.connection().execute(_json_rows_statement(session, _SAVE_CONDITIONS), parameters)


def delete_expired_pairing_tokens(session: Session, now: datetime) -> int:
    """Used or expired tokens are worthless; their hashes need not be kept."""
    result = session.execute(
        delete(PairingToken).where((PairingToken.expires_at <= now) | PairingToken.used_at.is_not(None))
    )
    return int(getattr(result, "rowcount", 0) or 0)


# pairing and keys -------------------------------------------------------------------------------------


def add_pairing_token(
    session: Session, runtime_id: str, token_hash: str, expires_at: datetime, now: datetime
) -> None:
    session.add(
        PairingToken(token_hash=token_hash, runtime_id=runtime_id, expires_at=expires_at, created_at=now)
    )


def consume_pairing_token(session: Session, token_hash: str, now: datetime) -> str | None:
    """Marks the token used and returns its runtime id; None when unknown, used or expired.

    One conditional UPDATE, so two requests racing with the same token cannot both win.
    """
    result = session.execute(
        update(PairingToken)
        .where(
            PairingToken.token_hash == token_hash,
            PairingToken.used_at.is_(None),
            PairingToken.expires_at > now,
        )
        .values(used_at=now)
        .returning(PairingToken.runtime_id)
    )
    return result.scalar_one_or_none()


def replace_runtime_key(
    session: Session, runtime_id: str, key_id: str, public_key: str, now: datetime
) -> None:
    session.execute(delete(RuntimeKey).where(RuntimeKey.runtime_id == runtime_id))
    session.add(RuntimeKey(key_id=key_id, runtime_id=runtime_id, public_key=public_key, created_at=now))


def delete_runtime_keys(session: Session, runtime_id: str) -> None:
    session.execute(delete(RuntimeKey).where(RuntimeKey.runtime_id == runtime_id))


def delete_pairing_tokens(session: Session, runtime_id: str) -> None:
    session.execute(delete(PairingToken).where(PairingToken.runtime_id == runtime_id))


def keys_of(session: Session, runtime_id: str) -> Sequence[RuntimeKey]:
    return session.scalars(select(RuntimeKey).where(RuntimeKey.runtime_id == runtime_id)).all()


def all_keys(session: Session) -> Sequence[RuntimeKey]:
    return session.scalars(select(RuntimeKey)).all()


# components -------------------------------------------------------------------------------------------


def all_components(session: Session) -> Sequence[Component]:
    return session.scalars(select(Component).order_by(Component.name)).all()


def component(session: Session, name: str) -> Component | None:
    return session.get(Component, name)


_COMPONENTS = cast(Table, Component.__table__)
_REVISIONS = cast(Table, ComponentRevision.__table__)
_LATEST = select(func.max(_REVISIONS.c.revision)).where(_REVISIONS.c.name == bindparam("name"))
# a write's view of the component in one statement: the highest revision used, the live manifest and revision
_STATE = select(
    _LATEST.scalar_subquery(),
    select(_COMPONENTS.c.manifest).where(_COMPONENTS.c.name == bindparam("name")).scalar_subquery(),
    select(_COMPONENTS.c.revision).where(_COMPONENTS.c.name == bindparam("name")).scalar_subquery(),
)
_LIVE_NAMED = select(_COMPONENTS.c.name, _COMPONENTS.c.revision, _COMPONENTS.c.manifest).where(
    _COMPONENTS.c.name.in_(bindparam("names", expanding=True))
)
_INSERT_REVISION = insert(_REVISIONS)
_UPDATE_LIVE = (
    update(_COMPONENTS)
    .where(_COMPONENTS.c.name == bindparam("key"))
    .values(revision=bindparam("revision"), manifest=bindparam("manifest"), updated_at=bindparam("now"))
)
_INSERT_LIVE = insert(_COMPONENTS)
_DELETE_LIVE = delete(_COMPONENTS).where(_COMPONENTS.c.name == bindparam("name"))


@dataclass(frozen=True)
class ComponentState:
    """A component as a write sees it: the live manifest and revision (None: not live) and the highest
    revision ever used."""

    manifest: dict[str, Any] | None
    revision: int | None
    latest: int


def component_state(session: Session, name: str) -> ComponentState:
    latest, manifest, revision = session.connection().execute(_STATE, {"name": name}).one()
    return ComponentState(manifest, revision, latest or 0)


def live_components(session: Session, names: Sequence[str]) -> dict[str, tuple[int, dict[str, Any]]]:
    """name → (revision, manifest) of those of `names` that are live."""
    rows = session.connection().execute(_LIVE_NAMED, {"names": list(names)})
    return {name: (revision, manifest) for name, revision, manifest in rows}


def latest_revision(session: Session, name: str) -> int:
    """Highest revision ever used for the name, deleted ones included, so numbers never repeat."""
    return session.connection().scalar(_LATEST, {"name": name}) or 0


def component_history(session: Session, name: str) -> Sequence[ComponentRevision]:
    query = select(ComponentRevision).where(ComponentRevision.name == name)
    return session.scalars(query.order_by(ComponentRevision.revision.desc())).all()


def component_revision(session: Session, name: str, revision: int) -> ComponentRevision | None:
    return session.get(ComponentRevision, (name, revision))


def write_component_revision(
    session: Session,
    name: str,
    manifest: dict[str, Any] | None,
    action: str,
    now: datetime,
    revision: int | None = None,
) -> int:
    """Appends a revision and points the live row at it (or removes the live row on delete). `revision`:
    the number to use when the caller read the latest one in this transaction (`component_state`), so it
    is not asked again; a number already used fails on the revisions' primary key.

    Core statements, not ORM objects: a write costs a few statements and no unit of work. A live row this
    session had loaded is expired (it reads the new revision when next used), or let go when deleted."""
    connection = session.connection()
    if revision is None:
        revision = latest_revision(session, name) + 1
    connection.execute(
        _INSERT_REVISION,
        {"name": name, "revision": revision, "action": action, "manifest": manifest, "created_at": now},
    )
    if manifest is None:
        connection.execute(_DELETE_LIVE, {"name": name})
    else:
        live = {"key": name, "revision": revision, "manifest": manifest, "now": now}
        if connection.execute(_UPDATE_LIVE, live).rowcount == 0:
            connection.execute(
                _INSERT_LIVE, {"name": name, "revision": revision, "manifest": manifest, "updated_at": now}
            )
    loaded = session.identity_map.get(session.identity_key(Component, name))
    if loaded is not None:
        (session.expire if manifest is not None else session.expunge)(loaded)
    record_change(session, ENTITY_COMPONENT, name, now)
    return revision


# secrets ----------------------------------------------------------------------------------------------


def all_secrets(session: Session) -> Sequence[Secret]:
    return session.scalars(select(Secret).order_by(Secret.name)).all()


_SECRET_KEYS = select(Secret.__table__.c.name, Secret.__table__.c["keys"])


def secret_keys(session: Session) -> dict[str, set[str]]:
    """name → the names of its keys, of every secret: what a component may reference."""
    return {name: set(keys) for name, keys in session.connection().execute(_SECRET_KEYS)}


def secret(session: Session, name: str) -> Secret | None:
    return session.get(Secret, name)


def write_secret(session: Session, name: str, keys: list[str], ciphertext: bytes, now: datetime) -> int:
    """Revisions count every write and delete of the name, so a re-created secret never reuses one."""
    revision = 1 + (
        session.scalar(
            select(func.count())
            .select_from(Change)
            .where(Change.entity == ENTITY_SECRET, Change.name == name)
        )
        or 0
    )
    row = session.get(Secret, name)
    if row is None:
        session.add(Secret(name=name, revision=revision, keys=keys, ciphertext=ciphertext, updated_at=now))
    else:
        row.revision, row.keys, row.ciphertext, row.updated_at = revision, keys, ciphertext, now
    record_change(session, ENTITY_SECRET, name, now)
    return revision


def delete_secret(session: Session, name: str, now: datetime) -> None:
    session.execute(delete(Secret).where(Secret.name == name))
    record_change(session, ENTITY_SECRET, name, now)
