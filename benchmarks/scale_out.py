"""Scale-out: one plan built by 1, 2 and 4 runs at once, through a link with latency.

    .venv/bin/python benchmarks/scale_out.py                  # 40 shards, 2 repetitions
    .venv/bin/python benchmarks/scale_out.py --quick          # 8 shards, one repetition
    .venv/bin/python benchmarks/scale_out.py --latency 0.1    # seconds added to each request
    .venv/bin/python benchmarks/scale_out.py --shards 80 --only cli  # a longer steady state

The same plan (convert, `shard_size` 2, `concurrency` 2, 1 MiB chunks, no build limit; stand-in
video bytes, so no video is decoded; geometry and annotations get their JSON twins, the flow's
default) is built two ways, side by side in one invocation:

(a) N = 1, 2, 4 command-line runs (`python -m flows.cli convert ... --json`) started at the same
    moment on a fresh destination, one shared `prefect server`; they share one machine (one
    PREFECT_HOME, so one local result storage, TMPDIR and OBJECTRON_WDS_HOST, fresh for each
    measurement). Wall time is from the first start to the last exit (each process's start-up,
    listing and planning included); throughput is shards / wall; speed-up is wall(1) / wall(N)
    within a repetition (the median over repetitions is printed). The issue's targets: 2 runs
    >= 1.8x, 4 runs >= 3.4x. Each run's `built` comes from its JSON summary; their sum must be
    the plan.
(b) `parallel_runs` = 1, 2, 4 as deployment runs (`prefect deployment run
    'objectron-to-wds/manual' --param parallel_runs=N ... --watch`) on 4 process workers
    (`--limit 2` each), each worker a "machine" of its own (PREFECT_HOME, TMPDIR,
    OBJECTRON_WDS_HOST), as tests/test_scale_out.py sets them up. Wall time is the command's,
    from its start until it exits on the parent's final state. From the server's records
    (start_time / end_time of the parent and of its child runs, SyncPrefectClient):
      lead      = last child's start - parent's start (the parent's checks, listing, planning,
                  specs and plan file, then the children's wait for a worker and their start)
      planning  = first child's creation - parent's start (the part of `lead` any run pays)
      tail      = parent's end - last child's end (its watch interval, reading the stats
                  the children wrote, the index and the summary)
      overhead per child = (lead + tail) / N
      parent - slowest child = parent's run time - the longest child's run time
      command - parent run = what the deployment run costs around the parent (the command's
                  start, a worker taking the run and starting its process, the watch)
    The shards each run built come from the parent's summary artifact (its own count and one
    line per child); their sum must be the plan.

Beside the wall-clock figures (the headline: what a person waits for), both parts print a
steady-state throughput: shards committed per second while every run that builds is
building. From the server's records of the build task runs of the shards each run built (its
shard table artifact says which), the window runs from the moment the last of those runs
started its first build to the moment the first of them started its last build (it took the
last shard it could claim; from then on it winds down); the shards whose build ended inside
the window (committed: a build task ends after its create-only commit), divided by its length,
is the steady rate. A single run's steady rate is the same figure over its own builds stage
(first build start to last build start), and the steady speed-up is rate(N) / rate(1) within a
repetition. It leaves out what each run pays once (start-up, prepare, finish) and the uneven
end, so it shows how well the builds themselves divide; the window can be short (a few
seconds) when the runs start far apart, which `--shards 80` lengthens. "runs building" says
how many runs built at all (a child that started late may build none).

Where each run's time went comes from the same records: start-up (the process's launch to its
flow run's start; part a only), prepare (to its first build task: checks, listing, planning,
specs; a child reads the plan file), builds (first build task's start to the last one's end)
and finish (index, artifacts). Every run but a fanning-out parent submits a build task for
every shard of the plan: the ones it claimed it builds, the ones another run committed it
confirms (spec, tar header, stats; or from the build task's cache, ~0 s, when the builder's
record is in its result storage); the `built` longest task runs of a measurement are counted
as the builds, the rest as confirmations. A fanning-out parent reads its children's stats
files instead and submits build tasks only for shards left to it (so its stages read `-`
when the children built everything); the records are read once the server holds all of them
(`runs_of`).

Each repetition runs every N once, in an order rotated per repetition; a cell reads `median
(each rep)`. Storage goes through tests/fault_proxy.py's proxy (every request `--latency`
seconds late, as on a slow link) in front of fake-gcs-server; the source is written straight to
the emulator. CPU seconds of what the benchmark started are counted per measurement: the runs
(or, for b, the workers with the flow runs they started and waited for), the Prefect server,
the emulator and this process (the proxy); "cores busy" is their sum over the wall time (the
machine has `nproc` cores, possibly shared with other work: the load average is printed too).

Everything listens on 127.0.0.1, on free ports; the server has its own PREFECT_HOME in a
temporary work folder (removed at the end unless --keep). Every process started here is stopped
through its process group in `finally`; flow runs a worker started (which may sit in sessions
of their own) are found by this invocation's OBJECTRON_WDS_HOST marker and stopped too.
Exits 0 when every run completed (whatever the figures), 1 when a run failed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

if __package__ in (None, ""):  # `python benchmarks/scale_out.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT, PrefectServer, machine_facts, median
from flows.artifacts import TABLE_KEY
from tasks.fake_gcs import FakeGcsServer
from tasks.processes import ManagedProcess, prefect_env

BIN = Path(sys.executable).parent  # the project's .venv/bin

POOL = "objectron-wds-process"  # deployments/setup.py's DEFAULT_POOL, prefect.yaml's pool
DEPLOYMENT = "objectron-to-wds/manual"
SUMMARY_KEY = "objectron-wds-summary"
SOURCE_BUCKET = "scale-out-source"
HOST_ENV = "OBJECTRON_WDS_HOST"
STAGES = ("prepare", "builds", "finish")  # of a deployment's runs (no launch time of their own)
TARGETS = {2: 1.8, 4: 3.4}  # the throughput targets for (a), x one run
# What tests/prefect_processes.py gives its processes besides the offline settings (which
# tasks.processes.prefect_env adds): workers that poll every 2 s, plain command output.
PROCESS_SETTINGS = {
    "PREFECT_WORKER_QUERY_SECONDS": "2",
    "PREFECT_WORKER_PREFETCH_SECONDS": "5",
    "PREFECT_CLI_COLORS": "false",
    "PREFECT_CLI_WRAP_LINES": "false",
}


@dataclass(frozen=True)
class ScaleOutConfig:
    videos: int = 80  # shard_size 2 -> 40 shards
    shard_size: int = 2
    video_bytes: int = 768 * 1024  # stand-in bytes, 80-120 % of this
    concurrency: int = 2
    chunk_mib: int = 1
    runs: tuple[int, ...] = (1, 2, 4)
    reps: int = 2
    machines: int = 4
    worker_limit: int = 2
    latency: float = 0.15

    @property
    def shards(self) -> int:
        return -(-self.videos // self.shard_size)


QUICK = ScaleOutConfig(videos=16, reps=1)  # 8 shards


# --- CPU of what this benchmark started --------------------------------------------------------

CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int | str) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def group_cpu_seconds(pgid: int) -> float:
    """CPU seconds of the processes in a process group: their own (utime, stime) and that of
    their children they have waited for (cutime, cstime), so a worker's finished flow runs
    count too."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(entry.name)
        # After `comm)`: state, ppid, pgrp, ...; utime, stime, cutime, cstime are 11-14.
        if fields is None or int(fields[2]) != pgid:
            continue
        total += sum(int(x) for x in fields[11:15])
    return total / CLOCK_TICK


