"""Prototype (benchmarks only): the conversion flow's build loop with back-pressure from the
Prefect server, for plans of thousands of shards.

Why: every task run reaches the server as events (Pending, Running, Completed, ...) that a
server-side service writes to the database. Prefect's in-memory messaging holds at most 10,000
messages per subscription (`prefect/server/utilities/messaging/memory.py`); a flow that finishes
tiny tasks faster than the database absorbs their events overfills that queue, and the server
then *drops* events ("Subscription queue is full"), so task runs go missing from the UI and API.

What this changes, compared with flows/convert.py: the same stages, the same `build` task (same
cache key, persisted results, retry policy) and the same `concurrency` window, plus one rule:
every `check_every` submissions the flow asks the server how many of its build task runs it has
recorded as finished, and while that lags the builds this process has seen finish by more than
`max_lag`, it waits before submitting more. The server's backlog is thereby bounded; a fast
database never waits, a slow one slows the flow down instead of losing records.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture, as_completed
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from tasks.build import STATUS_BUILT, STATUS_CACHED, ShardStats, build
from tasks.index import write_index
from tasks.listing import list_source
from tasks.planning import plan_shards
from tasks.samples import assemble
from tasks.specs import upload_shard_specs

# Terminal state types a build task run can end in; Cached runs are COMPLETED.
FINISHED_TYPES = ["COMPLETED", "FAILED", "CRASHED", "CANCELLED"]


class ServerBackPressure:
    """Waits while the server's record of finished build runs lags this process's count."""

    def __init__(self, max_lag: int, check_every: int, poll_seconds: float = 1.0) -> None:
        self.max_lag = max_lag
        self.check_every = check_every
        self.poll_seconds = poll_seconds
        self.flow_run_id = str(flow_run.get_id())
        self.finished_here = 0
        self.waited_seconds = 0.0
        self.checks = 0
        self.max_seen_lag = 0

    def finished(self) -> None:
        self.finished_here += 1

    def recorded(self) -> int:
        """Build runs of this flow run the server has recorded as finished: one indexed COUNT
        query, through Prefect's own client (so Prefect Cloud's auth applies too)."""
        from prefect.client.orchestration import get_client

        self.checks += 1
        body = {
            "flow_runs": {"id": {"any_": [self.flow_run_id]}},
            "task_runs": {
                "name": {"like_": "build "},
                "state": {"type": {"any_": FINISHED_TYPES}},
            },
        }
        with get_client(sync_client=True) as client:
            response = client.request("POST", "/task_runs/count", json=body)
            response.raise_for_status()
            return int(response.json())

    def wait_if_behind(self, submitted: int) -> None:
        if submitted % self.check_every:
            return
        started = time.monotonic()
        while True:
            lag = self.finished_here - self.recorded()
            self.max_seen_lag = max(self.max_seen_lag, lag)
            if lag <= self.max_lag:
                break
            time.sleep(self.poll_seconds)
        self.waited_seconds += time.monotonic() - started


@flow(
    name="objectron-to-wds-backpressure",
    task_runner=ThreadPoolTaskRunner(max_workers=32),  # type: ignore[arg-type]
)
def convert_with_backpressure(
    dest: str,
    source: str,
    shard_size: int = 100,
    concurrency: int = 8,
    chunk_size_mib: int = 16,
    max_lag: int = 500,
    check_every: int = 50,
) -> dict[str, Any]:
    """List, assemble, plan, write specs, build every shard (window of `concurrency`, with
    back-pressure), write the index. Per-shard task runs, caching and retries as in convert."""
    logger = get_run_logger()
    objects = list_source(source, None)
    assembly = assemble(source, objects, False, None, "all")
    plans = plan_shards(assembly.samples, shard_size=shard_size, series="objectron")
    specs = upload_shard_specs(source, dest, plans, False)
    existing = set(specs.existing_shards)
    build_missing = build.with_options(refresh_cache=True)
    pressure = ServerBackPressure(max_lag, check_every)
    stats: list[ShardStats] = []
    failures: list[str] = []
    in_flight: dict[PrefectFuture[ShardStats], str] = {}

    def collect(future: PrefectFuture[ShardStats]) -> None:
        shard = in_flight.pop(future)
        pressure.finished()
        try:
            result = future.result()
        except Exception as exc:
            failures.append(f"{shard}: {type(exc).__name__}: {exc}")
            return
        if future.state.name == "Cached":
            result = replace(result, status=STATUS_CACHED)
        stats.append(result)

    for submitted, (shard, digest) in enumerate(specs.digests.items(), start=1):
        while len(in_flight) >= concurrency:
            collect(next(as_completed(list(in_flight))))
        pressure.wait_if_behind(submitted)
        task = build if shard in existing else build_missing
        in_flight[task.submit(source, dest, shard, digest, False, chunk_size_mib)] = shard
    for future in as_completed(list(in_flight)):
        collect(future)
    if failures:
        raise RuntimeError(f"{len(failures)} shards failed: {failures[:5]}")
    index = write_index(dest, "objectron", stats)
    logger.info(
        "Back-pressure: waited %.1f s in total, %d checks, largest lag seen %d",
        pressure.waited_seconds, pressure.checks, pressure.max_seen_lag,
    )  # fmt: skip
    return {
        "shards": len(plans),
        "built": sum(s.status == STATUS_BUILT for s in stats),
        "index": index,
        "waited_seconds": pressure.waited_seconds,
        "checks": pressure.checks,
        "max_seen_lag": pressure.max_seen_lag,
    }
