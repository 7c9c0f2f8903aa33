"""The desired-state hash, which is also the ETag of `GET /agent/v1/desired-state`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rrm.core.canonical import sha256_hex


def state_hash(components: Sequence[Mapping[str, Any]], secret_revisions: Iterable[tuple[str, int]]) -> str:
    """sha256 over the canonical JSON of the components and the revision of every delivered secret.

    Secret values are left out on purpose: the hash is shown to operators and must not leak anything
    about a credential, while a new value always comes with a new revision, so the hash still changes.
    """
    ordered = sorted(components, key=lambda c: str(c.get("metadata", {}).get("name", "")))
    return sha256_hex({"components": ordered, "secrets": sorted([n, r] for n, r in secret_revisions)})
