"""A temporary Prefect server for one command, that ends with the command, however it ends.

Without PREFECT_API_URL, Prefect itself starts a temporary server subprocess for a flow run in
this process, and stops it at exit; but a command killed with SIGKILL left that server running
(three kills left three `uvicorn ... create_app` processes behind, each using CPU). The command
therefore starts the same server itself (the uvicorn app Prefect's ephemeral mode runs, SQLite
under PREFECT_HOME) with the kernel's parent-death signal set, so Linux stops it when the
command dies for any reason, and points PREFECT_API_URL at it for the run.
"""

from __future__ import annotations

import signal
from pathlib import Path

from tasks.processes import (
    ManagedProcess,
    free_port,
    http_ready,
    offline_prefect_env,
    temporary_server_command,
)

START_TIMEOUT_SECONDS = 180.0


class TemporaryPrefectServer:
    """`start()` returns at once (the caller can import Prefect meanwhile); `wait_ready()`
    blocks until the API answers; `stop()` ends it."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.process = ManagedProcess(
            name="prefect-server",
            args=temporary_server_command(self.port),
            env=offline_prefect_env(
                # As Prefect's own temporary server: no UI to serve, ephemeral settings.
                {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1"}
            ),
            log_path=log_dir / f"objectron-wds-server-{self.port}.log",
            # The kernel stops the server when this process dies, even by SIGKILL.
            parent_death_signal=signal.SIGTERM,
        )  # fmt: skip

    def start(self) -> TemporaryPrefectServer:
        self.process.start()
        return self

    def wait_ready(self) -> None:
        self.process.wait_until(http_ready(f"{self.api_url}/health"), START_TIMEOUT_SECONDS)

    def stop(self) -> None:
        self.process.stop()
