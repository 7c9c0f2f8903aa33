"""What every benchmark shares: the server process, the admin API, the payload, percentiles, sampling."""

from __future__ import annotations

import contextlib
import math
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[1]
OPEN_FILES_WANTED = 262_144
SERVER_START_DEADLINE = 120.0
BENCH_LABELS = {"bench": "yes"}
SELECTOR = "bench=yes"
LABEL_GROUPS = 10  # runtimes get one of 10 `group` labels, so placement is computed for distinct label sets
PERCENTILES = ("p50", "p90", "p99", "max")
# Before each measured update, with every agent synced and reported: rounds do not overlap, and no update
# reaches an agent within a second of its previous state (which a control plane may hold back to coalesce).
PAUSE_BEFORE_UPDATE = 1.0


def raise_open_files(wanted: int = OPEN_FILES_WANTED) -> int:
    """Raise this process's open-file limit (beyond the hard limit when running as root); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limit in (max(wanted, hard), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
            return limit
        except (ValueError, OSError):
            continue
    return soft


def free_port() -> int:
    """A free port below Linux's ephemeral range (32768+), so that no outgoing connection (thousands of agents
    here, test suites beside) can take it between this check and the server's bind; and below the range the
    integration tests pick from (20,000-32,000), so a test running beside a benchmark does not either."""
    while True:
        port = random.randint(10_000, 19_999)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:
            last = exc
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"timed out after {timeout:.0f} s waiting for {what}" + (f": {last!r}" if last else "")
            )
        time.sleep(interval)


def percentiles(values: Sequence[float]) -> dict[str, float | int | None]:
    """Nearest-rank p50, p90, p99 and max, in seconds."""
    ordered = sorted(values)
    if not ordered:
        return {"count": 0, "p50": None, "p90": None, "p99": None, "max": None}

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    return {"count": len(ordered), "p50": rank(50), "p90": rank(90), "p99": rank(99), "max": ordered[-1]}


def rounded(figures: dict[str, Any], digits: int = 2) -> dict[str, Any]:
    """`percentiles` with its floats rounded, for a results file."""
    return {k: round(v, digits) if isinstance(v, float) else v for k, v in figures.items()}


def ratios(numerator: dict[str, Any], denominator: dict[str, Any]) -> dict[str, float | None]:
    """Per percentile, one latency distribution over another (None where either is missing or zero)."""
    return {
        p: round(numerator[p] / denominator[p], 2) if numerator[p] is not None and denominator[p] else None
        for p in PERCENTILES
    }


# --- the payload -----------------------------------------------------------------------------------------


def component(name: str, revision_marker: int, selector: str = SELECTOR, padding: int = 6) -> dict[str, Any]:
    """A Dapr HTTP output binding (valid against Dapr's schemas) of about 1 KB once delivered."""
    metadata: list[dict[str, Any]] = [
        {"name": "url", "value": f"https://ingest.example.com/{name}?marker={revision_marker}"},
        {"name": "securityTokenHeader", "value": "X-Api-Token"},
        {"name": "errorIfNot2XX", "value": "true"},
    ]
    metadata += [
        {"name": f"header-x-bench-{i}", "value": f"value-{i:02d}-" + "x" * 80} for i in range(padding)
    ]
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name, "annotations": {"rrm.io/selector": selector}},
        "spec": {"type": "bindings.http", "version": "v1", "metadata": metadata},
    }


# --- the control plane -----------------------------------------------------------------------------------


