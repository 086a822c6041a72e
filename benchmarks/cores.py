"""Cores: the frame worker processes (tasks/frames/shard.py, tasks/worker_pool.py), before and
after, side by side in one invocation.

    .venv/bin/python benchmarks/cores.py            # full: 1440x1920 videos, ~15-20 min on 2 cores
    .venv/bin/python benchmarks/cores.py --quick    # tiny videos, one repetition (~3 min)

"Before" is OBJECTRON_WDS_FRAME_PROCESSES=0: the same code doing everything in the build thread
of the flow's process (fetch a video, then decode it, serially); "after" is the default (one
frame worker process per CPU, the next video fetched while one decodes). The videos are
benchmarks/frames.py's cached ones (1440x1920 upright stored landscape with a rotation tag,
~20 Mbit/s H.264), each build at image_size 480x640, quality 90, stride 1, every frame
annotated (geometry and annotation from tasks.objectron.sample_data). Sources are buckets on
fake-gcs-server (filesystem backend); destinations local folders (the upload is the same code
before and after, and would only add the emulator's CPU to both). The `objectron-wds frames`
runs talk to one Prefect server started here (uvicorn, as the command's own temporary server),
so no run pays a server start.

1. GIL per frame in the command's process: `py-spy record --gil --format raw --full-filenames
   -r RATE` launches `objectron-wds frames` over one shard of GIL_VIDEOS long videos (direct to
   the emulator). Samples whose stack holds a frame of tasks/build.py, tasks/worker_pool.py or
   tasks/frames/ (shard, video, labels; not the preview the flow draws after the builds) and no
   import frame (importlib._bootstrap: an import inside a task holds the GIL once per process)
   are the build's; samples / RATE / frames = ms of GIL per frame.
   Also given: every GIL sample after imports (Prefect, planning, preview included), and where
   one interpreter's threads would saturate: (CPU per frame of the flow process + its workers,
   measure 4) / (GIL per frame). Cross-check that needs no py-spy: the flow process's own CPU
   per frame during the build (measure 4, /proc/PID/stat and process_time, workers excluded),
   an upper bound of the GIL its build threads hold.
2. Peak RSS: `objectron-wds frames` on a 30- and a 1000-frame video, one build (concurrency 1)
   and two at once (two 1-video shards, --concurrency 2). This script polls /proc every 0.1 s:
   the command's VmHWM (also its ru_maxrss from wait4 when that exceeds this process's own
   VmHWM, which a child started by vfork + exec inherits) and the VmHWM of each child process
   (the frame workers), last value seen. Per build = (command + workers) / builds at once.
3. A shard of LINK_VIDEOS videos through a slow link: a proxy in this process in front of the
   emulator streams every response body at BYTES_PER_SECOND (one token bucket for the link).
   The rate is tuned so fetching a video takes as long as decoding it: bytes of the video /
   (median build seconds of that one video from a local folder, measure 4, before and after).
   The fetch through the link is then timed once (one GET of the video, read in 1 MiB pieces)
   and printed beside the decode time. Time = the build's own `seconds` (its stats.json); the
   command's wall time is given too.
4. Frames per second per core: a fresh process (`--child-build`) builds one video's shard
   from a local folder with tasks.build.build_shard (labels, spool, tar, fsync; a tiny warm-up
   build first, so the worker's start and imports are not counted), timed: wall, the process's
   own CPU (time.process_time) and its frame workers' CPU (/proc/PID/stat before and after);
   against `ffmpeg -i V -vf scale=480:640 -q:v 3 %06d.jpg` (benchmarks/frames.py's run_ffmpeg,
   its CPU from RUSAGE_CHILDREN). frames/s per core = frames / CPU seconds.

Each measure alternates before and after (and ffmpeg) in every repetition, the order rotated per
repetition; a ratio is the median of per-repetition ratios. The machine's 2 cores are shared
with other people's runs: `uptime` is recorded before and after. Everything listens on
127.0.0.1 on free ports; every process started here is stopped by its PID or the process group
it was started in, in `finally` blocks (also on SIGTERM). Exits 0 when every run completed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

if __package__ in (None, ""):  # `python benchmarks/cores.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
COMMAND = BIN / "objectron-wds"
FRAME_VARIABLE = "OBJECTRON_WDS_FRAME_PROCESSES"  # tasks.frames.shard.FRAME_PROCESSES_VARIABLE
MODES = ("before", "after")
BOX = "480x640"
GIL_TARGET_MS = 0.2
RSS_LIMIT_MIB = 400
LINK_TARGET = 0.6
POLL_SECONDS = 0.1
# Stacks holding one of these frames are the build's (py-spy --full-filenames); the preview
# the flow draws after the builds (tasks/frames/preview.py) is not.
BUILD_CODE = tuple(
    str(ROOT / "tasks" / p)
    for p in (
        "build.py",
        "worker_pool.py",
        "frames/shard.py",
        "frames/video.py",
        "frames/labels.py",
    )
)
NOT_BUILD_CODE = str(ROOT / "tasks/frames/preview.py")
IMPORT_MARK = "importlib._bootstrap"
SPEED_BUCKET = "cores-speed"
KEY = "cup/batch-1/{}"


@dataclass(frozen=True)
class CoresConfig:
    frames: int = 270  # the speed videos (GIL, link, per core): ~9 s at 30 fps
    stored_size: tuple[int, int] = (1920, 1440)
    gil_videos: int = 4
    link_videos: int = 10
    rss_frames: tuple[int, ...] = (30, 1000)
    reps: int = 3  # measure 4
    gil_reps: int = 2
    rss_reps: int = 1
    link_reps: int = 2
    spy_rate: int = 250
    warm_frames: int = 10  # the warm-up build's video (480x360)


QUICK = CoresConfig(
    frames=20, stored_size=(480, 360), gil_videos=2, link_videos=10, rss_frames=(10, 40),
    reps=1, gil_reps=1, rss_reps=1, link_reps=1,
)  # fmt: skip


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average: " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def rotated(items: list[str], rep: int) -> list[str]:
    shift = rep % len(items)
    return items[shift:] + items[:shift]


def median(values: list[float]) -> float:
    from benchmarks.common import median as common_median

    return common_median(values)


# --- watching a process tree through /proc ----------------------------------------------------

CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def stat_cpu(pid: int) -> float | None:
    """utime + stime of one process (its own threads), seconds; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def status_kib(pid: int | str, name: str) -> int:
    from benchmarks.common import proc_status_kib

    return proc_status_kib(name, pid)


