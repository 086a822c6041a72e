"""Start and stop the real processes the deployment tests need: a Prefect server, Prefect
workers, a Dask scheduler and worker, and CLI commands against them.

Each process starts in a session of its own and is stopped through its own process group id,
which equals its PID (SIGTERM, then SIGKILL after a grace period), so the children it started
(a worker's flow-run processes, the server's services) stop with it. Fixtures call `stop()` in
`finally` blocks, so this also happens when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tasks.fake_gcs import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the project's .venv/bin

# Settings every process gets: offline, quiet, quick polling.
OFFLINE_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "NO_GCE_CHECK": "true",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_WORKER_QUERY_SECONDS": "2",
    "PREFECT_WORKER_PREFETCH_SECONDS": "5",
    "PREFECT_CLI_COLORS": "false",
    "PREFECT_CLI_WRAP_LINES": "false",
    "PYTHONUNBUFFERED": "1",
}


def process_env(home: Path, api_url: str | None, extra: Mapping[str, str] = ()) -> dict[str, str]:
    """This process's environment without any PREFECT_* setting of its own, plus a private
    PREFECT_HOME, the API URL (None for the server itself) and the offline settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(OFFLINE_ENV)
    env["PREFECT_HOME"] = str(home)
    if api_url is not None:
        env["PREFECT_API_URL"] = api_url
    env.update(dict(extra))
    return env


@dataclass
class ManagedProcess:
    """A subprocess with its output in a log file, stopped by its process group id."""

    name: str
    args: Sequence[str]
    env: Mapping[str, str]
    log_path: Path
    cwd: Path = ROOT
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                list(self.args),
                env=dict(self.env),
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM to the process group, twice (a Prefect worker running a flow needs a second
        one), then SIGKILL to whatever is left of the group."""
        if self.process is None:
            return
        pgid = self.process.pid  # start_new_session: the group id is the leader's PID
        for attempt in range(2):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            try:
                self.process.wait(timeout=grace / 2 if attempt == 0 else grace / 4)
                break
            except subprocess.TimeoutExpired:
                continue
        # The leader may be gone while children it started still run: clear the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        self.process = None


def wait_for_http(url: str, process: ManagedProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.running():
            raise RuntimeError(f"{process.name} exited early:\n{process.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{process.name} did not answer {url} within {timeout:.0f} s")


@dataclass
class PrefectServer:
    """`prefect server start` on a free loopback port with its own PREFECT_HOME."""

    home: Path
    logs: Path
    port: int = 0
    process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    def start(self, timeout: float = 180.0) -> PrefectServer:
        self.port = self.port or free_port()
        env = process_env(
            self.home,
            None,
            {
                # The scheduler fills upcoming runs of new deployments within seconds.
                "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5",
                "PREFECT_UI_ENABLED": "true",
                # The UI's own API address (its default is port 4200).
                "PREFECT_UI_API_URL": self.api_url,
            },
        )
        args = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1"]
        self.process = ManagedProcess(
            "prefect server", [*args, "--port", str(self.port)], env, self.logs / "server.log"
        ).start()
        wait_for_http(f"{self.api_url}/health", self.process, timeout)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


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


@contextlib.contextmanager
def started(*processes: ManagedProcess) -> Iterator[tuple[ManagedProcess, ...]]:
    """Start the processes in order; stop them all (in reverse) however the block ends."""
    begun: list[ManagedProcess] = []
    try:
        for process in processes:
            begun.append(process.start())
        yield processes
    finally:
        for process in reversed(begun):
            process.stop()
