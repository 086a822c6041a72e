"""Writing a frame shard: the JPEG and labels of every selected frame of the shard's videos.

A frame shard's spec lists its videos' source members (pinned like any shard's) and options;
what the tar holds is known only once the videos are decoded. So, per video:
- the geometry and annotation are read whole (megabytes) and decoded; the video is streamed to
  a temporary file (bounded disk, never memory) with its CRC32C checked against the listing;
- its frames are decoded once (tasks/frames/video.py) and each selected frame's JPEG and JSON
  are appended to a spool file on disk;
- a video that cannot give aligned samples (too few frames or geometry records, does not
  decode) is *reported*: its spooled samples are dropped, never shifted, and the other videos
  go on.
Then the spooled samples are written to the tar in a shuffled order seeded by the shard name,
so neighbouring samples come from different videos and a rebuild gives the same bytes.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import google_crc32c
import orjson

from tasks.frames.labels import ImageInfo, frame_labels
from tasks.frames.video import DecodedFrame, VideoUnreadable, decode_frames
from tasks.objectron.decode import DecodeError, decode_annotation, decode_geometry
from tasks.parameters import check_image_size
from tasks.samples import ANNOTATION, GEOMETRY, METADATA, VIDEO
from tasks.specs import FrameOptions, MemberSpec, ShardSpec
from tasks.stats import MemberStats, ReportedVideo
from tasks.storage import Storage
from tasks.tar import TarStreamWriter, check_checksum, read_pieces, read_whole

FRAME_ID_DIGITS = 6
IMAGE, LABELS = "jpg", "json"
# A shard whose videos were all reported holds this one member: a tar of only the pax header
# is refused by Python's tarfile (and so by webdataset), while webdataset skips top-level
# `__NAME__` members (its metadata convention), so readers see an empty shard.
EMPTY_MEMBER = "__no_samples__"


class VideoReported(Exception):
    """This video gives no samples; the message is the reason recorded in the shard's stats."""


@dataclass(frozen=True)
class FrameShardResult:
    samples: int
    members: list[MemberStats]
    reported: list[ReportedVideo]


def selected_frame_ids(annotated: list[int], stride: int) -> list[int]:
    """Every `stride`-th annotated frame in frame-id order: the 1st, the (1+stride)th, ..."""
    return sorted(set(annotated))[::stride]


@dataclass(frozen=True)
class _Spooled:
    key: str
    image: tuple[int, int]  # (offset, length) in the spool file
    labels: tuple[int, int]


class _Spool:
    """Samples appended to one temporary file; a reported video is cut off again."""

    def __init__(self, folder: str) -> None:
        self.file: IO[bytes] = open(os.path.join(folder, "samples.spool"), "w+b")  # noqa: SIM115
        self.samples: list[_Spooled] = []

    def mark(self) -> tuple[int, int]:
        return self.file.tell(), len(self.samples)

    def drop_since(self, mark: tuple[int, int]) -> None:
        offset, count = mark
        self.file.seek(offset)
        self.file.truncate()
        del self.samples[count:]

    def _append(self, data: bytes) -> tuple[int, int]:
        offset = self.file.tell()
        self.file.write(data)
        return offset, len(data)

    def add(self, key: str, image: bytes, labels: bytes) -> None:
        self.samples.append(_Spooled(key, self._append(image), self._append(labels)))

    def read(self, where: tuple[int, int]) -> bytes:
        offset, length = where
        self.file.seek(offset)
        data = self.file.read(length)
        self.file.seek(0, os.SEEK_END)
        return data

    def close(self) -> None:
        self.file.close()


def _videos(spec: ShardSpec) -> Iterator[tuple[str, dict[str, MemberSpec]]]:
    """The spec's members grouped by video key, in spec order."""
    current: str | None = None
    group: dict[str, MemberSpec] = {}
    for member in spec.members:
        if member.key != current:
            if current is not None:
                yield current, group
            current, group = member.key, {}
        group[member.extension] = member
    if current is not None:
        yield current, group


def _fetch_video(source: Storage, member: MemberSpec, path: Path) -> None:
    """Stream the video to `path`, checking its CRC32C against the listing's."""
    assert member.source is not None and member.size is not None
    checksum = google_crc32c.Checksum()
    with source.open_read(member.source, member.generation) as reader, open(path, "wb") as out:
        for piece in read_pieces(reader, member.size, member.name):
            checksum.update(piece)
            out.write(piece)
    check_checksum(member, checksum.digest().hex(), source.url_for(member.source))


def _sources(metadata: dict[str, Any]) -> dict[str, Any]:
    found = metadata.get("sources", {})

    def pick(extension: str) -> dict[str, Any] | None:
        entry = found.get(extension)
        return None if entry is None else {"url": entry["url"], "generation": entry["generation"]}

    return {"video": pick(VIDEO), "geometry": pick(GEOMETRY), "annotation": pick(ANNOTATION)}


