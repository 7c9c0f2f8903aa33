"""A restart of `rrm server --workers 2`, as the reconnect storm does it: SIGTERM, then a new control plane
on the same port and data dir. The supervisor ends with `os._exit` once its workers have (not through the
interpreter's teardown, while it held the listening socket), after its shared metrics directory is gone."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from .harness import ServerProcess

pytestmark = pytest.mark.integration


def _metrics_directory_of(pid: int) -> Path:
    """The directory of the files the worker maps for its metrics (prometheus-client's multiprocess mode)."""
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        path = Path(line.split(maxsplit=5)[-1])
        if path.parent.name.startswith("rrm-metrics-"):
            return path.parent
    raise AssertionError(f"worker {pid} maps no metrics file")


def test_a_stopped_supervisor_leaves_no_metrics_directory_and_its_port_to_the_next_start(
    tmp_path: Path,
) -> None:
    server = ServerProcess(tmp_path / "data", tmp_path / "server.log", workers=2)
    server.start()
    try:
        worker = int(Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()[0])
        metrics = _metrics_directory_of(worker)
        assert metrics.is_dir()
        assert server.stop() == 0
        assert "every worker has stopped" in server.tail()
        assert not metrics.exists()
        server.start()  # same port, same data dir
        assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200
    finally:
        server.stop()
