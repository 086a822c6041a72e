"""Row 5: planning time at full scale: parse a `gsutil ls -a -l -r` listing of 20,088 video
folders (~210,000 lines), assemble the samples and plan the shards (the specs timed apart).
Row 5f: the same listing planned as `objectron-to-frames` plans it: its 14,584 annotated videos
(only_with_anno) into shards of 10 videos, and a frame spec (FrameOptions) with its digest for
every shard, all timed."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import median, run_forked
from benchmarks.harness import Bench, Row, yes
from benchmarks.synthetic import synthetic_listing
from tasks.listing import parse_listing_file, resolve_listed_names
from tasks.objectron.sample_data import index_files
from tasks.planning import plan_shards
from tasks.samples import assemble_samples, parse_split_index
from tasks.specs import FrameOptions, make_spec
from tasks.storage import LocalStorage


def rows(bench: Bench) -> None:
    c = bench.config
    timings = [run_forked(time_planning, c.listing_videos, c.listing_lines) for _ in range(c.reps)]
    bench.raw["planning"] = timings
    total = median([t["plan_total"] for t in timings])
    parts = {
        k: median([t[k] for t in timings])
        for k in ("parse", "resolve", "assemble", "plan", "specs")
    }
    bench.log(f"Planning: {timings[0]['lines']:,} lines, {timings[0]['shards']:,} shards: {parts}")
    bench.rows.append(Row(
        "5", f"planning: parse {timings[0]['lines']:,}-line listing + assemble "
        f"{timings[0]['samples']:,} samples + plan {timings[0]['shards']:,} shards",
        f"{total:.2f} s", f"parse {parts['parse']:.2f}, resolve {parts['resolve']:.2f}, "
        f"assemble {parts['assemble']:.2f}, plan {parts['plan']:.2f} s",
        f"(+ specs {parts['specs']:.2f} s)", "< 2 s", yes(total < 2),
    ))  # fmt: skip


# flows/frames.py's defaults: 10 videos per shard, every frame, 480x640, quality 90, seed 0.
FRAME_VIDEOS_PER_SHARD = 10
FRAME_OPTIONS = FrameOptions(stride=1, image_size="480x640", jpeg_quality=90, shuffle_seed=0)
FRAMES_TARGET_SECONDS = 5


def frame_rows(bench: Bench) -> None:
    """Row 5f: the frames flow's planning of the same full-scale listing."""
    c = bench.config
    timings = [
        run_forked(time_planning, c.listing_videos, c.listing_lines, True) for _ in range(c.reps)
    ]
    bench.raw["planning_frames"] = timings
    parts = {
        k: median([t[k] for t in timings])
        for k in ("total", "parse", "resolve", "assemble", "plan", "specs")
    }
    first = timings[0]
    bench.log(f"Frame planning: {first['samples']:,} annotated videos, {first['shards']:,} "
              f"shards: {parts}")  # fmt: skip
    bench.rows.append(Row(
        "5f", f"frames planning: parse {first['lines']:,}-line listing + assemble "
        f"{first['samples']:,} annotated videos (only_with_anno) + plan {first['shards']:,} "
        f"shards of {FRAME_VIDEOS_PER_SHARD} + {first['digests']:,} frame specs and digests",
        f"{parts['total']:.2f} s", f"parse {parts['parse']:.2f}, resolve {parts['resolve']:.2f}, "
        f"assemble {parts['assemble']:.2f}, plan {parts['plan']:.2f}, specs {parts['specs']:.2f} s",
        f"{min(t['total'] for t in timings):.2f}-{max(t['total'] for t in timings):.2f} s "
        f"in {len(timings)} runs",
        f"< {FRAMES_TARGET_SECONDS} s", yes(parts["total"] < FRAMES_TARGET_SECONDS),
    ))  # fmt: skip


def time_planning(videos: int, lines: int, frames: bool = False) -> dict[str, Any]:
    """In a forked child: the listing text is made first (not timed). `frames`: as the frames
    flow plans (annotated videos only, FRAME_VIDEOS_PER_SHARD to a shard, frame specs)."""
    text, counts = synthetic_listing(videos, lines)
    empty = LocalStorage(Path(tempfile.gettempdir()) / "objectron-wds-bench-no-such-folder")
    t0 = time.perf_counter()
    listed = parse_listing_file(text, "gs://objectron")
    t1 = time.perf_counter()
    objects = resolve_listed_names(empty, listed)  # the listing has sizes + generations: no stat
    t2 = time.perf_counter()
    splits = parse_split_index({f"v1/index/{name}": data for name, data in index_files().items()})
    assembly = assemble_samples(objects, splits, only_with_anno=frames)
    t3 = time.perf_counter()
    if frames:
        plans = plan_shards(assembly.samples, shard_size=FRAME_VIDEOS_PER_SHARD, series="frames")
    else:
        plans = plan_shards(assembly.samples, shard_size=3)
    t4 = time.perf_counter()
    options = FRAME_OPTIONS if frames else None
    specs = [make_spec(plan, "gs://objectron", frames=options) for plan in plans]
    digests = [spec.digest for spec in specs]
    t5 = time.perf_counter()
    return {
        "lines": counts["lines"],
        "objects": len(listed),
        "needed": len(objects),
        "samples": len(assembly.samples),
        "shards": len(plans),
        "digests": len(digests),
        "parse": t1 - t0,
        "resolve": t2 - t1,
        "assemble": t3 - t2,
        "plan": t4 - t3,
        "plan_total": t4 - t0,
        "specs": t5 - t4,
        "total": t5 - t0,
    }