def own_cpu_seconds() -> tuple[float, float]:
    """(this process, its waited-for descendants) CPU seconds."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def processes_marked(prefix: str) -> list[int]:
    """Processes whose environment has OBJECTRON_WDS_HOST starting with `prefix` (this
    invocation's marker: only processes it started, directly or through a worker)."""
    needle = f"{HOST_ENV}={prefix}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if any(item.startswith(needle) for item in environ.split(b"\0")):
            found.append(int(entry.name))
    return found


def start_latency_proxy(upstream: str, latency: float) -> Any:
    """tests/fault_proxy.py's FaultProxy in front of `upstream`, every request `latency`
    seconds late. Imported at run time: mypy checks benchmarks/, and an import statement would
    make it check that test module too, which is not in mypy's packages."""
    module = importlib.import_module("tests.fault_proxy")
    return module.FaultProxy(upstream, module.FaultPlan(latency_seconds=latency)).start()


def run_logged(args: list[str], env: dict[str, str], log: Path, timeout: float) -> tuple[int, str]:
    """Run a command to completion in a session of its own (its group killed on timeout);
    its exit status and output, which is appended to `log` too."""
    process = subprocess.Popen(
        args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        output += f"\n[killed after {timeout:.0f} s]"
    with open(log, "a") as handle:
        handle.write(f"$ {' '.join(args)}\n{output}\n[exit {process.returncode}]\n\n")
    return process.returncode, output


# --- the stack ---------------------------------------------------------------------------------


@dataclass
class Stack:
    """What one invocation runs against: the emulator, the latency proxy, the Prefect server,
    and (for part b) the workers."""

    config: ScaleOutConfig
    work: Path
    fake: FakeGcsServer
    proxy: Any  # tests.fault_proxy.FaultProxy
    server: PrefectServer
    marker: str  # OBJECTRON_WDS_HOST prefix of every process started here
    log: Callable[[str], None]
    workers: list[ManagedProcess] = field(default_factory=list)
    buckets: int = 0

    @property
    def storage_env(self) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": self.proxy.url}

    def new_dest(self, label: str) -> str:
        self.buckets += 1
        name = f"scale-out-{self.buckets:02d}-{label}"
        self.fake.create_bucket(name)
        return f"gs://{name}"

    def cpu(self) -> dict[str, float]:
        mine, kids = own_cpu_seconds()
        return {
            "runs": kids + sum(group_cpu_seconds(w.pid) for w in self.workers),
            "server": group_cpu_seconds(self.server.pid),
            "emulator": group_cpu_seconds(self.fake.pid),
            "proxy": mine,
        }

    def command_env(self, name: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        home = self.work / "homes" / name
        (home / "tmp").mkdir(parents=True, exist_ok=True)
        return prefect_env(
            home / "prefect-home", self.server.api_url,
            {**PROCESS_SETTINGS, **self.storage_env, HOST_ENV: f"{self.marker}-{name}",
             "TMPDIR": str(home / "tmp"), **(extra or {})},
        )  # fmt: skip

    def run(self, *args: str, timeout: float = 600.0) -> str:
        code, output = run_logged(
            list(args), self.command_env("commands"), self.work / "commands.log", timeout
        )
        if code != 0:
            raise RuntimeError(f"{' '.join(args)} exited {code}:\n{output[-3000:]}")
        return output


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before[key] for key in before}


# --- what the server recorded ------------------------------------------------------------------


def seconds_between(start: Any, end: Any) -> float | None:
    if start is None or end is None:
        return None
    return float((end - start).total_seconds())


def runs_of(
    api_url: str, dest: str, shards: int, expect: int, planner: UUID | None = None
) -> list[tuple[Any, list[Any]]]:
    """The flow runs whose name holds `dest` (the runs of one measurement: the flow run name is
    `objectron-to-wds SERIES: SOURCE -> DEST`, a child's the same plus `[build i/N]`) with their
    task runs, once the server has recorded what exists: `expect` runs have ended; each run
    but `planner` has `shards` finished build task runs (it submits one per shard: a build or
    a confirmation); `planner`, a parent that fans out, submits build task runs only for shards
    left to it (none when its children built them all), so of it only that its task runs have
    all ended and their number held for one poll. Task runs reach the server through events,
    after their flow run may have ended: hence the wait. After 60 s, whatever is there."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterName

    deadline = time.monotonic() + 60
    counted: dict[UUID, int] = {}
    with SyncPrefectClient(api_url) as client:
        while True:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=dest))
            )
            found = []
            for run in runs:
                tasks: list[Any] = []
                while True:
                    page = client.read_task_runs(
                        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])),
                        limit=200, offset=len(tasks),
                    )  # fmt: skip
                    tasks += page
                    if len(page) < 200:
                        break
                found.append((run, tasks))
            before, counted = counted, {run.id: len(tasks) for run, tasks in found}
            complete = len(found) >= expect and all(
                _recorded(run, tasks, shards, run.id == planner, before.get(run.id))
                for run, tasks in found
            )
            if complete or time.monotonic() > deadline:
                return found
            time.sleep(2)


def _recorded(
    run: Any, tasks: list[Any], shards: int, planner: bool, tasks_before: int | None
) -> bool:
    """Whether the server has recorded all of one run (see `runs_of`)."""
    if run.end_time is None:
        return False
    if planner:
        return all(t.end_time is not None for t in tasks) and tasks_before == len(tasks)
    return sum(bool(t.name.startswith("build ") and t.end_time) for t in tasks) >= shards


def shards_built_by(api_url: str, run_ids: list[UUID]) -> dict[str, UUID]:
    """Shard -> the run that built it, from each run's shard table artifact (status built)."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    built_by: dict[str, UUID] = {}
    with SyncPrefectClient(api_url) as client:
        for run_id in run_ids:
            for table in client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]),
                    key=ArtifactFilterKey(any_=[TABLE_KEY]),
                )
            ):
                data: Any = table.data
                rows = json.loads(data) if isinstance(data, str) else data or []
                for row in rows:
                    if row.get("status") == "built":
                        built_by[row["shard"]] = run_id
    return built_by


