"""The `objectron-to-wds` flow: list, assemble, plan, write specs, build shards, index.

This module only composes the stages in `tasks/`; each stage's logic is a plain function there.
Run it with `objectron-wds convert ...` or a deployment.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

# Loaded by path (a deployment entry point): make the project importable.
if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from flows.fanout import build_for_parent, build_shards, children_markdown, fan_out_deployment
from flows.shards import ShardsFailed, failed_message
from tasks.build import STATUS_BUILT
from tasks.checks import preflight
from tasks.index import write_index
from tasks.listing import list_source
from tasks.parameters import (
    MAX_CONCURRENCY,
    InvalidInput,
    check_dest,
    check_parallel_runs,
    validate_parameters,
)
from tasks.planning import plan_shards
from tasks.samples import assemble
from tasks.specs import upload_shard_specs


class NoSamples(InvalidInput):
    """The source (after filters) holds no video that can become a sample."""


@flow(
    name="objectron-to-wds",
    flow_run_name="objectron-to-wds {series}: {source} -> {dest}",
    # The window below keeps at most `concurrency` builds in flight; the pool is only a ceiling.
    # (Prefect's own annotation of task_runner is invariant in the future type, hence the ignore.)
    task_runner=ThreadPoolTaskRunner(max_workers=MAX_CONCURRENCY),  # type: ignore[arg-type]
    validate_parameters=True,
)
def objectron_to_wds(
    dest: str,
    source: str = "gs://objectron",
    listing_file: str | None = None,
    shard_size: int = 100,
    max_shards: int | None = None,
    shuffle_seed: int | None = 0,
    only_with_anno: bool = False,
    classes: list[str] | None = None,
    split: Literal["all", "train", "test"] = "all",
    series: str = "objectron",
    concurrency: int = 4,
    concurrency_limit: str | None = "objectron-wds-build",
    chunk_size_mib: int = 16,
    overwrite: bool = False,
    decode: bool = True,
    parallel_runs: int = 1,
    build_plan: str | None = None,
) -> dict[str, Any]:
    """Convert an Objectron-shaped bucket or folder into WebDataset shards.

    Args:
        dest: Where shards, specs, stats and the shard index go: `gs://BUCKET/PREFIX` or a local
            folder. Must not lie inside `source`.
        source: The Objectron bucket (`gs://objectron`, read anonymously) or a copy of it: a
            `gs://` URL or a local folder with `videos/`, `annotations/` and `v1/index/`.
        listing_file: Optional `gsutil ls -r` (or `ls -l -r`) output to use instead of listing
            the bucket through the API; a local path or a gs:// URL.
        shard_size: Samples (videos) per shard; the last shard may hold fewer.
        max_shards: Build at most this many shards (the first ones of the plan); empty = all.
        shuffle_seed: Seed of the shuffle applied to the key-sorted samples before cutting
            shards; empty = keep key order. Changing it changes every shard.
        only_with_anno: Keep only videos that have an annotation file.
        classes: Only these classes (e.g. ["bike", "cup"]); empty = all nine.
        split: `all` converts every video into one series; `train` or `test` converts only
            the videos the index files (v1/index/CLASS_annotations_train|test) put in that
            split, into the series SERIES-train or SERIES-test. Annotated videos in neither
            split are reported.
        series: First part of every shard name: SERIES-000000.tar (SERIES-SPLIT-000000.tar
            with a split).
        concurrency: Shards built at the same time by this run.
        concurrency_limit: Tag of a Prefect task concurrency limit that bounds builds across
            all runs and workers (created by `objectron-wds setup`); build task runs carry
            the tag and each holds a slot from before it starts running until it ends.
            Empty = none; a tag with no limit behind it is ignored with a warning.
        chunk_size_mib: Upload chunk size in MiB (GCS resumable uploads; reads stream in
            1 MiB pieces whatever this is; local folders hand this much written data to the
            disk at a time). Memory per build is about one chunk plus the client: measured
            137-143 MiB for a process building one shard at 16 MiB, whatever the size of
            members and shards, plus ~25 MiB per decode worker (benchmarks/RESULTS.md).
        overwrite: Replace shards and specs at the destination that came from a different
            plan. Off by default: such a run is refused before writing anything.
        decode: Also store each geometry and annotation decoded to JSON (KEY.geometry.json,
            KEY.anno.json), so training code needs no protobuf schema. The raw .pbdata stay.
            A file that does not decode is kept raw and its error recorded in KEY.json.
            Decoding runs in worker processes, one per CPU (about 25 MiB each);
            OBJECTRON_WDS_DECODE_PROCESSES=N sets how many, 0 decodes in the build threads.
        parallel_runs: Runs that build this plan at once. With N > 1 this run plans, then
            starts N runs of its deployment (objectron-to-wds/manual when started from the
            command line) that only build, on whatever workers its work pool has, and ends
            with the index and summary of the whole plan (README, Scaling out).
        build_plan: Set by a run with parallel_runs > 1 for the runs it starts: the plan file
            at the destination (SERIES.plan.json) they build from, without listing or
            planning. Leave empty.
    """
    logger = get_run_logger()
    check_dest(dest, "objectron_wds_dest")
    validate_parameters(
        shard_size=shard_size,
        max_shards=max_shards,
        concurrency=concurrency,
        chunk_size_mib=chunk_size_mib,
        series=series,
    )
    check_parallel_runs(parallel_runs, build_plan)
    if build_plan:
        return build_for_parent(
            source, dest, build_plan, concurrency=concurrency,
            concurrency_limit=concurrency_limit, overwrite=overwrite,
            chunk_size_mib=chunk_size_mib,
        )  # fmt: skip
    deployment = fan_out_deployment("objectron-to-wds") if parallel_runs > 1 else None
    preflight(source, dest, listing_file)
    objects = list_source(source, listing_file)
    assembly = assemble(source, objects, only_with_anno, classes, split)
    if split != "all":
        series = f"{series}-{split}"
    if not assembly.samples:
        raise NoSamples(
            f"no samples under {source}: {len(objects)} objects listed, left out: "
            f"{assembly.skipped_counts() or 'nothing'}. Check the source URL (it should hold "
            "videos/CLASS/batch-I/J/video.MOV) and the classes / only_with_anno filters."
        )
    plans = plan_shards(
        assembly.samples,
        shard_size=shard_size,
        max_shards=max_shards,
        shuffle_seed=shuffle_seed,
        series=series,
    )
    logger.info(
        "Plan: %d samples into %d shards of up to %d (seed %s)",
        sum(len(p.samples) for p in plans), len(plans), shard_size, shuffle_seed,
    )  # fmt: skip
    specs = upload_shard_specs(source, dest, plans, overwrite, decode)
    built_by = build_shards(
        source, dest, specs, deployment=deployment, parallel_runs=parallel_runs, series=series,
        frames=False, concurrency=concurrency, concurrency_limit=concurrency_limit,
        overwrite=overwrite, chunk_size_mib=chunk_size_mib,
    )  # fmt: skip
    outcome, children = built_by.build, built_by.children
    stats, failures = outcome.stats, outcome.failures

    built = sum(s.status == STATUS_BUILT for s in stats)
    summary: dict[str, Any] = {
        "dest": dest,
        "shards": len(plans),
        "built": built,
        "skipped": len(stats) - built,
        "failed": len(failures),
        "samples": sum(s.samples for s in stats),
        "tar_bytes": sum(s.tar_bytes for s in stats),
        "left_out": assembly.skipped_counts(),
        "no_split": assembly.no_split,
        "series": series,
        "index": None,
        "children": [asdict(child) for child in children],
    }
    if failures:
        create_markdown_artifact(
            key="objectron-wds-summary",
            markdown=_summary_markdown(summary, failures),
            description="objectron-to-wds run summary",
        )
        raise ShardsFailed(failed_message(failures, len(plans)))
    summary["index"] = write_index(dest, series, stats)
    create_markdown_artifact(
        key="objectron-wds-summary",
        markdown=_summary_markdown(summary, failures),
        description="objectron-to-wds run summary",
    )
    logger.info(
        "Done: %d shards (%d built, %d already there), %d samples, %s bytes; index %s",
        summary["shards"], built, summary["skipped"], summary["samples"],
        f"{summary['tar_bytes']:,}", summary["index"],
    )  # fmt: skip
    return summary


def _summary_markdown(summary: dict[str, Any], failures: list[str]) -> str:
    lines = [
        "# objectron-to-wds",
        "",
        f"- destination: `{summary['dest']}`",
        f"- shards planned: {summary['shards']}; built: {summary['built']}; "
        f"already there: {summary['skipped']}; failed: {summary['failed']}",
        f"- samples: {summary['samples']}; bytes: {summary['tar_bytes']:,}",
        f"- left out of the plan: {summary['left_out'] or 'nothing'}",
        f"- shard index: `{summary['index']}`"
        if summary["index"]
        else "- shard index: not written",
    ]
    lines += children_markdown(summary["children"])
    if failures:
        lines += ["", "## Failed shards", ""] + [f"- {failure}" for failure in failures[:50]]
    return "\n".join(lines) + "\n"
