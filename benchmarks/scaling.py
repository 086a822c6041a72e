"""Row 7: parallel scaling: build, build with decode=False and the raw copy at concurrency 1,
2, 4, 8 on fake-gcs-server, with the CPU the client and the emulator use per MB."""

from __future__ import annotations

import os

from benchmarks.common import MB, median
from benchmarks.harness import Bench, Row
from benchmarks.variants import Measured, spec_set


def rows(bench: Bench) -> None:
    c = bench.config
    source = bench.gcs_source()
    specs = spec_set(source, c.shard_size)
    bench.raw["scaling"] = {}
    kinds = ["build", "build-nodecode", "copy"]
    for concurrency in c.scaling:
        results = bench.side_by_side("gcs", source, specs, kinds, concurrency, c.scaling_reps)
        bench.raw["scaling"][concurrency] = {k: [vars(m) for m in v] for k, v in results.items()}

        def mbps(kind: str, results: dict[str, list[Measured]] = results) -> float:
            return median([m.mb_per_s for m in results[kind]])

        def cpu_per_mb(kind: str, results: dict[str, list[Measured]] = results) -> float:
            return median([m.cpu_seconds / (m.source_bytes / MB) * 1000 for m in results[kind]])

        everything = [m for kind in kinds for m in results[kind]]
        busy = median([(m.cpu_seconds + m.emulator_cpu_seconds) / m.seconds for m in everything])
        server_cpu = median(
            [m.emulator_cpu_seconds / (m.source_bytes / MB) * 1000 for m in everything]
        )
        retries = sum(m.retries for m in everything)
        r = median([
            x.mb_per_s / y.mb_per_s
            for x, y in zip(results["build"], results["copy"], strict=True)
        ])  # fmt: skip
        bench.rows.append(Row(
            f"7 c={concurrency}",
            f"concurrency {concurrency}, fake-gcs-server: build; build decode=False; raw copy",
            f"{mbps('build'):.1f}; {mbps('build-nodecode'):.1f}; {mbps('copy'):.1f} MB/s",
            f"CPU ms/MB: client {cpu_per_mb('build'):.1f}; {cpu_per_mb('build-nodecode'):.1f}; "
            f"{cpu_per_mb('copy'):.1f}, emulator {server_cpu:.1f}; our processes keep "
            f"{busy:.2f} of {os.cpu_count()} cores busy; {retries} client retries",
            f"build/copy {r:.2f}", "report", "",
        ))  # fmt: skip