def steady_state(recorded: list[tuple[Any, list[Any]]], api_url: str) -> dict[str, Any]:
    """Shards committed per second while every run that built was building (the docstring's
    "steady state"): from the moment the last of them started its first build to the moment
    the first of them started its last one (it took the last shard it could claim: from then
    on it winds down), the builds that ended (committed their shard) inside that window, over
    its length. The build task runs of the shards each run built (its table artifact) give
    the times, all from the server's clock."""
    built_by = shards_built_by(api_url, [run.id for run, _tasks in recorded])
    spans: dict[UUID, list[tuple[float, float]]] = {}
    for run, tasks in recorded:
        for task in tasks:
            shard = task.name.removeprefix("build ")
            if (
                task.name.startswith("build ")
                and task.start_time
                and task.end_time
                and built_by.get(shard) == run.id
            ):
                spans.setdefault(run.id, []).append(
                    (task.start_time.timestamp(), task.end_time.timestamp())
                )
    if not spans:
        return {}
    began = max(min(start for start, _end in each) for each in spans.values())
    out = min(max(start for start, _end in each) for each in spans.values())
    committed = sum(began < end <= out for each in spans.values() for _start, end in each)
    window = out - began
    return {
        "builders": len(spans),
        "window": window,
        "committed": committed,
        "rate": committed / window if window > 0 and committed else None,
    }


def stages(run: Any, tasks: list[Any], launched: Any = None) -> dict[str, Any]:
    """Where one flow run's time went, from its records: start-up (from `launched`, when given,
    to the run's start), prepare (to its first build task's start: checks, listing, planning,
    specs; a child reads the plan file), builds (first build task's start to the last one's
    end), finish (to the run's end: the index, artifacts), and each build task run's seconds."""
    builds = [t for t in tasks if t.name.startswith("build ") and t.start_time and t.end_time]
    record: dict[str, Any] = {
        "start_up": seconds_between(launched, run.start_time),
        "task_seconds": [seconds_between(t.start_time, t.end_time) for t in builds],
    }
    if builds and run.start_time and run.end_time:
        first = min(t.start_time for t in builds)
        last = max(t.end_time for t in builds)
        record.update({
            "prepare": seconds_between(run.start_time, first),
            "builds": seconds_between(first, last),
            "finish": seconds_between(last, run.end_time),
        })  # fmt: skip
    return record