def child_pids(pid: int) -> list[int]:
    """The processes `pid` started, from every one of its threads (/proc/PID/task/*/children)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found.extend(int(x) for x in (task / "children").read_text().split())
    return found


def describe(pid: int) -> str:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    text = " ".join(a.decode(errors="replace") for a in args if a)
    if "tasks.frames.frame_worker" in text:
        return "frame worker"
    if "tasks.objectron.decode_worker" in text:
        return "decode worker"
    return text[:80]


@dataclass
class Seen:
    """One process's last readings: CPU seconds (own threads) and peak RSS (VmHWM)."""

    pid: int
    what: str
    cpu: float = 0.0
    hwm_kib: int = 0

    def read(self) -> bool:
        cpu = stat_cpu(self.pid)
        hwm = status_kib(self.pid, "VmHWM")
        if cpu is None or not hwm:
            return False
        self.cpu, self.hwm_kib = cpu, max(self.hwm_kib, hwm)
        return True


@dataclass
class Run:
    """What one command run gave: its summary, wall time, the command's and its children's
    last readings."""

    returncode: int
    seconds: float
    summary: dict[str, Any]
    flow: Seen | None
    children: list[Seen]
    rusage_cpu: float | None = None
    rusage_maxrss_kib: int | None = None
    stderr_tail: str = ""

    def workers(self) -> list[Seen]:
        return [c for c in self.children if c.what == "frame worker"]


def run_watched(
    args: list[str], env: dict[str, str], folder: Path, *, via_spy: bool = False,
    timeout: float = 1800,
) -> Run:  # fmt: skip
    """Start `args` in a process group of its own, poll the command's process (with py-spy in
    front: py-spy's child) and its children every POLL_SECONDS until it exits; stop the group
    if it is still there at the end (timeout, an error, SIGTERM)."""
    folder.mkdir(parents=True, exist_ok=True)
    out_path, err_path = folder / "stdout.txt", folder / "stderr.txt"
    # The child's ru_maxrss starts from this process's peak (vfork + exec): only above it is
    # it the command's own.
    inherited_kib = status_kib("self", "VmHWM")
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        process = subprocess.Popen(
            args, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=folder,
        )  # fmt: skip
    started = time.perf_counter()
    flow: Seen | None = None
    children: dict[int, Seen] = {}
    rusage: Any = None
    status = 0
    try:
        while True:
            pid, status, rusage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - started > timeout:
                raise TimeoutError(f"{args[0]} ran over {timeout:.0f} s")
            if flow is None:
                flow_pid = process.pid
                if via_spy:
                    spied = child_pids(process.pid)
                    flow_pid = spied[0] if spied else 0
                if flow_pid:
                    flow = Seen(flow_pid, "command")
            if flow is not None:
                flow.read()
                for child in child_pids(flow.pid):
                    if child not in children:
                        children[child] = Seen(child, describe(child))
                for seen in children.values():
                    seen.read()
            time.sleep(POLL_SECONDS)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        # Anything the command left in its group (it should have stopped its workers).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    text = out_path.read_text(errors="replace")
    summary: dict[str, Any] = {}
    start = text.find("{")
    if start >= 0:
        with contextlib.suppress(ValueError):
            summary = json.JSONDecoder().raw_decode(text[start:])[0]
    run = Run(
        returncode=process.returncode or 0, seconds=seconds, summary=summary, flow=flow,
        children=list(children.values()),
        stderr_tail=err_path.read_text(errors="replace")[-2000:],
    )  # fmt: skip
    if not via_spy and rusage is not None:
        # wait4: the command and the children it waited for (its frame workers, at exit).
        run.rusage_cpu = rusage.ru_utime + rusage.ru_stime
        if rusage.ru_maxrss > inherited_kib:
            run.rusage_maxrss_kib = int(rusage.ru_maxrss)
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} ... exited {run.returncode}: {run.stderr_tail}")
    return run


