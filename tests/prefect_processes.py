"""Start and stop the real processes the deployment tests need: a Prefect server, Prefect
workers, a Dask scheduler and worker, and CLI commands against them.

The processes are tasks.processes' (a session of its own each, stopped through its process
group id: SIGTERM, then SIGKILL after a grace period, so the children it started, a worker's
flow-run processes, the server's services, stop with it), with the settings these tests use.
Fixtures call `stop()` in `finally` blocks, so this also happens when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tasks import processes
from tasks.processes import started

__all__ = [
    "BIN", "OFFLINE_ENV", "ROOT", "ManagedProcess", "PrefectServer", "process_env",
    "run_command", "started",
]  # fmt: skip

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the project's .venv/bin

# Settings every process gets: offline, quiet, quick polling.
OFFLINE_ENV = {
    **processes.PREFECT_OFFLINE_ENV,
    "PREFECT_WORKER_QUERY_SECONDS": "2",
    "PREFECT_WORKER_PREFETCH_SECONDS": "5",
    "PREFECT_CLI_COLORS": "false",
    "PREFECT_CLI_WRAP_LINES": "false",
    "PYTHONUNBUFFERED": "1",
}


def process_env(home: Path, api_url: str | None, extra: Mapping[str, str] = ()) -> dict[str, str]:
    """This process's environment without any PREFECT_* setting of its own, plus a private
    PREFECT_HOME, the API URL (None for the server itself) and the offline settings."""
    return processes.prefect_env(home, api_url, {**OFFLINE_ENV, **dict(extra)})


@dataclass
class ManagedProcess(processes.ManagedProcess):
    """tasks.processes.ManagedProcess run from the project root, stopped with two SIGTERMs (a
    Prefect worker running a flow needs the second) and 15 s of grace before SIGKILL."""

    cwd: Path | None = ROOT
    grace: float = 15.0
    sigterms: int = 2


@dataclass
class PrefectServer(processes.PrefectServer):
    """`prefect server start` on a free loopback port with its own PREFECT_HOME, the UI on, the
    scheduler quick; its log is `logs/server.log`."""

    logs: Path | None = None
    ui: bool = True

    def __post_init__(self) -> None:
        if self.log_path is None and self.logs is not None:
            self.log_path = self.logs / "server.log"
        super().__post_init__()
        self.extra_env = {
            **OFFLINE_ENV,
            # The scheduler fills upcoming runs of new deployments within seconds.
            "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5",
            **self.extra_env,
        }


def run_command(
    args: Sequence[str], env: Mapping[str, str], log: Path, timeout: float = 300.0
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion in its own process group (killed on timeout); output is
    returned and appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        list(args),
        env=dict(env),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        output += f"\n[killed after {timeout:.0f} s]"
    with open(log, "a") as handle:
        handle.write(f"$ {' '.join(args)}\n{output}\n[exit {process.returncode}]\n\n")
    return subprocess.CompletedProcess(list(args), process.returncode, output, "")