def _spool_video(
    source: Storage,
    key: str,
    members: dict[str, MemberSpec],
    options: FrameOptions,
    folder: str,
    spool: _Spool,
) -> None:
    """Decode one video and spool its selected frames; raises VideoReported when it cannot
    give aligned samples (after some frames may have been spooled: the caller drops them)."""
    metadata_member = members.get(METADATA)
    metadata: dict[str, Any] = (
        orjson.loads(metadata_member.text)
        if metadata_member is not None and metadata_member.text
        else {}
    )
    if ANNOTATION not in members or VIDEO not in members or GEOMETRY not in members:
        missing = [e for e in (VIDEO, GEOMETRY, ANNOTATION) if e not in members]
        raise VideoReported(f"no {', '.join(missing)} in the spec")
    try:
        annotation = decode_annotation(read_whole(source, members[ANNOTATION]))
        geometry = decode_geometry(read_whole(source, members[GEOMETRY]))
    except DecodeError as exc:
        raise VideoReported(str(exc)) from None

    frames_by_id: dict[int, dict[str, Any]] = {}
    for frame in annotation["frames"]:
        frames_by_id.setdefault(frame["frame_id"], frame)
    if not frames_by_id:
        raise VideoReported("the annotation has no annotated frames")
    needed = max(frames_by_id) + 1
    records = geometry["frames"]
    if len(records) < needed:
        raise VideoReported(
            f"misaligned: geometry has {len(records)} records, the annotation needs "
            f"{needed} (highest frame_id {needed - 1})"
        )
    wanted = selected_frame_ids(list(frames_by_id), options.stride)

    video_path = Path(folder) / "video.mov"
    _fetch_video(source, members[VIDEO], video_path)
    class_name = metadata.get("class") or key.split("/", 1)[0]
    sources = _sources(metadata)
    try:
        decoded: DecodedFrame
        for decoded in decode_frames(
            video_path,
            wanted,
            needed_frames=needed,
            image_size=check_image_size(options.image_size),
            jpeg_quality=options.jpeg_quality,
        ):
            sample_key = f"{key}/{decoded.frame_id:0{FRAME_ID_DIGITS}d}"
            labels = frame_labels(
                video=key,
                class_name=class_name,
                split=metadata.get("split"),
                frame_id=decoded.frame_id,
                annotation=annotation,
                frame=frames_by_id[decoded.frame_id],
                geometry_frame=records[decoded.frame_id],
                image=ImageInfo(
                    width=decoded.width,
                    height=decoded.height,
                    source_width=decoded.source_width,
                    source_height=decoded.source_height,
                    rotation=decoded.rotation,
                ),
                sources=sources,
            )
            spool.add(sample_key, decoded.jpeg, orjson.dumps(labels, option=orjson.OPT_SORT_KEYS))
    except VideoUnreadable as exc:
        raise VideoReported(f"video: {exc}") from None
    finally:
        video_path.unlink(missing_ok=True)


def write_frame_samples(tar: TarStreamWriter, source: Storage, spec: ShardSpec) -> FrameShardResult:
    """Decode the spec's videos and write their frame samples into `tar` (module docstring)."""
    options = spec.frames
    assert options is not None, "not a frame spec"
    reported: list[ReportedVideo] = []
    members: list[MemberStats] = []
    with tempfile.TemporaryDirectory(prefix="objectron-wds-frames-") as folder:
        spool = _Spool(folder)
        try:
            for key, video_members in _videos(spec):
                mark = spool.mark()
                try:
                    _spool_video(source, key, video_members, options, folder, spool)
                except VideoReported as exc:
                    spool.drop_since(mark)
                    reported.append(ReportedVideo(video=key, reason=str(exc)))
            order = list(spool.samples)
            if options.shuffle_seed is not None:
                # Seeded by the shard too, so shards with the same videos differ in order only
                # by design; a string seed is hashed stably across processes.
                random.Random(f"{options.shuffle_seed}/{spec.shard}").shuffle(order)
            for sample in order:
                for extension, where in ((IMAGE, sample.image), (LABELS, sample.labels)):
                    name = f"{sample.key}.{extension}"
                    data = spool.read(where)
                    members.append(MemberStats(name, len(data), tar.add_bytes(name, data)))
            if not order:
                note = orjson.dumps(
                    {"reported": [{"video": r.video, "reason": r.reason} for r in reported]},
                    option=orjson.OPT_SORT_KEYS,
                )
                members.append(
                    MemberStats(EMPTY_MEMBER, len(note), tar.add_bytes(EMPTY_MEMBER, note))
                )
        finally:
            spool.close()
    return FrameShardResult(samples=len(order), members=members, reported=reported)
