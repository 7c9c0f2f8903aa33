"""`rrm demo`: a control plane and three self-hosted agents on this machine; one change reaches a fleet."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import IO, Any

import httpx
import typer
import yaml
from rich.console import Group
from rich.live import Live
from rich.text import Text

from rrm.cli.client import AdminClient, ApiError, ControlPlaneUnreachable
from rrm.cli.common import show, stdout
from rrm.cli.manage import result_line
from rrm.cli.manifests import parse_documents
from rrm.cli.views import find_condition, runtimes_table

EXAMPLE_MANIFEST = "examples/logging-binding.yaml"
EXAMPLE_COMPONENT_FILE = "rrm-logging.yaml"
RUNTIMES: dict[str, dict[str, str]] = {
    "prod-eu": {"env": "prod", "region": "eu"},
    "prod-us": {"env": "prod", "region": "us"},
    "dev-1": {"env": "dev", "region": "eu"},
}
EXPECTED_COMPONENTS = {"prod-eu": 1, "prod-us": 1, "dev-1": 0}
STARTUP_DEADLINE = 30.0
READY_DEADLINE = 60.0
LOCAL_ENVIRONMENT = "local-1"  # a `local` environment: an agent the control plane starts and supervises
POLL_INTERVAL = 0.5
STOP_GRACE = 10.0
LOG_TAIL_LINES = 30
# Ctrl-C, and how `timeout`, systemd and CI runners stop a process: the demo's children run in sessions of
# their own (so a Ctrl-C reaches only the demo), hence only the demo can stop them.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
SignalHandler = Callable[[int, FrameType | None], Any] | int


class DemoError(Exception):
    """Something the demo needs did not happen; `logs` are the files that tell why."""

    def __init__(self, message: str, logs: Sequence[Path] = ()) -> None:
        super().__init__(message)
        self.logs = list(logs)


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]


def example_manifest() -> str:
    return resources.files("rrm.cli").joinpath(EXAMPLE_MANIFEST).read_text(encoding="utf-8")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start(name: str, args: list[str], log_path: Path) -> Process:
    """`python -m rrm ARGS` in its own session, so Ctrl-C reaches only the demo, which stops it in order."""
    log_file = log_path.open("wb")
    popen = subprocess.Popen(
        [sys.executable, "-m", "rrm", *args],
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )
    return Process(name, popen, log_path, log_file)


def stop(processes: Sequence[Process]) -> None:
    """Terminate all, wait for each, kill what does not stop in time."""
    for process in processes:
        if process.popen.poll() is None:
            process.popen.terminate()
    for process in processes:
        try:
            process.popen.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            process.popen.kill()
            process.popen.wait()
        process.log_file.close()


def stop_requested(signum: int, _: FrameType | None) -> None:
    """SIGTERM and SIGHUP stop the demo as Ctrl-C does: the `finally` of `run_fleet` stops its children."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def signals_handled(handler: SignalHandler) -> Iterator[None]:
    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def check_alive(processes: Sequence[Process]) -> None:
    for process in processes:
        code = process.popen.poll()
        if code is not None:
            raise DemoError(f"{process.name} exited with code {code}", [process.log_path])


def wait_for_control_plane(server: Process, url: str, token_file: Path) -> str:
    """Polls `/healthz` and the admin token file until both are there; returns the token."""
    deadline = time.monotonic() + STARTUP_DEADLINE
    with stdout.status(f"starting the control plane at {url}"), httpx.Client(timeout=2.0) as http:
        while time.monotonic() < deadline:
            check_alive([server])
            try:
                healthy = http.get(f"{url}/healthz").status_code == 200
            except httpx.TransportError:
                healthy = False
            if healthy and token_file.is_file() and token_file.read_text().strip():
                return token_file.read_text().strip()
            time.sleep(POLL_INTERVAL)
    raise DemoError(
        f"the control plane did not become healthy within {STARTUP_DEADLINE:.0f} s", [server.log_path]
    )


def unsettled(runtimes: Sequence[Mapping[str, Any]]) -> list[str]:
    """Runtimes not yet where the demo wants them: prod Ready with the binding, dev Synced with nothing."""
    by_name = {runtime["name"]: runtime for runtime in runtimes}
    waiting = []
    for name, expected in EXPECTED_COMPONENTS.items():
        runtime = by_name.get(name)
        condition = find_condition(runtime, "Ready" if expected else "Synced") if runtime else None
        settled = (
            runtime is not None
            and runtime.get("component_count") == expected
            and condition is not None
            and condition.get("status") == "True"
        )
        if not settled:
            waiting.append(name)
    return waiting


