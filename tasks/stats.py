"""What a built shard holds: `NAME.stats.json`, written beside the shard once its tar is
complete (and read by verify, the shard index and re-runs)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass
class MemberStats:
    name: str
    size: int
    crc32c: str  # hex, computed while streaming


@dataclass
class DecodeFailure:
    """A raw member that could not be decoded: the raw bytes are kept, the JSON twin omitted."""

    key: str
    member: str
    error: str


@dataclass
class ReportedVideo:
    """A video of a frame shard that gave no samples, and why (misaligned, undecodable): never
    a shifted sample."""

    video: str
    reason: str


@dataclass
class ShardStats:
    """What one shard holds; written beside it as `NAME.stats.json` once the tar is complete."""

    shard: str
    spec_digest: str
    status: str
    samples: int
    tar_bytes: int
    source_bytes: int
    seconds: float
    members: list[MemberStats] = field(default_factory=list)
    decode_errors: list[DecodeFailure] = field(default_factory=list)
    reported: list[ReportedVideo] = field(default_factory=list)  # frame shards only

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), indent=1, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes) -> ShardStats:
        document = json.loads(data)
        document["members"] = [MemberStats(**m) for m in document.get("members", [])]
        document["decode_errors"] = [DecodeFailure(**d) for d in document.get("decode_errors", [])]
        document["reported"] = [ReportedVideo(**r) for r in document.get("reported", [])]
        return cls(**document)
