"""Stage 4, specs: what each shard will contain, written next to the shards before any is built.

Per shard `NAME`, the destination gets:
- `NAME.txt`: tarp lines (`MEMBER pipe:gsutil cat URL`), human-readable and usable with the
  reference tool;
- `NAME.spec.json`: the same members with what pins each source (size, generation, checksum);
  its SHA-256 is the spec digest that the shard records in its first tar header.

A spec already at the destination must equal the new one: a different spec means a different
plan, and that is refused (unless overwrite) before anything is written.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.claims import remove_dead_claims
from tasks.members import ANNOTATION, GEOMETRY, METADATA
from tasks.parameters import InvalidInput
from tasks.planning import ShardPlan
from tasks.policy import RETRY_POLICY, redact_errors
from tasks.samples import Sample
from tasks.storage import AlreadyExists, Storage, b64_to_hex

SPEC_FORMAT = "objectron-wds-spec-v1"


class PlanConflict(InvalidInput):
    """The destination holds shards or specs from a different plan."""


@dataclass(frozen=True)
class MemberSpec:
    """A tar member, one of three kinds:
    - streamed from a source object (`source`, with the `size`, `generation` and checksums that
      pin it);
    - decoded at build time from another member of the same sample (`decoded_from`, e.g.
      `geometry.pbdata` for `KEY.geometry.json`); its size is known only then;
    - the sample's metadata (`text`: its JSON; decode errors are added at build time)."""

    name: str
    size: int | None = None
    source: str | None = None
    generation: str | None = None
    crc32c: str | None = None
    md5: str | None = None
    decoded_from: str | None = None
    text: str | None = None

    @property
    def key(self) -> str:
        """The WebDataset key: the name up to the first dot of its last path component."""
        folder, _, last = self.name.rpartition("/")
        return f"{folder}/{last.split('.', 1)[0]}" if folder else last.split(".", 1)[0]

    @property
    def extension(self) -> str:
        return self.name[len(self.key) + 1 :]


_MEMBER_FIELDS = tuple(f.name for f in fields(MemberSpec))


@dataclass(frozen=True)
class FrameOptions:
    """How a frame shard is made from its videos (`objectron-wds frames`). Part of the spec, so
    changing any of them is a different plan."""

    stride: int
    image_size: str  # "WIDTHxHEIGHT" or "full"
    jpeg_quality: int
    shuffle_seed: int | None
    # Each sample's labels carry the frame's AR feature points. In the spec only when true, so
    # the specs (and digests) of shards without points are those of the first frame format.
    ar_points: bool = False

    def to_document(self) -> dict[str, object]:
        document = asdict(self)
        if not self.ar_points:
            del document["ar_points"]
        return document