def wait_for_fleet(api: AdminClient, server: Process, agents: Mapping[str, Process]) -> list[dict[str, Any]]:
    deadline = time.monotonic() + READY_DEADLINE
    runtimes: list[dict[str, Any]] = []
    heading = Text("waiting until prod-eu and prod-us are Ready and dev-1 is Synced with nothing placed …")
    with Live(Group(heading), console=stdout, transient=True, refresh_per_second=4) as live:
        while time.monotonic() < deadline:
            check_alive([server, *agents.values()])
            runtimes = api.list_runtimes()
            live.update(Group(heading, runtimes_table(runtimes)))
            if not unsettled(runtimes):
                return runtimes
            time.sleep(POLL_INTERVAL)
    show(runtimes_table(runtimes))
    waiting = unsettled(runtimes)
    raise DemoError(
        f"{', '.join(waiting)} not settled after {READY_DEADLINE:.0f} s (see `rrm describe runtime NAME`)",
        [server.log_path, *(agents[name].log_path for name in waiting)],
    )


def secrets_file_of(components_dir: Path) -> Path | None:
    """The `secretsFile` of the local-file secret store the agent wrote next to the components."""
    for path in sorted(components_dir.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            spec = (document or {}).get("spec") or {}
            if spec.get("type") != "secretstores.local.file":
                continue
            for item in spec.get("metadata") or []:
                if item.get("name") == "secretsFile" and item.get("value"):
                    return Path(item["value"])
    return None


def show_files(data_dir: Path) -> None:
    """What each agent wrote: file names, the binding's YAML, where the secret values live (never them)."""
    for name in RUNTIMES:
        components_dir = data_dir / name / "components"
        typer.secho(f"\n{name}: {components_dir}", bold=True)
        files = sorted(p for p in components_dir.iterdir() if p.is_file()) if components_dir.is_dir() else []
        for path in files:
            typer.echo(f"  {path.name}  (mode {stat.S_IMODE(path.stat().st_mode):04o})")
        binding = components_dir / EXAMPLE_COMPONENT_FILE
        if binding.is_file():
            typer.echo(f"  --- {binding.name}")
            typer.echo("\n".join(f"  {line}" for line in binding.read_text().splitlines()))
        secrets_file = secrets_file_of(components_dir)
        if secrets_file is not None and secrets_file.exists():
            mode = stat.S_IMODE(secrets_file.stat().st_mode)
            typer.echo(f"  secret values: {secrets_file}  (mode {mode:04o}, not shown)")
        elif not files:
            typer.echo("  (nothing placed on this runtime)")


def provision_local(api: AdminClient, server: Process) -> dict[str, Any]:
    """A `local` environment: the control plane starts and supervises its agent; returns it Connected."""
    answer = api._request("POST", "/api/v1/environments", json={"name": LOCAL_ENVIRONMENT, "plan": "local"})
    deadline = time.monotonic() + READY_DEADLINE
    with stdout.status(f"provisioning environment {LOCAL_ENVIRONMENT} (plan local) …") as status:
        while time.monotonic() < deadline:
            check_alive([server])
            environment = api._request("GET", f"/api/v1/environments/{LOCAL_ENVIRONMENT}")
            operation = next(o for o in environment["operations"] if o["id"] == answer["operation"])
            status.update(f"provisioning environment {LOCAL_ENVIRONMENT}: {operation['description']}")
            if operation["state"] == "succeeded":
                return dict(environment)
            if operation["state"] in ("failed", "canceled"):
                raise DemoError(
                    f"environment {LOCAL_ENVIRONMENT}: {operation['description']}", [server.log_path]
                )
            time.sleep(POLL_INTERVAL)
    raise DemoError(
        f"environment {LOCAL_ENVIRONMENT} not provisioned after {READY_DEADLINE:.0f} s", [server.log_path]
    )


def show_environment(environment: Mapping[str, Any], runtime: Mapping[str, Any]) -> None:
    connected = find_condition(runtime, "Connected") or {}
    typer.secho(f"\nenvironment {environment['name']} (plan local): {environment['state']}", bold=True)
    typer.echo(f"  runtime {runtime['name']}: Connected={connected.get('status', '?')}")
    typer.echo(
        f"  its agent runs in {environment['resources'].get('directory')}, supervised by the control plane"
    )


def show_usage(url: str, token: str, data_dir: Path) -> None:
    typer.secho(f"\nDashboard: {url}/ui/login#token={token}", bold=True)  # "#": no server sees it
    typer.secho("\nUse the CLI against this control plane:", bold=True)
    for line in (
        f"export RRM_URL={url} RRM_TOKEN={token}",
        "rrm get runtimes",
        "rrm describe runtime prod-eu",
        f"rrm describe environment {LOCAL_ENVIRONMENT}",
        "rrm label runtime dev-1 env=prod      # the binding reaches dev-1 within seconds",
        f"rrm apply -f {data_dir / 'logging-binding.yaml'}",
    ):
        typer.echo(f"  {line}")


def run_fleet(data_dir: Path, port: int, once: bool) -> None:
    url = f"http://127.0.0.1:{port}"
    server: Process | None = None
    agents: dict[str, Process] = {}
    try:
        server = start(
            "the control plane",
            ["server", "--port", str(port), "--data-dir", str(data_dir / "control-plane")],
            data_dir / "control-plane.log",
        )
        token = wait_for_control_plane(server, url, data_dir / "control-plane" / "admin-token")
        api = AdminClient(url, token)
        for name, labels in RUNTIMES.items():
            pairing = api.register_runtime(name, "selfhosted", labels, token_ttl_seconds=600)
            (data_dir / name / "components").mkdir(parents=True, exist_ok=True)
            args = [
                "agent",
                "--director",
                url,
                "--token",
                pairing["pairing_token"],
                "--state-dir",
                str(data_dir / name / "state"),
                "--target",
                "selfhosted",
                "--resources-path",
                str(data_dir / name / "components"),
                "--heartbeat-interval",
                "2",
            ]
            agents[name] = start(f"the agent of {name}", args, data_dir / name / "agent.log")
        manifest = example_manifest()
        (data_dir / "logging-binding.yaml").write_text(manifest)
        applied = api.apply(parse_documents(manifest, EXAMPLE_MANIFEST), dry_run=False, strict=False)
        for result in applied["results"]:
            typer.echo(result_line(result))
        runtimes = wait_for_fleet(api, server, agents)
        show(runtimes_table(runtimes))
        show_files(data_dir)
        environment = provision_local(api, server)
        show_environment(environment, api.get_runtime(LOCAL_ENVIRONMENT))
        show_usage(url, token, data_dir)
        if once:
            return
        typer.echo(f"\nRunning; data and logs in {data_dir}. Press Ctrl-C (or send SIGTERM) to stop.")
        server.popen.wait()
        raise DemoError(f"the control plane exited with code {server.popen.returncode}", [server.log_path])
    except (ApiError, ControlPlaneUnreachable) as exc:
        raise DemoError(str(exc), [data_dir / "control-plane.log"]) from None
    finally:
        with signals_handled(signal.SIG_IGN):  # a second signal must not cut the stopping short
            stop(list(agents.values()))  # before the control plane, so their last report still lands
            stop([server] if server else [])


def run_demo(once: bool, port: int | None, data_dir: Path | None) -> int:
    """0 after Ctrl-C, SIGTERM, SIGHUP or `--once`; 1 with the reason and the relevant log's tail when
    anything failed."""
    directory = (data_dir or Path(tempfile.mkdtemp(prefix="rrm-demo-"))).resolve()
    if (directory / "control-plane").exists():
        typer.echo(f"error: {directory} already holds a demo; pass a new --data-dir", err=True)
        return 1
    directory.mkdir(parents=True, exist_ok=True)
    try:
        with signals_handled(stop_requested):
            run_fleet(directory, port or free_port(), once)
    except DemoError as exc:
        typer.echo(f"error: {exc}", err=True)
        for log in exc.logs:
            typer.echo(f"\n--- last lines of {log}\n{tail(log)}", err=True)
        return 1
    except KeyboardInterrupt:
        typer.echo("\nstopped")
    return 0
