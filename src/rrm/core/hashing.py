"""The desired-state hash, which is also the ETag of `GET /agent/v1/desired-state`."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rrm.core.canonical import canonical_json


def state_hash(components: Sequence[Mapping[str, Any]], secret_revisions: Iterable[tuple[str, int]]) -> str:
    """sha256 over the canonical JSON of the components and the revision of every delivered secret.

    Secret values are left out on purpose: the hash is shown to operators and must not leak anything
    about a credential, while a new value always comes with a new revision, so the hash still changes.
    """
    parts = [(str(c.get("metadata", {}).get("name", "")), canonical_json(c)) for c in components]
    return state_hash_of_parts(parts, secret_revisions)


def state_hash_of_parts(
    components: Sequence[tuple[str, bytes]], secret_revisions: Iterable[tuple[str, int]]
) -> str:
    """`state_hash` from each component's metadata name and canonical JSON, which the server's renders make
    once per component revision: the canonical JSON of `{"components": [...sorted by name],
    "secrets": [[name, revision]...sorted]}`, assembled from those parts."""
    parts = b",".join(part for _, part in sorted(components, key=lambda c: c[0]))
    secrets = canonical_json(sorted([n, r] for n, r in secret_revisions))
    return hashlib.sha256(b'{"components":[' + parts + b'],"secrets":' + secrets + b"}").hexdigest()
