"""The operator's reload hook (e.g. `kill -HUP $(pidof daprd)`) for sidecars without hot reload."""

from __future__ import annotations

import logging
import os
import signal
import subprocess

from rrm.wire.protocol import ReloadResult

log = logging.getLogger(__name__)

RELOAD_TIMEOUT_SECONDS = 60.0
OUTPUT_TAIL_BYTES = 2048


def run_reload_command(command: str, timeout: float = RELOAD_TIMEOUT_SECONDS) -> ReloadResult:
    """Run `command` through the shell once; keep its exit code and the tail of its combined output.

    It runs in its own process group so a timeout kills everything it started, not just the shell.
    """
    try:
        process = subprocess.Popen(
            command, shell=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
    except OSError as exc:
        return ReloadResult(command=command, exit_code=-1, output=f"could not start: {exc}")
    with process:
        try:
            output, _ = process.communicate(timeout=timeout)
            exit_code = process.returncode
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            output += f"\n[rrm: killed after {timeout:g} s]".encode()
            exit_code = -1
    log.info("event=reload-command exit_code=%d", exit_code)
    return ReloadResult(
        command=command, exit_code=exit_code, output=output[-OUTPUT_TAIL_BYTES:].decode(errors="replace")
    )