@dataclass
class ServerProcess:
    """`rrm server` started through `benchmarks.serve` (open-file limit raised), on its own data dir; its
    database is SQLite in that dir, or `database_url` (PostgreSQL, which replicas share)."""

    data_dir: Path
    log_path: Path
    port: int = field(default_factory=free_port)
    database_url: str | None = None
    options: list[str] = field(default_factory=list)  # more `rrm server` options
    process: subprocess.Popen[bytes] | None = None
    admin: httpx.Client | None = None
    resent_applies: int = 0

    @property
    def database(self) -> str:
        """The database URL the server uses (as `rrm server` resolves it without `RRM_DATABASE_URL`)."""
        return self.database_url or f"sqlite:///{self.data_dir / 'rrm.db'}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> float:
        """Starts the process and waits until it answers; returns the seconds that took."""
        started = time.monotonic()
        self.launch()
        self.wait_ready()
        return time.monotonic() - started

    def launch(self) -> None:
        """Starts the process without waiting for it (`wait_ready` does), so replicas start side by side."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RRM_")}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        command = [sys.executable, "-m", "benchmarks.serve", "--port", str(self.port)]
        command += ["--data-dir", str(self.data_dir), "--log-level", "warning"]
        if self.database_url:
            command += ["--database-url", self.database_url]
        command += self.options
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO,
                start_new_session=True,
            )

    def wait_ready(self) -> None:
        wait_until(self._ready, SERVER_START_DEADLINE, f"rrm server on {self.url} (log {self.log_path})")
        token = (self.data_dir / "admin-token").read_text().strip()
        if self.admin is not None:
            self.admin.close()
        self.admin = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=300
        )

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"rrm server exited with {self.process.returncode}; see {self.log_path}")
        with httpx.Client(base_url=self.url, timeout=5) as probe:
            ok = probe.get("/readyz").status_code == 200
        return ok and (self.data_dir / "admin-token").is_file()

    def stop(self, timeout: float = 60.0) -> None:
        if self.admin is not None:
            self.admin.close()
            self.admin = None
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)

    def apply(self, *documents: dict[str, Any]) -> dict[str, Any]:
        """Apply `documents`; sent again once on a connection dropped before any answer (the same documents
        again are no change), counted in `resent_applies`. Failing again, the error says when the server
        was at its open-file limit, which drops connections that way."""
        assert self.admin is not None
        body = {"documents": list(documents)}
        try:
            response = self.admin.post("/api/v1/apply", json=body)
        except (httpx.RemoteProtocolError, httpx.ReadError):
            self.resent_applies += 1
            try:
                response = self.admin.post("/api/v1/apply", json=body)
            except httpx.TransportError as exc:
                note = at_open_file_limit(self.pid, "the rrm server")
                raise RuntimeError(
                    f"apply: {type(exc).__name__}: {exc}" + (f"; {note}" if note else "")
                ) from exc
        if response.status_code != 200:
            raise RuntimeError(f"apply answered {response.status_code}: {response.text[:500]}")
        result: dict[str, Any] = response.json()
        return result

    def synced_count(self) -> int:
        """How many runtimes the control plane itself shows as Synced."""
        assert self.admin is not None
        runtimes = self.admin.get("/api/v1/runtimes").json()
        return sum(
            1 for r in runtimes for c in r["conditions"] if c["type"] == "Synced" and c["status"] == "True"
        )


# --- measuring a process -----------------------------------------------------------------------------------

# Within this many files of its limit a process counts as at it: libuv keeps one file in reserve, and the
# count moves while it is read.
AT_LIMIT_MARGIN = 16


def open_files(pid: int) -> tuple[int, int]:
    """The files process `pid` has open and its soft open-file limit (Linux /proc)."""
    count = len(os.listdir(f"/proc/{pid}/fd"))
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return count, int(line.split()[3])
    raise RuntimeError(f"no open-file limit in /proc/{pid}/limits")


def process_tree(pid: int) -> list[int]:
    """`pid` and its child processes (`rrm server --workers N`: each worker has its own open files)."""
    try:
        import psutil
    except ImportError:
        return [pid]
    try:
        return [pid] + [child.pid for child in psutil.Process(pid).children()]
    except psutil.Error:
        return [pid]


def at_open_file_limit(pid: int, what: str) -> str:
    """Empty unless process `pid` (or a child of it) is at its open-file limit; else a sentence saying so and
    what that does: a process at its limit cannot accept a connection, and uvloop (libuv) then accepts the
    pending ones and closes them at once, unanswered, which the client sees as "server disconnected"."""
    for process in process_tree(pid):
        try:
            count, limit = open_files(process)
        except (OSError, RuntimeError):
            continue
        if count >= limit - AT_LIMIT_MARGIN:
            return (
                f"{what} (pid {process}) holds {count:,} open files, its open-file limit ({limit:,}): at it, "
                "a process cannot accept a connection, and the event loop closes new ones unanswered"
            )
    return ""


class _ProcFiles:
    """The two psutil calls the sampler needs, read from /proc, for when psutil is not installed."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._tick = os.sysconf("SC_CLK_TCK")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self._pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self._tick  # utime, stime

    def rss(self) -> int:
        for line in Path(f"/proc/{self._pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0


class _Psutil:
    """With `children`, CPU time counts the process's children too (`rrm server --workers N`: the supervisor
    and its worker processes): the live ones, and those it has reaped."""

    def __init__(self, pid: int, children: bool = False) -> None:
        import psutil

        self._process = psutil.Process(pid)
        self._children = children

    def cpu_seconds(self) -> float:
        times = self._process.cpu_times()
        total = float(times.user + times.system)
        if self._children:
            total += times.children_user + times.children_system
            for child in self._process.children():
                with contextlib.suppress(Exception):  # it ended meanwhile
                    child_times = child.cpu_times()
                    total += child_times.user + child_times.system
        return total

    def rss(self) -> int:
        rss = int(self._process.memory_info().rss)
        if self._children:
            for child in self._process.children():
                with contextlib.suppress(Exception):
                    rss += int(child.memory_info().rss)
        return rss


class ProcessSampler:
    """CPU time and RSS of one process (psutil, else /proc), sampled every `interval` seconds in a thread;
    with `children` (psutil only), of it and its child processes together."""

    def __init__(self, pid: int, interval: float = 0.5, children: bool = False) -> None:
        try:
            self._process: _Psutil | _ProcFiles = _Psutil(pid, children)
        except ImportError:
            if children:
                raise
            self._process = _ProcFiles(pid)
        self._interval = interval
        self._rss: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = 0.0
        self._cpu0 = 0.0

    def _cpu(self) -> float:
        return self._process.cpu_seconds()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._rss.append(self._process.rss())

    def __enter__(self) -> ProcessSampler:
        self._started, self._cpu0 = time.monotonic(), self._cpu()
        self._rss.append(self._process.rss())
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.elapsed = time.monotonic() - self._started
        self.cpu_seconds = self._cpu() - self._cpu0
        self._rss.append(self._process.rss())
        self._stop.set()
        self._thread.join()

    def result(self) -> dict[str, float]:
        return {
            "seconds": round(self.elapsed, 1),
            "cpu_cores": round(self.cpu_seconds / self.elapsed, 4),
            "cpu_percent_of_core": round(100 * self.cpu_seconds / self.elapsed, 3),
            "rss_mb_max": round(max(self._rss) / 2**20, 1),
            "rss_mb_mean": round(sum(self._rss) / len(self._rss) / 2**20, 1),
        }
