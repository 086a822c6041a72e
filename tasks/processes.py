"""Start a server process, wait until it answers, and stop it with everything it started.

One helper for the emulator (tasks/fake_gcs.py), the tests' servers and workers
(tests/prefect_processes.py) and the benchmarks. What every use needs:

- Output goes to a log file, never to a pipe nobody reads: a process blocks once a full pipe
  stops taking its output (fake-gcs-server does after a few hundred requests).
- The process leads a session (and so a process group) of its own, and is stopped through that
  group: SIGTERM, then SIGKILL after a grace period, so the children it started stop with it.
- A start that fails says why: whether the process exited (and how) or did not get ready in
  time, with the end of its log.
- `parent_death_signal` (Linux) has the kernel signal the process when the one that started it
  dies, even by SIGKILL, so a server started for one command cannot outlive it.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

# A URL that must answer a GET with 2xx, or a function that returns True once the process is
# ready (an OSError it raises counts as "not yet").
Readiness = str | Callable[[], bool]

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

# Prefect without internet (see prefect-notes.md): no telemetry, no GCE metadata probe, and
# time for a temporary server to start on a busy 2-core machine.
PREFECT_OFFLINE_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "NO_GCE_CHECK": "true",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


class ProcessStartError(RuntimeError):
    """A process exited, or did not get ready in time, while it was being started."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_answers(url: str, timeout: float = 5.0) -> bool:
    """Whether a GET of `url` answers with a 2xx status (a refused or reset connection, an
    HTTP error status or a malformed answer: False)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= int(response.status) < 300
    except (OSError, http.client.HTTPException):
        return False


def http_ready(url: str) -> Callable[[], bool]:
    """A readiness check: `url` answers a GET with 2xx."""
    return lambda: http_answers(url)


def _die_with_parent(sig: int, parent_pid: int) -> Callable[[], None]:
    """A `preexec_fn` that asks the kernel for `sig` when the parent dies (PR_SET_PDEATHSIG).

    Everything is looked up here, in the parent: between fork and exec the child may only call
    what needs no import and no lock another thread could hold. The parent can die between the
    fork and the prctl call, before the kernel would signal anything; the child then has a new
    parent already and leaves at once instead of running orphaned.
    """
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    getppid, exit_now = os.getppid, os._exit

    def preexec() -> None:
        if prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            exit_now(126)  # the guarantee asked for cannot be given: do not run without it
        if getppid() != parent_pid:
            exit_now(1)

    return preexec


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal: it exists all the same
        return True
    return True


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-returncode).name}"
        return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


@dataclass
class ManagedProcess:
    """A subprocess with its output appended to `log_path` (a temporary file when None), in a
    session of its own, stopped through its process group.

    `start()` starts it and, with `ready` set, waits up to `ready_timeout` seconds until it is
    ready (or call `wait_until(ready, timeout)` later); a process that exits meanwhile or is
    not ready in time is stopped and a `ProcessStartError` quotes the end of its log.
    `with ManagedProcess(...) as p:` starts it (if not yet started) and stops it however the
    block ends. `stop()` may be called any number of times.

    `parent_death_signal` (Linux only): the signal the kernel sends the process when its parent
    dies, SIGKILL included. The kernel counts the *thread* that started it as the parent: start
    such a process from the main thread or from a thread that lives as long as it should. Only
    the process itself gets the signal, not the children it starts; it must stop those (a
    server that stops on SIGTERM does).

    `sigterms`: how many SIGTERMs `stop()` sends before SIGKILL, spread over the grace period
    (a Prefect worker that is running a flow only leaves on the second). `terminate_group`:
    SIGTERM to the whole group (the default), or False: to the process alone, for one that
    stops its own children in order (a flow run with its decode workers); SIGKILL always goes
    to the whole group.
    """

    name: str
    args: Sequence[str]
    env: Mapping[str, str] | None = None  # None: this process's environment
    log_path: Path | None = None
    cwd: Path | None = None
    ready: Readiness | None = None
    ready_timeout: float = 60.0
    parent_death_signal: int | None = None
    grace: float = 10.0
    sigterms: int = 1
    terminate_group: bool = True
    process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _stopped: bool = field(default=False, init=False, repr=False)

    def start(self) -> Self:
        if self.running():
            raise RuntimeError(f"{self.name} is running already (PID {self.pid})")
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix=f"{self.name.replace(' ', '-')}-", suffix=".log")
            os.close(handle)
            self.log_path = Path(name)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        preexec = None
        if self.parent_death_signal is not None:
            if not sys.platform.startswith("linux"):
                raise RuntimeError("parent_death_signal needs Linux (prctl PR_SET_PDEATHSIG)")
            preexec = _die_with_parent(self.parent_death_signal, os.getpid())
        with open(self.log_path, "ab") as log:
            log.write(f"# {self.name}: {shlex.join(self.args)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                list(self.args),
                env=None if self.env is None else dict(self.env),
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, whose id is its PID
                preexec_fn=preexec,
            )
        self._stopped = False
        if self.ready is not None:
            try:
                self.wait_until(self.ready, self.ready_timeout)
            except BaseException:
                self.stop()  # interrupted (KeyboardInterrupt): nothing is left behind either
                raise
        return self

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.name} has not been started")
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        """Its exit status once it has ended (negative: the signal that killed it)."""
        return None if self.process is None else self.process.poll()

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        """The last `chars` characters of the log (without reading all of a big one)."""
        if self.log_path is None:
            return ""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(max(0, log.seek(0, os.SEEK_END) - chars))
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def wait_until(self, ready: Readiness, timeout: float) -> None:
        """Poll `ready` (quickly at first, then every half second) until it passes. When the
        process exits first or `timeout` seconds pass, stop it (and its group) and raise
        ProcessStartError. For a caller that does other work between start() and ready."""
        try:
            self._wait_until(ready, timeout)
        except ProcessStartError:
            self.stop()
            raise

    def _wait_until(self, ready: Readiness, timeout: float) -> None:
        what = f"answering GET {ready}" if isinstance(ready, str) else "ready"
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            returncode = self.returncode
            if returncode is not None:
                raise ProcessStartError(
                    f"{self.name} {_describe_exit(returncode)} before it was {what}; "
                    f"end of its log {self.log_path}:\n{self.log_tail()}"
                )
            remaining = deadline - time.monotonic()
            if isinstance(ready, str):
                passed = http_answers(ready, timeout=max(0.5, min(5.0, remaining)))
            else:
                try:
                    passed = ready()
                except OSError:
                    passed = False
            if passed:
                return
            if time.monotonic() >= deadline:
                raise ProcessStartError(
                    f"{self.name} (PID {self.pid}) was not {what} within {timeout:.0f} s; "
                    f"end of its log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.5)

    def stop(self, grace: float | None = None) -> None:
        """SIGTERM to the process group, or to the process alone (`sigterms` times, spread
        over `grace` seconds) until the leader and every other member of its group have left,
        then SIGKILL to whatever is left of the group."""
        if self.process is None or self._stopped:
            return
        grace = self.grace if grace is None else grace
        pgid = self.process.pid  # start_new_session: the group id is the leader's PID
        started = time.monotonic()
        empty = False
        for number in range(1, max(1, self.sigterms) + 1):
            with contextlib.suppress(ProcessLookupError):
                if self.terminate_group:
                    os.killpg(pgid, signal.SIGTERM)
                elif self.process.poll() is None:  # not reaped yet, so the PID is still its
                    os.kill(pgid, signal.SIGTERM)
            empty = self._wait_for_group(pgid, started + grace * number / max(1, self.sigterms))
            if empty:
                break
        if not empty:
            # The leader may be gone while children it started still run: clear the group.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        self._stopped = True

    def _wait_for_group(self, pgid: int, until: float) -> bool:
        """Wait until the leader has exited (and is reaped) and no member of its group is left;
        False if that has not happened by `until`."""
        assert self.process is not None
        try:
            self.process.wait(timeout=max(0.0, until - time.monotonic()))
        except subprocess.TimeoutExpired:
            return False
        while _group_exists(pgid):
            if time.monotonic() >= until:
                return False
            time.sleep(0.05)
        return True

    def __enter__(self) -> Self:
        return self if self.running() else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


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


def prefect_env(
    home: Path,
    api_url: str | None = None,
    extra: Mapping[str, str] | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """An environment for a Prefect process: `base` (default: this process's environment)
    without any PREFECT_* setting of its own, so nothing inherited points it at another server
    or database, plus the offline settings, a PREFECT_HOME of its own, the API URL (None for a
    server) and `extra`."""
    source = os.environ if base is None else base
    env = {k: v for k, v in source.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_OFFLINE_ENV)
    env["PYTHONUNBUFFERED"] = "1"  # log lines as they happen
    env["PREFECT_HOME"] = str(home)
    if api_url is not None:
        env["PREFECT_API_URL"] = api_url
    env.update(extra or {})
    return env


def offline_prefect_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment, its PREFECT_* settings included (a person's PREFECT_HOME,
    say), plus the offline settings and `extra`: for a process that acts for this one, such as
    the command's temporary server. `prefect_env` is the one for processes of their own."""
    return {**os.environ, **PREFECT_OFFLINE_ENV, **(extra or {})}


def temporary_server_command(port: int) -> list[str]:
    """The command of Prefect's own temporary server: its API app under uvicorn, on 127.0.0.1
    (the server's environment needs PREFECT__SERVER_EPHEMERAL=1 as well)."""
    import prefect

    return [
        sys.executable, "-m", "uvicorn",
        "--app-dir", str(Path(prefect.__file__).parent.parent),
        "--factory", "prefect.server.api.server:create_app",
        "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "error", "--lifespan", "on",
    ]  # fmt: skip


@dataclass
class PrefectServer:
    """A Prefect server on 127.0.0.1 (a free port unless `port` is set) with a PREFECT_HOME of
    its own (its SQLite database lives there unless `database_url` names another), ready once
    `GET /api/health` answers; output to `log_path` (default `home/server.log`).

    `uvicorn=False` runs `prefect server start` (all services; the UI with `ui=True`).
    `uvicorn=True` runs the API app the way Prefect's own temporary server does
    (`python -m uvicorn --factory prefect.server.api.server:create_app`, in ephemeral mode: no
    UI, only the services a temporary server needs), which skips the command line's start-up.
    """

    home: Path
    log_path: Path | None = None
    port: int = 0
    ui: bool = False
    uvicorn: bool = False
    database_url: str | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict)
    parent_death_signal: int | None = None
    startup_timeout: float = 180.0
    grace: float = 15.0
    process: ManagedProcess | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.log_path is None:
            self.log_path = self.home / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("the Prefect server has not been started")
        return self.process.pid

    def command(self) -> list[str]:
        if self.uvicorn:
            return temporary_server_command(self.port)
        prefect_command = Path(sys.executable).parent / "prefect"
        return [str(prefect_command), "server", "start", "--host", "127.0.0.1",
                "--port", str(self.port)]  # fmt: skip

    def server_env(self) -> dict[str, str]:
        settings = {"PREFECT_UI_ENABLED": "true" if self.ui and not self.uvicorn else "false"}
        if self.ui and not self.uvicorn:
            settings["PREFECT_UI_API_URL"] = self.api_url  # the UI's default is port 4200
        if self.uvicorn:
            # What Prefect's SubprocessASGIServer sets: an ephemeral, final app.
            settings.update({"PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"})
        if self.database_url:
            settings["PREFECT_API_DATABASE_CONNECTION_URL"] = self.database_url
        return prefect_env(self.home, None, {**settings, **self.extra_env})

    def client_env(
        self, home: Path | None = None, extra: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """Environment for a process that should use this server (PREFECT_HOME: `home`, by
        default `home/client` of the server's)."""
        return prefect_env(home or self.home / "client", self.api_url, extra)

    def start(self) -> Self:
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.process = ManagedProcess(
            "prefect server",
            self.command(),
            self.server_env(),
            self.log_path,
            ready=f"{self.api_url}/health",
            ready_timeout=self.startup_timeout,
            parent_death_signal=self.parent_death_signal,
            grace=self.grace,
        ).start()
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
