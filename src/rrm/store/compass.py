"""Queries and writes of Compass (applications, scenarios, label definitions) and of the System Broker.

Writes that change what a runtime should run (applications, automatic assignments, a runtime's explicit
scenarios) append to the change feed, so every replica's fleet view follows them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from rrm.store.repositories import record_change
from rrm.store.tables import (
    Application,
    BrokerBinding,
    BrokerCredential,
    BrokerInstance,
    LabelDefinition,
    RuntimeScenario,
    Scenario,
    ScenarioAssignment,
)

ENTITY_APPLICATION = "application"
ENTITY_ASSIGNMENT = "assignment"
ENTITY_RUNTIME_SCENARIOS = "runtime-scenario"


# applications -----------------------------------------------------------------------------------------


def all_applications(session: Session) -> Sequence[Application]:
    return session.scalars(select(Application).order_by(Application.name)).all()


def application(session: Session, name: str) -> Application | None:
    return session.get(Application, name)


def write_application(
    session: Session,
    *,
    name: str,
    uid: str,
    manifest: dict[str, Any],
    labels: dict[str, str],
    scenarios: list[str],
    credentials: bytes,
    now: datetime,
) -> int:
    """Creates or replaces the application; returns its new revision."""
    row = session.get(Application, name)
    if row is None:
        row = Application(name=name, uid=uid, revision=0)
        session.add(row)
    row.revision += 1
    row.manifest, row.labels, row.scenarios = manifest, labels, scenarios
    row.credentials, row.updated_at = credentials, now
    record_change(session, ENTITY_APPLICATION, name, now)
    return row.revision


def delete_application(session: Session, name: str, now: datetime) -> None:
    session.execute(delete(Application).where(Application.name == name))
    record_change(session, ENTITY_APPLICATION, name, now)


# scenarios --------------------------------------------------------------------------------------------


def scenario_names(session: Session) -> list[str]:
    return list(session.scalars(select(Scenario.name).order_by(Scenario.name)))


def add_scenario(session: Session, name: str, now: datetime) -> None:
    session.add(Scenario(name=name, created_at=now))


def delete_scenario(session: Session, name: str) -> None:
    session.execute(delete(Scenario).where(Scenario.name == name))


def all_assignments(session: Session) -> dict[str, str]:
    """scenario → selector."""
    return {a.scenario: a.selector for a in session.scalars(select(ScenarioAssignment))}


def assignment(session: Session, scenario: str) -> ScenarioAssignment | None:
    return session.get(ScenarioAssignment, scenario)


def set_assignment(session: Session, scenario: str, selector: str, now: datetime) -> None:
    row = session.get(ScenarioAssignment, scenario)
    if row is None:
        session.add(ScenarioAssignment(scenario=scenario, selector=selector, updated_at=now))
    else:
        row.selector, row.updated_at = selector, now
    record_change(session, ENTITY_ASSIGNMENT, scenario, now)


def delete_assignment(session: Session, scenario: str, now: datetime) -> None:
    session.execute(delete(ScenarioAssignment).where(ScenarioAssignment.scenario == scenario))
    record_change(session, ENTITY_ASSIGNMENT, scenario, now)


def runtime_scenarios(session: Session, runtime_id: str) -> list[str]:
    query = select(RuntimeScenario.scenario).where(RuntimeScenario.runtime_id == runtime_id)
    return sorted(session.scalars(query))


def all_runtime_scenarios(session: Session) -> dict[str, list[str]]:
    """runtime id → its explicit scenarios (runtimes without any are left out)."""
    result: dict[str, list[str]] = {}
    for row in session.scalars(select(RuntimeScenario).order_by(RuntimeScenario.scenario)):
        result.setdefault(row.runtime_id, []).append(row.scenario)
    return result


def set_runtime_scenarios(session: Session, runtime_id: str, scenarios: Sequence[str], now: datetime) -> None:
    session.execute(delete(RuntimeScenario).where(RuntimeScenario.runtime_id == runtime_id))
    session.add_all(RuntimeScenario(runtime_id=runtime_id, scenario=s) for s in sorted(set(scenarios)))
    record_change(session, ENTITY_RUNTIME_SCENARIOS, runtime_id, now)


# label definitions ------------------------------------------------------------------------------------


def label_definitions(session: Session) -> dict[str, dict[str, Any]]:
    """label key → JSON Schema."""
    query = select(LabelDefinition).order_by(LabelDefinition.key)
    return {d.key: d.schema for d in session.scalars(query)}


def put_label_definition(session: Session, key: str, schema: dict[str, Any], now: datetime) -> None:
    row = session.get(LabelDefinition, key)
    if row is None:
        session.add(LabelDefinition(key=key, schema=schema, updated_at=now))
    else:
        row.schema, row.updated_at = schema, now


def delete_label_definition(session: Session, key: str) -> bool:
    row = session.get(LabelDefinition, key)
    if row is None:
        return False
    session.delete(row)
    return True


# the System Broker ------------------------------------------------------------------------------------


def broker_credential(session: Session, username: str) -> BrokerCredential | None:
    return session.scalar(select(BrokerCredential).where(BrokerCredential.username == username))


def set_broker_credential(
    session: Session, runtime_id: str, username: str, password_hash: str, now: datetime
) -> None:
    session.execute(delete(BrokerCredential).where(BrokerCredential.runtime_id == runtime_id))
    session.add(
        BrokerCredential(
            runtime_id=runtime_id, username=username, password_hash=password_hash, created_at=now
        )
    )


def has_broker_credential(session: Session, runtime_id: str) -> bool:
    return session.get(BrokerCredential, runtime_id) is not None


def delete_broker_credential(session: Session, runtime_id: str) -> None:
    session.execute(delete(BrokerCredential).where(BrokerCredential.runtime_id == runtime_id))


def broker_instance(session: Session, runtime_id: str, instance_id: str) -> dict[str, Any] | None:
    row = session.get(BrokerInstance, (runtime_id, instance_id))
    return row.record if row else None


def save_broker_instance(
    session: Session, runtime_id: str, instance_id: str, record: dict[str, Any], now: datetime
) -> None:
    row = session.get(BrokerInstance, (runtime_id, instance_id))
    if row is None:
        session.add(
            BrokerInstance(runtime_id=runtime_id, instance_id=instance_id, record=record, updated_at=now)
        )
    else:
        row.record, row.updated_at = record, now


def delete_broker_instance(session: Session, runtime_id: str, instance_id: str) -> None:
    """The instance and every binding of it."""
    session.execute(
        delete(BrokerBinding).where(
            BrokerBinding.runtime_id == runtime_id, BrokerBinding.instance_id == instance_id
        )
    )
    session.execute(
        delete(BrokerInstance).where(
            BrokerInstance.runtime_id == runtime_id, BrokerInstance.instance_id == instance_id
        )
    )


def broker_binding(
    session: Session, runtime_id: str, instance_id: str, binding_id: str
) -> dict[str, Any] | None:
    row = session.get(BrokerBinding, (runtime_id, instance_id, binding_id))
    return row.record if row else None


def save_broker_binding(
    session: Session,
    runtime_id: str,
    instance_id: str,
    binding_id: str,
    record: dict[str, Any],
    now: datetime,
) -> None:
    row = session.get(BrokerBinding, (runtime_id, instance_id, binding_id))
    if row is None:
        session.add(
            BrokerBinding(
                runtime_id=runtime_id,
                instance_id=instance_id,
                binding_id=binding_id,
                record=record,
                updated_at=now,
            )
        )
    else:
        row.record, row.updated_at = record, now


def delete_broker_binding(session: Session, runtime_id: str, instance_id: str, binding_id: str) -> None:
    session.execute(
        delete(BrokerBinding).where(
            BrokerBinding.runtime_id == runtime_id,
            BrokerBinding.instance_id == instance_id,
            BrokerBinding.binding_id == binding_id,
        )
    )
