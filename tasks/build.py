"""Stage 5, shard building: stream every member from the source into a tar that is uploaded as
it is written.

- Memory does not grow with member or shard size: members are copied in fixed pieces, and the
  storage writer holds at most one upload chunk.
- The shard appears at its final name only complete (`Storage.open_create`), and never replaces
  another object; an interrupted build leaves nothing there.
- Tar headers have fixed fields (mtime, owner, mode, order) and the first header is a pax global
  header recording the spec digest, so the same plan gives byte-identical shards, and a later
  run can tell whether an existing shard came from the same spec.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import time
from collections.abc import Callable
from typing import Any

from prefect import get_run_logger, task
from prefect.runtime import flow_run as prefect_flow_run

from tasks.claims import hold_claim
from tasks.members import ANNOTATION, GEOMETRY
from tasks.objectron.decode import DecodeError
from tasks.objectron.decode_pool import DecodeKind, PendingDecode
from tasks.policy import RETRY_POLICY, redact_errors
from tasks.specs import MemberSpec, ShardFiles, ShardSpec
from tasks.stats import DecodeFailure, MemberStats, ShardStats
from tasks.storage import (
    AlreadyExists,
    ObjectNotFound,
    Storage,
)
from tasks.tar import (
    BLOCK,
    DIGEST_COMMENT_PREFIX,
    TarStreamWriter,
    check_checksum,
    read_recorded_digest,
    read_whole,
    webdataset_sample_count,
)

# Raw members are decoded from memory; bigger ones (none in Objectron) are kept raw only.
DECODE_MAX_BYTES = 256 * 1024 * 1024
DECODE_KINDS: dict[str, DecodeKind] = {GEOMETRY: "geometry", ANNOTATION: "annotation"}

STATUS_BUILT = "built"
STATUS_EXISTS = "exists"
STATUS_CACHED = "cached"


class ShardConflict(Exception):
    """An object at the shard's name was built from a different spec (or is not ours)."""


class _MemberWriter:
    """Writes the three kinds of spec member into a tar, and keeps the per-sample decode errors
    that go into the sample's json.

    Members with a JSON twin (geometry, annotation: megabytes, never the video) are read whole
    as soon as their sample begins and handed to the decode processes, so the twins are being
    made while the sample's video streams; the raw bytes are written from memory in their place
    in the spec's order, then the twins."""

    def __init__(self, source: Storage, spec: ShardSpec) -> None:
        self.source = source
        wanted = {(m.key, m.decoded_from) for m in spec.members if m.decoded_from}
        self.to_decode: dict[str, list[MemberSpec]] = {}
        for m in spec.members:
            if m.source is not None and (m.key, m.extension) in wanted:
                self.to_decode.setdefault(m.key, []).append(m)
        self.started: set[str] = set()
        self.prefetched: dict[tuple[str, str], bytes] = {}
        self.pending: dict[tuple[str, str], PendingDecode] = {}
        self.errors: dict[str, dict[str, str]] = {}
        self.stats: list[MemberStats] = []
        self.failures: list[DecodeFailure] = []

    def _fail(self, key: str, member: str, error: str) -> None:
        self.errors.setdefault(key, {})[member] = error
        self.failures.append(DecodeFailure(key, member, error))

    def write(self, tar: TarStreamWriter, member: MemberSpec) -> None:
        if member.key not in self.started:
            self.started.add(member.key)
            self._start_decoding(member.key)
        if member.source is not None:
            self._copy_source(tar, member)
            return
        data = self._decoded(member) if member.decoded_from is not None else self._metadata(member)
        if data is None:
            return  # not decodable: recorded, and the sample keeps its raw member
        crc = tar.add_bytes(member.name, data)
        self.stats.append(MemberStats(member.name, len(data), crc))

    def _start_decoding(self, key: str) -> None:
        for member in self.to_decode.get(key, []):
            assert member.source is not None and member.size is not None
            if member.size > DECODE_MAX_BYTES:
                self._fail(key, member.extension, f"too large to decode (> {DECODE_MAX_BYTES})")
                continue
            raw = read_whole(self.source, member)
            self.prefetched[(key, member.extension)] = raw
            self.pending[(key, member.extension)] = PendingDecode(
                DECODE_KINDS[member.extension], raw
            )

    def _copy_source(self, tar: TarStreamWriter, member: MemberSpec) -> None:
        assert member.source is not None and member.size is not None
        raw = self.prefetched.pop((member.key, member.extension), None)
        if raw is not None:
            crc = tar.add_bytes(member.name, raw)
        else:
            with self.source.open_read(member.source, member.generation) as reader:
                crc = tar.add_stream(member.name, member.size, reader)
        check_checksum(member, crc, self.source.url_for(member.source))
        self.stats.append(MemberStats(member.name, member.size, crc))

    def _decoded(self, member: MemberSpec) -> bytes | None:
        assert member.decoded_from is not None
        pending = self.pending.pop((member.key, member.decoded_from), None)
        if pending is None:
            return None  # too large: recorded when its sample began
        try:
            return pending.result()
        except DecodeError as exc:
            self._fail(member.key, member.decoded_from, str(exc))
            return None

    def _metadata(self, member: MemberSpec) -> bytes:
        assert member.text is not None
        errors = self.errors.pop(member.key, None)
        if not errors:
            return member.text.encode()
        document = json.loads(member.text)
        document["decode_errors"] = errors
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def recorded_shard_stats(dest: Storage, base: str, digest: str) -> ShardStats | None:
    """The stats file of a shard that exists already, if it records the spec `digest`."""
    try:
        stats = ShardStats.from_json(dest.read_bytes(ShardFiles(base).stats))
    except ObjectNotFound:
        return None
    if stats.spec_digest != digest:
        return None
    stats.status = STATUS_EXISTS
    return stats


