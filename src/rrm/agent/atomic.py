"""Crash-safe file writes: a reader (daprd, the agent after kill -9) sees the old file or the new one.

The temp file is a dot file with a `.tmp` suffix in the same directory, so daprd (which reads only
`.yaml`/`.yml`) never picks it up and the final `rename` stays on one filesystem.
"""

from __future__ import annotations

import os
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def temp_path_for(path: Path) -> Path:
    return path.with_name(f".{path.name}{TEMP_SUFFIX}")


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write `data` to `path` via a temp file created with `mode` at once (secrets never sit at 0644)."""
    temp = temp_path_for(path)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)
    fsync_dir(path.parent)


def remove_durably(path: Path) -> None:
    """Delete `path` (absent is fine) and make the deletion survive a crash."""
    try:
        path.unlink()
    except FileNotFoundError:
        return
    fsync_dir(path.parent)


def make_private_dir(directory: Path) -> None:
    """Create `directory` (and parents) readable by the agent's user only."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
