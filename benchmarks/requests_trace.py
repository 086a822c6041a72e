"""Where one run's fixed cost goes: every storage request of one `convert` run, by stage.

    .venv/bin/python benchmarks/requests_trace.py                 # 40 shards, +0.15 s/request
    .venv/bin/python benchmarks/requests_trace.py --runs 3 --list # 3 runs one after another

The same plan as benchmarks/scale_out.py (part a, one run): fake-gcs-server behind
tests/fault_proxy.py's proxy adding `--latency` seconds to every request, a shared `prefect
server`, one `python -m flows.cli convert ... --json` on a fresh destination. The proxy (in
this process) records each request's arrival and answer; the server's records give the run's
stages (as scale_out.py defines them: start-up = process launch to the flow run's start,
prepare = to the first build task's start, builds, finish) and the prepare's task runs
(check-locations, list-source, assemble-samples, upload-specs). Per stage it prints:

  requests   storage requests that arrived in it
  rounds     how many request latencies the stage waited out in a row: the time at least one
             request was in flight, divided by the latency (`--latency` must dominate the
             emulator's own answer time; at 0.15 s it does), so 18 reads in parallel count ~1
  seconds    the stage's length

With `--list`, each request of the start-up and the prepare, in order (offset from the
launch, method, what it asked for). Everything listens on 127.0.0.1; every process started
here is stopped in `finally`.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

if __package__ in (None, ""):  # `python benchmarks/requests_trace.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT, PrefectServer, median
from benchmarks.scale_out import (
    SOURCE_BUCKET,
    ScaleOutConfig,
    Stack,
    convert_command,
    runs_of,
    stages,
    start_latency_proxy,
)
from tasks.fake_gcs import FakeGcsServer
from tasks.processes import ManagedProcess

PREPARE_TASKS = ("check-locations", "list-source", "assemble-samples", "upload-specs")


def handled_between(proxy: Any, start: float, end: float) -> list[tuple[float, float, str, str]]:
    """The requests the proxy answered that arrived in [start, end), in arrival order."""
    return sorted(entry for entry in list(proxy.handled) if start <= entry[0] < end)


def rounds(entries: list[tuple[float, float, str, str]], latency: float) -> float:
    """Seconds with a request in flight, in latencies: the requests waited out in a row."""
    busy, reach = 0.0, -1.0
    for arrived, answered, _method, _path in sorted(entries):
        if answered <= reach:
            continue
        busy += answered - max(arrived, reach)
        reach = answered
    return busy / latency


def describe(method: str, path: str) -> str:
    """What a request asked for, short: `GET list videos/`, `GET read v1/index/...`."""
    parts = urlsplit(path)
    query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if "o" in segments:
        name = "/".join(segments[segments.index("o") + 1 :])
        bucket = segments[segments.index("b") + 1] if "b" in segments else "?"
        if not name and method == "GET":
            return f"list {bucket}/{unquote(query.get('prefix', ''))}"
        if not name and method == "POST":
            name = unquote(query.get("name", "?"))
            kind = query.get("uploadType", "")
            return f"create ({kind}) {bucket}/{name}"
        if method == "GET":
            return f"{'read' if query.get('alt') == 'media' else 'stat'} {bucket}/{name}"
        return f"{method.lower()} {bucket}/{name}"
    if segments[-2:-1] == ["b"] or (len(segments) >= 2 and segments[-2] == "b"):
        return f"bucket {segments[-1]}"
    return path[:80]


def trace_run(stack: Stack, label: str) -> dict[str, Any]:
    c = stack.config
    dest = stack.new_dest(label)
    args = convert_command(stack, dest)
    env = stack.command_env(label)
    launched = datetime.now(UTC)
    process = ManagedProcess(
        label, args, env, stack.work / f"{label}.log", cwd=ROOT, parent_death_signal=signal.SIGTERM
    )
    try:
        process.start()
        while process.returncode is None:
            time.sleep(0.05)
    finally:
        process.stop(grace=5)
    if process.returncode != 0:
        assert process.log_path is not None
        raise RuntimeError(f"{label} exited {process.returncode}: {process.log_path.read_text()}")
    [(run, tasks)] = runs_of(stack.server.api_url, dest, c.shards, expect=1)
    record = stages(run, tasks, launched)
    origin = launched.timestamp()
    run_start = run.start_time.timestamp()
    first_build = run_start + record["prepare"]
    last_build = first_build + record["builds"]
    windows = {
        "start-up": (origin, run_start),
        "prepare": (run_start, first_build),
        "builds": (first_build, last_build),
        "finish": (last_build, run.end_time.timestamp()),
    }
    for task in sorted(tasks, key=lambda t: t.start_time or run.start_time):
        name = task.name.rsplit("-", 1)[0]
        if name in PREPARE_TASKS and task.start_time and task.end_time:
            windows[f"  {name}"] = (task.start_time.timestamp(), task.end_time.timestamp())
    table = {}
    for stage, (start, end) in windows.items():
        inside = handled_between(stack.proxy, start, end)
        table[stage] = {
            "seconds": end - start,
            "requests": len(inside),
            "rounds": rounds(inside, c.latency),
        }
    listed = [
        (arrived - origin, describe(method, path))
        for arrived, _answered, method, path in handled_between(stack.proxy, origin, first_build)
    ]
    return {"table": table, "listed": listed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--latency", type=float, default=0.15)
    parser.add_argument("--shards", type=int, default=40)
    parser.add_argument("--runs", type=int, default=1, help="runs, one after another")
    parser.add_argument("--list", action="store_true", help="each request before the builds")
    args = parser.parse_args(argv)
    config = ScaleOutConfig(videos=args.shards * 2, latency=args.latency)

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    work = Path(tempfile.mkdtemp(prefix="objectron-wds-requests-"))
    fake = FakeGcsServer(
        root=work / "fake-gcs", log_path=work / "fake-gcs.log", parent_death_signal=signal.SIGTERM
    )
    proxy: Any = None
    server: PrefectServer | None = None
    results = []
    try:
        fake.start()
        import os

        os.environ["STORAGE_EMULATOR_HOST"] = fake.url
        from tasks.objectron.sample_data import write_sample_dataset
        from tasks.storage import open_storage

        fake.create_bucket(SOURCE_BUCKET)
        write_sample_dataset(
            open_storage(f"gs://{SOURCE_BUCKET}"), videos=config.videos, seed=19,
            video_bytes=config.video_bytes, placeholders=0, unannotated=0,
            include_no_split_video=False, traps=False,
        )  # fmt: skip
        proxy = start_latency_proxy(fake.url, config.latency)
        server = PrefectServer(work / "prefect-home")
        server.start()
        stack = Stack(config, work, fake, proxy, server, f"requests-trace-{os.getpid()}", log)
        for number in range(args.runs):
            results.append(trace_run(stack, f"run-{number + 1}"))
            log(f"run {number + 1}: {results[-1]['table']['prepare']}")
    finally:
        if server is not None:
            server.stop()
        if proxy is not None:
            proxy.stop()
        fake.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"one convert run of {config.shards} shards, storage +{config.latency} s per request; "
        f"{args.runs} run(s), values are median (each run)"
    )
    print()
    print("| stage | seconds | requests | rounds (in a row) |")
    print("|---|---|---|---|")
    for stage in results[0]["table"]:
        cells = []
        for key, digits in (("seconds", 1), ("requests", 0), ("rounds", 1)):
            values = [r["table"][stage][key] for r in results if stage in r["table"]]
            text = f"{median(values):.{digits}f}"
            if len(values) > 1:
                text += " (" + ", ".join(f"{v:.{digits}f}" for v in values) + ")"
            cells.append(text)
        print(f"| {stage} | " + " | ".join(cells) + " |")
    if args.list:
        print()
        for offset, what in results[-1]["listed"]:
            print(f"{offset:7.2f} s  {what}")
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
