"""objectron-wds benchmarks: the shard build against the physical limit and the alternatives.

    .venv/bin/python benchmarks/run.py            # full run, about 15-25 min on 2 cores
    .venv/bin/python benchmarks/run.py --smoke    # tiny version (what the smoke test runs)

The script sets up everything itself (a fake-gcs-server with the filesystem backend, local
folders, a `prefect server` with its own PREFECT_HOME unless --prefect-api-url is given) and
prints one table of ratios. Every ratio compares two things measured side by side in the same
run, alternating, each in a fresh forked process (so its peak RSS is its own): on a shared
2-core machine absolutes move with the load, ratios much less.

Rows (see README.md for what each compares and why):
  1a/1b  build vs raw copy of the same bytes, same client, chunk size and concurrency
         (fake-gcs-server; local folders)
  2      build vs GNU `tar -cf` over the same local files (and with an fsync of the tar)
  3      build vs webdataset.TarWriter reading each member into memory: speed and peak RSS
  3s     the reference-style shell pipeline (curl to files, tar | curl upload), for reference
  4      peak RSS of one shard build with a 10 MB, 200 MB and 1 GB member
  5      planning time for a full-scale listing file (20,088 videos, ~210,000 lines)
  6      orchestration overhead per shard task (Prefect flow vs the same work without Prefect)
  7      build throughput at concurrency 1, 2, 4, 8 on fake-gcs-server (with CPU use)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

if __package__ in (None, ""):  # `python benchmarks/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from webdataset import TarWriter  # imported here, so no measurement pays for the import

from benchmarks.common import (
    MB,
    ROOT,
    MiB,
    PrefectServer,
    cpu_seconds,
    full_scale_keys,
    machine_facts,
    median,
    proc_status_kib,
    run_convert_flow,
    run_forked,
    synthetic_listing,
    write_tiny_source,
)
from tasks.build import build_shard
from tasks.fake_gcs import FakeGcsServer
from tasks.index import write_shard_index
from tasks.listing import list_source_api, parse_listing_file, resolve_listed_names
from tasks.objectron.decode_pool import decode_process_ids, shutdown_decode_processes
from tasks.objectron.sample_data import (
    build_annotation,
    build_geometry,
    index_files,
    sample_values,
    write_sample_dataset,
)
from tasks.planning import plan_shards
from tasks.samples import assemble_samples, parse_split_index, split_index_names
from tasks.specs import ShardSpec, make_spec, read_spec, upload_specs
from tasks.stats import ShardStats
from tasks.storage import LocalStorage, Storage, open_storage
from tasks.tar import FIXED_MTIME, read_pieces

# --- configuration -------------------------------------------------------------------------


@dataclass
class Config:
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

# --- measurements in forked children --------------------------------------------------------


@dataclass
class Measured:
    kind: str
    seconds: float
    source_bytes: int
    peak_kib: int  # VmHWM of the measuring process (reset when it started)
    base_kib: int  # its RSS when the work started
    cpu_seconds: float  # its own CPU (user + system)
    children_cpu_seconds: float = 0.0  # tar, curl, bash it ran; the build's decode workers
    children_peak_kib: int = 0  # the largest peak RSS of the build's decode workers
    children_count: int = 0  # how many decode workers the build started
    emulator_cpu_seconds: float = 0.0  # filled in by the parent
    retries: int = 0  # transient storage errors the client retried (logged by tasks.storage)

    @property
    def mb_per_s(self) -> float:
        return self.source_bytes / MB / self.seconds if self.seconds > 0 else float("nan")


class RetryCounter(logging.Handler):
    """Counts the storage layer's "transient storage error, retrying" log records."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "retrying" in record.getMessage():
            self.count += 1


def _member_groups(spec: ShardSpec) -> list[tuple[str, list[Any]]]:
    """Members grouped per sample key (WebDataset's rule: key = name up to the first dot of the
    last path component)."""
    groups: dict[str, list[Any]] = {}
    for member in spec.members:
        folder, _, last = member.name.rpartition("/")
        stem, _, _ext = last.partition(".")
        groups.setdefault(f"{folder}/{stem}" if folder else stem, []).append(member)
    return list(groups.items())


