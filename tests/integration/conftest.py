"""Fixtures: one real `rrm server` per module and backend, and per test the agents and fake daprds it starts.

Every server-backed test runs twice: on SQLite (a file in the server's data dir) and on PostgreSQL (a fresh
database on the server of `RRM_TEST_DATABASE_URL`, default postgresql://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from .databases import BACKENDS, database_for
from .harness import TAIL_MARKER, Fleet, ServerProcess


@contextmanager
def running_server(directory: Path, backend: str) -> Iterator[ServerProcess]:
    with database_for(backend) as database_url:
        process = ServerProcess(directory / "data", directory / "server.log", database_url=database_url)
        process.start()
        try:
            yield process
        finally:
            process.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[ServerProcess]:
    """A server shared by a module's tests; they keep out of each other's way by distinct names and labels."""
    with running_server(tmp_path_factory.mktemp(f"server-{backend}"), backend) as process:
        yield process


@pytest.fixture
def own_server(tmp_path: Path, backend: str) -> Iterator[ServerProcess]:
    """A server for one test that stops, kills or restarts it."""
    with running_server(tmp_path / "own-server", backend) as process:
        yield process


@pytest.fixture
def admin(server: ServerProcess) -> httpx.Client:
    return server.admin


@pytest.fixture
def fleet(request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> Iterator[Fleet]:
    """Agents and fake daprds for one test, against `own_server` if the test uses it, else `server`."""
    name = "own_server" if "own_server" in request.fixturenames else "server"
    processes = Fleet(request.getfixturevalue(name), tmp_path)
    try:
        yield processes
    finally:
        processes.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failure that does not already show the process logs gets their tails as a report section."""
    report: pytest.TestReport = yield
    fleet = getattr(item, "funcargs", {}).get("fleet")
    if report.failed and isinstance(fleet, Fleet) and TAIL_MARKER not in str(report.longrepr):
        report.sections.append(("rrm process logs", fleet.tails()))
    return report