def existing_shard_stats(dest: Storage, spec: ShardSpec, digest: str) -> ShardStats:
    """Stats of a shard that exists already: its stats file if present, else from the spec."""
    files = ShardFiles(spec.base)
    recorded = recorded_shard_stats(dest, spec.base, digest)
    if recorded is not None:
        return recorded
    info = dest.stat(files.tar)
    # A frame shard's sample count is known only from its tar (the spec counts videos).
    samples = spec.samples if spec.frames is None else _count_samples(dest, files.tar)
    return ShardStats(
        shard=spec.shard,
        spec_digest=digest,
        status=STATUS_EXISTS,
        samples=samples,
        tar_bytes=info.size if info else 0,
        source_bytes=sum(m.size or 0 for m in spec.members),
        seconds=0.0,
    )


def _count_samples(dest: Storage, name: str) -> int:
    """Samples of a tar, by webdataset's grouping of its member names (a full read)."""
    with dest.open_read(name) as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
        names = [member.name for member in tar]
    return webdataset_sample_count(names)


def build_shard(
    source: Storage,
    dest: Storage,
    spec: ShardSpec,
    *,
    overwrite: bool = False,
    log: Callable[[str], None] = lambda message: None,
    owner: str = "objectron-wds",
    lease_seconds: float | None = None,
    claimed: bool = False,
) -> ShardStats:
    """Build one shard at `dest` from its spec, or confirm it is there already.

    A claim (see tasks/claims.py) keeps concurrent runs from building the same shard twice:
    `claimed` says the caller holds it (the flow claims each shard before it submits the
    build); otherwise this takes it, `owner` naming this run, waiting while another holds it.

    Raises:
        ShardConflict: an object at the shard's name has another (or no) spec digest and
            `overwrite` is False.
        SourceChanged: a source no longer has its planned generation or size.
    """
    digest = spec.digest
    files = ShardFiles(spec.base)
    if dest.exists(files.tar):
        found = read_recorded_digest(dest.read_head(files.tar, 4 * BLOCK))
        if found == digest:
            log(f"{spec.shard}: exists with the same spec, skipped")
            return existing_shard_stats(dest, spec, digest)
        if not overwrite:
            raise ShardConflict(
                f"{dest.url_for(files.tar)} exists but was built from spec "
                f"sha256:{found or 'unknown (not an objectron-wds shard)'}, not this run's "
                f"sha256:{digest}. Use a new destination, or overwrite=True to rebuild it."
            )
        log(f"{spec.shard}: replacing a shard built from another spec (overwrite=True)")
        dest.delete(files.tar)
        dest.delete(files.stats)

    if claimed:
        return _write_shard(source, dest, spec, digest, log)
    with hold_claim(
        dest,
        files.tar,
        owner=owner,
        done=lambda: dest.exists(files.tar),
        log=log,
        lease_seconds=lease_seconds,
    ) as held:
        if not held or dest.exists(files.tar):
            return _confirm_concurrent_build(dest, spec, digest, log)
        return _write_shard(source, dest, spec, digest, log)


def _confirm_concurrent_build(
    dest: Storage, spec: ShardSpec, digest: str, log: Callable[[str], None]
) -> ShardStats:
    """Another run committed the shard while this one waited or built: accept it only if it
    records the same spec."""
    files = ShardFiles(spec.base)
    found = read_recorded_digest(dest.read_head(files.tar, 4 * BLOCK))
    if found != digest:
        raise ShardConflict(
            f"{dest.url_for(files.tar)} was just created by another run from spec "
            f"sha256:{found or 'unknown'}, not this run's sha256:{digest}"
        )
    log(f"{spec.shard}: already exists, built by a concurrent run with the same spec")
    return existing_shard_stats(dest, spec, digest)


