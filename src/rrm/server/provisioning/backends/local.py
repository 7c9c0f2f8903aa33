"""The `local` backend, for development and demos on one machine: each environment's runtime is an
`rrm agent --target selfhosted` process the control plane starts and supervises, in
DATA_DIR/environments/NAME/ (`resources/` is the directory daprd would read, `state/` the agent's key and
cache, `agent.log` its output).

The directory says which agents should run (`agent.json`); supervision, every couple of seconds on the
leader, restarts one that died and adopts one still running after the control plane itself restarted (its
pid file and command line say it is ours). A graceful stop of the control plane stops the agents it
started; a kill -9 leaves them running, to be adopted. The pairing token is handed over in the agent's
environment, never on its command line, and kept (0600) only until the agent has its key.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from rrm.server.provisioning.backends.base import (
    AgentInstall,
    BackendFailure,
    ClusterProgress,
    ClusterRequest,
)
from rrm.server.secretbox import write_private_file

log = logging.getLogger("rrm.server.provisioning.local")
AGENT_FILE = "agent.json"
PID_FILE = "agent.pid"
TOKEN_FILE = "pairing-token"
STOP_SECONDS = 5.0
IDENTITY_FILE = "identity.json"  # the agent's, in its state directory: it has paired


class LocalBackend:
    name = "local"
    creates_clusters = False
    mints_kubeconfigs = False

    def __init__(self, root: Path) -> None:
        self.root = root
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        self._supervising = False  # this process led and supervised the agents (one worker of several)

    def directory(self, environment: str) -> Path:
        return self.root / environment

    def create_cluster(self, request: ClusterRequest) -> None:
        """No cluster: the agent runs on this machine."""

    def cluster_progress(self, request: ClusterRequest) -> ClusterProgress:
        return ClusterProgress(done=True, description="no cluster needed")

    def kubeconfig(self, request: ClusterRequest) -> str:
        return ""

    def install_agent(self, request: ClusterRequest, kubeconfig: str, install: AgentInstall) -> None:
        """Write the agent's configuration and start it, unless it runs already (an earlier attempt)."""
        directory = self.directory(request.environment)
        try:
            for sub in ("", "resources", "state"):
                (directory / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
            config = {"director": install.director_url, "runtime": install.runtime}
            write_private_file(directory / AGENT_FILE, json.dumps(config).encode())
            if not (directory / "state" / IDENTITY_FILE).exists():
                write_private_file(directory / TOKEN_FILE, install.pairing_token.encode())
        except OSError as exc:
            raise BackendFailure(f"cannot prepare {directory}: {exc.strerror or exc}") from exc
        with self._lock:
            if not self._alive(request.environment):
                self._start(request.environment)

    def remove_agent(self, request: ClusterRequest, kubeconfig: str) -> None:
        """Stop the agent and remove its directory (configuration, key, cache, resources)."""
        directory = self.directory(request.environment)
        with self._lock:
            (directory / AGENT_FILE).unlink(missing_ok=True)
            self._stop(request.environment)
        shutil.rmtree(directory, ignore_errors=True)

    def delete_cluster(self, request: ClusterRequest) -> None:
        """No cluster."""

    def deletion_progress(self, request: ClusterRequest) -> ClusterProgress:
        return ClusterProgress(done=True, description="no cluster")

    def supervise(self) -> None:
        """Start every configured agent that is not running: one that died, or one a previous control
        plane started and a graceful stop ended."""
        self._supervising = True
        if not self.root.is_dir():
            return
        with self._lock:
            for directory in sorted(self.root.iterdir()):
                if (directory / AGENT_FILE).is_file() and not self._alive(directory.name):
                    log.warning("the local agent of %s is not running: starting it", directory.name)
                    self._start(directory.name)

    def shutdown(self) -> None:
        """Stop the agents of every environment (a graceful stop of the control plane); the next start
        starts them again. A kill -9 leaves them running instead, to be adopted. Only the process that
        supervised them stops them: a worker that never led leaves the leader's agents alone."""
        with self._lock:
            if not self._supervising and not self._children:
                return
            names = {d.name for d in self.root.iterdir() if d.is_dir()} if self.root.is_dir() else set()
            for name in sorted(names | set(self._children)):
                self._stop(name)

    def _start(self, name: str) -> None:
        directory = self.directory(name)
        config = json.loads((directory / AGENT_FILE).read_text())
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RRM_", "DAPR_"))}
        token_file = directory / TOKEN_FILE
        if token_file.is_file():
            env["RRM_PAIRING_TOKEN"] = token_file.read_text().strip()
        args = [sys.executable, "-m", "rrm", "agent", "--director", config["director"]]
        args += ["--state-dir", str(directory / "state"), "--target", "selfhosted"]
        args += ["--resources-path", str(directory / "resources")]
        with (directory / "agent.log").open("ab") as out:
            child = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self._children[name] = child
        write_private_file(directory / PID_FILE, str(child.pid).encode())
        log.info("started the local agent of %s (pid %d) in %s", name, child.pid, directory)

    def _alive(self, name: str) -> bool:
        """Ours and running: a child of this process, or the process its pid file names, if that one's
        command line points at this environment's state directory (a pid may be reused)."""
        child = self._children.get(name)
        if child is not None:
            if child.poll() is None:
                self._forget_token(name)
                return True
            del self._children[name]
            return False
        pid = _pid_of(self.directory(name))
        return pid is not None and _runs_here(pid, self.directory(name) / "state")

    def _forget_token(self, name: str) -> None:
        """Once the agent holds its key the single-use token is of no use: do not keep it on disk."""
        directory = self.directory(name)
        if (directory / "state" / IDENTITY_FILE).exists():
            (directory / TOKEN_FILE).unlink(missing_ok=True)

    def _stop(self, name: str) -> None:
        child = self._children.pop(name, None)
        pid = child.pid if child is not None else _pid_of(self.directory(name))
        if pid is None or (child is None and not _runs_here(pid, self.directory(name) / "state")):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        while time.monotonic() < deadline and _running(pid, child):
            time.sleep(0.05)
        if _running(pid, child):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if child is not None:
            child.wait(STOP_SECONDS)
        (self.directory(name) / PID_FILE).unlink(missing_ok=True)


def _pid_of(directory: Path) -> int | None:
    try:
        return int((directory / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def _runs_here(pid: int, state_dir: Path) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return str(state_dir).encode() in command


def _running(pid: int, child: subprocess.Popen[bytes] | None) -> bool:
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in _proc_state(pid)


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"
