"""The last verified desired state on disk, so a restarted agent serves it even when no director answers.

The file holds secret values, hence 0600 and atomic writes; anything unreadable or failing its hash is
ignored.
"""

from __future__ import annotations

import logging
from pathlib import Path

from rrm.agent.atomic import write_atomic
from rrm.agent.verify import state_is_authentic
from rrm.wire.protocol import DesiredState, WireError, decode, dumps

log = logging.getLogger(__name__)

CACHE_FILE = "desired-state.json"


class DesiredStateCache:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / CACHE_FILE

    def load(self) -> DesiredState | None:
        try:
            state = decode(DesiredState, self.path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, WireError) as exc:
            log.warning("event=cache-ignored path=%s reason=%s", self.path, type(exc).__name__)
            return None
        if not state_is_authentic(state):
            log.warning("event=cache-ignored path=%s reason=hash-mismatch", self.path)
            return None
        return state

    def save(self, state: DesiredState) -> None:
        write_atomic(self.path, dumps(state), mode=0o600)
