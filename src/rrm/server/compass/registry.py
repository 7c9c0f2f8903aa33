"""The fleet's memory of Compass: applications (with their decrypted credentials), automatic scenario
assignments and each runtime's explicit scenarios. It follows the change feed with the rest of the fleet,
so the bindings a runtime gets, the applications endpoint and the broker catalog all read the same state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from rrm.core.scenarios import (
    Application,
    Connectivity,
    connectivity,
    effective_scenarios,
    visible_applications,
)
from rrm.core.selectors import Selector, parse_stored_selector
from rrm.server.compass.apply import open_credentials
from rrm.server.compass.manifests import core_application
from rrm.server.secretbox import SecretBox
from rrm.store import compass as store
from rrm.store.tables import Application as ApplicationRow

ENTITIES = (store.ENTITY_APPLICATION, store.ENTITY_ASSIGNMENT, store.ENTITY_RUNTIME_SCENARIOS)


@dataclass(frozen=True)
class RegisteredApplication:
    """An application as the registry shows it: the core view plus what only people and platforms read."""

    application: Application
    uid: str
    manifest: Mapping[str, Any]  # without credential values
    labels: Mapping[str, str]
    updated_at: datetime

    @property
    def name(self) -> str:
        return self.application.name


@dataclass
class RegistryChanges:
    """What one catch-up read; None removes."""

    applications: dict[str, RegisteredApplication | None] = field(default_factory=dict)
    assignments: dict[str, str | None] = field(default_factory=dict)
    runtime_scenarios: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.applications or self.assignments or self.runtime_scenarios)


class Registry:
    def __init__(self, box: SecretBox) -> None:
        self._box = box
        self.applications: dict[str, RegisteredApplication] = {}
        self.assignments: dict[str, Selector] = {}
        self.selectors: dict[str, str] = {}
        self.runtime_scenarios: dict[str, tuple[str, ...]] = {}

    # reading (in a worker thread, on the caller's session) ----------------------------------------------

    def read_all(self, session: Session) -> RegistryChanges:
        changes = RegistryChanges()
        for row in store.all_applications(session):
            changes.applications[row.name] = self._registered(row)
        changes.assignments.update(store.all_assignments(session))
        changes.runtime_scenarios.update(
            {k: tuple(v) for k, v in store.all_runtime_scenarios(session).items()}
        )
        return changes

    def read_change(self, session: Session, changes: RegistryChanges, entity: str, name: str) -> None:
        if entity == store.ENTITY_APPLICATION and name not in changes.applications:
            row = store.application(session, name)
            changes.applications[name] = self._registered(row) if row else None
        elif entity == store.ENTITY_ASSIGNMENT and name not in changes.assignments:
            assignment = store.assignment(session, name)
            changes.assignments[name] = assignment.selector if assignment else None
        elif entity == store.ENTITY_RUNTIME_SCENARIOS and name not in changes.runtime_scenarios:
            changes.runtime_scenarios[name] = tuple(store.runtime_scenarios(session, name))

    def _registered(self, row: ApplicationRow) -> RegisteredApplication:
        credentials = open_credentials(self._box, row.name, row.credentials)
        return RegisteredApplication(
            application=core_application(
                row.name, row.revision, row.manifest, list(row.scenarios), credentials
            ),
            uid=row.uid,
            manifest=row.manifest,
            labels=dict(row.labels),
            updated_at=row.updated_at,
        )

    # applying (on the event loop) ----------------------------------------------------------------------

    def merge(self, changes: RegistryChanges, *, full: bool) -> bool:
        """Take what was read; True when anything changed that desired states depend on."""
        if full:
            self.applications, self.assignments, self.selectors, self.runtime_scenarios = {}, {}, {}, {}
        for name, app in changes.applications.items():
            if app is None:
                self.applications.pop(name, None)
            else:
                self.applications[name] = app
        for scenario, selector in changes.assignments.items():
            if selector is None:
                self.assignments.pop(scenario, None)
                self.selectors.pop(scenario, None)
            else:
                self.assignments[scenario] = parse_stored_selector(selector)
                self.selectors[scenario] = selector
        for runtime_id, scenarios in changes.runtime_scenarios.items():
            if scenarios:
                self.runtime_scenarios[runtime_id] = scenarios
            else:
                self.runtime_scenarios.pop(runtime_id, None)
        return full or bool(changes)

    def forget_runtime(self, runtime_id: str) -> None:
        self.runtime_scenarios.pop(runtime_id, None)

    # questions -----------------------------------------------------------------------------------------

    def explicit_scenarios(self, runtime_id: str) -> tuple[str, ...]:
        return self.runtime_scenarios.get(runtime_id, ())

    def scenarios_of(self, runtime_id: str, labels: Mapping[str, str]) -> frozenset[str]:
        return effective_scenarios(self.explicit_scenarios(runtime_id), labels, self.assignments)

    def visible(self, scenarios: frozenset[str]) -> list[RegisteredApplication]:
        """The applications a runtime in `scenarios` sees, by name."""
        shown = visible_applications((a.application for a in self.applications.values()), scenarios)
        return [self.applications[a.name] for a in shown]

    def connectivity(self, labels: Mapping[str, str], explicit: tuple[str, ...]) -> Connectivity:
        """The bindings and secrets of a runtime with these labels and explicit scenarios."""
        scenarios = effective_scenarios(explicit, labels, self.assignments)
        return connectivity(
            visible_applications((a.application for a in self.applications.values()), scenarios)
        )
