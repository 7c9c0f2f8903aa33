"""A desired state is used only if its content matches its hash: a corrupt body or cache is never applied."""

from __future__ import annotations

from rrm.core.hashing import state_hash
from rrm.wire.protocol import DesiredState


def state_is_authentic(state: DesiredState) -> bool:
    return state_hash(state.components, [(s.name, s.revision) for s in state.secrets]) == state.hash