@dataclass(frozen=True)
class ShardSpec:
    """Everything needed to build one shard, and nothing about where it is written, so the same
    plan into two destinations gives the same digest and byte-identical shards.

    A video shard (`convert`) holds its members as listed. A frame shard (`frames` set) lists
    its videos' source members and metadata as inputs; the tar holds a JPEG and labels per
    selected frame, known only when the videos are decoded (the shard's stats list them), and
    `samples` counts its videos."""

    shard: str
    source_url: str
    samples: int
    members: tuple[MemberSpec, ...]
    frames: FrameOptions | None = None

    @property
    def base(self) -> str:
        return self.shard.removesuffix(".tar")

    def to_json(self) -> bytes:
        document = {
            "format": SPEC_FORMAT,
            "shard": self.shard,
            "source_url": self.source_url,
            "samples": self.samples,
            # Shallow dicts, not dataclasses.asdict: the fields are plain strings and ints, and
            # asdict's deep copies were most of the time of planning 14,584 videos
            # (benchmarks/RESULTS.md, row 5f). The bytes, and so the digests, are the same.
            "members": [
                {k: v for k in _MEMBER_FIELDS if (v := getattr(member, k)) is not None}
                for member in self.members
            ],
        }
        if self.frames is not None:  # absent for video shards: their digests stay as they were
            document["frames"] = self.frames.to_document()
        return (json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()

    @cached_property
    def digest(self) -> str:
        # Cached: a spec is frozen, and planning thousands of shards asks for each digest often.
        return hashlib.sha256(self.to_json()).hexdigest()

    @classmethod
    def from_json(cls, data: bytes) -> ShardSpec:
        document = json.loads(data)
        if document.get("format") != SPEC_FORMAT:
            raise ValueError(f"not an objectron-wds spec (format {document.get('format')!r})")
        return cls(
            shard=document["shard"],
            source_url=document["source_url"],
            samples=document["samples"],
            members=tuple(MemberSpec(**member) for member in document["members"]),
            frames=FrameOptions(**document["frames"]) if "frames" in document else None,
        )

    def tarp_lines(self) -> str:
        """The reference notebook's spec format: `NAME SOURCE` per member, in tar order."""
        lines = []
        root = self.source_url.rstrip("/")
        for member in self.members:
            if member.text is not None:
                lines.append(f"{member.name} text:{member.text}")
            elif member.decoded_from is not None:
                continue  # decoded at build time: tarp has no way to make it
            elif root.startswith("gs://"):
                lines.append(f"{member.name} pipe:gsutil cat {root}/{member.source}")
            else:
                lines.append(f"{member.name} file:{root}/{member.source}")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ShardFiles:
    """The names a shard occupies at the destination."""

    base: str

    @property
    def tar(self) -> str:
        return f"{self.base}.tar"

    @property
    def spec(self) -> str:
        return f"{self.base}.spec.json"

    @property
    def tarp(self) -> str:
        return f"{self.base}.txt"

    @property
    def stats(self) -> str:
        return f"{self.base}.stats.json"


def sample_metadata(sample: Sample, source_url: str) -> dict[str, Any]:
    """The sample's `KEY.json`: class, split and where every member came from."""
    root = source_url.rstrip("/")
    return {
        "key": sample.key,
        "class": sample.category,
        "split": sample.split,
        "sources": {
            member.extension: {
                "url": f"{root}/{member.source.name}",
                "size": member.source.size,
                "generation": member.source.generation,
                "crc32c": b64_to_hex(member.source.crc32c),
                "md5": b64_to_hex(member.source.md5),
            }
            for member in sample.members
        },
    }


# Raw members that have a decoded JSON twin, and the twin's extension.
DECODED_TWINS = {GEOMETRY: "geometry.json", ANNOTATION: "anno.json"}


def make_spec(
    plan: ShardPlan,
    source_url: str,
    *,
    decode: bool = True,
    frames: FrameOptions | None = None,
) -> ShardSpec:
    """The spec of one planned shard: each sample's source members, their decoded JSON twins
    (with `decode`, never for frame shards), then the sample's json."""
    decode = decode and frames is None
    members: list[MemberSpec] = []
    for sample in plan.samples:
        for member in sample.members:
            members.append(
                MemberSpec(
                    name=f"{sample.key}.{member.extension}",
                    size=member.source.size,
                    source=member.source.name,
                    generation=member.source.generation,
                    crc32c=member.source.crc32c,
                    md5=member.source.md5,
                )
            )
        if decode:
            for member in sample.members:
                if member.extension in DECODED_TWINS:
                    members.append(
                        MemberSpec(
                            name=f"{sample.key}.{DECODED_TWINS[member.extension]}",
                            decoded_from=member.extension,
                        )
                    )
        text = json.dumps(
            sample_metadata(sample, source_url), sort_keys=True, separators=(",", ":")
        )
        members.append(MemberSpec(name=f"{sample.key}.{METADATA}", text=text))
    return ShardSpec(f"{plan.name}.tar", source_url, len(plan.samples), tuple(members), frames)


@dataclass(frozen=True)
class SpecUpload:
    """What the spec stage did: per shard its digest, and which shards were already complete."""

    digests: dict[str, str]
    written: list[str]
    unchanged: list[str]
    replaced: list[str]
    existing_shards: list[str]


def shard_prefix(names: list[str]) -> str:
    """What every name of a plan starts with (of characters, not path components:
    "objectron-0000"), so a listing of the destination need only cover that."""
    return os.path.commonprefix(names) if names else ""  # noqa: RUF071


def _existing_digest(dest: Storage, files: ShardFiles) -> str:
    return hashlib.sha256(dest.read_bytes(files.spec)).hexdigest()


def _md5_base64(data: bytes) -> str:
    """MD5 as GCS lists it (base64 of the digest); used to compare, not to secure."""
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode("ascii")


def upload_specs(
    dest: Storage, specs: Sequence[ShardSpec], *, overwrite: bool = False, threads: int = 64
) -> SpecUpload:
    """Write every shard's spec files, create-only, after checking the existing ones.

    Raises:
        PlanConflict: an existing spec differs and `overwrite` is False; nothing was written.
    """
    # Only the plan's names (a destination may hold other series, or thousands of shards of
    # this one: a listing is a round trip per 5,000 names). The bases, not the tar names: the
    # spec files of a one-shard plan do not start with its tar name.
    listed = {info.name: info for info in dest.list(shard_prefix([spec.base for spec in specs]))}
    present = set(listed)
    remove_dead_claims(dest, present)
    all_files = [ShardFiles(spec.base) for spec in specs]
    to_compare = [(s, f) for s, f in zip(specs, all_files, strict=True) if f.spec in present]

    def existing_digest(pair: tuple[ShardSpec, ShardFiles]) -> str:
        spec, files = pair
        # The listing's MD5 (GCS reports one for every object written in one piece) equal to
        # that of this run's spec bytes: the same spec, no read needed. Every run of a shared
        # plan, and every resumed run, checks every shard's spec: at 10,000 shards a read each.
        if listed[files.spec].md5 == _md5_base64(spec.to_json()):
            return spec.digest
        return _existing_digest(dest, files)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        found = list(pool.map(existing_digest, to_compare))
    conflicts = [
        (spec, files, old)
        for (spec, files), old in zip(to_compare, found, strict=True)
        if old != spec.digest
    ]
    confirmed = {
        spec.shard
        for (spec, _files), old in zip(to_compare, found, strict=True)
        if old == spec.digest
    }
    if conflicts and not overwrite:
        shown = "; ".join(
            f"{dest.url_for(files.spec)}: existing sha256:{old[:16]}, this run sha256:"
            f"{spec.digest[:16]}"
            for spec, files, old in conflicts[:5]
        )
        more = f" (and {len(conflicts) - 5} more)" if len(conflicts) > 5 else ""
        raise PlanConflict(
            f"{len(conflicts)} shard(s) at {dest.url} were planned differently{more}: {shown}. "
            "Nothing was written. Use a new destination, the same parameters as before, "
            "or overwrite=True to replace those shards."
        )
    replaced = []
    for spec, files, _old in conflicts:
        # The tar goes first, so no reader ever finds a shard beside a spec it was not built from.
        for name in (files.tar, files.stats, files.spec, files.tarp):
            dest.delete(name)
            present.discard(name)
        replaced.append(spec.shard)

    def write(pair: tuple[ShardSpec, ShardFiles]) -> tuple[bool, list[tuple[str, bytes]]]:
        """Create the shard's spec files: whether it created any, and those it found."""
        spec, files = pair
        created = False
        found: list[tuple[str, bytes]] = []
        # The .spec.json last: its presence means the shard's spec files are complete.
        for name, data in ((files.tarp, spec.tarp_lines().encode()), (files.spec, spec.to_json())):
            try:
                dest.create_bytes(name, data)
                created = True
            except AlreadyExists:
                found.append((name, data))
        return created, found

    to_write = [(s, f) for s, f in zip(specs, all_files, strict=True) if s.shard not in confirmed]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        outcomes = list(pool.map(write, to_write))
    _confirm_created_by_others(
        dest, [pair for _created, found in outcomes for pair in found], threads=threads
    )
    written = [s.shard for (s, _f), (created, _) in zip(to_write, outcomes, strict=True) if created]
    unchanged = [s.shard for s in specs if s.shard not in written]
    return SpecUpload(
        digests={spec.shard: spec.digest for spec in specs},
        written=written,
        unchanged=unchanged,
        replaced=replaced,
        existing_shards=sorted(f.tar for f in all_files if f.tar in present),
    )


def _confirm_created_by_others(
    dest: Storage, found: list[tuple[str, bytes]], *, threads: int
) -> None:
    """Check that spec files another run created meanwhile hold this run's bytes.

    Runs of one plan started at once all find nothing listed and all create the same files:
    the later runs confirm them by one listing's MD5s, not a read each (4 runs of 320
    shards: 1,920 reads). A file listed without an MD5 (local storage) is read back.

    Raises:
        PlanConflict: a file holds other bytes (another run with other parameters).
    """
    if not found:
        return
    listed = {info.name: info.md5 for info in dest.list(shard_prefix([name for name, _ in found]))}

    def check(pair: tuple[str, bytes]) -> None:
        name, data = pair
        if listed.get(name) == _md5_base64(data):
            return
        if dest.read_bytes(name) != data:
            raise PlanConflict(
                f"{dest.url_for(name)} exists with different content (another run with "
                "other parameters is writing to this destination?)"
            )

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(check, found))


def read_spec(dest: Storage, base: str) -> ShardSpec:
    return ShardSpec.from_json(dest.read_bytes(ShardFiles(base).spec))


@task(name="upload-specs", cache_policy=NO_CACHE, persist_result=False, **RETRY_POLICY)
@redact_errors
def upload_shard_specs(
    source_url: str,
    dest_url: str,
    plans: list[ShardPlan],
    overwrite: bool = False,
    decode: bool = True,
    frames: FrameOptions | None = None,
) -> SpecUpload:
    """Write each shard's tarp spec and pinned spec next to the shards (create-only)."""
    from tasks.storage import open_storage

    logger = get_run_logger()
    specs = [make_spec(plan, source_url, decode=decode, frames=frames) for plan in plans]
    result = upload_specs(open_storage(dest_url), specs, overwrite=overwrite)
    logger.info(
        "Specs for %d shards at %s: %d written, %d already there, %d replaced; %d shards exist",
        len(specs), dest_url, len(result.written), len(result.unchanged), len(result.replaced),
        len(result.existing_shards),
    )  # fmt: skip
    return result