# --- a slow link -----------------------------------------------------------------------------

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}
LINK_PIECE = 64 * 1024


class Link:
    """One token bucket: the bytes of every response share `rate` bytes per second."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self._lock = threading.Lock()
        self._free_at = 0.0
        self.bytes = 0

    def take(self, size: int) -> None:
        with self._lock:
            self.bytes += size
            if not self.rate:
                return
            now = time.monotonic()
            self._free_at = max(now, self._free_at) + size / self.rate
            wait = self._free_at - now
        if wait > 0:
            time.sleep(wait)


class SlowLinkProxy:
    """An HTTP proxy on 127.0.0.1 in front of the emulator whose response bodies go out at the
    link's rate, in LINK_PIECE pieces (JSON bodies, small, have the emulator's address turned
    into the proxy's, as tests/fault_proxy.py does). Runs in a thread of this process."""

    def __init__(self, upstream: str, link: Link) -> None:
        parts = urlsplit(upstream)
        self.host, self.upstream_port = parts.hostname or "127.0.0.1", parts.port or 80
        self.link = link
        self.requests = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> SlowLinkProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self
        theirs = f"{self.host}:{self.upstream_port}"

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _handle(self) -> None:
                proxy.requests += 1
                ours = f"127.0.0.1:{proxy.port}"
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                upstream = http.client.HTTPConnection(proxy.host, proxy.upstream_port, timeout=120)
                try:
                    headers = {
                        k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP
                    }
                    headers["Host"] = theirs
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    declared = response.getheader("Content-Length")
                    kind = response.getheader("Content-Type") or ""
                    self.send_response(response.status)
                    for name, value in response.getheaders():
                        if name.lower() in _HOP_BY_HOP or name.lower() == "content-length":
                            continue
                        self.send_header(name, value.replace(theirs, ours))
                    if self.command == "HEAD":
                        self.send_header("Content-Length", declared or "0")
                        self.end_headers()
                        return
                    if declared is None or "json" in kind:
                        data = response.read().replace(theirs.encode(), ours.encode())
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        for at in range(0, len(data), LINK_PIECE):
                            proxy.link.take(len(data[at : at + LINK_PIECE]))
                            self.wfile.write(data[at : at + LINK_PIECE])
                        return
                    self.send_header("Content-Length", declared)
                    self.end_headers()
                    while piece := response.read(LINK_PIECE):
                        proxy.link.take(len(piece))
                        self.wfile.write(piece)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
                finally:
                    upstream.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

        return Handler


def timed_fetch(base_url: str, bucket: str, name: str) -> tuple[float, int]:
    """Seconds and bytes of one GET of an object's media through `base_url`, read in 1 MiB
    pieces (as the build reads a video)."""
    url = f"{base_url}/download/storage/v1/b/{bucket}/o/{quote(name, safe='')}?alt=media"
    started = time.perf_counter()
    total = 0
    with urllib.request.urlopen(url, timeout=600) as response:
        while piece := response.read(1024 * 1024):
            total += len(piece)
    return time.perf_counter() - started, total


# --- the set-up --------------------------------------------------------------------------------


@dataclass
class Setup:
    config: CoresConfig
    work: Path
    cache: Path
    emulator: str = ""
    api_url: str = ""
    videos: dict[int, Path] = field(default_factory=dict)  # frames -> cached video
    local_sources: dict[str, Path] = field(default_factory=dict)  # "speed", "warm" -> folder
    runs: int = 0

    def env(self, mode: str, storage_url: str) -> dict[str, str]:
        """The command's environment: this server, the storage, the mode's frame processes."""
        from tasks.processes import prefect_env

        self.runs += 1
        env = prefect_env(
            self.work / "client-home", self.api_url,
            {"STORAGE_EMULATOR_HOST": storage_url, "OBJECTRON_WDS_HOST": f"cores-{self.runs}"},
        )  # fmt: skip
        env.pop(FRAME_VARIABLE, None)
        if mode == "before":
            env[FRAME_VARIABLE] = "0"
        return env

    def frames_args(self, bucket: str, dest: Path, *extra: str) -> list[str]:
        return [
            str(COMMAND), "frames", "--source", f"gs://{bucket}", "--dest", str(dest),
            "--image-size", BOX, "--concurrency-limit", "none", "--no-progress", "--json",
            *extra,
        ]  # fmt: skip


def write_bucket(bucket: str, video: Path, count: int, frames: int) -> None:
    """`count` annotated videos (the same cached bytes under keys cup/batch-1/0..), with
    geometry and annotation of `frames` frames from the sample data, into `bucket` (through
    the emulator named by STORAGE_EMULATOR_HOST)."""
    from tasks.objectron.sample_data import build_annotation, build_geometry, sample_values
    from tasks.storage import open_storage

    storage = open_storage(f"gs://{bucket}")
    data = video.read_bytes()
    for index in range(count):
        key = KEY.format(index)
        values = sample_values(key, frames=frames)
        storage.create_bytes(f"videos/{key}/video.MOV", data, durable=False)
        storage.create_bytes(f"videos/{key}/geometry.pbdata", build_geometry(values), durable=False)
        storage.create_bytes(f"annotations/{key}.pbdata", build_annotation(values), durable=False)


