"""The benchmarks tell a process at its open-file limit (it drops connections unanswered) from one below."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, whose benchmarks/ this tests
from benchmarks.common import at_open_file_limit, open_files

LIMIT = 64
FILL = f"""
import os, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, ({LIMIT}, {LIMIT}))
try:
    while True:
        os.open(os.devnull, os.O_RDONLY)
except OSError:
    pass
print("full", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def full_process() -> Iterator[int]:
    """A process that holds every file its limit allows, until its stdin closes."""
    process = subprocess.Popen(
        [sys.executable, "-c", FILL], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None and process.stdout.readline() == "full\n"
        yield process.pid
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(30)


def test_a_process_at_its_limit_is_named_with_its_count_and_limit(full_process: int) -> None:
    assert open_files(full_process) == (LIMIT, LIMIT)
    note = at_open_file_limit(full_process, "the rrm server")
    assert (
        f"the rrm server (pid {full_process}) holds {LIMIT} open files, its open-file limit ({LIMIT})" in note
    )


def test_a_process_below_its_limit_is_not() -> None:
    count, limit = open_files(os.getpid())
    assert count < limit
    assert at_open_file_limit(os.getpid(), "this test") == ""
