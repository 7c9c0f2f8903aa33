"""The control plane hands freed heap back to the system (`rrm.server.memory`; glibc's, nothing
elsewhere)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rrm.server import memory

pytestmark = pytest.mark.skipif(memory._LIBC is None, reason="glibc only")

FREED_THEN_RELEASED = """
import sys
from rrm.server.memory import release_free_memory

def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

blocks = [bytes(2000) + bytes([i % 256]) for i in range(50_000)]  # ~100 MB of malloc'd (not pymalloc) blocks
kept = blocks[-1]  # the newest block pins the top of the heap: free() alone gives nothing back
del blocks
before = rss_mb()
release_free_memory()
print(before - rss_mb())
"""


def _run(script: str) -> str:
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_freed_heap_goes_back_to_the_system() -> None:
    released = float(_run(FREED_THEN_RELEASED))
    assert released > 50, f"only {released:.1f} MB of ~100 MB freed went back"
