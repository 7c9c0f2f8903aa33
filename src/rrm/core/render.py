"""A runtime's desired state from the components placed on it: pure, so it can be cached and shared."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rrm.core.hashing import state_hash
from rrm.core.resources import StoredComponent, delivered_manifest, secret_refs


@dataclass(frozen=True)
class SecretValue:
    name: str
    revision: int
    data: Mapping[str, str]


@dataclass(frozen=True)
class RenderedState:
    hash: str
    components: list[dict[str, Any]]
    secrets: list[SecretValue]


def render_desired_state(
    placed: Sequence[StoredComponent], secrets: Mapping[str, SecretValue]
) -> RenderedState:
    """Components sorted by name, plus only the secrets they reference (never any other)."""
    ordered = sorted(placed, key=lambda c: c.name)
    manifests = [delivered_manifest(c) for c in ordered]
    wanted: set[str] = set()
    for component in ordered:
        wanted.update(secret_refs(component.manifest))
    delivered = [secrets[name] for name in sorted(wanted) if name in secrets]
    return RenderedState(
        hash=state_hash(manifests, [(s.name, s.revision) for s in delivered]),
        components=manifests,
        secrets=delivered,
    )
