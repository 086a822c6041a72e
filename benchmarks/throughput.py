"""Rows 1-3: how fast a shard build is against the physical limit and the alternatives, on
the same bytes, side by side in one run.

  1a/1b  build vs raw copy (fake-gcs-server; local folders); 1c/1d the same with decode=False
  2      build vs GNU `tar -cf` (2n decode=False, 2nx without fsync, 2f/2nf vs tar + fsync)
  3/3l   build vs webdataset's TarWriter with members in memory: speed and peak RSS
  3s     build vs the reference-style shell pipeline (curl to files, tar piped to curl)

All variants of one backend are measured in the same repetitions, alternating, so each ratio
compares measurements taken back to back.
"""

from __future__ import annotations

from benchmarks.common import MB, median
from benchmarks.harness import Bench, Row, yes
from benchmarks.variants import Measured, spec_set


def rows(bench: Bench) -> None:
    c = bench.config
    bench.log(
        f"Throughput dataset: {c.videos} videos of ~{c.video_bytes / MB:g} MB, "
        f"shards of {c.shard_size}"
    )
    gcs_source, local_source = bench.gcs_source(), bench.local_source()
    gcs_specs = spec_set(gcs_source, c.shard_size)
    local_specs = spec_set(local_source, c.shard_size)
    total = sum(m.size or 0 for s in gcs_specs.raw for m in s.members if m.source)
    bench.log(f"  {len(gcs_specs.raw)} shards, {total / MB:.1f} MB of sources")

    gcs = bench.side_by_side(
        "gcs", gcs_source, gcs_specs, ["build", "copy", "build-nodecode", "wds", "shell"],
        c.concurrency, c.reps,
    )  # fmt: skip
    local = bench.side_by_side(
        "local", local_source, local_specs,
        ["build", "copy", "build-nodecode", "wds", "tar", "tar+fsync",
         "build-nodecode-nofsync"],
        c.concurrency, c.reps, c.local_repeat,
    )  # fmt: skip
    bench.raw["throughput"] = {
        "gcs": {k: [vars(m) for m in v] for k, v in gcs.items()},
        "local": {k: [vars(m) for m in v] for k, v in local.items()},
    }

    def speed(results: dict[str, list[Measured]], kind: str) -> float:
        return median([m.mb_per_s for m in results[kind]])

    def ratio(results: dict[str, list[Measured]], a: str, b: str) -> float:
        # Median of the per-rep ratios: each rep's pair ran back to back.
        return median(
            [x.mb_per_s / y.mb_per_s for x, y in zip(results[a], results[b], strict=True)]
        )

    def peak(results: dict[str, list[Measured]], kind: str) -> float:
        return max(m.peak_kib for m in results[kind]) / 1024

    setting = f"c={c.concurrency}, chunk {c.chunk_mib} MiB"
    r = ratio(gcs, "build", "copy")
    bench.rows.append(Row(
        "1a", f"build vs raw copy, fake-gcs-server ({setting})",
        f"{speed(gcs, 'build'):.1f} MB/s", f"{speed(gcs, 'copy'):.1f} MB/s",
        f"{r:.2f}", ">= 0.9", yes(r >= 0.9),
    ))  # fmt: skip
    r = ratio(local, "build", "copy")
    bench.rows.append(Row(
        "1b", f"build vs raw copy, local folders ({setting})",
        f"{speed(local, 'build'):.0f} MB/s", f"{speed(local, 'copy'):.0f} MB/s",
        f"{r:.2f}", ">= 0.9", yes(r >= 0.9),
    ))  # fmt: skip
    for key, backend, results in (("1c", "fake-gcs", gcs), ("1d", "local", local)):
        r = ratio(results, "build-nodecode", "copy")
        bench.rows.append(Row(
            key, f"build with decode=False vs raw copy, {backend} (cost of the JSON twins)",
            f"{speed(results, 'build-nodecode'):.1f} MB/s",
            f"{speed(results, 'copy'):.1f} MB/s",
            f"{r:.2f}", ">= 0.9", yes(r >= 0.9),
        ))  # fmt: skip
    r = ratio(local, "build", "tar")
    bench.rows.append(Row(
        "2", f"build vs GNU `tar -cf`, local ({setting})",
        f"{speed(local, 'build'):.0f} MB/s", f"{speed(local, 'tar'):.0f} MB/s",
        f"{r:.2f}", ">= 0.8", yes(r >= 0.8),
    ))  # fmt: skip
    r = ratio(local, "build-nodecode", "tar")
    bench.rows.append(Row(
        "2n", "build with decode=False vs GNU `tar -cf`, local",
        f"{speed(local, 'build-nodecode'):.0f} MB/s", f"{speed(local, 'tar'):.0f} MB/s",
        f"{r:.2f}", ">= 0.8", yes(r >= 0.8),
    ))  # fmt: skip
    r = ratio(local, "build-nodecode-nofsync", "tar")
    bench.rows.append(Row(
        "2nx", "prototype: build with decode=False and no fsync vs GNU `tar -cf`, local",
        f"{speed(local, 'build-nodecode-nofsync'):.0f} MB/s", f"{speed(local, 'tar'):.0f} MB/s",
        f"{r:.2f}", ">= 0.8", yes(r >= 0.8),
    ))  # fmt: skip
    r2 = ratio(local, "build-nodecode", "tar+fsync")
    bench.rows.append(Row(
        "2nf", "build with decode=False vs `tar -cf` + fsync, local",
        f"{speed(local, 'build-nodecode'):.0f} MB/s", f"{speed(local, 'tar+fsync'):.0f} MB/s",
        f"{r2:.2f}", "(context)", "",
    ))  # fmt: skip
    r = ratio(local, "build", "tar+fsync")
    bench.rows.append(Row(
        "2f", "build vs `tar -cf` + fsync of the tar (build fsyncs its output)",
        f"{speed(local, 'build'):.0f} MB/s", f"{speed(local, 'tar+fsync'):.0f} MB/s",
        f"{r:.2f}", "(context)", "",
    ))  # fmt: skip
    for backend, results in (("fake-gcs", gcs), ("local", local)):
        r = ratio(results, "build", "wds")
        bench.rows.append(Row(
            "3" if backend == "fake-gcs" else "3l",
            f"build vs webdataset TarWriter (members in memory), {backend}: speed; peak RSS",
            f"{speed(results, 'build'):.1f} MB/s; {peak(results, 'build'):.0f} MiB",
            f"{speed(results, 'wds'):.1f} MB/s; {peak(results, 'wds'):.0f} MiB",
            f"{r:.2f}", "report", "",
        ))  # fmt: skip
    r = ratio(gcs, "build", "shell")
    bench.rows.append(Row(
        "3s",
        "build vs reference-style shell pipeline (curl to files, tar piped to curl), fake-gcs",
        f"{speed(gcs, 'build'):.1f} MB/s", f"{speed(gcs, 'shell'):.1f} MB/s",
        f"{r:.2f}", "report", "",
    ))  # fmt: skip
