"""The benchmarks' smoke run (`benchmarks.run --smoke`, every benchmark at N = 20 with short windows), shared
by the smoke test modules: each runs the benchmarks it names in `BENCHMARKS`, so that pytest-xdist runs the
modules side by side on two workers.

In CI (CI=true) the etcd baseline and the two-replica run (PostgreSQL at `RRM_TEST_DATABASE_URL`, default
postgresql://postgres@127.0.0.1:5432/test) must have run; elsewhere a machine without etcd or PostgreSQL may
report them unavailable (the replicas test is then skipped).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def results(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The results file of a smoke run of the module's `BENCHMARKS`."""
    benchmarks: tuple[str, ...] = request.module.BENCHMARKS
    out = tmp_path_factory.mktemp("bench")
    # no RRM_BENCH_* settings from outside; the PostgreSQL server to use for the replicas run is kept
    env = {k: v for k, v in os.environ.items() if not k.startswith("RRM_") or k == "RRM_TEST_DATABASE_URL"}
    command = [sys.executable, "-m", "benchmarks.run", "--smoke", "--workers", "2", "--out", str(out)]
    completed = subprocess.run(
        [*command, "--only", ",".join(benchmarks)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=660,
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    assert (out / "latest.md").read_text().startswith("Run ")
    loaded: dict[str, Any] = json.loads((out / "latest.json").read_text())
    failed = [
        f"{name}: {entry.get('error') or entry['rrm']['error']}"
        for name in benchmarks
        for entry in (loaded[name] if isinstance(loaded[name], list) else [loaded[name]])
        if "error" in entry or "error" in entry.get("rrm", {})
    ]
    assert not failed, f"benchmarks failed: {failed}\n{completed.stdout[-4000:]}"
    return loaded
