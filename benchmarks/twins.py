"""The cost of the lossless JSON twins: decode CPU and bytes per sample, before and after.

    .venv/bin/python benchmarks/twins.py [--quick] [--frames 270] [--reps 5]

"Before" is the first twin format (the flattened views: `decode_geometry(raw)`,
`decode_annotation(raw)`), "after" the lossless twins a `convert` run writes now (the same plus
`records` and `sequence`: `decoded_json`), on the same files, measured alternately in one
process: CPU time (process_time) of parsing, building the documents and writing the JSON, per
video, median of `--reps`. The files are the sample dataset's (a 270-frame video: camera, a
floor plane anchor and a feature point cloud per frame), with clouds of 0, 48 (the sample
data's) and 300 points per frame (real ARKit clouds hold tens to hundreds).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from tasks.objectron import proto as pb
from tasks.objectron.decode import decode_annotation, decode_geometry
from tasks.objectron.decode_pool import decoded_json
from tasks.objectron.sample_data import build_annotation, build_geometry, sample_values

TARGET_RATIO = 1.5


def geometry_with_clouds(frames: int, points: int) -> tuple[bytes, bytes]:
    """A sample video's geometry (its clouds replaced by `points` random points per frame, with
    ids) and its annotation."""
    values = sample_values("cup/batch-1/1", frames=frames)
    geometry = build_geometry(values)
    rng = random.Random(points)
    records = []
    for record in pb.split_geometry_records(geometry):
        frame = pb.ARFrame.FromString(record)
        frame.ClearField("raw_feature_points")
        if points:
            cloud = frame.raw_feature_points
            cloud.count = points
            for _ in range(points):
                cloud.point.add(x=rng.uniform(-1, 1), y=rng.uniform(0, 1), z=rng.uniform(-1, 1))
                cloud.identifier.append(rng.getrandbits(63))
        records.append(frame.SerializeToString())
    return pb.join_geometry_records(records), build_annotation(values)


def before(geometry: bytes, annotation: bytes) -> tuple[bytes, bytes]:
    return orjson.dumps(decode_geometry(geometry)), orjson.dumps(decode_annotation(annotation))


def after(geometry: bytes, annotation: bytes) -> tuple[bytes, bytes]:
    return decoded_json("geometry", geometry), decoded_json("annotation", annotation)


def cpu_ms(job: Callable[[bytes, bytes], object], geometry: bytes, annotation: bytes) -> float:
    started = time.process_time()
    job(geometry, annotation)
    return (time.process_time() - started) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=270, help="frames per video (270)")
    parser.add_argument("--reps", type=int, default=5, help="repetitions, alternating (5)")
    parser.add_argument("--quick", action="store_true", help="30 frames, 2 repetitions")
    args = parser.parse_args(argv)
    frames, reps = (30, 2) if args.quick else (args.frames, args.reps)
    print(f"twins of a {frames}-frame video, median of {reps} alternating repetitions")
    print(f"{'points/frame':>12} | {'before ms':>9} | {'after ms':>8} | {'ratio':>5} | "
          f"{'target':>6} | {'before bytes':>12} | {'after bytes':>11} | met")  # fmt: skip
    for points in (0, 48, 300):
        geometry, annotation = geometry_with_clouds(frames, points)
        times: dict[str, list[float]] = {"before": [], "after": []}
        for _ in range(reps):
            for kind, job in (("before", before), ("after", after)):
                times[kind].append(cpu_ms(job, geometry, annotation))
        old, new = (statistics.median(times[k]) for k in ("before", "after"))
        old_bytes = sum(len(part) for part in before(geometry, annotation))
        new_bytes = sum(len(part) for part in after(geometry, annotation))
        ratio = new / old
        print(f"{points:>12} | {old:>9.1f} | {new:>8.1f} | {ratio:>5.2f} | "
              f"{'<= ' + str(TARGET_RATIO):>6} | {old_bytes:>12,} | {new_bytes:>11,} | "
              f"{'yes' if ratio <= TARGET_RATIO else 'NO'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
