"""The `objectron-to-frames` flow: Objectron's annotated frames as WebDataset samples, one JPEG
and its labels per frame, built from the raw videos.

The stages and guarantees are `objectron-to-wds`'s (flows/convert.py): check, list, assemble
(annotated videos only), plan (videos per shard), specs, build (tasks/frames/shard.py decodes
each shard's videos), index; then the preview picture of the first shard. This module only
composes them. Run it with `objectron-wds frames ...` or the `objectron-to-frames/manual`
deployment.
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

from flows.convert import NoSamples
from flows.fanout import build_for_parent, build_shards, children_markdown, fan_out_deployment
from flows.shards import ShardsFailed, failed_message
from tasks.build import STATUS_BUILT
from tasks.checks import preflight
from tasks.frames.preview import write_preview
from tasks.index import write_index
from tasks.listing import list_source
from tasks.parameters import (
    MAX_CONCURRENCY,
    check_dest,
    check_parallel_runs,
    validate_frame_parameters,
    validate_parameters,
)
from tasks.planning import plan_shards
from tasks.samples import assemble
from tasks.specs import FrameOptions, upload_shard_specs

# The summary lists this many reported videos; the shards' stats and the table list all.
MAX_REPORTED_SHOWN = 50


@flow(
    name="objectron-to-frames",
    flow_run_name="objectron-to-frames {series}: {source} -> {dest}",
    task_runner=ThreadPoolTaskRunner(max_workers=MAX_CONCURRENCY),  # type: ignore[arg-type]
    validate_parameters=True,
)
def objectron_to_frames(
    dest: str,
    source: str = "gs://objectron",
    listing_file: str | None = None,
    videos_per_shard: int = 10,
    max_shards: int | None = None,
    shuffle_seed: int | None = 0,
    classes: list[str] | None = None,
    split: Literal["all", "train", "test"] = "all",
    series: str = "objectron-frames",
    stride: int = 1,
    image_size: str = "480x640",
    jpeg_quality: int = 90,
    concurrency: int = 2,
    concurrency_limit: str | None = "objectron-wds-build",
    chunk_size_mib: int = 16,
    overwrite: bool = False,
    ar_points: bool = False,
    parallel_runs: int = 1,
    build_plan: str | None = None,
) -> dict[str, Any]:
    """Build per-frame WebDataset samples (KEY.jpg + KEY.json) from Objectron's annotated videos.

    Args:
        dest: Where shards, specs, stats, the shard index and the preview go:
            `gs://BUCKET/PREFIX` or a local folder. Must not lie inside `source`.
        source: The Objectron bucket (`gs://objectron`, read anonymously) or a copy of it: a
            `gs://` URL or a local folder with `videos/`, `annotations/` and `v1/index/`.
        listing_file: Optional `gsutil ls -r` (or `ls -l -r`) output to use instead of listing
            the bucket through the API; a local path or a gs:// URL.
        videos_per_shard: Videos whose frames go into one shard (about 250 frames each for
            Objectron at stride 1); the last shard may hold fewer.
        max_shards: Build at most this many shards (the first ones of the plan); empty = all.
        shuffle_seed: Seed of the video shuffle before cutting shards and of the frame order
            inside each shard (neighbouring samples come from different videos); empty = key
            order. Changing it changes every shard.
        classes: Only these classes (e.g. ["bike", "cup"]); empty = all nine.
        split: `all`, or only the videos the index files put in `train` or `test` (series
            SERIES-train / SERIES-test).
        series: First part of every shard name: SERIES-000000.tar.
        stride: Take every stride-th annotated frame of each video (1 = all of them).
        image_size: `WIDTHxHEIGHT`: the upright frame scaled to fit inside this box, aspect
            kept (Objectron's 1440x1920 becomes exactly 480x640); `full` keeps the decoded size.
        jpeg_quality: JPEG quality, 1-100 (libjpeg-turbo).
        concurrency: Shards built at the same time by this run. Each build decodes one video
            at a time in a frame worker process (about one core; OBJECTRON_WDS_FRAME_PROCESSES
            caps the workers, default the core count): 2 keeps a 2-core machine busy; on a big
            machine use about its core count.
        concurrency_limit: Tag of a Prefect task concurrency limit that bounds builds across
            all runs and workers (created by `objectron-wds setup`). Empty = none.
        chunk_size_mib: Upload chunk size in MiB (GCS resumable uploads).
        overwrite: Replace shards and specs at the destination that came from a different
            plan. Off by default: such a run is refused before writing anything.
        ar_points: Add each frame's AR feature points (ARKit's sparse point cloud) to its
            labels: `points` with their ids, camera coordinates (like keypoints_3d) and place
            in the JPEG (normalized like keypoints_2d, null when behind the camera or outside).
            Off by default: shards without them are unchanged.
        parallel_runs: Runs that build this plan at once. With N > 1 this run plans, then
            starts N runs of its deployment (objectron-to-frames/manual when started from the
            command line) that only build, on whatever workers its work pool has, and ends
            with the index, preview and summary of the whole plan (README, Scaling out).
        build_plan: Set by a run with parallel_runs > 1 for the runs it starts: the plan file
            at the destination (SERIES.plan.json) they build from, without listing or
            planning. Leave empty.
    """
    logger = get_run_logger()
    check_dest(dest, "objectron_wds_frames_dest")
    validate_parameters(
        shard_size=videos_per_shard,
        max_shards=max_shards,
        concurrency=concurrency,
        chunk_size_mib=chunk_size_mib,
        series=series,
        shard_size_name="videos_per_shard",
    )
    validate_frame_parameters(stride=stride, image_size=image_size, jpeg_quality=jpeg_quality)
    check_parallel_runs(parallel_runs, build_plan)
    if build_plan:
        return build_for_parent(
            source, dest, build_plan, concurrency=concurrency,
            concurrency_limit=concurrency_limit, overwrite=overwrite,
            chunk_size_mib=chunk_size_mib,
        )  # fmt: skip
    deployment = fan_out_deployment("objectron-to-frames") if parallel_runs > 1 else None
    preflight(source, dest, listing_file)
    objects = list_source(source, listing_file)
    assembly = assemble(source, objects, True, classes, split)
    if split != "all":
        series = f"{series}-{split}"
    if not assembly.samples:
        raise NoSamples(
            f"no annotated videos under {source}: {len(objects)} objects listed, left out: "
            f"{assembly.skipped_counts() or 'nothing'}. Check the source URL (it should hold "
            "videos/CLASS/batch-I/J/video.MOV and annotations/CLASS/batch-I/J.pbdata) and the "
            "classes filter."
        )
    plans = plan_shards(
        assembly.samples,
        shard_size=videos_per_shard,
        max_shards=max_shards,
        shuffle_seed=shuffle_seed,
        series=series,
    )
    logger.info(
        "Plan: %d videos into %d shards of up to %d videos (seed %s; stride %d, %s, quality %d)",
        sum(len(p.samples) for p in plans), len(plans), videos_per_shard, shuffle_seed,
        stride, image_size, jpeg_quality,
    )  # fmt: skip
    options = FrameOptions(
        stride=stride, image_size=image_size, jpeg_quality=jpeg_quality,
        shuffle_seed=shuffle_seed, ar_points=ar_points,
    )  # fmt: skip
    specs = upload_shard_specs(source, dest, plans, overwrite, False, options)
    built_by = build_shards(
        source, dest, specs, deployment=deployment, parallel_runs=parallel_runs, series=series,
        frames=True, concurrency=concurrency, concurrency_limit=concurrency_limit,
        overwrite=overwrite, chunk_size_mib=chunk_size_mib,
    )  # fmt: skip
    outcome, children = built_by.build, built_by.children
    stats, failures = outcome.stats, outcome.failures
    reported = sorted(
        (
            {"shard": s.shard, "video": r.video, "reason": r.reason}
            for s in stats
            for r in s.reported
        ),
        key=lambda entry: entry["video"],
    )
    built = sum(s.status == STATUS_BUILT for s in stats)
    summary: dict[str, Any] = {
        "dest": dest,
        "shards": len(plans),
        "built": built,
        "skipped": len(stats) - built,
        "failed": len(failures),
        "videos": sum(len(p.samples) for p in plans),
        "samples": sum(s.samples for s in stats),
        "tar_bytes": sum(s.tar_bytes for s in stats),
        "reported": reported,
        "left_out": assembly.skipped_counts(),
        "no_split": assembly.no_split,
        "series": series,
        "index": None,
        "preview": None,
        "children": [asdict(child) for child in children],
    }
    if failures:
        _publish_summary(summary, failures)
        raise ShardsFailed(failed_message(failures, len(plans)))
    summary["index"] = write_index(dest, series, stats)
    # The first shard of the plan that holds samples (its videos may all have been reported).
    with_samples = sorted(s.shard for s in stats if s.samples > 0)
    if with_samples:
        summary["preview"] = write_preview(dest, with_samples[0], f"{series}-preview.jpg")
    _publish_summary(summary, failures)
    logger.info(
        "Done: %d shards (%d built, %d already there), %d frame samples from %d videos "
        "(%d reported), %s bytes; index %s; preview %s",
        summary["shards"], built, summary["skipped"], summary["samples"], summary["videos"],
        len(reported), f"{summary['tar_bytes']:,}", summary["index"], summary["preview"],
    )  # fmt: skip
    return summary


def _publish_summary(summary: dict[str, Any], failures: list[str]) -> None:
    create_markdown_artifact(
        key="objectron-wds-summary",
        markdown=_summary_markdown(summary, failures),
        description="objectron-to-frames run summary",
    )


def _summary_markdown(summary: dict[str, Any], failures: list[str]) -> str:
    reported = summary["reported"]
    lines = [
        "# objectron-to-frames",
        "",
        f"- destination: `{summary['dest']}`",
        f"- shards planned: {summary['shards']}; built: {summary['built']}; "
        f"already there: {summary['skipped']}; failed: {summary['failed']}",
        f"- frame samples: {summary['samples']} from {summary['videos']} videos; "
        f"bytes: {summary['tar_bytes']:,}",
        f"- videos reported (no samples): {len(reported)}",
        f"- left out of the plan: {summary['left_out'] or 'nothing'}",
        f"- shard index: `{summary['index']}`"
        if summary["index"]
        else "- shard index: not written",
        f"- preview: `{summary['preview']}`" if summary["preview"] else "- preview: not written",
    ]
    if reported:
        lines += ["", "## Reported videos (no samples; the other videos were built)", ""]
        lines += [
            f"- `{entry['video']}` ({entry['shard']}): {entry['reason']}"
            for entry in reported[:MAX_REPORTED_SHOWN]
        ]
    lines += children_markdown(summary["children"])
    if failures:
        lines += ["", "## Failed shards", ""] + [f"- {failure}" for failure in failures[:50]]
    return "\n".join(lines) + "\n"