def job_build(source_url: str, dest_url: str, chunk: int, spec: ShardSpec) -> None:
    """The pipeline: tasks.build.build_shard, storage opened per shard as the task does."""
    source = open_storage(source_url, chunk_size=chunk)
    build_shard(source, open_storage(dest_url, chunk_size=chunk), spec)


def job_copy(source_url: str, dest_url: str, chunk: int, spec: ShardSpec) -> None:
    """The physical limit with the same client: read every source byte once, write the same
    bytes (without tar headers) once, as one object per shard through the same create-only
    writer, in the same 1 MiB pieces."""
    source = open_storage(source_url, chunk_size=chunk)
    dest = open_storage(dest_url, chunk_size=chunk)
    with dest.open_create(f"{spec.base}.raw") as out:
        for member in spec.members:
            if member.text is not None:
                out.write(member.text.encode())
                continue
            assert member.source is not None and member.size is not None
            # Exactly `size` bytes, as the build reads them: reading on to EOF costs one more
            # ranged request, which fake-gcs-server answers by resetting the connection.
            with source.open_read(member.source, member.generation) as reader:
                for piece in read_pieces(reader, member.size, member.name):
                    out.write(piece)


def job_wds(source_url: str, dest_url: str, chunk: int, spec: ShardSpec) -> None:
    """webdataset's TarWriter as its users write it: each sample's members read into memory,
    then written as one dict."""
    source = open_storage(source_url, chunk_size=chunk)
    dest = open_storage(dest_url, chunk_size=chunk)
    with dest.open_create(f"{spec.base}.wds.tar") as out:
        writer = TarWriter(out, encoder=False, mtime=FIXED_MTIME)
        for key, members in _member_groups(spec):
            sample: dict[str, Any] = {"__key__": key}
            for member in members:
                extension = member.name[len(key) + 1 :]
                if member.text is not None:
                    sample[extension] = member.text.encode()
                else:
                    sample[extension] = source.read_bytes(member.source, member.generation)
            writer.write(sample)
            del sample
        writer.close()


