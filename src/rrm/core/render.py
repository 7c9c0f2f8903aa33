"""A runtime's desired state from the components placed on it: pure, so it can be cached and shared."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rrm.core.canonical import canonical_json
from rrm.core.hashing import state_hash_of_parts
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


@dataclass(frozen=True)
class Delivered:
    """What a render needs of one component revision, made once: its delivered manifest, that manifest's
    metadata name and canonical JSON (for the hash), and the secrets it references."""

    source: StoredComponent
    manifest: dict[str, Any]
    name: str
    canonical: bytes
    secrets: frozenset[str]


def delivered(component: StoredComponent) -> Delivered:
    manifest = delivered_manifest(component)
    name = str(manifest.get("metadata", {}).get("name", ""))
    refs = frozenset(secret_refs(component.manifest))
    return Delivered(component, manifest, name, canonical_json(manifest), refs)


# (component name, revision) → its Delivered, for the renders that place it again
DeliveredCache = dict[tuple[str, int], Delivered]


def render_desired_state(
    placed: Sequence[StoredComponent],
    secrets: Mapping[str, SecretValue],
    cache: DeliveredCache | None = None,
) -> RenderedState:
    """Components sorted by name, plus only the secrets they reference (never any other). With `cache`,
    a component object rendered before is not made again (an entry counts only for that very object)."""
    ordered = [_delivered(c, cache) for c in sorted(placed, key=lambda c: c.name)]
    wanted: set[str] = set()
    for component in ordered:
        wanted.update(component.secrets)
    chosen = [secrets[name] for name in sorted(wanted) if name in secrets]
    return RenderedState(
        hash=state_hash_of_parts(
            [(c.name, c.canonical) for c in ordered], [(s.name, s.revision) for s in chosen]
        ),
        components=[c.manifest for c in ordered],
        secrets=chosen,
    )


def _delivered(component: StoredComponent, cache: DeliveredCache | None) -> Delivered:
    if cache is None:
        return delivered(component)
    key = (component.name, component.revision)
    known = cache.get(key)
    if known is None or known.source is not component:
        known = cache[key] = delivered(component)
    return known