def split_tasks(task_seconds: list[float], built: int) -> tuple[list[float], list[float]]:
    """The build task runs of one measurement, split into builds and confirmations: the
    `built` longest are the builds (a build moves megabytes through the slow link, a
    confirmation reads a spec, a tar header and the stats; their times do not overlap here)."""
    ordered = sorted(task_seconds, reverse=True)
    return ordered[:built], ordered[built:]


# --- (a) command-line runs at once ---------------------------------------------------------------


def summary_of(log_text: str) -> dict[str, Any] | None:
    """The last JSON object the command printed (its --json summary)."""
    decoder = json.JSONDecoder()
    for match in reversed(list(re.finditer(r"(?m)^\{", log_text))):
        with contextlib.suppress(ValueError):
            document, _end = decoder.raw_decode(log_text[match.start() :])
            if isinstance(document, dict) and "built" in document:
                return document
    return None


def convert_command(stack: Stack, dest: str) -> list[str]:
    """The command line of one `convert` run of the benchmark's plan into `dest`."""
    c = stack.config
    return [
        sys.executable, "-m", "flows.cli", "convert", "--source", f"gs://{SOURCE_BUCKET}",
        "--dest", dest, "--shard-size", str(c.shard_size), "--concurrency", str(c.concurrency),
        "--chunk-size-mib", str(c.chunk_mib), "--concurrency-limit", "none", "--json",
        "--no-progress",
    ]  # fmt: skip