def _write_shard(
    source: Storage, dest: Storage, spec: ShardSpec, digest: str, log: Callable[[str], None]
) -> ShardStats:
    files = ShardFiles(spec.base)
    # Two log lines per shard (each is an API record; with thousands of small shards one line
    # per decode failure was a measurable part of the per-task cost, benchmarks/RESULTS.md).
    log(
        f"{spec.shard}: building {spec.samples} {'videos' if spec.frames else 'samples'}, "
        f"{len(spec.members)} members, "
        f"{sum(m.size or 0 for m in spec.members):,} source bytes"
    )
    started = time.monotonic()
    members = _MemberWriter(source, spec)
    frames = None
    try:
        with dest.open_create(files.tar) as out:
            tar = TarStreamWriter(out)
            tar.write_global_header({"comment": f"{DIGEST_COMMENT_PREFIX}{digest}"})
            if spec.frames is None:
                for member in spec.members:
                    members.write(tar, member)
            else:
                # A frame shard: its members are made from its videos (tasks/frames/shard.py).
                from tasks.frames.shard import write_frame_samples

                frames = write_frame_samples(tar, source, spec)
            tar.close()
            tar_bytes = tar.offset
    except AlreadyExists:
        # Committed by another run meanwhile (claims make this rare, not impossible).
        return _confirm_concurrent_build(dest, spec, digest, log)
    stats = ShardStats(
        shard=spec.shard,
        spec_digest=digest,
        status=STATUS_BUILT,
        samples=spec.samples if frames is None else frames.samples,
        tar_bytes=tar_bytes,
        source_bytes=sum(m.size or 0 for m in spec.members),
        seconds=round(time.monotonic() - started, 3),
        members=members.stats if frames is None else frames.members,
        decode_errors=members.failures,
        reported=[] if frames is None else frames.reported,
    )
    if members.failures:
        first = members.failures[0]
        log(
            f"{spec.shard}: {len(members.failures)} member(s) kept raw, not decoded (all listed "
            f"in {files.stats} and in each sample's json); first: {first.key}.{first.member}: "
            f"{first.error}"
        )
    if stats.reported:
        first_video = stats.reported[0]
        log(
            f"{spec.shard}: {len(stats.reported)} video(s) gave no samples (listed in "
            f"{files.stats}); first: {first_video.video}: {first_video.reason}"
        )
    # Stats are derived data written after the shard: replaced, not create-only.
    dest.replace_bytes(files.stats, stats.to_json())
    log(
        f"{spec.shard}: built, {stats.samples} samples, {tar_bytes:,} bytes "
        f"in {stats.seconds:.2f} s"
    )
    return stats


def build_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    """Cache key of a build: task name, shard name and spec digest (plus the destination, so two
    destinations never share a record). Prefect's keys are global, hence the task name."""
    material = f"{parameters['dest_url']}\n{parameters['shard']}\n{parameters['spec_digest']}"
    return f"build-shard-{parameters['shard']}-{hashlib.sha256(material.encode()).hexdigest()[:24]}"


@task(
    name="build-shard",
    task_run_name="build {shard}",
    cache_key_fn=build_cache_key,
    persist_result=True,
    **RETRY_POLICY,
)
@redact_errors
def build(
    source_url: str,
    dest_url: str,
    shard: str,
    spec_digest: str,
    overwrite: bool = False,
    chunk_size_mib: int = 16,
    claimed: bool = False,
) -> ShardStats:
    """Stream one shard's members from the source into a tar at the destination.

    `claimed`: the flow holds the shard's claim (and renews it) while this runs, wherever it
    runs (a thread of the flow, or a Dask worker).

    Cross-run bounds come from a tag concurrency limit: the flow tags this task with the limit's
    name, and Prefect takes a slot before the task run starts and gives it back after it ends.
    """
    from tasks.specs import read_spec
    from tasks.storage import MiB, open_storage

    logger = get_run_logger()
    source = open_storage(source_url, chunk_size=chunk_size_mib * MiB)
    dest = open_storage(dest_url, chunk_size=chunk_size_mib * MiB)
    spec = read_spec(dest, shard.removesuffix(".tar"))
    if spec.digest != spec_digest:
        raise ShardConflict(
            f"{dest.url_for(ShardFiles(spec.base).spec)} changed since this run planned it "
            f"(sha256:{spec.digest[:16]}, planned sha256:{spec_digest[:16]}): is another run "
            "with overwrite=True writing here?"
        )
    return build_shard(
        source,
        dest,
        spec,
        overwrite=overwrite,
        log=logger.info,
        owner=run_owner(),
        claimed=claimed,
    )


def run_owner() -> str:
    """How a claim names the run that made it."""
    return f"flow run {prefect_flow_run.name} ({prefect_flow_run.id})"