def job_tar(source_url: str, dest_url: str, chunk: int, spec: ShardSpec, fsync: bool) -> None:
    """GNU tar over the same local files (sources only; the tiny json members are left out)."""
    names = [m.source for m in spec.members if m.source is not None]
    out = Path(dest_url) / f"{spec.base}.tar"
    with tempfile.NamedTemporaryFile("w", suffix=".list") as listing:
        listing.write("\n".join(names) + "\n")
        listing.flush()
        subprocess.run(
            ["tar", "-cf", str(out), "-C", source_url, "--no-recursion", "-T", listing.name],
            check=True,
        )
    if fsync:
        fd = os.open(out, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def job_shell(emulator: str, source_url: str, dest_url: str, chunk: int, spec: ShardSpec) -> None:
    """The reference notebook's approach with standard tools against the emulator (gsutil
    cannot be pointed at it): download every member to a temporary folder with curl, then
    `tar -cf - | curl` upload in one request."""
    source_bucket = source_url.removeprefix("gs://").split("/")[0]
    dest_bucket = dest_url.removeprefix("gs://").split("/")[0]
    lines = ["set -euo pipefail", "work=$(mktemp -d)", 'trap "rm -rf $work" EXIT']
    names = []
    for member in spec.members:
        if member.source is None:
            continue
        name = quote(member.source, safe="")
        url = f"{emulator}/download/storage/v1/b/{source_bucket}/o/{name}?alt=media"
        lines.append(f'mkdir -p "$work/{Path(member.name).parent}"')
        lines.append(f"curl -sSf -o \"$work/{member.name}\" '{url}'")
        names.append(member.name)
    upload = (
        f"{emulator}/upload/storage/v1/b/{dest_bucket}/o?uploadType=media"
        f"&name={quote(spec.base + '.sh.tar', safe='')}"
    )
    lines.append(
        f'tar -cf - -C "$work" {" ".join(names)} | curl -sSf -X POST '
        f"-H 'Content-Type: application/octet-stream' -T - '{upload}' >/dev/null"
    )
    subprocess.run(["bash", "-c", "\n".join(lines)], check=True)


def measure(
    kind: str,
    source_url: str,
    dest_url: str,
    specs: list[ShardSpec],
    concurrency: int,
    chunk: int,
    emulator: str,
    repeat: int = 1,
) -> Measured:
    """Run one kind of job over every spec with `concurrency` threads (`repeat` times, each
    pass into its own folder of the destination); runs in a forked child."""
    import logging
    import resource

    def job_for(kind: str, dest_url: str) -> Callable[[ShardSpec], None]:
        return {
            "build": lambda s: job_build(source_url, dest_url, chunk, s),
            "build-nofsync": lambda s: job_build(source_url, dest_url, chunk, s),
            "copy": lambda s: job_copy(source_url, dest_url, chunk, s),
            "wds": lambda s: job_wds(source_url, dest_url, chunk, s),
            "tar": lambda s: job_tar(source_url, dest_url, chunk, s, fsync=False),
            "tar+fsync": lambda s: job_tar(source_url, dest_url, chunk, s, fsync=True),
            "shell": lambda s: job_shell(emulator, source_url, dest_url, chunk, s),
        }[kind]

    calls: list[tuple[Callable[[ShardSpec], None], ShardSpec]] = []
    for number in range(repeat):
        target = dest_url if repeat == 1 else f"{dest_url}/pass{number}"
        if not target.startswith("gs://"):
            Path(target).mkdir(parents=True, exist_ok=True)
        calls += [(job_for(kind, target), spec) for spec in specs]

    if kind == "build-nofsync":
        # Prototype, in this forked child only: LocalStorage without its fsync before commit.
        os.fsync = lambda fd: None
    retries = RetryCounter()
    logging.getLogger().addHandler(retries)
    base = proc_status_kib("VmRSS")
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(lambda call: call[0](call[1]), calls))
    seconds = time.perf_counter() - started
    # The decode workers' CPU counts once they have exited (and are reaped).
    decode_pids = decode_process_ids()
    decode_peak_kib = max((proc_status_kib("VmHWM", pid) for pid in decode_pids), default=0)
    shutdown_decode_processes()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Measured(
        kind=kind,
        seconds=seconds,
        source_bytes=repeat * sum(m.size or 0 for s in specs for m in s.members if m.source),
        retries=retries.count,
        peak_kib=proc_status_kib("VmHWM"),
        base_kib=base,
        cpu_seconds=cpu_seconds() - cpu_before,
        children_cpu_seconds=(children.ru_utime + children.ru_stime)
        - (children_before.ru_utime + children_before.ru_stime),
        children_peak_kib=decode_peak_kib,
        children_count=len(decode_pids),
    )


# --- set-up helpers (also run in forked children, so the parent stays small) ---------------


def prepare_specs(source_url: str, shard_size: int, decode: bool = True) -> list[ShardSpec]:
    source = open_storage(source_url)
    objects = list_source_api(source)
    splits = parse_split_index({n: source.read_bytes(n) for n in split_index_names(objects)})
    samples = assemble_samples(objects, splits).samples
    plans = plan_shards(samples, shard_size=shard_size, series="bench")
    return [make_spec(plan, source.url, decode=decode) for plan in plans]


@dataclass
class SpecSet:
    decoded: list[ShardSpec]  # the pipeline's default: raw members + decoded JSON twins
    raw: list[ShardSpec]  # the same shards without the twins (decode=False)


def spec_set(source_url: str, shard_size: int) -> SpecSet:
    return SpecSet(
        run_forked(prepare_specs, source_url, shard_size, True),
        run_forked(prepare_specs, source_url, shard_size, False),
    )


def write_dataset(url: str, videos: int, video_bytes: int, frames: int) -> int:
    dataset = write_sample_dataset(
        open_storage(url), videos=videos, seed=1, video_bytes=video_bytes, placeholders=0,
        unannotated=0, frames=frames,
    )  # fmt: skip
    return dataset.total_bytes


def with_workers(measured: Measured) -> int:
    """Peak RSS (KiB) of a build process plus that of each decode worker it started."""
    return measured.peak_kib + measured.children_count * measured.children_peak_kib


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


def empty_bucket(url: str) -> None:
    storage = open_storage(url)
    for info in list(storage.list()):
        storage.delete(info.name)


# --- the benchmark ---------------------------------------------------------------------------


@dataclass
class Row:
    key: str
    measure: str
    pipeline: str
    baseline: str
    ratio: str
    target: str
    met: str


