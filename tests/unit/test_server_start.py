"""What a control plane does before it serves, so that its first requests do not pay for it."""

from __future__ import annotations

from pathlib import Path

from rrm.dapr import catalog
from rrm.server.app import build_state
from rrm.server.settings import ServerSettings


def test_dapr_component_schemas_are_read_before_the_first_write(tmp_path: Path) -> None:
    """Reading every contrib metadata.yaml takes ~80 ms: the first component write after a start paid it."""
    catalog._catalog.cache_clear()

    state = build_state(ServerSettings(data_dir=tmp_path))
    try:
        assert catalog._catalog.cache_info().currsize == 1
    finally:
        state.db.dispose()
