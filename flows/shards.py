"""Building every shard of a plan whose specs are written: the part of a flow that `convert`
and `frames` share (the build task, its cache and concurrency limit, progress and the table)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from prefect import get_run_logger
from prefect.futures import PrefectFuture

from flows.artifacts import RunReport
from flows.backpressure import ServerBackPressure
from flows.bounded import run_bounded
from tasks.build import STATUS_CACHED, build
from tasks.policy import existing_tag_limit
from tasks.specs import SpecUpload
from tasks.stats import ShardStats


@dataclass(frozen=True)
class BuildOutcome:
    stats: list[ShardStats]  # of the shards built or found complete, in completion order
    failures: list[str]  # "SHARD: Error: message" of each shard that could not be built


def build_planned_shards(
    source: str,
    dest: str,
    specs: SpecUpload,
    *,
    description: str,
    concurrency: int,
    concurrency_limit: str | None,
    overwrite: bool,
    chunk_size_mib: int,
    frames: bool = False,
) -> BuildOutcome:
    """Build (or confirm) every shard in `specs`, at most `concurrency` at a time, publishing
    progress and the shard table as artifacts."""
    logger = get_run_logger()
    existing = set(specs.existing_shards)
    limit_tag = existing_tag_limit(concurrency_limit)
    report = RunReport(len(specs.digests), description, frames=frames)

    # A shard missing at the destination is always built, even if a cache record says it was
    # built once (it may have been deleted since); a present one may be answered from the cache.
    tags = {limit_tag} if limit_tag else set()
    build_present = build.with_options(tags=tags)
    build_missing = build.with_options(tags=tags, refresh_cache=True)
    stats: list[ShardStats] = []
    failures: list[str] = []

    def collect(shard: str, future: PrefectFuture[ShardStats]) -> None:
        try:
            result = future.result()
        except Exception as exc:
            failures.append(f"{shard}: {type(exc).__name__}: {exc}")
            report.shard_failed(shard, f"{type(exc).__name__}: {exc}")
            return
        if future.state.name == "Cached":
            # The record is from the run that built it; this run did not build it again.
            result = replace(result, status=STATUS_CACHED, seconds=0.0)
            logger.info("%s: already exists (cached result of the run that built it)", shard)
        stats.append(result)
        report.shard_finished(result)

    def submit(shard: str, digest: str) -> PrefectFuture[ShardStats]:
        task = build_present if shard in existing else build_missing
        return task.submit(source, dest, shard, digest, overwrite, chunk_size_mib)

    pressure = ServerBackPressure("build ")
    run_bounded(
        submit, [(s, (s, d)) for s, d in specs.digests.items()], concurrency, collect, pressure
    )
    if pressure.waited_seconds >= 1:
        logger.info("Waited %.0f s for the Prefect server to record runs", pressure.waited_seconds)
    report.publish_table()
    return BuildOutcome(stats, failures)
