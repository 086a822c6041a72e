"""Row 4: peak RSS of one shard build as its member grows (10 MB, 200 MB, 1 GB in the full
run), with the decode workers it starts, against webdataset's TarWriter, which holds each
member in memory. Memory must stay flat in the member's size."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from benchmarks.common import MB, MiB, run_forked
from benchmarks.harness import Bench, Row, mib, yes
from benchmarks.variants import Measured, empty_bucket, spec_set, with_workers
from tasks.objectron.sample_data import build_annotation, build_geometry, sample_values
from tasks.storage import LocalStorage, open_storage


def rows(bench: Bench) -> None:
    c = bench.config
    bench.raw["memory"] = {}
    for size in c.member_sizes:
        label = f"{size / MB:g} MB"
        results: dict[str, Measured] = {}
        for backend in ("gcs", "local"):
            if backend == "gcs":
                name = f"bench-big-{size}"
                bench.fake.create_bucket(name)
                source = f"gs://{name}"
            else:
                source = str(bench.work / f"big-{size}")
                Path(source).mkdir()
            bench.log(f"Member of {label} ({backend}): writing the source")
            run_forked(write_big_sample, source, size)
            specs = spec_set(source, 1)
            for kind in ("build", "wds"):
                results[f"{backend}-{kind}"] = bench.run_kind(kind, backend, source, specs, 1)
            if backend == "gcs":
                run_forked(empty_bucket, source)
            else:
                shutil.rmtree(source, ignore_errors=True)
        bench.raw["memory"][label] = {k: vars(v) for k, v in results.items()}
        # A build with decoding is its process plus the decode workers it started (their
        # peaks added, though they need not coincide: an upper bound).
        totals = {b: with_workers(results[f"{b}-build"]) for b in ("gcs", "local")}
        bench.rows.append(Row(
            f"4 {label}",
            f"peak RSS, one shard with a {label} member and its decoded geometry and "
            f"annotation (fake-gcs; local), chunk {c.chunk_mib} MiB: build process + decode "
            "workers = total",
            "; ".join(
                f"{mib(results[f'{b}-build'].peak_kib)} + "
                f"{results[f'{b}-build'].children_count} x "
                f"{mib(results[f'{b}-build'].children_peak_kib)} = {mib(totals[b])} MiB"
                for b in ("gcs", "local")
            ),
            f"TarWriter {mib(results['gcs-wds'].peak_kib)}; "
            f"{mib(results['local-wds'].peak_kib)} MiB",
            f"process before the build {mib(results['gcs-build'].base_kib)} MiB",
            "< 200 MiB, flat", yes(max(totals.values()) < 200 * 1024),
        ))  # fmt: skip


def write_big_sample(url: str, size: int) -> None:
    """One sample whose video is `size` bytes of incompressible data (written in 64 MiB steps),
    with a geometry and an annotation file of 270 frames that decode, so both decode workers
    run as they do for every annotated video."""
    key = "bike/batch-0/0"
    storage = open_storage(url)
    piece = os.urandom(4 * MiB)
    with tempfile.NamedTemporaryFile(dir="/tmp", prefix="bench-big-") as handle:
        remaining = size
        while remaining:
            handle.write(piece[: min(len(piece), remaining)])
            remaining -= min(len(piece), remaining)
        handle.flush()
        if isinstance(storage, LocalStorage):
            target = storage.root / f"videos/{key}/video.MOV"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(handle.name, target)
        else:
            blob = storage.bucket.blob(f"videos/{key}/video.MOV", chunk_size=256 * MiB)  # type: ignore[attr-defined]
            blob.upload_from_filename(handle.name)
    values = sample_values(key, frames=270)
    storage.replace_bytes(f"videos/{key}/geometry.pbdata", build_geometry(values))
    storage.replace_bytes(f"annotations/{key}.pbdata", build_annotation(values))
    storage.replace_bytes(f"videos/{key}/id.txt", b"0" * 32 + b"\n")