def prepare(setup: Setup, fake: Any) -> None:
    from benchmarks import frames as frames_bench

    config = setup.config
    started = time.monotonic()
    for frames in (config.frames, *config.rss_frames):
        setup.videos[frames] = frames_bench.ensure_video(setup.cache, frames, config.stored_size)
    warm = frames_bench.ensure_video(setup.cache, config.warm_frames, (480, 360))
    speed = setup.videos[config.frames]
    setup.local_sources["speed"] = frames_bench.source_folder(setup.cache, speed, config.frames)
    setup.local_sources["warm"] = frames_bench.source_folder(setup.cache, warm, config.warm_frames)
    fake.create_bucket(SPEED_BUCKET)
    write_bucket(SPEED_BUCKET, speed, max(config.gil_videos, config.link_videos), config.frames)
    for frames in config.rss_frames:
        fake.create_bucket(f"cores-rss-{frames}")
        write_bucket(f"cores-rss-{frames}", setup.videos[frames], 2, frames)
    names = ", ".join(f"{p.name} ({p.stat().st_size / 1e6:.1f} MB)" for p in setup.videos.values())
    log(f"Set-up: videos {names}; buckets written in {time.monotonic() - started:.0f} s")


# --- 4: frames per second per core ---------------------------------------------------------------


def child_build(source_root: str, warm_root: str, out: str) -> dict[str, Any]:
    """What `--child-build` runs (in a fresh process, the mode's OBJECTRON_WDS_FRAME_PROCESSES
    in its environment): a warm-up build of the tiny video, then the timed build of the
    source folder's one shard with tasks.build.build_shard, as the flow's task calls it."""
    from tasks.build import build_shard
    from tasks.frames.shard import frame_process_ids
    from tasks.listing import list_source_api
    from tasks.planning import plan_shards
    from tasks.samples import assemble_samples
    from tasks.specs import FrameOptions, make_spec
    from tasks.storage.local import LocalStorage

    options = FrameOptions(stride=1, image_size=BOX, jpeg_quality=90, shuffle_seed=0)

    def build(root: str, dest: Path) -> Any:
        source = LocalStorage(Path(root))
        samples = assemble_samples(list_source_api(source), only_with_anno=True).samples
        (plan,) = plan_shards(samples, shard_size=len(samples), shuffle_seed=0, series="frames")
        spec = make_spec(plan, source.url, frames=options)
        dest.mkdir(parents=True, exist_ok=True)
        return build_shard(source, LocalStorage(dest), spec, claimed=True)

    build(warm_root, Path(out) / "warm")
    workers_before = {pid: stat_cpu(pid) or 0.0 for pid in frame_process_ids()}
    own = time.process_time()  # every thread of this process
    started = time.perf_counter()
    stats = build(source_root, Path(out) / "timed")
    seconds = time.perf_counter() - started
    own_cpu = time.process_time() - own
    workers = frame_process_ids()
    worker_cpu = sum((stat_cpu(pid) or 0.0) - workers_before.get(pid, 0.0) for pid in workers)
    return {
        "seconds": seconds,
        "own_cpu": own_cpu,
        "worker_cpu": worker_cpu,
        "cpu_seconds": own_cpu + worker_cpu,
        "frames": stats.samples,
        "workers": len(workers),
        "workers_started_in_the_timed_build": len(set(workers) - set(workers_before)),
        "worker_hwm_kib": [status_kib(pid, "VmHWM") for pid in workers],
        "tar_bytes": stats.tar_bytes,
    }


def run_child_build(setup: Setup, mode: str) -> dict[str, Any]:
    from tasks.processes import offline_prefect_env

    out = Path(tempfile.mkdtemp(prefix="cores-build-", dir=setup.work))
    env = offline_prefect_env({"PREFECT_HOME": str(setup.work / "child-home")})
    env.pop(FRAME_VARIABLE, None)
    if mode == "before":
        env[FRAME_VARIABLE] = "0"
    sources = [str(setup.local_sources["speed"]), str(setup.local_sources["warm"])]
    args = [sys.executable, str(Path(__file__).resolve()), "--child-build", *sources, str(out)]
    process = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=1800)
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        shutil.rmtree(out, ignore_errors=True)
    if process.returncode != 0:
        raise RuntimeError(
            f"--child-build ({mode}) exited {process.returncode}: {stderr[-2000:]!r}"
        )
    measured: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
    return measured


def measure_per_core(setup: Setup) -> dict[str, list[dict[str, Any]]]:
    from benchmarks.frames import run_ffmpeg

    config = setup.config
    video = setup.videos[config.frames]
    results: dict[str, list[dict[str, Any]]] = {"ffmpeg": [], "before": [], "after": []}
    for rep in range(config.reps):
        for kind in rotated(list(results), rep):
            if kind == "ffmpeg":
                out = Path(tempfile.mkdtemp(prefix="cores-ffmpeg-", dir=setup.work))
                try:
                    measured = run_ffmpeg(video, out, scaled=True)
                finally:
                    shutil.rmtree(out, ignore_errors=True)
            else:
                measured = run_child_build(setup, kind)
            measured["fps"] = measured["frames"] / measured["seconds"]
            measured["cpu_ms_per_frame"] = measured["cpu_seconds"] / measured["frames"] * 1000
            results[kind].append(measured)
            log(f"  4 rep {rep + 1} {kind:6}: {measured['fps']:5.1f} frames/s, "
                f"{measured['seconds']:5.2f} s, {measured['cpu_ms_per_frame']:5.1f} ms CPU/frame"
                + (f" (own {measured['own_cpu'] / measured['frames'] * 1000:.2f}, workers "
                   f"{measured['worker_cpu'] / measured['frames'] * 1000:.2f})"
                   if kind != "ffmpeg" else ""))  # fmt: skip
    return results


