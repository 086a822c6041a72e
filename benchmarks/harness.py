"""What the measures share: the configuration (full or smoke), the table's rows, and `Bench`,
the state of one run (the emulator, the work folder, the rows so far, the raw measurements)
with the side-by-side measuring that the throughput, memory and scaling measures use."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import MB, MiB, cpu_seconds, run_forked
from benchmarks.variants import Measured, SpecSet, empty_bucket, measure, write_dataset
from tasks.fake_gcs import FakeGcsServer

# --- configuration -------------------------------------------------------------------------


@dataclass
class Config:
    """Sizes and repetitions of a full run; SMOKE is the tiny one the smoke test runs."""

    videos: int = 32  # throughput dataset: annotated videos
    video_bytes: int = 10 * MB  # nominal video size (each is 80-120 % of it)
    shard_size: int = 4  # 32 videos -> 8 shards of ~40 MB
    concurrency: int = 4  # rows 1-3: the flow's default
    chunk_mib: int = 16  # the flow's default chunk size
    reps: int = 5
    local_repeat: int = 5  # local passes are ~0.3 s each: repeat the shard set per measurement
    frames: int = 270  # geometry/annotation frames per video (~9 s at 30 fps)
    member_sizes: tuple[int, ...] = (10 * MB, 200 * MB, 1000 * MB)
    listing_videos: int = 20_088
    listing_lines: int = 210_448
    overhead_shards: tuple[int, ...] = (50, 250)
    overhead_concurrency: tuple[int, ...] = (1, 8)
    scaling: tuple[int, ...] = (1, 2, 4, 8)
    scaling_reps: int = 2


SMOKE = Config(
    videos=8,
    video_bytes=200_000,
    shard_size=2,
    concurrency=2,
    chunk_mib=1,
    reps=1,
    frames=12,
    member_sizes=(1 * MB, 3 * MB),
    listing_videos=300,
    listing_lines=3_000,
    overhead_shards=(2, 4),
    overhead_concurrency=(2,),
    scaling=(1, 2),
    scaling_reps=1,
    local_repeat=1,
)

# --- the benchmark ---------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table (`key` is what the smoke test looks for: 1a, 4 10 MB, 6 c=1)."""

    key: str
    measure: str
    pipeline: str
    baseline: str
    ratio: str
    target: str
    met: str


@dataclass
class Bench:
    """One run: its configuration, work folder, emulator, Prefect API (None: the overhead
    measure starts a server), the rows so far and the raw measurements for --json."""

    config: Config
    work: Path
    fake: FakeGcsServer
    prefect_api_url: str | None
    log: Callable[[str], None]
    rows: list[Row] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    _buckets: int = 0
    _sources: dict[str, str] = field(default_factory=dict)

    # - destinations -
    def new_dest(self, backend: str) -> str:
        self._buckets += 1
        if backend == "gcs":
            name = f"bench-dst-{self._buckets}"
            self.fake.create_bucket(name)
            return f"gs://{name}"
        path = self.work / f"dst-{self._buckets}"
        path.mkdir()
        return str(path)

    def drop_dest(self, url: str) -> None:
        if url.startswith("gs://"):
            run_forked(empty_bucket, url)
        else:
            shutil.rmtree(url, ignore_errors=True)

    def run_kind(
        self,
        kind: str,
        backend: str,
        source: str,
        specs: SpecSet,
        concurrency: int,
        repeat: int = 1,
    ) -> Measured:
        """`build` uses the pipeline's default specs (with decoded JSON twins); everything else,
        `build-nodecode` included, the same shards without them."""
        chosen = specs.decoded if kind == "build" else specs.raw
        job = {"build-nodecode": "build", "build-nodecode-nofsync": "build-nofsync"}.get(kind, kind)
        dest = self.new_dest(backend)
        emulator_pid = self.fake.pid
        before = cpu_seconds(emulator_pid)
        try:
            result: Measured = run_forked(
                measure, job, source, dest, chosen, concurrency, self.config.chunk_mib * MiB,
                self.fake.url, repeat,
            )  # fmt: skip
        finally:
            self.drop_dest(dest)
        result.kind = kind
        if backend == "gcs":
            result.emulator_cpu_seconds = cpu_seconds(emulator_pid) - before
        self.log(
            f"  {backend:5} {kind:14} c={concurrency}: {result.mb_per_s:7.1f} MB/s, "
            f"{result.seconds:6.2f} s, peak RSS {result.peak_kib / 1024:6.1f} MiB "
            f"(base {result.base_kib / 1024:.1f}; "
            f"decode workers {result.children_count} x {result.children_peak_kib / 1024:.0f}), "
            f"cpu {result.cpu_seconds:.1f}+{result.children_cpu_seconds:.1f} s, "
            f"emulator cpu {result.emulator_cpu_seconds:.1f} s, "
            f"retries {result.retries}"
        )
        return result

    def side_by_side(
        self,
        backend: str,
        source: str,
        specs: SpecSet,
        kinds: list[str],
        concurrency: int,
        reps: int,
        repeat: int = 1,
    ) -> dict[str, list[Measured]]:
        """Each rep runs every kind once, in an order rotated per rep."""
        results: dict[str, list[Measured]] = {kind: [] for kind in kinds}
        for rep in range(reps):
            order = kinds[rep % len(kinds) :] + kinds[: rep % len(kinds)]
            for kind in order:
                results[kind].append(
                    self.run_kind(kind, backend, source, specs, concurrency, repeat)
                )
        return results

    # - the throughput dataset, written once per run for the measures that use it -
    def gcs_source(self) -> str:
        """gs://bench-src with the throughput dataset."""
        if "gcs" not in self._sources:
            self.fake.create_bucket("bench-src")
            c = self.config
            run_forked(write_dataset, "gs://bench-src", c.videos, c.video_bytes, c.frames)
            self._sources["gcs"] = "gs://bench-src"
        return self._sources["gcs"]

    def local_source(self) -> str:
        """A local folder with the same dataset."""
        if "local" not in self._sources:
            path = self.work / "src"
            path.mkdir()
            c = self.config
            run_forked(write_dataset, str(path), c.videos, c.video_bytes, c.frames)
            self._sources["local"] = str(path)
        return self._sources["local"]


def mib(kib: int) -> str:
    return f"{kib / 1024:.0f}"


def yes(condition: bool) -> str:
    return "yes" if condition else "NO"


# --- output ----------------------------------------------------------------------------------


def render(rows: list[Row]) -> str:
    header = "| # | measure | objectron-wds | baseline / detail | ratio / note | target | met |"
    lines = [header, "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            "| "
            + " | ".join(
                cell.replace("|", "\\|")
                for cell in (r.key, r.measure, r.pipeline, r.baseline, r.ratio, r.target, r.met)
            )
            + " |"
        )
    return "\n".join(lines)
