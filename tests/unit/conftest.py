"""Fixtures shared by unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rrm.server.app import build_state
from rrm.server.settings import ServerSettings
from rrm.server.state import ServerState


@pytest.fixture
def state(tmp_path: Path) -> Iterator[ServerState]:
    """A control plane's state on a fresh SQLite data dir, without a server around it."""
    state = build_state(ServerSettings(data_dir=tmp_path))
    try:
        yield state
    finally:
        state.db.dispose()