@dataclass
class Bench:
    config: Config
    work: Path
    fake: FakeGcsServer
    prefect_api_url: str | None
    log: Callable[[str], None]
    rows: list[Row] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    _buckets: int = 0

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
        emulator_pid = self.fake.process.pid if self.fake.process else "self"
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

    # - rows 1-3 -
    def throughput_rows(self) -> None:
        c = self.config
        self.log(
            f"Throughput dataset: {c.videos} videos of ~{c.video_bytes / MB:g} MB, "
            f"shards of {c.shard_size}"
        )
        gcs_source = "gs://bench-src"
        self.fake.create_bucket("bench-src")
        local_source = str(self.work / "src")
        Path(local_source).mkdir()
        for url in (gcs_source, local_source):
            run_forked(write_dataset, url, c.videos, c.video_bytes, c.frames)
        gcs_specs = spec_set(gcs_source, c.shard_size)
        local_specs = spec_set(local_source, c.shard_size)
        total = sum(m.size or 0 for s in gcs_specs.raw for m in s.members if m.source)
        self.log(f"  {len(gcs_specs.raw)} shards, {total / MB:.1f} MB of sources")

        gcs = self.side_by_side(
            "gcs", gcs_source, gcs_specs, ["build", "copy", "build-nodecode", "wds", "shell"],
            c.concurrency, c.reps,
        )  # fmt: skip
        local = self.side_by_side(
            "local", local_source, local_specs,
            ["build", "copy", "build-nodecode", "wds", "tar", "tar+fsync",
             "build-nodecode-nofsync"],
            c.concurrency, c.reps, c.local_repeat,
        )  # fmt: skip
        self.raw["throughput"] = {
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
        self.rows.append(Row(
            "1a", f"build vs raw copy, fake-gcs-server ({setting})",
            f"{speed(gcs, 'build'):.1f} MB/s", f"{speed(gcs, 'copy'):.1f} MB/s",
            f"{r:.2f}", ">= 0.9", yes(r >= 0.9),
        ))  # fmt: skip
        r = ratio(local, "build", "copy")
        self.rows.append(Row(
            "1b", f"build vs raw copy, local folders ({setting})",
            f"{speed(local, 'build'):.0f} MB/s", f"{speed(local, 'copy'):.0f} MB/s",
            f"{r:.2f}", ">= 0.9", yes(r >= 0.9),
        ))  # fmt: skip
        for key, backend, results in (("1c", "fake-gcs", gcs), ("1d", "local", local)):
            r = ratio(results, "build-nodecode", "copy")
            self.rows.append(Row(
                key, f"build with decode=False vs raw copy, {backend} (cost of the JSON twins)",
                f"{speed(results, 'build-nodecode'):.1f} MB/s",
                f"{speed(results, 'copy'):.1f} MB/s",
                f"{r:.2f}", ">= 0.9", yes(r >= 0.9),
            ))  # fmt: skip
        r = ratio(local, "build", "tar")
        self.rows.append(Row(
            "2", f"build vs GNU `tar -cf`, local ({setting})",
            f"{speed(local, 'build'):.0f} MB/s", f"{speed(local, 'tar'):.0f} MB/s",
            f"{r:.2f}", ">= 0.8", yes(r >= 0.8),
        ))  # fmt: skip
        r = ratio(local, "build-nodecode", "tar")
        self.rows.append(Row(
            "2n", "build with decode=False vs GNU `tar -cf`, local",
            f"{speed(local, 'build-nodecode'):.0f} MB/s", f"{speed(local, 'tar'):.0f} MB/s",
            f"{r:.2f}", ">= 0.8", yes(r >= 0.8),
        ))  # fmt: skip
        r = ratio(local, "build-nodecode-nofsync", "tar")
        self.rows.append(Row(
            "2nx", "prototype: build with decode=False and no fsync vs GNU `tar -cf`, local",
            f"{speed(local, 'build-nodecode-nofsync'):.0f} MB/s", f"{speed(local, 'tar'):.0f} MB/s",
            f"{r:.2f}", ">= 0.8", yes(r >= 0.8),
        ))  # fmt: skip
        r2 = ratio(local, "build-nodecode", "tar+fsync")
        self.rows.append(Row(
            "2nf", "build with decode=False vs `tar -cf` + fsync, local",
            f"{speed(local, 'build-nodecode'):.0f} MB/s", f"{speed(local, 'tar+fsync'):.0f} MB/s",
            f"{r2:.2f}", "(context)", "",
        ))  # fmt: skip
        r = ratio(local, "build", "tar+fsync")
        self.rows.append(Row(
            "2f", "build vs `tar -cf` + fsync of the tar (build fsyncs its output)",
            f"{speed(local, 'build'):.0f} MB/s", f"{speed(local, 'tar+fsync'):.0f} MB/s",
            f"{r:.2f}", "(context)", "",
        ))  # fmt: skip
        for backend, results in (("fake-gcs", gcs), ("local", local)):
            r = ratio(results, "build", "wds")
            self.rows.append(Row(
                "3" if backend == "fake-gcs" else "3l",
                f"build vs webdataset TarWriter (members in memory), {backend}: speed; peak RSS",
                f"{speed(results, 'build'):.1f} MB/s; {peak(results, 'build'):.0f} MiB",
                f"{speed(results, 'wds'):.1f} MB/s; {peak(results, 'wds'):.0f} MiB",
                f"{r:.2f}", "report", "",
            ))  # fmt: skip
        r = ratio(gcs, "build", "shell")
        self.rows.append(Row(
            "3s",
            "build vs reference-style shell pipeline (curl to files, tar piped to curl), fake-gcs",
            f"{speed(gcs, 'build'):.1f} MB/s", f"{speed(gcs, 'shell'):.1f} MB/s",
            f"{r:.2f}", "report", "",
        ))  # fmt: skip

    # - row 4 -
    def memory_rows(self) -> None:
        c = self.config
        self.raw["memory"] = {}
        for size in c.member_sizes:
            label = f"{size / MB:g} MB"
            results: dict[str, Measured] = {}
            for backend in ("gcs", "local"):
                if backend == "gcs":
                    name = f"bench-big-{size}"
                    self.fake.create_bucket(name)
                    source = f"gs://{name}"
                else:
                    source = str(self.work / f"big-{size}")
                    Path(source).mkdir()
                self.log(f"Member of {label} ({backend}): writing the source")
                run_forked(write_big_sample, source, size)
                specs = spec_set(source, 1)
                for kind in ("build", "wds"):
                    results[f"{backend}-{kind}"] = self.run_kind(kind, backend, source, specs, 1)
                if backend == "gcs":
                    run_forked(empty_bucket, source)
                else:
                    shutil.rmtree(source, ignore_errors=True)
            self.raw["memory"][label] = {k: vars(v) for k, v in results.items()}
            # A build with decoding is its process plus the decode workers it started (their
            # peaks added, though they need not coincide: an upper bound).
            totals = {b: with_workers(results[f"{b}-build"]) for b in ("gcs", "local")}
            self.rows.append(Row(
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

    # - row 5 -
    def planning_row(self) -> None:
        c = self.config
        timings = [
            run_forked(time_planning, c.listing_videos, c.listing_lines) for _ in range(c.reps)
        ]
        self.raw["planning"] = timings
        total = median([t["plan_total"] for t in timings])
        parts = {
            k: median([t[k] for t in timings])
            for k in ("parse", "resolve", "assemble", "plan", "specs")
        }
        self.log(
            f"Planning: {timings[0]['lines']:,} lines, {timings[0]['shards']:,} shards: {parts}"
        )
        self.rows.append(Row(
            "5", f"planning: parse {timings[0]['lines']:,}-line listing + assemble "
            f"{timings[0]['samples']:,} samples + plan {timings[0]['shards']:,} shards",
            f"{total:.2f} s", f"parse {parts['parse']:.2f}, resolve {parts['resolve']:.2f}, "
            f"assemble {parts['assemble']:.2f}, plan {parts['plan']:.2f} s",
            f"(+ specs {parts['specs']:.2f} s)", "< 2 s", yes(total < 2),
        ))  # fmt: skip

    # - row 6 -
    def overhead_rows(self) -> None:
        """The flow against a Prefect server vs the same stages as plain calls, on tiny objects
        (so building costs almost nothing), at two plan sizes: the difference of the two sizes
        is the per-task cost without the fixed per-run costs."""
        c = self.config
        sources = {}
        for shards in c.overhead_shards:
            keys, annotated = full_scale_keys(shards * 3)
            sources[shards] = self.work / f"tiny-src-{shards}"
            write_tiny_source(sources[shards], keys, annotated)
        server: PrefectServer | None = None
        api_url = self.prefect_api_url
        if api_url is None:
            self.log("Starting a prefect server (SQLite, own PREFECT_HOME)")
            server = PrefectServer(self.work / "prefect-home").start()
            api_url = server.api_url
        self.raw["overhead"] = []
        try:
            for concurrency in c.overhead_concurrency:
                runs = {}
                for shards, source in sources.items():
                    flow_dest = self.new_dest("local")
                    plain_dest = self.new_dest("local")
                    flow = run_flow_process(
                        api_url, self.work, str(source), flow_dest, 3, concurrency
                    )
                    plain = run_forked(plain_pipeline, str(source), plain_dest, 3, concurrency)
                    built = [
                        ShardStats.from_json(p.read_bytes())
                        for p in Path(flow_dest).glob("*.stats.json")
                    ]
                    run = {
                        "shards": shards, "concurrency": concurrency, "flow": flow, "plain": plain,
                        "build_sum": sum(s.seconds for s in built),
                    }  # fmt: skip
                    runs[shards] = run
                    self.raw["overhead"].append(run)
                    self.log(
                        f"Overhead c={concurrency}, {shards} shards: flow {flow['seconds']:.2f} s, "
                        f"plain {plain['seconds']:.2f} s, summed build {run['build_sum']:.2f} s, "
                        f"build task runs recorded {flow['task_runs']}/{flow['shards']}"
                    )
                    shutil.rmtree(flow_dest, ignore_errors=True)
                    shutil.rmtree(plain_dest, ignore_errors=True)
                small, big = runs[min(runs)], runs[max(runs)]
                shards = big["shards"]
                per_task = (big["flow"]["seconds"] - big["build_sum"]) / shards * 1000
                vs_plain = (big["flow"]["seconds"] - big["plain"]["seconds"]) / shards * 1000
                span = big["shards"] - small["shards"]
                marginal = (
                    (big["flow"]["seconds"] - small["flow"]["seconds"])
                    - (big["plain"]["seconds"] - small["plain"]["seconds"])
                ) / span * 1000 if span else float("nan")  # fmt: skip
                if concurrency == 1:
                    measure = "(flow - summed build) / shards"
                    headline, other = (
                        per_task,
                        f"(flow - same work without Prefect) / shards {vs_plain:.0f} ms",
                    )
                else:
                    # Overlapping builds make the summed build time exceed the flow's time, so
                    # the difference says nothing; compare with the same work without Prefect.
                    measure = "(flow - same work without Prefect) / shards"
                    headline, other = (
                        vs_plain,
                        f"(flow - summed build) / shards {per_task:.0f} ms: builds overlap",
                    )
                self.rows.append(Row(
                    f"6 c={concurrency}",
                    f"orchestration overhead per shard task, {shards} tiny shards, concurrency "
                    f"{concurrency}: {measure}",
                    f"{headline:.0f} ms",
                    f"{other}; marginal per extra task ({small['shards']}->{shards} shards) "
                    f"{marginal:.0f} ms",
                    f"build task runs recorded {big['flow']['task_runs']}/{shards}",
                    "< 50 ms", yes(headline < 50),
                ))  # fmt: skip
        finally:
            if server is not None:
                server.stop()

    # - row 7 -
    def scaling_rows(self) -> None:
        c = self.config
        specs = spec_set("gs://bench-src", c.shard_size)
        self.raw["scaling"] = {}
        kinds = ["build", "build-nodecode", "copy"]
        for concurrency in c.scaling:
            results = self.side_by_side(
                "gcs", "gs://bench-src", specs, kinds, concurrency, c.scaling_reps
            )
            self.raw["scaling"][concurrency] = {k: [vars(m) for m in v] for k, v in results.items()}

            def mbps(kind: str, results: dict[str, list[Measured]] = results) -> float:
                return median([m.mb_per_s for m in results[kind]])

            def cpu_per_mb(kind: str, results: dict[str, list[Measured]] = results) -> float:
                return median([m.cpu_seconds / (m.source_bytes / MB) * 1000 for m in results[kind]])

            everything = [m for kind in kinds for m in results[kind]]
            busy = median(
                [(m.cpu_seconds + m.emulator_cpu_seconds) / m.seconds for m in everything]
            )
            server_cpu = median(
                [m.emulator_cpu_seconds / (m.source_bytes / MB) * 1000 for m in everything]
            )
            retries = sum(m.retries for m in everything)
            r = median([
                x.mb_per_s / y.mb_per_s
                for x, y in zip(results["build"], results["copy"], strict=True)
            ])  # fmt: skip
            self.rows.append(Row(
                f"7 c={concurrency}",
                f"concurrency {concurrency}, fake-gcs-server: build; build decode=False; raw copy",
                f"{mbps('build'):.1f}; {mbps('build-nodecode'):.1f}; {mbps('copy'):.1f} MB/s",
                f"CPU ms/MB: client {cpu_per_mb('build'):.1f}; {cpu_per_mb('build-nodecode'):.1f}; "
                f"{cpu_per_mb('copy'):.1f}, emulator {server_cpu:.1f}; our processes keep "
                f"{busy:.2f} of {os.cpu_count()} cores busy; {retries} client retries",
                f"build/copy {r:.2f}", "report", "",
            ))  # fmt: skip


def mib(kib: int) -> str:
    return f"{kib / 1024:.0f}"


def yes(condition: bool) -> str:
    return "yes" if condition else "NO"


def time_planning(videos: int, lines: int) -> dict[str, Any]:
    """Row 5, in a forked child: the listing text is made first (not timed)."""
    text, counts = synthetic_listing(videos, lines)
    empty = LocalStorage(Path(tempfile.gettempdir()) / "objectron-wds-bench-no-such-folder")
    t0 = time.perf_counter()
    listed = parse_listing_file(text, "gs://objectron")
    t1 = time.perf_counter()
    objects = resolve_listed_names(empty, listed)  # the listing has sizes + generations: no stat
    t2 = time.perf_counter()
    splits = parse_split_index({f"v1/index/{name}": data for name, data in index_files().items()})
    assembly = assemble_samples(objects, splits)
    t3 = time.perf_counter()
    plans = plan_shards(assembly.samples, shard_size=3)
    t4 = time.perf_counter()
    specs = [make_spec(plan, "gs://objectron") for plan in plans]
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
    }


def plain_pipeline(
    source_url: str, dest_url: str, shard_size: int, concurrency: int
) -> dict[str, Any]:
    """Row 6 baseline: the flow's stages as plain function calls, no Prefect at all."""
    started = time.perf_counter()
    source: Storage = open_storage(source_url)
    dest = open_storage(dest_url)
    objects = list_source_api(source)
    splits = parse_split_index({n: source.read_bytes(n) for n in split_index_names(objects)})
    samples = assemble_samples(objects, splits).samples
    plans = plan_shards(samples, shard_size=shard_size)
    upload = upload_specs(dest, [make_spec(plan, source.url) for plan in plans])

    def one(shard: str) -> ShardStats:
        spec = read_spec(dest, shard.removesuffix(".tar"))
        return build_shard(open_storage(source_url), open_storage(dest_url), spec)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        stats = list(pool.map(one, upload.digests))
    write_shard_index(dest, "objectron", stats)
    return {"seconds": time.perf_counter() - started, "shards": len(stats)}


def run_flow_process(
    api_url: str, work: Path, source: str, dest: str, shard_size: int, concurrency: int
) -> dict[str, Any]:
    """Row 6: the real flow in a fresh Python process pointed at the server."""
    result_file = work / f"flow-{time.monotonic_ns()}.json"
    env = dict(os.environ)
    env["PREFECT_API_URL"] = api_url
    env["PREFECT_HOME"] = str(work / "prefect-client-home")
    params = {"source": source, "dest": dest, "shard_size": shard_size, "concurrency": concurrency}
    with open(work / "flow.log", "ab") as log:
        subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "_flow", json.dumps(params),
             str(result_file)],
            env=env, stdout=log, stderr=subprocess.STDOUT, check=True, cwd=ROOT, timeout=3600,
        )  # fmt: skip
    result: dict[str, Any] = json.loads(result_file.read_text())
    return result


