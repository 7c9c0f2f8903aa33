"""What the fleet's unit tests build on: components, agent keys, and a migrated SQLite database written
through the repository calls the admin and agent APIs make."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from rrm.core.resources import StoredComponent
from rrm.server.secretbox import SecretBox, load_or_create_key
from rrm.server.state import utcnow
from rrm.store import Database
from rrm.store import repositories as repo
from rrm.store.tables import Runtime


def manifest(name: str, selector: str = "", secret: str | None = None) -> dict[str, Any]:
    metadata: list[dict[str, Any]] = [{"name": "host", "value": "localhost"}]
    if secret is not None:
        metadata.append({"name": "password", "secretKeyRef": {"name": secret, "key": "password"}})
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name, "annotations": {"rrm.io/selector": selector}},
        "spec": {"type": "state.redis", "version": "v1", "metadata": metadata},
    }


def component(name: str, selector: str = "", revision: int = 1, secret: str | None = None) -> StoredComponent:
    return StoredComponent(name, revision, manifest(name, selector, secret))


def public_pem() -> str:
    public = Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


class Store:
    """A fleet's database; each write records its change in the feed, as the APIs do."""

    def __init__(self, tmp_path: Path) -> None:
        self.db = Database(f"sqlite:///{tmp_path / 'rrm.db'}")
        self.db.migrate()
        self.box = SecretBox(load_or_create_key(tmp_path))

    def runtime(self, name: str, key_id: str | None = None, **labels: str) -> str:
        """Registers a runtime (paired with a new key when `key_id` is given); returns its id."""
        runtime_id, now = str(uuid.uuid4()), utcnow()
        with self.db.write() as session:
            session.add(
                Runtime(
                    id=runtime_id, name=name, kind="selfhosted", labels=labels, created_at=now, updated_at=now
                )
            )
            session.flush()
            if key_id is not None:
                repo.replace_runtime_key(session, runtime_id, key_id, public_pem(), now)
            repo.record_change(session, repo.ENTITY_RUNTIME, runtime_id, now)
        return runtime_id

    def relabel(self, runtime_id: str, **labels: str) -> None:
        with self.db.write() as session:
            row = repo.runtime_by_id(session, runtime_id)
            assert row is not None
            row.labels = labels
            repo.record_change(session, repo.ENTITY_RUNTIME, runtime_id, utcnow())

    def delete_runtime(self, runtime_id: str) -> None:
        with self.db.write() as session:
            repo.delete_runtime_keys(session, runtime_id)
            row = repo.runtime_by_id(session, runtime_id)
            assert row is not None
            session.delete(row)
            repo.record_change(session, repo.ENTITY_RUNTIME, runtime_id, utcnow())

    def component(self, name: str, selector: str = "", secret: str | None = None) -> int:
        with self.db.write() as session:
            return repo.write_component_revision(
                session, name, manifest(name, selector, secret), "apply", utcnow()
            )

    def delete_component(self, name: str) -> None:
        with self.db.write() as session:
            repo.write_component_revision(session, name, None, "delete", utcnow())

    def secret(self, name: str, **data: str) -> int:
        with self.db.write() as session:
            return repo.write_secret(session, name, sorted(data), self.box.seal(name, data), utcnow())