# --- 1: the GIL ------------------------------------------------------------------------------


def read_gil_profile(path: Path) -> dict[str, Any]:
    """Counts of py-spy's raw output (`stack count` lines): all samples, the imports', the
    build's after imports, and the build's top GIL holders (innermost frame)."""
    total = imports = build = 0
    holders: Counter[str] = Counter()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    site = f"{Path(sys.prefix)}/lib/python{version}/site-packages/"
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        if IMPORT_MARK in stack:
            imports += count
            continue
        if NOT_BUILD_CODE not in stack and any(marker in stack for marker in BUILD_CODE):
            build += count
            frames = stack.split(";")
            ours = [f for f in frames if f"{ROOT}/tasks/" in f]
            leaf = frames[-1].split(" (", 1)[0]
            where = ours[-1].replace(f"{ROOT}/", "").replace(site, "") if ours else frames[-1]
            holders[where if frames[-1] in ours else f"{where} > {leaf}"] += count
    return {"total": total, "imports": imports, "build": build,
            "after_imports": total - imports, "holders": holders.most_common(8)}  # fmt: skip


def measure_gil(setup: Setup) -> dict[str, list[dict[str, Any]]]:
    config = setup.config
    spy = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
    if spy is None:
        raise RuntimeError(
            "py-spy is not installed (uv pip install --python .venv/bin/python py-spy)"
        )
    results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    for rep in range(config.gil_reps):
        for mode in rotated(list(MODES), rep):
            folder = setup.work / f"gil-{mode}-{rep}"
            dest = folder / "dest"
            raw = folder / "py-spy.txt"
            folder.mkdir(parents=True, exist_ok=True)
            args = [spy, "record", "--gil", "-r", str(config.spy_rate), "--format", "raw",
                    "--full-filenames", "-o", str(raw), "--",
                    *setup.frames_args(SPEED_BUCKET, dest, "--videos-per-shard",
                                       str(config.gil_videos), "--max-shards", "1",
                                       "--concurrency", "1")]  # fmt: skip
            run = run_watched(args, setup.env(mode, setup.emulator), folder, via_spy=True)
            counts = read_gil_profile(raw)
            frames = int(run.summary.get("samples", 0))
            tick_ms = 1000 / config.spy_rate
            measured = {
                **counts,
                "frames": frames,
                "seconds": run.seconds,
                "build_ms_per_frame": counts["build"] * tick_ms / frames,
                "all_ms_per_frame": counts["after_imports"] * tick_ms / frames,
                "spy_lagging": "behind" in run.stderr_tail,
                "spy_errors": _spy_errors(run.stderr_tail + (folder / "stdout.txt").read_text()),
            }
            results[mode].append(measured)
            shutil.rmtree(dest, ignore_errors=True)
            log(f"  1 rep {rep + 1} {mode:6}: {frames} frames, {run.seconds:5.1f} s, GIL samples "
                f"build {counts['build']} ({measured['build_ms_per_frame']:.3f} ms/frame), "
                f"after imports {counts['after_imports']} "
                f"({measured['all_ms_per_frame']:.3f} ms/frame), imports {counts['imports']}; "
                f"top: {counts['holders'][:3]}")  # fmt: skip
    return results


def _spy_errors(text: str) -> int:
    for line in text.splitlines():
        if "Samples:" in line and "Errors:" in line:
            with contextlib.suppress(ValueError, IndexError):
                return int(line.rsplit("Errors:", 1)[1].split()[0])
    return -1


# --- 2: peak RSS -----------------------------------------------------------------------------