def flow_child(params_json: str, result_file: str) -> None:
    """`run.py _flow PARAMS RESULT_FILE`: run the flow once, then count its recorded task runs."""
    from benchmarks.flow_runs import count_task_runs_settled

    state, seconds = run_convert_flow(json.loads(params_json))
    summary = state.result()
    flow_run_id = state.state_details.flow_run_id
    expected = summary["shards"]
    recorded = count_task_runs_settled(flow_run_id, expected, name_like="build ")
    Path(result_file).write_text(json.dumps({
        "seconds": seconds, "shards": summary["shards"], "built": summary["built"],
        "flow_run_id": str(flow_run_id), "task_runs": recorded, "expected_task_runs": expected,
    }))  # fmt: skip


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


ROW_KEYS = [
    "1a",
    "1b",
    "1c",
    "1d",
    "2",
    "2n",
    "2nx",
    "2nf",
    "2f",
    "3",
    "3l",
    "3s",
    "4",
    "5",
    "6",
    "7",
]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # SIGTERM unwinds like an exception, so the emulator and servers this started are stopped.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))
    if argv and argv[0] == "_flow":
        flow_child(argv[1], argv[2])
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one repetition (seconds)")
    parser.add_argument(
        "--prefect-api-url", help="use this Prefect API for row 6 instead of starting a server"
    )
    parser.add_argument(
        "--only", help="comma-separated row groups: throughput,memory,planning,overhead,scaling"
    )
    parser.add_argument("--reps", type=int, help="repetitions of each side-by-side pair")
    parser.add_argument("--chunk-mib", type=int, help="upload/download chunk size (default 16)")
    parser.add_argument("--member-sizes", help="row 4 member sizes in MB, e.g. 10,200,1000")
    parser.add_argument("--json", type=Path, help="also write every raw measurement here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    config = SMOKE if args.smoke else Config()
    if args.reps:
        config.reps = args.reps
    if args.chunk_mib:
        config.chunk_mib = args.chunk_mib
    if args.member_sizes:
        config.member_sizes = tuple(int(float(x) * MB) for x in args.member_sizes.split(","))
    groups = ["throughput", "memory", "planning", "overhead", "scaling"]
    if args.only:
        groups = [g for g in args.only.split(",") if g]

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    facts = machine_facts()
    work = Path(tempfile.mkdtemp(prefix="objectron-wds-bench-"))
    fake = FakeGcsServer(root=work / "fake-gcs", log_path=work / "fake-gcs.log").start()
    os.environ["STORAGE_EMULATOR_HOST"] = fake.url
    bench = Bench(config, work, fake, args.prefect_api_url, log)
    started = time.monotonic()
    try:
        log(f"Work folder {work}; fake-gcs-server {fake.url} (filesystem backend)")
        if "throughput" in groups or "scaling" in groups:
            bench.throughput_rows() if "throughput" in groups else _only_source(bench)
        if "memory" in groups:
            bench.memory_rows()
        if "planning" in groups:
            bench.planning_row()
        if "overhead" in groups:
            bench.overhead_rows()
        if "scaling" in groups:
            bench.scaling_rows()
    finally:
        fake.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    facts["duration"] = f"{(time.monotonic() - started) / 60:.1f} min"
    facts["command"] = "benchmarks/run.py " + " ".join(argv)
    print(f"objectron-wds benchmarks ({'smoke' if args.smoke else 'full'}): "
          + "; ".join(f"{k} {v}" for k, v in facts.items()))  # fmt: skip
    print()
    print(render(bench.rows))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "facts": facts,
                    "config": vars(config),
                    "rows": [vars(r) for r in bench.rows],
                    "raw": bench.raw,
                },
                indent=1,
                default=str,
            )
        )
    return 0


def _only_source(bench: Bench) -> None:
    """Scaling without the throughput rows still needs the source bucket."""
    bench.fake.create_bucket("bench-src")
    c = bench.config
    run_forked(write_dataset, "gs://bench-src", c.videos, c.video_bytes, c.frames)


if __name__ == "__main__":
    sys.exit(main())
