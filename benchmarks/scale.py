"""Orchestration at full scale: a 20,088-sample plan at `shard_size=3` (6,696 shards of tiny
objects) in one flow run against a local `prefect server`, watched from outside.

    .venv/bin/python benchmarks/scale.py                       # SQLite, flows/convert.py
    .venv/bin/python benchmarks/scale.py --db postgres         # PostgreSQL (Debian's package)
    .venv/bin/python benchmarks/scale.py --videos 300          # small, to try it out

What it does: writes an Objectron-shaped folder of tiny objects (20,088 video folders with the
real annotated keys and the real index files), starts a server with its own PREFECT_HOME (and,
with --db postgres, a throw-away PostgreSQL cluster on 127.0.0.1), runs the flow in a separate
process, and meanwhile probes `GET /api/health` once a second from this process (latency and
status of every probe) and counts the recorded build task runs every 10 s. At the end it waits
for the server to settle and reports: flow time, build task runs recorded vs shards (and how
many finished), health latency (max, p99, probes over 1 s, failures), events the server dropped
("Subscription queue is full" in its log), and the server's RSS.

A run longer than --time-limit (default 40 min) is stopped (the flow process and what it
started, through its process group) and reported as far as it got.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (
    ROOT,
    PostgresCluster,
    PrefectServer,
    http_latency,
    machine_facts,
    run_convert_flow,
)
from benchmarks.flow_runs import count_task_runs, post_json
from benchmarks.synthetic import full_scale_keys, write_tiny_source
from tasks.processes import ManagedProcess


def tree_rss_kib(pid: int) -> int:
    """RSS of a process and all its descendants, in KiB (from /proc)."""
    total, stack, seen = 0, [pid], set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                stack.extend(int(child) for child in children)
        except OSError:
            continue
    return total


@dataclass
class Watcher:
    """Probes health every second and counts recorded build runs every 10 s, in a thread."""

    api_url: str
    server_pid: int
    probes: list[tuple[float, float, int]] = field(default_factory=list)  # (t, seconds, status)
    counts: list[tuple[float, int]] = field(default_factory=list)
    server_rss_kib: int = 0
    stop_event: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.monotonic)
    thread: threading.Thread | None = None

    def start(self) -> Watcher:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        last_count = 0.0
        while not self.stop_event.is_set():
            tick = time.monotonic()
            seconds, status = http_latency(f"{self.api_url}/health", timeout=30)
            self.probes.append((tick - self.started, seconds, status))
            self.server_rss_kib = max(self.server_rss_kib, tree_rss_kib(self.server_pid))
            if tick - last_count >= 10:
                last_count = tick
                try:
                    count = int(
                        post_json(
                            "/task_runs/count",
                            {"task_runs": {"name": {"like_": "build "}}},
                            self.api_url,
                            timeout=30,
                        )
                    )
                    self.counts.append((tick - self.started, count))
                except OSError:
                    pass
            self.stop_event.wait(max(0.0, 1.0 - (time.monotonic() - tick)))

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(60)

    def summary(self) -> dict[str, Any]:
        latencies = sorted(seconds for _t, seconds, _s in self.probes)
        failures = sum(1 for _t, _seconds, status in self.probes if status != 200)
        p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else float("nan")
        return {
            "probes": len(self.probes),
            "max_s": max(latencies) if latencies else float("nan"),
            "p99_s": p99,
            "median_s": latencies[len(latencies) // 2] if latencies else float("nan"),
            "over_1s": sum(1 for s in latencies if s >= 1.0),
            "failures": failures,
            "server_peak_rss_mib": self.server_rss_kib / 1024,
            "counts": self.counts,
        }


def flow_child(params_json: str, result_file: str) -> None:
    """`scale.py _flow PARAMS RESULT`: run the flow in this process, write what it returned."""
    state, seconds = run_convert_flow(json.loads(params_json))
    document: dict[str, Any] = {
        "seconds": seconds,
        "state": state.type.value,
        "flow_run_id": str(state.state_details.flow_run_id),
    }
    try:
        summary = state.result()
        document["summary"] = {k: v for k, v in summary.items() if k not in ("no_split",)}
    except Exception as exc:
        document["error"] = f"{type(exc).__name__}: {exc}"
    Path(result_file).write_text(json.dumps(document, default=str))


def breakdown(api_url: str, flow_run_id: str) -> dict[str, int]:
    """Recorded task runs of the flow run by task (name up to the first space) and state type."""
    counts: dict[str, int] = {}
    offset = 0
    while True:
        page = post_json(
            "/task_runs/filter",
            {
                "flow_runs": {"id": {"any_": [flow_run_id]}},
                "sort": "ID_DESC",
                "limit": 200,
                "offset": offset,
            },
            api_url,
        )
        for run in page:
            state = (run.get("state") or {}).get("type") or "NO_STATE"
            # "build objectron-000042.tar" -> build; "build-shard-1a7" (a run whose first
            # events were lost, recorded under its task's default name) -> build-shard.
            task = re.sub(r"-[0-9a-f]{3}$", "", run["name"].split(" ")[0])
            key = f"{task} {state}"
            counts[key] = counts.get(key, 0) + 1
        if len(page) < 200:
            return dict(sorted(counts.items()))
        offset += len(page)


def settle(api_url: str, flow_run_id: str, expected: int, limit: float = 600) -> dict[str, Any]:
    """Counts once the server stops changing them (or `limit` seconds pass)."""
    deadline = time.monotonic() + limit
    last, quiet_since = (-1, -1), time.monotonic()
    while True:
        total = count_task_runs(flow_run_id, base=api_url, name_like="build ")
        finished = count_task_runs(flow_run_id, ["COMPLETED"], base=api_url, name_like="build ")
        if (total, finished) != last:
            last, quiet_since = (total, finished), time.monotonic()
        if (
            finished >= expected
            or time.monotonic() - quiet_since > 30
            or time.monotonic() > deadline
        ):
            all_runs = count_task_runs(flow_run_id, base=api_url)
            return {
                "build_runs": total,
                "build_completed": finished,
                "all_task_runs": all_runs,
                "breakdown": breakdown(api_url, flow_run_id),
            }
        time.sleep(2)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # SIGTERM unwinds like an exception, so the servers this started are stopped.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))
    if argv and argv[0] == "_flow":
        flow_child(argv[1], argv[2])
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--videos", type=int, default=20_088)
    parser.add_argument("--shard-size", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--time-limit", type=float, default=2400, help="seconds")
    parser.add_argument(
        "--source", type=Path, help="reuse this tiny source folder (made if missing)"
    )
    parser.add_argument("--json", type=Path, help="write the report here too")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    facts = machine_facts()
    work = Path(tempfile.mkdtemp(prefix="objectron-wds-scale-"))
    source = args.source or work / "src"
    if not (source / "v1").exists():
        log(f"Writing {args.videos:,} tiny video folders to {source}")
        keys, annotated = full_scale_keys(args.videos)
        written = write_tiny_source(source, keys, annotated)
        log(f"  {written:,} objects")
    dest = work / "dest"
    dest.mkdir()
    postgres: PostgresCluster | None = None
    server: PrefectServer | None = None
    watcher: Watcher | None = None
    flow_process: ManagedProcess | None = None
    report: dict[str, Any] = {"facts": facts, "args": {k: str(v) for k, v in vars(args).items()}}
    try:
        database_url = None
        if args.db == "postgres":
            postgres = PostgresCluster(Path(tempfile.mkdtemp(prefix="objectron-wds-pg-"))).start()
            database_url = postgres.url
            log(f"PostgreSQL on 127.0.0.1:{postgres.port}")
        server = PrefectServer(work / "prefect-home", database_url=database_url)
        started = time.monotonic()
        server.start()
        log(
            f"prefect server {server.api_url} ({args.db}) healthy after "
            f"{time.monotonic() - started:.0f} s"
        )
        watcher = Watcher(server.api_url, server.pid).start()

        params = {
            "source": str(source), "dest": str(dest),
            "shard_size": args.shard_size, "concurrency": args.concurrency,
        }  # fmt: skip
        result_file = work / "flow-result.json"
        env = server.client_env()
        env["PREFECT_LOGGING_LEVEL"] = "WARNING"  # console only; run logs still go to the API
        flow_log = work / "flow.log"
        flow_process = ManagedProcess(
            "flow",
            [sys.executable, str(Path(__file__).resolve()), "_flow", json.dumps(params),
             str(result_file)],
            env, flow_log, cwd=ROOT, parent_death_signal=signal.SIGTERM, grace=30,
            # SIGTERM to the flow process alone: it stops its decode workers itself. Signalled
            # too, they died mid-request, the flow went on decoding in its build threads and
            # had not stopped 30 s later.
            terminate_group=False,
        ).start()  # fmt: skip
        flow_started = time.monotonic()
        log(f"flow process {flow_process.pid} started; log {flow_log}")
        stopped = False
        next_report = 0.0
        while flow_process.running():
            elapsed = time.monotonic() - flow_started
            if elapsed > args.time_limit:
                log(
                    f"time limit {args.time_limit:.0f} s reached: stopping flow process "
                    f"{flow_process.pid}"
                )
                flow_process.stop()  # SIGTERM, then SIGKILL to its group after 30 s
                stopped = True
                break
            time.sleep(5)
            if elapsed >= next_report:
                next_report += 60
                counts = watcher.counts[-1][1] if watcher.counts else 0
                shards = len(list(dest.glob("*.stats.json")))
                health = watcher.summary()
                log(
                    f"  {elapsed:5.0f} s: {shards:,} shards built, {counts:,} build runs recorded, "
                    f"health max {health['max_s']:.2f} s, dropped {server.dropped_messages()}"
                )
        wall = time.monotonic() - flow_started
        flow_result: dict[str, Any] = {}
        if result_file.exists():
            flow_result = json.loads(result_file.read_text())
        shards_built = len(list(dest.glob("*.stats.json")))
        expected = -(-args.videos // args.shard_size)
        log(
            f"flow process ended (rc {flow_process.returncode}) after {wall:.0f} s; settling counts"
        )
        flow_run_id = flow_result.get("flow_run_id")
        if flow_run_id is None:
            runs = post_json("/flow_runs/filter", {"limit": 5}, server.api_url)
            flow_run_id = str(runs[0]["id"]) if runs else None
        recorded = settle(server.api_url, flow_run_id, expected) if flow_run_id else {}
        watcher.stop()
        health = watcher.summary()
        report.update({
            "db": args.db, "videos": args.videos, "shard_size": args.shard_size,
            "concurrency": args.concurrency, "expected_shards": expected,
            "shards_built_on_disk": shards_built, "stopped_at_time_limit": stopped,
            "flow_process_seconds": wall, "flow_result": flow_result, "recorded": recorded,
            "health": {k: v for k, v in health.items() if k != "counts"},
            "recorded_over_time": health["counts"],
            "dropped_messages": server.dropped_messages(),
            "flow_rc": flow_process.returncode,
        })  # fmt: skip
    finally:
        if watcher is not None:
            watcher.stop()
        if flow_process is not None:
            flow_process.stop(grace=5)
        if server is not None:
            server.stop()
        if postgres is not None:
            postgres.stop()
            shutil.rmtree(postgres.root, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(render(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0


def render(report: dict[str, Any]) -> str:
    health = report.get("health", {})
    facts = report["facts"]
    nan = float("nan")
    recorded = report.get("recorded", {})
    flow = report.get("flow_result", {})
    lines = [
        f"scale run: {report.get('videos')} videos, shard_size {report.get('shard_size')}, "
        f"concurrency {report.get('concurrency')}, {report.get('db')}",
        f"  date {facts['date']}; commit {facts.get('commit')}; cpus {facts['cpus']}; "
        f"memory {facts['memory']}",
        f"  flow state {flow.get('state')} in {flow.get('seconds', float('nan')):.0f} s "
        f"(process {report.get('flow_process_seconds', float('nan')):.0f} s); stopped at limit: "
        f"{report.get('stopped_at_time_limit')}",
        f"  shards: expected {report.get('expected_shards')}, built on disk "
        f"{report.get('shards_built_on_disk')}",
        f"  build task runs recorded {recorded.get('build_runs')}, of them COMPLETED "
        f"{recorded.get('build_completed')}; all task runs {recorded.get('all_task_runs')}",
        f"  recorded task runs by name and state: {recorded.get('breakdown')}",
        f"  /api/health: {health.get('probes')} probes, max {health.get('max_s', nan):.2f} s, "
        f"p99 {health.get('p99_s', nan):.2f} s, median {health.get('median_s', nan):.3f} s, "
        f">= 1 s: {health.get('over_1s')}, failed: {health.get('failures')}",
        f"  server dropped events ('Subscription queue is full'): "
        f"{report.get('dropped_messages')}; "
        f"server peak RSS {health.get('server_peak_rss_mib', float('nan')):.0f} MiB",
    ]
    if "summary" in flow and "waited_seconds" in flow["summary"]:
        s = flow["summary"]
        lines.append(
            f"  back-pressure: waited {s['waited_seconds']:.0f} s, {s['checks']} checks, "
            f"largest lag {s['max_seen_lag']}"
        )
    if "error" in flow:
        lines.append(f"  flow error: {flow['error'][:300]}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