def measure_rss(setup: Setup) -> dict[str, dict[str, Any]]:
    config = setup.config
    results: dict[str, dict[str, Any]] = {}
    order = [(frames, builds) for frames in config.rss_frames for builds in (1, 2)]
    for rep in range(config.rss_reps):
        for index, (frames, builds) in enumerate(order):
            for mode in rotated(list(MODES), rep + index):
                folder = setup.work / f"rss-{frames}-{builds}-{mode}-{rep}"
                dest = folder / "dest"
                extra = ["--videos-per-shard", "1", "--concurrency", str(builds)]
                if builds == 1:
                    extra += ["--max-shards", "1"]
                run = run_watched(setup.frames_args(f"cores-rss-{frames}", dest, *extra),
                                  setup.env(mode, setup.emulator), folder)  # fmt: skip
                assert run.flow is not None
                flow_kib = max(run.flow.hwm_kib, run.rusage_maxrss_kib or 0)
                workers = [w.hwm_kib for w in run.workers()]
                total_kib = flow_kib + sum(workers)
                key = f"{frames} {builds} {mode}"
                measured: dict[str, Any] = {
                    "frames": int(run.summary.get("samples", 0)),
                    "builds": builds,
                    "flow_mib": flow_kib / 1024,
                    "flow_polled_mib": run.flow.hwm_kib / 1024,
                    "flow_rusage_mib": (run.rusage_maxrss_kib or 0) / 1024,
                    "workers_mib": [w / 1024 for w in workers],
                    "other_children": [c.what for c in run.children if c.what != "frame worker"],
                    "total_mib": total_kib / 1024,
                    "per_build_mib": total_kib / 1024 / builds,
                    "seconds": run.seconds,
                }
                previous = results.get(key)
                if previous is None or measured["total_mib"] > previous["total_mib"]:
                    results[key] = measured
                shutil.rmtree(dest, ignore_errors=True)
                log(f"  2 {frames:4}-frame x{builds} {mode:6}: command {measured['flow_mib']:.0f} "
                    f"MiB + workers {[round(w / 1024) for w in workers]} = "
                    f"{measured['total_mib']:.0f} MiB ({measured['per_build_mib']:.0f} per build), "
                    f"{measured['frames']} frames, {run.seconds:.1f} s")  # fmt: skip
    return results


# --- 3: a slow link --------------------------------------------------------------------------


def measure_link(setup: Setup, decode_seconds: float) -> dict[str, Any]:
    config = setup.config
    video = setup.videos[config.frames]
    size = video.stat().st_size
    rate = size / decode_seconds
    link = Link(rate)
    proxy = SlowLinkProxy(setup.emulator, link).start()
    results: dict[str, Any] = {"rate": rate, "decode_seconds": decode_seconds, "video_bytes": size}
    try:
        fetch_seconds, fetched = timed_fetch(
            proxy.url, SPEED_BUCKET, f"videos/{KEY.format(0)}/video.MOV"
        )
        assert fetched == size, (fetched, size)
        results["fetch_seconds"] = fetch_seconds
        log(f"  3 link {rate / 1e6:.2f} MB/s: a {size / 1e6:.1f} MB video fetches in "
            f"{fetch_seconds:.2f} s; decoding it took {decode_seconds:.2f} s (4)")  # fmt: skip
        runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
        for rep in range(config.link_reps):
            for mode in rotated(list(MODES), rep):
                folder = setup.work / f"link-{mode}-{rep}"
                dest = folder / "dest"
                sent = link.bytes
                run = run_watched(
                    setup.frames_args(SPEED_BUCKET, dest, "--videos-per-shard",
                                      str(config.link_videos), "--max-shards", "1",
                                      "--concurrency", "1"),
                    setup.env(mode, proxy.url), folder,
                )  # fmt: skip
                stats = json.loads((dest / "objectron-frames-000000.stats.json").read_text())
                measured = {
                    "build_seconds": float(stats["seconds"]),
                    "command_seconds": run.seconds,
                    "frames": int(run.summary.get("samples", 0)),
                    "link_mb": (link.bytes - sent) / 1e6,
                    "cpu_seconds": run.rusage_cpu,
                }
                runs[mode].append(measured)
                shutil.rmtree(dest, ignore_errors=True)
                log(f"  3 rep {rep + 1} {mode:6}: build {measured['build_seconds']:.1f} s, "
                    f"command {run.seconds:.1f} s, {measured['frames']} frames, "
                    f"{measured['link_mb']:.0f} MB through the link")  # fmt: skip
        results["runs"] = runs
    finally:
        proxy.stop()
    return results


# --- the table -------------------------------------------------------------------------------


def yes(condition: bool) -> str:
    return "yes" if condition else "NO"


def spread(values: list[float], fmt: str = "{:.2f}") -> str:
    """The median, and each value when there are several: `1.23 (1.20 / 1.30)`."""
    middle = fmt.format(median(values))
    return middle if len(values) < 2 else f"{middle} ({' / '.join(fmt.format(v) for v in values)})"


