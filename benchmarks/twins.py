"""The cost of the lossless JSON twins: decode CPU and bytes per sample, before and after.

    .venv/bin/python benchmarks/twins.py [--quick] [--frames 270] [--reps 5] [--before COMMIT]

Three decoders on the same files, measured alternately in one process: CPU time (process_time)
of parsing, building the documents and writing the JSON, per video, median of `--reps`:

- "first": the first twin format (the flattened views only), the issue's baseline: the
  decoder of commit `--before` (default d3eb2c8, whose non-lossless path is that format), read
  with `git show` and loaded as a module of its own;
- "then": the lossless twins as that commit wrote them (an object per point; its lossless.py
  loaded the same way);
- "now": the lossless twins a `convert` run writes now (`decoded_json`).

The ratio and the target (<= 1.5x) are "now" against "first". The files are the sample
dataset's (a 270-frame video: camera, a floor plane anchor and a feature point cloud per
frame), with clouds of 0, 48 (the sample data's) and 300 points per frame (real ARKit clouds
hold tens to hundreds). Run it in a git clone of the project (it reads the old commit).
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from tasks.objectron import proto as pb
from tasks.objectron.decode_pool import decoded_json
from tasks.objectron.sample_data import build_annotation, build_geometry, sample_values

ROOT = Path(__file__).resolve().parent.parent
TARGET_RATIO = 1.5
Job = Callable[[bytes, bytes], tuple[bytes, bytes]]


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


def _module_at(
    commit: str, path: str, name: str, replace: tuple[str, str] | None = None
) -> types.ModuleType:
    """The module at `path` as it was at `commit`, loaded under `name`."""
    source = subprocess.run(
        ["git", "show", f"{commit}:{path}"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    if replace:
        source = source.replace(*replace)
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    exec(compile(source, f"<{path} at {commit}>", "exec"), module.__dict__)
    return module


def decoders_of(commit: str) -> tuple[Job, Job]:
    """The first format and the lossless twins of `commit`."""
    _module_at(commit, "tasks/objectron/lossless.py", "_lossless_then")
    old = _module_at(
        commit,
        "tasks/objectron/decode.py",
        "_decode_then",
        ("from tasks.objectron.lossless import", "from _lossless_then import"),
    )

    def first(geometry: bytes, annotation: bytes) -> tuple[bytes, bytes]:
        return (
            orjson.dumps(old.decode_geometry(geometry)),
            orjson.dumps(old.decode_annotation(annotation)),
        )

    def then(geometry: bytes, annotation: bytes) -> tuple[bytes, bytes]:
        return (
            orjson.dumps(old.decode_geometry(geometry, lossless=True)),
            orjson.dumps(old.decode_annotation(annotation, lossless=True)),
        )

    return first, then


def now(geometry: bytes, annotation: bytes) -> tuple[bytes, bytes]:
    return decoded_json("geometry", geometry), decoded_json("annotation", annotation)


def cpu_ms(job: Job, geometry: bytes, annotation: bytes) -> float:
    started = time.process_time()
    job(geometry, annotation)
    return (time.process_time() - started) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=270, help="frames per video (270)")
    parser.add_argument("--reps", type=int, default=5, help="repetitions, alternating (5)")
    parser.add_argument("--quick", action="store_true", help="30 frames, 2 repetitions")
    parser.add_argument("--before", default="d3eb2c8", help="the commit of the old decoders")
    args = parser.parse_args(argv)
    frames, reps = (30, 2) if args.quick else (args.frames, args.reps)
    first, then = decoders_of(args.before)
    jobs = {"first": first, "then": then, "now": now}
    print(f"twins of a {frames}-frame video, median of {reps} alternating repetitions; "
          f"first format and lossless 'then' from commit {args.before}")  # fmt: skip
    print(f"{'points/frame':>12} | {'first ms':>8} | {'then ms':>7} | {'now ms':>6} | "
          f"{'now/first':>9} | {'target':>6} | {'first bytes':>11} | {'then bytes':>10} | "
          f"{'now bytes':>10} | met")  # fmt: skip
    for points in (0, 48, 300):
        geometry, annotation = geometry_with_clouds(frames, points)
        # The same values, whichever decoder: only the form of the lossless part differs.
        assert (
            orjson.loads(now(geometry, annotation)[0])["frames"]
            == orjson.loads(first(geometry, annotation)[0])["frames"]
        )
        times: dict[str, list[float]] = {kind: [] for kind in jobs}
        for _ in range(reps):
            for kind, job in jobs.items():
                times[kind].append(cpu_ms(job, geometry, annotation))
        ms = {kind: statistics.median(values) for kind, values in times.items()}
        size = {
            kind: sum(len(part) for part in job(geometry, annotation)) for kind, job in jobs.items()
        }
        ratio = ms["now"] / ms["first"]
        print(f"{points:>12} | {ms['first']:>8.1f} | {ms['then']:>7.1f} | {ms['now']:>6.1f} | "
              f"{ratio:>9.2f} | {'<= ' + str(TARGET_RATIO):>6} | {size['first']:>11,} | "
              f"{size['then']:>10,} | {size['now']:>10,} | "
              f"{'yes' if ratio <= TARGET_RATIO else 'NO'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
