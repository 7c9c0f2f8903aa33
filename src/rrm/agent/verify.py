"""A desired state is used only if its content matches its hash: a corrupt body or cache is never applied.

An update changes a component or two of a state; the canonical JSON of the others (most of a check's CPU)
is taken from the last state checked, found by each component's compact encoding, which is equal only for
equal content."""

from __future__ import annotations

import msgspec

from rrm.core.canonical import canonical_json
from rrm.core.hashing import state_hash_of_parts
from rrm.wire.protocol import DesiredState

_encode = msgspec.json.Encoder().encode
# compact encoding → (metadata name, canonical JSON), for the components of the last state checked
_last_parts: dict[bytes, tuple[str, bytes]] = {}


def state_is_authentic(state: DesiredState) -> bool:
    global _last_parts
    known, seen = _last_parts, dict[bytes, tuple[str, bytes]]()
    parts = []
    for component in state.components:
        key = _encode(component)
        part = known.get(key) or seen.get(key)
        if part is None:
            part = (str(component.get("metadata", {}).get("name", "")), canonical_json(component))
        seen[key] = part
        parts.append(part)
    _last_parts = seen
    return state_hash_of_parts(parts, [(s.name, s.revision) for s in state.secrets]) == state.hash
