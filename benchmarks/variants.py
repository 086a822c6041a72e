"""The ways of building a shard that the throughput, memory and scaling measures compare, and
`measure()`, which runs one of them over a set of shard specs in a forked child and reports its
speed, peak RSS and CPU.

| kind | what it does |
|---|---|
| `build` | tasks.build.build_shard, storage opened per shard as the task does |
| `build-nofsync` | the same with `os.fsync` disabled (a prototype, in the forked child only) |
| `copy` | the physical limit with the same client: every source byte read once and written once |
| `wds` | webdataset's TarWriter with every sample's members read into memory first |
| `tar`, `tar+fsync` | GNU `tar -cf` over the same local files (then an fsync of the tar) |
| `shell` | the reference notebook's way: curl to files, then tar piped to one curl upload |
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from webdataset import TarWriter  # imported here, so no measurement pays for the import

from benchmarks.common import MB, cpu_seconds, proc_status_kib, run_forked
from tasks.build import build_shard
from tasks.listing import list_source_api
from tasks.objectron.decode_pool import decode_process_ids, shutdown_decode_processes
from tasks.objectron.sample_data import write_sample_dataset
from tasks.planning import plan_shards
from tasks.samples import assemble_samples, parse_split_index, split_index_names
from tasks.specs import ShardSpec, make_spec
from tasks.storage import open_storage
from tasks.tar import FIXED_MTIME, read_pieces

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


def empty_bucket(url: str) -> None:
    storage = open_storage(url)
    for info in list(storage.list()):
        storage.delete(info.name)
