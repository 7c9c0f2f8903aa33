"""How `make test` spreads the suite over pytest-xdist workers (`--dist loadscope`).

A module is one unit of work, because its tests share module-scoped servers. A module's tests on SQLite and
on PostgreSQL share nothing, though (each backend has its own server, `tests/integration/conftest.py`), so
here they are two units, which may run on two workers at once: the longest modules no longer decide when
the suite ends."""

from __future__ import annotations

from typing import Any

import pytest
from xdist.scheduler import LoadScopeScheduling

from integration.databases import BACKENDS


class BackendScopes(LoadScopeScheduling):
    """loadscope, with a module's tests split by the backend parameter in their ids."""

    def _split_scope(self, nodeid: str) -> str:
        scope = super()._split_scope(nodeid)
        if not nodeid.endswith("]"):
            return scope
        params = nodeid.rpartition("[")[2][:-1].split("-")
        backend = next((p for p in params if p in BACKENDS), None)
        return f"{scope}[{backend}]" if backend is not None else scope


@pytest.hookimpl(optionalhook=True)  # a run without xdist (`-p no:xdist`) has no such hook
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> LoadScopeScheduling | None:
    return BackendScopes(config, log) if config.getoption("dist") == "loadscope" else None
