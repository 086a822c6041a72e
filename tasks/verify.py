"""Verification: stream every shard at a destination and check it against its spec.

For each `NAME.spec.json` at the destination, `NAME.tar` must:
- exist, and record the spec's digest in its leading pax header;
- hold exactly the planned members, in the planned order, with the planned sizes;
- have content checksums equal to the sources' (CRC32C from the source listing; for sources
  without one, the CRC32C the build computed while streaming, from `NAME.stats.json`);
- end with the end-of-archive blocks (a tar cut at a member boundary is otherwise readable);
- group, by webdataset's own rules, into the planned number of samples.

A frame shard's members are made from its videos, so its stats (written by the build) are
what it is checked against: names, sizes, checksums and the number of frame samples.

The tar is read once, as a stream, in fixed pieces: memory does not grow with shard size.
"""

from __future__ import annotations

import json
import tarfile
import time
from dataclasses import asdict, dataclass, field
from typing import IO

import google_crc32c
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.policy import RETRY_POLICY, redact_errors
from tasks.specs import ShardFiles, ShardSpec
from tasks.stats import ShardStats
from tasks.storage import Storage, b64_to_hex
from tasks.tar import BLOCK, DIGEST_COMMENT_PREFIX, webdataset_sample_count

STATUS_OK, STATUS_BAD, STATUS_MISSING = "ok", "bad", "missing"
READ_PIECE = 1024 * 1024


@dataclass
class ShardVerdict:
    """The outcome for one shard: `ok`, `bad` (with the problems found) or `missing`."""

    shard: str
    status: str
    problems: list[str] = field(default_factory=list)
    samples: int = 0
    tar_bytes: int = 0


@dataclass(frozen=True)
class ExpectedMember:
    name: str
    size: int | None
    crc32c: str | None  # hex
    # A decoded twin known only from the spec: absent when its raw member did not decode.
    optional: bool = False


def expected_members(spec: ShardSpec, stats: ShardStats | None) -> list[ExpectedMember]:
    """What the tar must hold. The build's stats say which decoded members exist (a file that
    did not decode has no JSON twin) and their sizes; the spec pins the source members."""
    pinned = {m.name: m for m in spec.members if m.source is not None}
    if stats is not None and stats.spec_digest == spec.digest:
        expected = []
        for member in stats.members:
            source = pinned.get(member.name)
            listing_crc = b64_to_hex(source.crc32c) if source is not None else None
            expected.append(ExpectedMember(member.name, member.size, listing_crc or member.crc32c))
        return expected
    # Without stats (a run killed between committing the shard and writing its stats), decoded
    # twins may or may not be there, and only the source members' checksums are known.
    return [
        ExpectedMember(m.name, m.size, b64_to_hex(m.crc32c), optional=m.decoded_from is not None)
        for m in spec.members
    ]


class _CountingReader:
    """Counts the bytes tarfile consumes, to locate the end-of-archive blocks."""

    def __init__(self, inner: IO[bytes]) -> None:
        self.inner = inner
        self.position = 0

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(size)
        self.position += len(data)
        return data


def verify_shard(dest: Storage, spec: ShardSpec, stats: ShardStats | None) -> ShardVerdict:
    """Check one shard against its spec (see the module docstring)."""
    files = ShardFiles(spec.base)
    info = dest.stat(files.tar)
    if info is None:
        return ShardVerdict(spec.shard, STATUS_MISSING, [f"{dest.url_for(files.tar)} is missing"])
    verdict = ShardVerdict(spec.shard, STATUS_OK, tar_bytes=info.size)
    current_stats = stats if stats is not None and stats.spec_digest == spec.digest else None
    if spec.frames is not None and current_stats is None:
        # A frame shard's members are made from its videos: only its stats say what they are.
        verdict.status = STATUS_BAD
        verdict.problems.append(
            f"{dest.url_for(files.stats)} is missing or from another spec, so the frame "
            "samples cannot be checked (verify --repair rebuilds the shard)"
        )
        return verdict
    expected = expected_members(spec, stats)
    names: list[str] = []
    with dest.open_read(files.tar) as raw:
        reader = _CountingReader(raw)
        try:
            names = _check_members(reader, spec, expected, verdict.problems)
        except (tarfile.TarError, OSError, EOFError) as exc:
            verdict.problems.append(f"unreadable tar (truncated or corrupt): {exc}")
    if not verdict.problems and stats is not None and stats.tar_bytes != info.size:
        verdict.problems.append(f"size {info.size} differs from the built {stats.tar_bytes}")
    verdict.samples = webdataset_sample_count(names)
    # A video shard holds the planned samples; a frame shard those its build recorded.
    planned = (
        spec.samples if spec.frames is None or current_stats is None else current_stats.samples
    )
    if verdict.samples != planned and not verdict.problems:
        verdict.problems.append(
            f"webdataset groups it into {verdict.samples} samples, planned {planned}"
        )
    if verdict.problems:
        verdict.status = STATUS_BAD
    return verdict


