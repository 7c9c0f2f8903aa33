"""The baseline: one etcd (Debian's `etcd-server`) on loopback in a temp dir, spoken to through its HTTP
gateway (`/v3/kv/put`, `/v3/watch`), the way the rrm agents speak HTTP to the control plane."""

from __future__ import annotations

import base64
import json
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks.common import free_port, wait_until

START_DEADLINE = 60.0


def etcd_binary() -> str | None:
    return shutil.which("etcd")


def etcd_version() -> str | None:
    binary = etcd_binary()
    if binary is None:
        return None
    output = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout
    first = output.splitlines()[0] if output else ""
    return first.split(":", 1)[-1].strip() or None


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def watch_events(line: bytes | str) -> tuple[bool, list[tuple[int, bytes]]]:
    """One line of a `/v3/watch` stream (a JSON object): whether it confirms the watch was created, and
    each event's (mod revision, value). An `error` line (the gateway's own) raises ValueError."""
    if not line.strip():
        return False, []
    message = json.loads(line)
    if "error" in message:
        raise ValueError(f"etcd watch error: {message['error']}")
    result = message.get("result", {})
    events = [
        (int(event["kv"]["mod_revision"]), base64.b64decode(event["kv"].get("value", "")))
        for event in result.get("events", [])
    ]
    return bool(result.get("created")), events


@dataclass
class EtcdProcess:
    directory: Path
    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        binary = etcd_binary()
        if binary is None:
            raise FileNotFoundError("etcd is not installed (apt-get install etcd-server)")
        if self.directory.exists():
            shutil.rmtree(self.directory)
        self.directory.mkdir(parents=True)
        peer = f"http://127.0.0.1:{self.peer_port}"
        args = [
            binary,
            "--name=bench",
            f"--data-dir={self.directory / 'data'}",
            f"--listen-client-urls={self.url}",
            f"--advertise-client-urls={self.url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=bench={peer}",
            "--logger=zap",
            "--log-level=warn",
        ]
        with (self.directory / "etcd.log").open("ab") as log:
            self.process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_until(self._healthy, START_DEADLINE, f"etcd on {self.url}")

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"etcd exited with {self.process.returncode}; see {self.directory}/etcd.log")
        return httpx.get(f"{self.url}/health", timeout=5).status_code == 200

    def put(self, key: str, value: str) -> int:
        """Stores `value` under `key`; returns the new revision once etcd answered."""
        response = httpx.post(
            f"{self.url}/v3/kv/put", json={"key": b64(key), "value": b64(value)}, timeout=60
        )
        response.raise_for_status()
        return int(response.json()["header"]["revision"])

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(30)
        time.sleep(0.1)
