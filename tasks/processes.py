"""Start a process, wait until it answers, stop it and whatever it started.

(Interim version for the command's temporary server; to be merged with the shared helper.)
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

PR_SET_PDEATHSIG = 1
OFFLINE_PREFECT_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "NO_GCE_CHECK": "true",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def offline_prefect_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, **OFFLINE_PREFECT_ENV}
    env.update(extra or {})
    return env


def http_ready(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    return check


def _die_with_parent(sig: int, parent: int) -> Callable[[], None]:
    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was set
            os._exit(1)

    return preexec


class ManagedProcess:
    def __init__(
        self,
        name: str,
        args: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        parent_death_signal: int | None = None,
    ) -> None:
        self.name, self.args, self.env, self.log_path = name, list(args), dict(env), log_path
        self.parent_death_signal = parent_death_signal
        self.popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> ManagedProcess:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        preexec = (
            None
            if self.parent_death_signal is None
            else _die_with_parent(self.parent_death_signal, os.getpid())
        )
        self.popen = subprocess.Popen(
            self.args, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=preexec,
        )  # fmt: skip
        return self

    def wait_until(self, ready: Callable[[], bool], timeout: float) -> None:
        assert self.popen is not None
        deadline = time.monotonic() + timeout
        while not ready():
            if self.popen.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited ({self.popen.returncode}) before it was ready; "
                    f"see {self.log_path}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"{self.name} not ready after {timeout:.0f} s; {self.log_path}")
            time.sleep(0.2)

    def stop(self, grace: float = 10.0) -> None:
        if self.popen is not None and self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)  # its own session: pgid == pid
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
