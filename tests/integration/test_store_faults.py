"""The store under faults, for real: a data directory (or a PostgreSQL tablespace) on a small tmpfs that is
filled up, a read-only data directory, and the modes of the database files.

Filling a disk needs a tmpfs of our own (`mount -t tmpfs`, root); where mounting is not permitted these tests
are skipped, and in CI, which runs as root, they fail instead.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from .databases import admin_url, require_postgres
from .harness import (
    ServerProcess,
    apply,
    child_env,
    component,
    component_names,
    free_port,
    wait_until,
)

pytestmark = pytest.mark.integration

# A metadata value big enough that a few applies need new pages, small enough for the apply limit.
PADDING = "x" * 2000


@contextlib.contextmanager
def small_disk(path: Path, size: str, owner: str | None = None) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` (owned by `owner` if given), unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size},mode=0700" + (f",uid={_uid(owner)}" if owner else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        message = f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid


def fill(disk: Path) -> Path:
    """Take every free byte of `disk` with one file; returns it (delete it to free the space)."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as out:
        for size in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while out.write(b"\0" * size):
                    pass
    return filler


def padded(name: str) -> dict[str, Any]:
    return component(
        name,
        "t-disk=full",
        metadata=[{"name": "url", "value": "http://x.invalid/"}]
        + [{"name": f"pad{i}", "value": PADDING} for i in range(8)],
    )


def apply_on(
    connection: http.client.HTTPConnection, token: str, docs: list[dict[str, Any]]
) -> tuple[int, Any]:
    """POST /api/v1/apply on one kept-alive connection (http.client never reconnects behind our back: a
    connection the server dropped fails the next request)."""
    body = json.dumps({"documents": docs})
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    connection.request("POST", "/api/v1/apply", body=body, headers=headers)
    response = connection.getresponse()
    payload = response.read()
    return response.status, json.loads(payload) if payload else None


def fill_until_writes_fail(server: ServerProcess, disk: Path) -> tuple[Path, list[str], list[str]]:
    """Fill the disk, then apply components one by one on one connection until the store refuses; returns
    the filler and the names acknowledged (200) and refused (503)."""
    filler = fill(disk)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    acknowledged: list[str] = []
    refused: list[str] = []
    try:
        for i in range(400):
            name = f"disk-full-{i}"
            status, body = apply_on(connection, server.admin_token, [padded(name)])
            assert status in (200, 503), f"apply answered {status}: {body}"
            if status == 200:
                acknowledged.append(name)
                continue
            assert "out of space" in body["detail"], body
            refused.append(name)
            if len(refused) == 3:  # three refusals in a row on the same connection: it was kept alive
                break
    finally:
        connection.close()
    assert len(refused) == 3, f"the store never ran out of space ({len(acknowledged)} applies acknowledged)"
    return filler, acknowledged, refused


def assert_503_then_recovers(
    server: ServerProcess, filler: Path, acknowledged: list[str], refused: list[str]
) -> None:
    ready = httpx.get(f"{server.url}/readyz", timeout=30)
    assert ready.status_code == 503 and "out of space" in ready.json()["detail"], ready.text

    filler.unlink()
    wait_until(
        lambda: httpx.get(f"{server.url}/readyz", timeout=30).status_code == 200,
        60,
        "ready again once space is freed",
    )
    apply(server.admin, [padded("disk-after-recovery")])
    names = set(component_names(server.admin))
    assert set(acknowledged) <= names, f"acknowledged but not stored: {sorted(set(acknowledged) - names)}"
    assert not set(refused) & names, f"refused (503) but stored: {sorted(set(refused) & names)}"
    assert "disk-after-recovery" in names
    server.ensure_running()


def test_sqlite_out_of_space_is_a_json_503_readyz_follows_and_it_recovers(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "24m") as disk:
        server = ServerProcess(disk / "data", tmp_path / "server.log", port=free_port())
        server.start()
        try:
            filler, acknowledged, refused = fill_until_writes_fail(server, disk)
            assert_503_then_recovers(server, filler, acknowledged, refused)
        finally:
            server.stop()


@contextlib.contextmanager
def postgres_on_small_disk(disk: Path) -> Iterator[str]:
    """A fresh database whose tablespace is `disk` (so the PostgreSQL server must run on this host)."""
    require_postgres()
    name = f"rrm_full_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url(), autocommit=True) as connection:
        local = connection.execute("SHOW data_directory").fetchone()
        if local is None or not Path(str(local[0])).is_dir():
            pytest.skip("the PostgreSQL server does not run on this host: no tablespace on a tmpfs of ours")
        connection.execute(f"CREATE TABLESPACE {name} LOCATION '{disk}'")
        connection.execute(f'CREATE DATABASE "{name}" TABLESPACE {name}')
    try:
        yield f"{admin_url().rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(admin_url(), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            connection.execute(f"DROP TABLESPACE IF EXISTS {name}")


def test_postgresql_out_of_space_is_a_json_503_readyz_follows_and_it_recovers(tmp_path: Path) -> None:
    # under /tmp itself: the PostgreSQL server's user cannot enter pytest's directories, which are root's
    mount_point = Path("/tmp") / f"rrm-pg-disk-{uuid.uuid4().hex[:10]}"
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(lambda: mount_point.rmdir() if mount_point.is_dir() else None)
        disk = cleanup.enter_context(small_disk(mount_point, "40m", owner="postgres"))
        tablespace = disk / "ts"
        tablespace.mkdir()
        os.chown(tablespace, _uid("postgres"), -1)
        url = cleanup.enter_context(postgres_on_small_disk(tablespace))
        server = ServerProcess(tmp_path / "data", tmp_path / "server.log", database_url=url)
        server.start()
        try:
            filler, acknowledged, refused = fill_until_writes_fail(server, disk)
            assert_503_then_recovers(server, filler, acknowledged, refused)
        finally:
            server.stop()


def test_a_read_only_data_directory_is_one_clear_line_and_a_failing_exit(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "8m") as disk:
        data = disk / "data"
        first = ServerProcess(data, tmp_path / "first.log")
        first.start()
        first.stop()
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        for data_dir in (data, disk / "never-created"):
            run = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "rrm",
                    "server",
                    "--port",
                    str(free_port()),
                    "--data-dir",
                    str(data_dir),
                ],
                capture_output=True,
                env=child_env(),
                timeout=60,
            )
            stderr = run.stderr.decode()
            assert run.returncode != 0, stderr
            assert "Traceback" not in stderr, stderr
            assert (
                "rrm server: cannot use the data directory" in stderr and "Read-only file system" in stderr
            ), stderr
            assert stderr.strip().splitlines()[-1].startswith("rrm server: "), stderr


def test_database_files_are_owner_only(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", tmp_path / "server.log")
    server.start()
    try:
        apply(server.admin, [padded("mode-check")])  # a write, so that the -wal and -shm files exist
        files = {name: tmp_path / "data" / name for name in ("rrm.db", "rrm.db-wal", "rrm.db-shm")}
        for name, path in files.items():
            assert path.exists(), f"{name} does not exist"
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, f"{name} is {oct(path.stat().st_mode)}"
    finally:
        server.stop()
    # a data directory from before, made 0644: tightened at the next start
    for path in files.values():
        if path.exists():
            path.chmod(0o644)
    server.start()
    try:
        for name, path in files.items():
            if path.exists():
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, f"{name} stayed {oct(path.stat().st_mode)}"
    finally:
        server.stop()