def cli_round(stack: Stack, runs: int, rep: int) -> dict[str, Any]:
    c = stack.config
    dest = stack.new_dest(f"cli-{runs}")
    args = convert_command(stack, dest)
    logs = stack.work / "cli-logs"
    # The runs of one measurement share a machine: one PREFECT_HOME (so one local result
    # storage: a run confirming a shard another committed may find the builder's cache record),
    # TMPDIR and OBJECTRON_WDS_HOST, fresh for each measurement.
    env = stack.command_env(f"cli-{runs}-r{rep}")
    Path(env["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    processes = [
        ManagedProcess(
            f"run {i + 1}/{runs}", args, env,
            logs / f"cli-{runs}-r{rep}-{i + 1}.log", cwd=ROOT,
            parent_death_signal=signal.SIGTERM, grace=10,
        )
        for i in range(runs)
    ]  # fmt: skip
    before = stack.cpu()
    launched = datetime.now(UTC)
    started = time.monotonic()
    ended: dict[int, float] = {}
    try:
        for process in processes:
            process.start()
        deadline = started + 1200
        while len(ended) < runs:
            for i, process in enumerate(processes):
                if i not in ended and process.returncode is not None:
                    ended[i] = time.monotonic() - started
            if time.monotonic() > deadline:
                raise TimeoutError(f"{runs} runs at once took over 1200 s")
            time.sleep(0.05)
    finally:
        for process in processes:
            process.stop(grace=5)
    wall = max(ended.values())
    cpu = cpu_delta(before, stack.cpu())
    summaries = []
    for process in processes:
        assert process.log_path is not None
        summaries.append(summary_of(process.log_path.read_text(errors="replace")))
    result: dict[str, Any] = {
        "runs": runs,
        "rep": rep,
        "dest": dest,
        "wall": wall,
        "run_seconds": [ended[i] for i in range(runs)],
        "exit_codes": [process.returncode for process in processes],
        "built": [s["built"] if s else None for s in summaries],
        "shards": [s["shards"] if s else None for s in summaries],
        "failed": [s["failed"] if s else None for s in summaries],
        "cpu": cpu,
        "load": os.getloadavg()[0],
        "logs": [str(process.log_path) for process in processes],
    }
    recorded = runs_of(stack.server.api_url, dest, c.shards, expect=runs)
    result["stages"] = [stages(run, tasks, launched) for run, tasks in recorded]
    result["steady"] = steady_state(recorded, stack.server.api_url)
    builds, confirms = split_tasks(
        [x for st in result["stages"] for x in st["task_seconds"]],
        sum(b or 0 for b in result["built"]),
    )
    result.update({"build_task_seconds": builds, "confirm_task_seconds": confirms})
    stack.log(
        f"  (a) {runs} run(s) at once, rep {rep + 1}: {wall:6.1f} s, built {result['built']} "
        f"(exit {result['exit_codes']}); per run {stage_text(result['stages'])}; build task "
        f"{median(builds):.1f} s x {len(builds)}, confirmation {median(confirms):.1f} s x "
        f"{len(confirms)}; CPU runs {cpu['runs']:.0f} s, server {cpu['server']:.0f} s, "
        f"emulator {cpu['emulator']:.0f} s, proxy {cpu['proxy']:.0f} s; "
        f"load {result['load']:.2f}; steady {steady_text(result.get('steady'))}"
    )
    return result


def steady_text(steady: dict[str, Any] | None) -> str:
    if not steady or not steady.get("rate"):
        return "-"
    return (
        f"{steady['rate']:.2f} shards/s ({steady['committed']} in {steady['window']:.1f} s, "
        f"{steady['builders']} runs building)"
    )


def stage_text(records: list[dict[str, Any]], keys: tuple[str, ...] = ()) -> str:
    """Medians of the stages of these flow runs: `start-up S / prepare P / builds B /
    finish F` (seconds)."""
    names = keys or ("start_up", "prepare", "builds", "finish")
    parts = []
    for key in names:
        values = [r[key] for r in records if r.get(key) is not None]
        parts.append(f"{key.replace('_', '-')} {median(values):.1f}" if values else f"{key} -")
    return " / ".join(parts)


# --- (b) deployment runs with parallel_runs ------------------------------------------------------


def start_workers(stack: Stack) -> None:
    """`objectron-wds setup`, `prefect deploy --all`, and one process worker per machine."""
    c = stack.config
    stack.run(
        sys.executable, "-m", "flows.cli", "setup", "--source", f"gs://{SOURCE_BUCKET}",
        "--dest", stack.new_dest("default"), "--result-storage", str(stack.work / "results"),
    )  # fmt: skip
    stack.run(str(BIN / "prefect"), "--no-prompt", "deploy", "--all")
    for number in range(1, c.machines + 1):
        name = f"machine-{number}"
        worker = ManagedProcess(
            f"worker {name}",
            [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--name", name,
             "--limit", str(c.worker_limit)],
            stack.command_env(name), stack.work / f"worker-{name}.log", cwd=ROOT,
            parent_death_signal=signal.SIGTERM, grace=15, sigterms=2,
        )  # fmt: skip
        stack.workers.append(worker.start())
    from prefect.client.orchestration import SyncPrefectClient

    deadline = time.monotonic() + 180
    online: list[str] = []
    with SyncPrefectClient(stack.server.api_url) as client:
        while time.monotonic() < deadline:
            workers = client.read_workers_for_work_pool(work_pool_name=POOL)
            online = [w.name for w in workers if str(w.status.value).upper() == "ONLINE"]
            if len(online) >= c.machines:
                return
            time.sleep(1)
    raise RuntimeError(f"only {len(online)} of {c.machines} workers came online: {online}")


def machine_of(stack: Stack, flow_run_id: UUID) -> str | None:
    """The machine whose worker ran the flow run (every worker that sees a scheduled run tries
    to submit it; all but one log that the server aborted theirs)."""
    for worker in stack.workers:
        assert worker.log_path is not None
        text = worker.log_path.read_text(errors="replace")
        if f"submitting flow run '{flow_run_id}'" in text and (
            f"Aborted submission of flow run '{flow_run_id}'" not in text
        ):
            return worker.name.removeprefix("worker ")
    return None


def fan_out_record(stack: Stack, parent_id: UUID, dest: str) -> dict[str, Any]:
    """Times of the parent and its child runs as the server recorded them (their stages too),
    and the shards each built (the parent's summary artifact)."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
    )

    with SyncPrefectClient(stack.server.api_url) as client:
        parent = client.read_flow_run(parent_id)
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent_id])
            )
        )
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[parent_id]),
                key=ArtifactFilterKey(any_=[SUMMARY_KEY]),
            )
        )
    recorded = runs_of(
        stack.server.api_url, dest, stack.config.shards, 1 + len(children),
        planner=parent_id if children else None,
    )  # fmt: skip
    stage_of = {str(run.id): stages(run, tasks) for run, tasks in recorded}
    markdown = str(artifacts[0].data) if artifacts else ""
    own = re.search(r"shards planned: (\d+); built: (\d+)", markdown)
    child_lines = {
        m.group(1): (m.group(2), int(m.group(3)))
        for m in re.finditer(r"\(([0-9a-f-]{36})\): (\w+), built (\d+) shard", markdown)
    }
    origin = parent.start_time
    record: dict[str, Any] = {
        "parent_id": str(parent_id),
        "parent_state": parent.state.name if parent.state else None,
        "parent_seconds": seconds_between(parent.start_time, parent.end_time),
        "planned": int(own.group(1)) if own else None,
        "parent_built": int(own.group(2)) if own else None,
        "parent_machine": machine_of(stack, parent_id),
        "parent_stages": stage_of.get(str(parent_id), {}),
        "children": [],
        "steady": steady_state(recorded, stack.server.api_url),
    }
    for child in sorted(children, key=lambda run: run.name or ""):
        state, built = child_lines.get(str(child.id), (None, None))
        record["children"].append({
            "id": str(child.id),
            "name": child.name,
            "state": child.state.name if child.state else None,
            "reported_state": state,
            "built": built,
            "machine": machine_of(stack, child.id),
            # Offsets from the parent's start, in seconds.
            "created": seconds_between(origin, child.created),
            "start": seconds_between(origin, child.start_time),
            "end": seconds_between(origin, child.end_time),
            "seconds": seconds_between(child.start_time, child.end_time),
            "stages": stage_of.get(str(child.id), {}),
        })  # fmt: skip
    kids = record["children"]
    n = len(kids)
    if (
        n
        and record["parent_seconds"] is not None
        and all(k["start"] is not None and k["end"] is not None for k in kids)
    ):
        lead = max(k["start"] for k in kids)
        tail = record["parent_seconds"] - max(k["end"] for k in kids)
        record.update({
            "planning": min(k["created"] for k in kids),
            "lead": lead,
            "tail": tail,
            "overhead_per_child": (lead + tail) / n,
            "parent_minus_slowest": record["parent_seconds"] - max(k["seconds"] for k in kids),
            "start_latency": [k["start"] - k["created"] for k in kids],
        })  # fmt: skip
    return record


def deployment_round(stack: Stack, parallel_runs: int, rep: int) -> dict[str, Any]:
    c = stack.config
    dest = stack.new_dest(f"dep-{parallel_runs}")
    params = {
        "source": f"gs://{SOURCE_BUCKET}", "dest": dest, "parallel_runs": parallel_runs,
        "shard_size": c.shard_size, "concurrency": c.concurrency,
        "chunk_size_mib": c.chunk_mib, "concurrency_limit": "null",
    }  # fmt: skip
    args = [str(BIN / "prefect"), "deployment", "run", DEPLOYMENT]
    for key, value in params.items():
        args += ["--param", f"{key}={value}"]
    args += ["--watch", "--watch-timeout", "1500"]
    before = stack.cpu()
    started = time.monotonic()
    code, output = run_logged(
        args, stack.command_env("commands"), stack.work / "deployment-runs.log", 1600
    )
    wall = time.monotonic() - started
    cpu = cpu_delta(before, stack.cpu())
    match = re.search(r"UUID:\s*([0-9a-f-]{36})", output)
    record: dict[str, Any] = {
        "parallel_runs": parallel_runs, "rep": rep, "dest": dest, "wall": wall,
        "exit_code": code, "cpu": cpu, "load": os.getloadavg()[0],
    }  # fmt: skip
    if match:
        record.update(fan_out_record(stack, UUID(match.group(1)), dest))
    else:
        record["output"] = output[-2000:]
    built = [record.get("parent_built")] + [k["built"] for k in record.get("children", [])]
    record["built_total"] = sum(b for b in built if b is not None)
    every = [record.get("parent_stages", {})] + [k["stages"] for k in record.get("children", [])]
    builds, confirms = split_tasks(
        [x for st in every for x in st.get("task_seconds", [])], record["built_total"]
    )
    record.update({"build_task_seconds": builds, "confirm_task_seconds": confirms})
    stack.log(
        f"  (b) parallel_runs={parallel_runs}, rep {rep + 1}: {wall:6.1f} s (exit "
        f"{code}, {record.get('parent_state')}), parent run "
        f"{record.get('parent_seconds') or float('nan'):.1f} s, built parent "
        f"{record.get('parent_built')} + children "
        f"{[k['built'] for k in record.get('children', [])]}, overhead/child "
        f"{record.get('overhead_per_child', float('nan')):.1f} s; parent "
        f"{stage_text([record.get('parent_stages', {})], STAGES)}, children "
        f"{stage_text([k['stages'] for k in record.get('children', [])], STAGES)}; build task "
        f"{median(builds):.1f} s x {len(builds)}, confirmation {median(confirms):.1f} s x "
        f"{len(confirms)}; CPU runs {cpu['runs']:.0f} s, "
        f"server {cpu['server']:.0f} s, emulator {cpu['emulator']:.0f} s, proxy "
        f"{cpu['proxy']:.0f} s; load {record['load']:.2f}; steady "
        f"{steady_text(record.get('steady'))}"
    )
    return record


# --- the tables ----------------------------------------------------------------------------------


def cell(values: list[float], digits: int = 1) -> str:
    """`median (each rep)`, or just the value with one repetition."""
    clean = [v for v in values if v is not None]
    if not clean:
        return "-"
    text = f"{median(clean):.{digits}f}"
    if len(clean) > 1:
        text += " (" + ", ".join(f"{v:.{digits}f}" for v in clean) + ")"
    return text


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def cpu_cell(records: list[dict[str, Any]]) -> str:
    keys = ("runs", "server", "emulator", "proxy")
    parts = [median([r["cpu"][key] for r in records]) for key in keys]
    busy = median([sum(r["cpu"].values()) / r["wall"] for r in records])
    return f"{' / '.join(f'{p:.0f}' for p in parts)}; {busy:.2f} cores"


def speedups(records: dict[int, list[dict[str, Any]]], n: int) -> list[float]:
    """wall(1) / wall(n) within each repetition."""
    by_rep = {r["rep"]: r["wall"] for r in records.get(1, [])}
    return [by_rep[r["rep"]] / r["wall"] for r in records[n] if r["rep"] in by_rep]


def steady_rates(records: list[dict[str, Any]]) -> list[float]:
    return [r["steady"]["rate"] for r in records if (r.get("steady") or {}).get("rate")]


def steady_speedups(records: dict[int, list[dict[str, Any]]], n: int) -> list[float]:
    """steady rate(n) / steady rate(1) within each repetition."""
    by_rep = {r["rep"]: r["steady"]["rate"] for r in records.get(1, []) if steady_rates([r])}
    return [
        r["steady"]["rate"] / by_rep[r["rep"]]
        for r in records[n]
        if r["rep"] in by_rep and steady_rates([r])
    ]


def steady_cell(records: list[dict[str, Any]]) -> str:
    """`rate (each rep)`, then the window's median length, shards in it and runs building."""
    windows = [r["steady"] for r in records if (r.get("steady") or {}).get("rate")]
    if not windows:
        return "-"
    return (
        f"{cell(steady_rates(records), 2)}; {median([w['window'] for w in windows]):.1f} s, "
        f"{median([w['committed'] for w in windows]):.0f} shards, "
        + "/".join(str(w["builders"]) for w in windows)
        + " building"
    )


def tasks_cell(records: list[dict[str, Any]]) -> str:
    """Build task runs split into builds and confirmations: median seconds x count per rep."""
    builds = [x for r in records for x in r.get("build_task_seconds", [])]
    confirms = [x for r in records for x in r.get("confirm_task_seconds", [])]
    reps = max(1, len(records))
    return f"{median(builds):.1f} x {len(builds) / reps:.0f}; " + (
        f"{median(confirms):.1f} x {len(confirms) / reps:.0f}" if confirms else "none"
    )


def render(
    config: ScaleOutConfig,
    cli: dict[int, list[dict[str, Any]]],
    deployed: dict[int, list[dict[str, Any]]],
) -> str:
    shards = config.shards
    head, detail = [], []
    for n, records in cli.items():
        walls = [r["wall"] for r in records]
        ups = speedups(cli, n) if n != 1 else []
        target = TARGETS.get(n)
        met = "-" if target is None or not ups else ("yes" if median(ups) >= target else "NO")
        built = "; ".join(
            "+".join(str(b) for b in r["built"])
            + f" = {sum(b or 0 for b in r['built'])} of {shards}"
            for r in records
        )
        head.append([
            str(n), cell(walls), cell([shards / w for w in walls], 2),
            cell(ups, 2) if n != 1 else "1", f">= {target}x" if target else "-", met,
            steady_cell(records), cell(steady_speedups(cli, n), 2) if n != 1 else "1", built,
        ])  # fmt: skip
        detail.append([
            str(n), stage_text([st for r in records for st in r.get("stages", [])]),
            tasks_cell(records), cpu_cell(records),
        ])  # fmt: skip
    part_a = table(
        ["runs at once", "wall s", "shards/s", "speed-up vs 1 run", "target", "met",
         "steady shards/s; window, shards in it, runs building", "steady speed-up vs 1 run",
         "built per run = sum"],
        head,
    ) + "\n\n" + table(
        ["runs at once", "each run's stages s (median)", "build task s x n; confirmation s x n",
         "CPU s runs / server / emulator / proxy; cores busy"],
        detail,
    )  # fmt: skip
    head, detail = [], []
    for n, records in deployed.items():
        walls = [r["wall"] for r in records]
        ups = speedups(deployed, n) if n != 1 else []

        def values(key: str, records: list[dict[str, Any]] = records) -> list[float]:
            return [r[key] for r in records if r.get(key) is not None]

        latencies = [x for r in records for x in r.get("start_latency", [])]
        built = "; ".join(
            f"{r.get('parent_built')}"
            + ("+" + "+".join(str(k["built"]) for k in r.get("children", []))
               if r.get("children") else "")
            + f" = {r['built_total']} of {shards}"
            for r in records
        )  # fmt: skip
        machines = "; ".join(
            str(len({k["machine"] for k in r.get("children", [])} | {r.get("parent_machine")}))
            for r in records
        )
        states = "; ".join(
            f"{r.get('parent_state')}"
            + (f" ({', '.join(sorted({str(k['state']) for k in r['children']}))})"
               if r.get("children") else "")
            for r in records
        )  # fmt: skip
        head.append([
            str(n), cell(walls), cell([shards / w for w in walls], 2),
            cell(ups, 2) if n != 1 else "1", cell(values("parent_seconds")),
            cell(values("parent_minus_slowest")) if n > 1 else "-",
            cell(values("overhead_per_child")) if n > 1 else "-",
            steady_cell(records), cell(steady_speedups(deployed, n), 2) if n != 1 else "1",
            built, states,
        ])  # fmt: skip
        parent_stages = stage_text([r.get("parent_stages", {}) for r in records], STAGES)
        child_stages = stage_text(
            [k["stages"] for r in records for k in r.get("children", [])], STAGES
        )
        outside = [r["wall"] - r["parent_seconds"] for r in records if r.get("parent_seconds")]
        detail.append([
            str(n), cell(outside),
            f"{cell(values('lead'))} ({cell(values('planning'))}); {cell(values('tail'))}"
            if n > 1 else "-",
            f"{median(latencies):.1f}, max {max(latencies):.1f}" if latencies else "-",
            parent_stages, child_stages if n > 1 else "-", tasks_cell(records), machines,
            cpu_cell(records),
        ])  # fmt: skip
    part_b = table(
        ["parallel_runs", "wall s (command)", "shards/s", "speed-up vs 1", "parent run s",
         "parent - slowest child s", "fan-out overhead per child s",
         "steady shards/s; window, shards in it, runs building", "steady speed-up vs 1",
         "built parent+children = sum", "state (children)"],
        head,
    ) + "\n\n" + table(
        ["parallel_runs", "command - parent run s", "lead s (of it planning); tail s",
         "child start latency s, median",
         "parent's stages s", "children's stages s (median)",
         "build task s x n; confirmation s x n", "machines used",
         "CPU s runs / server / emulator / proxy; cores busy"],
        detail,
    )  # fmt: skip
    parts = []  # only the parts measured (--only leaves one out)
    if cli:
        parts.append("(a) command-line runs started at once, one shared prefect server\n\n")
        parts[-1] += part_a
    if deployed:
        parts.append(
            "(b) deployment runs with parallel_runs on "
            f"{config.machines} process workers (--limit {config.worker_limit})\n\n" + part_b
        )
    return "\n\n".join(parts)


# --- main ------------------------------------------------------------------------------------


def rotated(runs: tuple[int, ...], rep: int) -> list[int]:
    """The order of repetition `rep`: every N once, rotated by one per repetition."""
    shift = rep % len(runs)
    return list(runs[shift:] + runs[:shift])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # SIGTERM unwinds like an exception, so everything this started is stopped.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="8 shards, one repetition")
    parser.add_argument("--latency", type=float, help="seconds added to every storage request "
                        "(default 0.15)")  # fmt: skip
    parser.add_argument("--reps", type=int, help="repetitions (default 2; --quick 1)")
    parser.add_argument("--shards", type=int, help="shards in the plan (2 videos each)")
    parser.add_argument("--only", choices=["cli", "deployment"], help="one part only")
    parser.add_argument("--json", type=Path, help="also write every raw measurement here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    args = parser.parse_args(argv)
    config = QUICK if args.quick else ScaleOutConfig()
    if args.latency is not None:
        config = dataclasses.replace(config, latency=args.latency)
    if args.reps:
        config = dataclasses.replace(config, reps=args.reps)
    if args.shards:
        config = dataclasses.replace(config, videos=args.shards * config.shard_size)

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    facts = machine_facts()
    work = Path(tempfile.mkdtemp(prefix="objectron-wds-scale-out-"))
    marker = f"scale-out-bench-{os.getpid()}"
    cli: dict[int, list[dict[str, Any]]] = {n: [] for n in config.runs}
    deployed: dict[int, list[dict[str, Any]]] = {n: [] for n in config.runs}
    started = time.monotonic()
    fake = FakeGcsServer(
        root=work / "fake-gcs", log_path=work / "fake-gcs.log", parent_death_signal=signal.SIGTERM
    )
    proxy: Any = None
    server: PrefectServer | None = None
    stack: Stack | None = None
    leftovers: list[int] = []
    failed = False
    try:
        fake.start()
        log(f"Work folder {work}; fake-gcs-server {fake.url}")
        os.environ["STORAGE_EMULATOR_HOST"] = fake.url  # the source is written straight to it
        from tasks.objectron.sample_data import write_sample_dataset
        from tasks.storage import open_storage

        fake.create_bucket(SOURCE_BUCKET)
        write_sample_dataset(
            open_storage(f"gs://{SOURCE_BUCKET}"), videos=config.videos, seed=19,
            video_bytes=config.video_bytes, placeholders=0, unannotated=0,
            include_no_split_video=False, traps=False,
        )  # fmt: skip
        log(f"Source: {config.videos} videos of ~{config.video_bytes / 1024:.0f} KiB "
            f"-> {config.shards} shards")  # fmt: skip
        proxy = start_latency_proxy(fake.url, config.latency)
        server = PrefectServer(work / "prefect-home")
        server.start()
        log(f"prefect server {server.api_url}; storage through {proxy.url} "
            f"(+{config.latency} s per request)")  # fmt: skip
        stack = Stack(config, work, fake, proxy, server, marker, log)
        for rep in range(config.reps):
            if args.only == "deployment":
                break
            for n in rotated(config.runs, rep):
                record = cli_round(stack, n, rep)
                cli[n].append(record)
                failed |= any(code != 0 for code in record["exit_codes"])
        if args.only != "cli":
            log("Setting up the deployments and workers")
            start_workers(stack)
            for rep in range(config.reps):
                for n in rotated(config.runs, rep):
                    record = deployment_round(stack, n, rep)
                    deployed[n].append(record)
                    failed |= record["exit_code"] != 0
    finally:
        if stack is not None:
            for worker in stack.workers:
                worker.stop()
        # Flow runs a worker started may sit in sessions of their own: find them by marker.
        leftovers = processes_marked(marker)
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if server is not None:
            server.stop()
        if proxy is not None:
            proxy.stop()
        fake.stop()
        if not args.keep and not failed:
            shutil.rmtree(work, ignore_errors=True)
    if leftovers:
        log(f"{len(leftovers)} process(es) of this run outlived their worker: {leftovers}")
    facts["duration"] = f"{(time.monotonic() - started) / 60:.1f} min"
    facts["command"] = "benchmarks/scale_out.py " + " ".join(argv)
    facts["load at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"objectron-wds scale-out benchmark ({'quick' if args.quick else 'full'}): "
        + "; ".join(f"{k} {v}" for k, v in facts.items())
    )
    print(
        f"plan: {config.shards} convert shards of {config.shard_size} samples (stand-in videos "
        f"~{config.video_bytes / 1024:.0f} KiB), concurrency {config.concurrency} per run, "
        f"{config.chunk_mib} MiB chunks, no build limit; storage +{config.latency} s per "
        f"request; {config.reps} repetition(s), values are median (each rep)"
    )
    print()
    cli = {n: v for n, v in cli.items() if v}
    deployed = {n: v for n, v in deployed.items() if v}
    print(render(config, cli, deployed))
    if failed:
        print(f"\nA run failed: logs kept in {work}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "facts": facts,
                    "config": dataclasses.asdict(config),
                    "cli": cli,
                    "deployment": deployed,
                    "leftover_processes": leftovers,
                },
                indent=1,
                default=str,
            )
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