def _check_members(
    reader: _CountingReader, spec: ShardSpec, expected: list[ExpectedMember], problems: list[str]
) -> list[str]:
    names: list[str] = []
    last_end = 0
    position = 0  # in `expected`
    with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
        for index, member in enumerate(tar):
            names.append(member.name)
            while (
                position < len(expected)
                and expected[position].optional
                and expected[position].name != member.name
            ):
                position += 1
            if index == 0:
                recorded = tar.pax_headers.get("comment", "")
                if recorded != f"{DIGEST_COMMENT_PREFIX}{spec.digest}":
                    problems.append(
                        f"records spec {recorded.removeprefix(DIGEST_COMMENT_PREFIX)[:16] or '?'}"
                        f", not this spec's {spec.digest[:16]}"
                    )
            if position >= len(expected):
                problems.append(f"unexpected extra member {member.name}")
                continue
            want = expected[position]
            position += 1
            if member.name != want.name:
                problems.append(f"member {index} is {member.name}, planned {want.name}")
                continue
            if want.size is not None and member.size != want.size:
                problems.append(f"{member.name}: {member.size} bytes, planned {want.size}")
                continue
            extracted = tar.extractfile(member)
            assert extracted is not None
            checksum = google_crc32c.Checksum()
            while piece := extracted.read(READ_PIECE):
                checksum.update(piece)
            if want.crc32c is not None and checksum.digest().hex() != want.crc32c:
                problems.append(
                    f"{member.name}: CRC32C {checksum.digest().hex()} differs from the "
                    f"source's {want.crc32c}"
                )
            last_end = member.offset_data + -(-member.size // BLOCK) * BLOCK
        # tarfile stops at the first zero block, or silently at the end of the data.
        while reader.read(READ_PIECE):
            pass
    missing = [e.name for e in expected[position:] if not e.optional]
    if missing:
        problems.append(f"{len(missing)} planned member(s) missing, from {missing[0]}")
    if reader.position - last_end < 2 * BLOCK:
        problems.append("no end-of-archive blocks: the tar is truncated")
    return names


@dataclass
class VerificationReport:
    """All verdicts of one verification, as written to `verification-report.json`."""

    dest: str
    checked_at: str
    verdicts: list[ShardVerdict]
    unplanned: list[str] = field(default_factory=list)

    @property
    def bad(self) -> list[ShardVerdict]:
        return [v for v in self.verdicts if v.status == STATUS_BAD]

    @property
    def missing(self) -> list[ShardVerdict]:
        return [v for v in self.verdicts if v.status == STATUS_MISSING]

    @property
    def ok(self) -> bool:
        return not self.bad and not self.missing and not self.unplanned

    def to_json(self) -> bytes:
        document = {
            "dest": self.dest,
            "checked_at": self.checked_at,
            "ok": self.ok,
            "shards": len(self.verdicts),
            "bad": [v.shard for v in self.bad],
            "missing": [v.shard for v in self.missing],
            "unplanned": self.unplanned,
            "verdicts": [asdict(v) for v in self.verdicts],
        }
        return (json.dumps(document, indent=1) + "\n").encode()


REPORT_NAME = "verification-report.json"


def find_specs(dest: Storage, series: str | None = None) -> tuple[list[str], list[str]]:
    """Shard base names with a spec at `dest` (optionally of one series), and tars that have
    no spec (not made by this tool, or their spec was lost)."""
    names = {info.name for info in dest.list()}
    bases = sorted(n.removesuffix(".spec.json") for n in names if n.endswith(".spec.json"))
    if series:
        bases = [b for b in bases if b.rsplit("-", 1)[0] == series]
    unplanned = sorted(
        n
        for n in names
        if n.endswith(".tar")
        and n.removesuffix(".tar") not in bases
        and (not series or n.removesuffix(".tar").rsplit("-", 1)[0] == series)
    )
    return bases, unplanned


def load_stats(dest: Storage, base: str) -> ShardStats | None:
    files = ShardFiles(base)
    if not dest.exists(files.stats):
        return None
    return ShardStats.from_json(dest.read_bytes(files.stats))


def write_report(dest: Storage, report: VerificationReport) -> str:
    dest.replace_bytes(REPORT_NAME, report.to_json())
    return dest.url_for(REPORT_NAME)


def now_utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@task(
    name="verify-shard",
    task_run_name="verify {base}",
    cache_policy=NO_CACHE,
    persist_result=False,
    **RETRY_POLICY,
)
@redact_errors
def verify(dest_url: str, base: str) -> ShardVerdict:
    """Stream one shard and check it against its spec and stats."""
    from tasks.specs import read_spec
    from tasks.storage import open_storage

    dest = open_storage(dest_url)
    verdict = verify_shard(dest, read_spec(dest, base), load_stats(dest, base))
    if verdict.status != STATUS_OK:
        get_run_logger().warning("%s: %s: %s", verdict.shard, verdict.status, verdict.problems)
    return verdict