def make_rows(measured: dict[str, Any]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    per_core = measured["per_core"]
    gil = measured["gil"]
    cpu_ms = {mode: median([m["cpu_ms_per_frame"] for m in per_core[mode]]) for mode in MODES}
    own_ms = {mode: median([m["own_cpu"] / m["frames"] * 1000 for m in per_core[mode]])
              for mode in MODES}  # fmt: skip
    gil_ms = {mode: median([g["build_ms_per_frame"] for g in gil[mode]]) for mode in MODES}
    rate = measured["config"]["spy_rate"]
    frames_1 = gil["after"][0]["frames"]
    floor = 1000 / rate / frames_1  # one sample
    rows.append((
        "1 GIL", "GIL held by build code in the command's process, ms per frame "
        f"(py-spy --gil -r {rate}, after imports; {frames_1} frames per run)",
        spread([g["build_ms_per_frame"] for g in gil["before"]], "{:.3f}"),
        spread([g["build_ms_per_frame"] for g in gil["after"]], "{:.3f}"),
        f"{gil_ms['after'] / gil_ms['before']:.3f}" if gil_ms["before"] else "",
        f"after < {GIL_TARGET_MS}", yes(gil_ms["after"] < GIL_TARGET_MS),
    ))  # fmt: skip
    rows.append((
        "1 GIL all", "every GIL sample of the command after imports (Prefect, planning, "
        "preview included), ms per frame",
        spread([g["all_ms_per_frame"] for g in gil["before"]], "{:.3f}"),
        spread([g["all_ms_per_frame"] for g in gil["after"]], "{:.3f}"),
        "", "report", "",
    ))  # fmt: skip

    def top(mode: str) -> str:
        merged: Counter[str] = Counter()
        for g in gil[mode]:
            merged.update(dict(g["holders"]))
        return "; ".join(f"{name}: {count}" for name, count in merged.most_common(3)) or "none"

    rows.append(("1 holders", "the build's top GIL holders (innermost project frame > the "
                 "function holding it: samples, all runs)", top("before"), top("after"), "",
                 "report", ""))  # fmt: skip

    def cores(mode: str) -> str:
        if gil_ms[mode] <= 0:
            return f"> {cpu_ms[mode] / floor:.0f} (no sample; one is {floor:.3f} ms/frame)"
        return f"{cpu_ms[mode] / gil_ms[mode]:.0f}"

    rows.append((
        "1 cores", "cores at which one interpreter's build threads would saturate its GIL: "
        "CPU per frame of command + workers (4) / GIL per frame (1)",
        f"{cores('before')} ({cpu_ms['before']:.1f} / {gil_ms['before']:.3f})",
        f"{cores('after')} ({cpu_ms['after']:.1f} / {gil_ms['after']:.3f})", "", "report", "",
    ))  # fmt: skip
    rows.append((
        "1 own CPU", "the build process's own CPU per frame during a build, workers excluded "
        "(4; no py-spy: an upper bound of its GIL)",
        spread([m["own_cpu"] / m["frames"] * 1000 for m in per_core["before"]]),
        spread([m["own_cpu"] / m["frames"] * 1000 for m in per_core["after"]]),
        f"{own_ms['after'] / own_ms['before']:.3f}", "report", "",
    ))  # fmt: skip

    rss = measured["rss"]
    lengths = measured["config"]["rss_frames"]
    for builds in (1, 2):
        for frames in lengths:
            cells = []
            worst = 0.0
            for mode in MODES:
                m = rss[f"{frames} {builds} {mode}"]
                workers = " + ".join(f"{w:.0f}" for w in m["workers_mib"])
                cells.append(
                    f"{m['total_mib']:.0f} MiB = command {m['flow_mib']:.0f}"
                    + (f" + workers {workers}" if workers else "")
                    + (f"; {m['per_build_mib']:.0f} per build" if builds > 1 else "")
                )
                worst = max(worst, m["per_build_mib"])
            first = lengths[0]
            flat = [rss[f"{frames} {builds} {mode}"]["total_mib"]
                    / rss[f"{first} {builds} {mode}"]["total_mib"] for mode in MODES]  # fmt: skip
            rows.append((
                f"2 rss {frames} x{builds}",
                f"peak RSS (VmHWM), {frames}-frame video, {builds} build{'s' if builds > 1 else ''}"
                " at once: the command + each frame worker",
                *cells,
                f"{flat[0]:.2f}x / {flat[1]:.2f}x the {first}-frame run's" if frames != first
                else "", f"< {RSS_LIMIT_MIB} MiB per build", yes(worst < RSS_LIMIT_MIB),
            ))  # fmt: skip

    link = measured["link"]
    runs = link["runs"]
    build = {mode: [r["build_seconds"] for r in runs[mode]] for mode in MODES}
    command = {mode: [r["command_seconds"] for r in runs[mode]] for mode in MODES}
    ratios = [a / b for a, b in zip(build["after"], build["before"], strict=True)]
    command_ratios = [a / b for a, b in zip(command["after"], command["before"], strict=True)]
    videos = measured["config"]["link_videos"]
    rows.append((
        "3 link", f"one shard of {videos} videos through a {link['rate'] / 1e6:.2f} MB/s link "
        f"(a video: fetch {link['fetch_seconds']:.1f} s, decode {link['decode_seconds']:.1f} s): "
        "the build's seconds (stats.json)",
        spread(build["before"], "{:.1f}") + " s", spread(build["after"], "{:.1f}") + " s",
        spread(ratios), f"<= {LINK_TARGET}", yes(median(ratios) <= LINK_TARGET),
    ))  # fmt: skip
    rows.append((
        "3 command", "the same runs: the command's wall time (start-up, planning, index and "
        "preview included)", spread(command["before"], "{:.1f}") + " s",
        spread(command["after"], "{:.1f}") + " s", spread(command_ratios), "report", "",
    ))  # fmt: skip

    ffmpeg = per_core["ffmpeg"]
    ff_cpu = median([m["cpu_ms_per_frame"] for m in ffmpeg])
    ff_fps = median([m["fps"] for m in ffmpeg])

    def core_cell(mode: str) -> str:
        ms = [m["cpu_ms_per_frame"] for m in per_core[mode]]
        fps = [m["fps"] for m in per_core[mode]]
        return (f"{1000 / median(ms):.1f} frames/s per core ({median(ms):.1f} ms CPU/frame), "
                f"{median(fps):.1f} frames/s wall")  # fmt: skip

    rows.append((
        "4 per core", f"frames/s per core, one {measured['frames']}-frame video to {BOX} "
        "(build_shard, labels, tar): CPU of the process + its workers",
        core_cell("before"), core_cell("after"),
        f"{cpu_ms['before'] / cpu_ms['after']:.2f}", "report", "",
    ))  # fmt: skip
    pairs = {mode: list(zip(ffmpeg, per_core[mode], strict=True)) for mode in MODES}
    vs = {mode: [f["cpu_ms_per_frame"] / m["cpu_ms_per_frame"] for f, m in pairs[mode]]
          for mode in MODES}  # fmt: skip
    wall = {mode: [m["fps"] / f["fps"] for f, m in pairs[mode]] for mode in MODES}
    rows.append((
        "4 vs ffmpeg", f"the same per core and wall, x `ffmpeg -i V -vf scale=480:640 -q:v 3 "
        f"%06d.jpg` ({1000 / ff_cpu:.1f} frames/s per core, {ff_cpu:.1f} ms CPU/frame, "
        f"{ff_fps:.1f} frames/s wall)",
        f"per core {spread(vs['before'])}; wall {spread(wall['before'])}",
        f"per core {spread(vs['after'])}; wall {spread(wall['after'])}",
        "", "report (1.06x wall, 2026-12-03)", "",
    ))  # fmt: skip
    return rows


def render(rows: list[tuple[str, ...]], workers: int) -> str:
    header = (f"| # | measure | before ({FRAME_VARIABLE}=0) | after (default: {workers} "
              "workers) | after / before | target | met |")  # fmt: skip
    lines = [header, "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def servers(work: Path) -> Iterator[tuple[Any, Any]]:
    """fake-gcs-server (filesystem backend) and a Prefect server, both ending with this script
    (parent-death signal) and stopped by their process groups at the end."""
    from benchmarks.common import PrefectServer
    from tasks.fake_gcs import FakeGcsServer

    fake = FakeGcsServer(
        root=work / "fake-gcs", log_path=work / "fake-gcs.log", parent_death_signal=signal.SIGTERM
    )
    prefect = PrefectServer(home=work / "prefect", uvicorn=True)
    try:
        fake.start()
        prefect.start()
        yield fake, prefect
    finally:
        prefect.stop()
        fake.stop()


def measure_all(config: CoresConfig, work: Path, cache: Path) -> dict[str, Any]:
    setup = Setup(config, work, cache)
    with servers(work) as (fake, prefect):
        setup.emulator, setup.api_url = fake.url, prefect.api_url
        os.environ["STORAGE_EMULATOR_HOST"] = fake.url  # for writing the buckets
        prepare(setup, fake)
        log("4: frames per second per core (and the decode time that tunes the link)")
        per_core = measure_per_core(setup)
        decode_seconds = median([m["seconds"] for mode in MODES for m in per_core[mode]])
        log("1: GIL per frame under py-spy")
        gil = measure_gil(setup)
        log("2: peak RSS")
        rss = measure_rss(setup)
        log("3: a shard through a slow link")
        link = measure_link(setup, decode_seconds)
    return {"config": dataclasses.asdict(config), "frames": config.frames,
            "per_core": per_core, "gil": gil, "rss": rss, "link": link}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child-build"]:
        print(json.dumps(child_build(*argv[1:4])))
        return 0
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny videos, one repetition")
    parser.add_argument("--reps", type=int, help="repetitions of measure 4 (ffmpeg, before, after)")
    parser.add_argument("--gil-reps", type=int, help="repetitions of measure 1")
    parser.add_argument("--link-reps", type=int, help="repetitions of measure 3")
    parser.add_argument("--spy-rate", type=int, help="py-spy samples per second (default 250)")
    parser.add_argument("--cache", type=Path, help="where the videos are kept")
    parser.add_argument("--json", type=Path, help="also write every raw measurement here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    config = QUICK if args.quick else CoresConfig()
    for option, name in (("reps", "reps"), ("gil_reps", "gil_reps"), ("link_reps", "link_reps"),
                         ("spy_rate", "spy_rate")):  # fmt: skip
        if getattr(args, option):
            config = dataclasses.replace(config, **{name: getattr(args, option)})
    from benchmarks.common import machine_facts
    from benchmarks.frames import default_cache

    facts = machine_facts()
    facts["uptime before"] = uptime()
    work = Path(tempfile.mkdtemp(prefix="objectron-wds-cores-"))
    started = time.monotonic()
    log(f"Work folder {work}")
    try:
        measured = measure_all(config, work, args.cache or default_cache())
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    facts["uptime after"] = uptime()
    facts["duration"] = f"{(time.monotonic() - started) / 60:.1f} min"
    facts["command"] = "benchmarks/cores.py " + " ".join(argv)
    print(f"objectron-wds cores benchmark ({'quick' if args.quick else 'full'}): "
          + "; ".join(f"{k} {v}" for k, v in facts.items()))  # fmt: skip
    print()
    print(render(make_rows(measured), os.cpu_count() or 1))
    if args.json:
        args.json.write_text(json.dumps({"facts": facts, **measured}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
