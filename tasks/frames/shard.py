"""Writing a frame shard: the JPEG and labels of every selected frame of the shard's videos.

A frame shard's spec lists its videos' source members (pinned like any shard's) and options;
what the tar holds is known only once the videos are decoded. So, per video:
- the build fetches its geometry, annotation and video to temporary files (bounded disk, never
  memory; the video's CRC32C checked against the listing);
- a frame worker process (tasks/worker_pool.py, one per CPU by default,
  OBJECTRON_WDS_FRAME_PROCESSES=N to change, 0 for the build thread) decodes the geometry and
  annotation, decodes the video's frames once (tasks/frames/video.py) and writes each selected
  frame's JPEG and JSON to the video's spool file; meanwhile the build fetches the next video
  (at most one ahead, on disk), so fetching overlaps decoding;
- a video that cannot give aligned samples (too few frames or geometry records, does not
  decode) is *reported*: none of its samples is kept, never shifted, and the other videos go on.
Then the spooled samples are written to the tar in a shuffled order seeded by the shard name,
so neighbouring samples come from different videos and a rebuild gives the same bytes. All the
per-frame Python (decode loop, labels, JPEG hand-off) runs in the workers; the build's own
process only copies the spooled bytes into the tar, so one interpreter's GIL does not bound a
big machine.
"""

from __future__ import annotations

import contextlib
import random
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import google_crc32c
import orjson

from tasks.frames.spool import (
    FrameWorkFailed,
    VideoJob,
    VideoReported,
    spool_answer,
)
from tasks.members import ANNOTATION, GEOMETRY, METADATA, VIDEO
from tasks.specs import FrameOptions, MemberSpec, ShardSpec
from tasks.stats import MemberStats, ReportedVideo
from tasks.storage import Storage
from tasks.tar import TarStreamWriter, check_checksum, read_pieces, read_whole
from tasks.worker_pool import WorkerPool

IMAGE, LABELS = "jpg", "json"
# A shard whose videos were all reported holds this one member: a tar of only the pax header
# is refused by Python's tarfile (and so by webdataset), while webdataset skips top-level
# `__NAME__` members (its metadata convention), so readers see an empty shard.
EMPTY_MEMBER = "__no_samples__"


@dataclass(frozen=True)
class FrameShardResult:
    samples: int
    members: list[MemberStats]
    reported: list[ReportedVideo]


@dataclass(frozen=True)
class _Spooled:
    key: str
    video: int  # index of the video (its spool file) in the shard
    image: tuple[int, int]  # (offset, length) in that spool file
    labels: tuple[int, int]


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


FRAME_PROCESSES_VARIABLE = "OBJECTRON_WDS_FRAME_PROCESSES"
_FRAME_POOL = WorkerPool(
    "tasks.frames.frame_worker", FRAME_PROCESSES_VARIABLE, spool_answer, FrameWorkFailed, "frame"
)


def frame_process_ids() -> list[int]:
    """The process ids of this process's running frame workers (for benchmarks)."""
    return _FRAME_POOL.process_ids()


@dataclass
class _Pending:
    """A video handed to a frame worker (or, without workers, to be done in this thread)."""

    index: int
    job: VideoJob
    future: Future[bytes] | None

    def answer(self) -> dict[str, Any]:
        try:
            reply = self.future.result() if self.future else spool_answer(0, self.job.to_json())
        finally:
            for path in (self.job.video_path, self.job.annotation_path, self.job.geometry_path):
                Path(path).unlink(missing_ok=True)
        return dict(orjson.loads(reply))


def _prepare(
    source: Storage,
    key: str,
    members: dict[str, MemberSpec],
    options: FrameOptions,
    folder: str,
    index: int,
) -> VideoJob:
    """Fetch one video's files into `folder`; raises VideoReported for a spec without them."""
    if ANNOTATION not in members or VIDEO not in members or GEOMETRY not in members:
        missing = [e for e in (VIDEO, GEOMETRY, ANNOTATION) if e not in members]
        raise VideoReported(f"no {', '.join(missing)} in the spec")
    base = Path(folder) / f"video-{index:04d}"
    paths = {ext: f"{base}.{ext}" for ext in (VIDEO, ANNOTATION, GEOMETRY)}
    Path(paths[ANNOTATION]).write_bytes(read_whole(source, members[ANNOTATION]))
    Path(paths[GEOMETRY]).write_bytes(read_whole(source, members[GEOMETRY]))
    _fetch_video(source, members[VIDEO], Path(paths[VIDEO]))
    metadata_member = members.get(METADATA)
    return VideoJob(
        key=key,
        video_path=paths[VIDEO],
        annotation_path=paths[ANNOTATION],
        geometry_path=paths[GEOMETRY],
        metadata_text=(metadata_member.text or "") if metadata_member is not None else "",
        stride=options.stride,
        image_size=options.image_size,
        jpeg_quality=options.jpeg_quality,
        spool_path=f"{base}.spool",
        ar_points=options.ar_points,
    )


def write_frame_samples(tar: TarStreamWriter, source: Storage, spec: ShardSpec) -> FrameShardResult:
    """Decode the spec's videos and write their frame samples into `tar` (module docstring)."""
    options = spec.frames
    assert options is not None, "not a frame spec"
    found: dict[int, list[_Spooled] | str] = {}  # video index -> its samples, or why reported
    keys: dict[int, str] = {}
    members: list[MemberStats] = []
    with tempfile.TemporaryDirectory(prefix="objectron-wds-frames-") as folder:
        pending: _Pending | None = None

        def finish(done: _Pending) -> None:
            answer = done.answer()
            if "reported" in answer:
                found[done.index] = str(answer["reported"])
                Path(done.job.spool_path).unlink(missing_ok=True)
                return
            found[done.index] = [
                _Spooled(key, done.index, (image_at, image_len), (labels_at, labels_len))
                for key, image_at, image_len, labels_at, labels_len in answer["samples"]
            ]

        for index, (key, video_members) in enumerate(_videos(spec)):
            keys[index] = key
            try:
                # Fetched while the previous video decodes in a worker: one video ahead.
                job = _prepare(source, key, video_members, options, folder, index)
            except VideoReported as exc:
                found[index] = str(exc)
                continue
            if pending is not None:
                finish(pending)
            pending = _Pending(index, job, _FRAME_POOL.submit(0, job.to_json()))
        if pending is not None:
            finish(pending)

        reported = [
            ReportedVideo(video=keys[i], reason=result)
            for i, result in sorted(found.items())
            if isinstance(result, str)
        ]
        order = [
            s for _, result in sorted(found.items()) if isinstance(result, list) for s in result
        ]
        if options.shuffle_seed is not None:
            # Seeded by the shard too, so shards with the same videos differ in order only
            # by design; a string seed is hashed stably across processes.
            random.Random(f"{options.shuffle_seed}/{spec.shard}").shuffle(order)
        with contextlib.ExitStack() as files:
            spools = {
                i: files.enter_context(open(Path(folder) / f"video-{i:04d}.spool", "rb"))
                for i in {sample.video for sample in order}
            }
            for sample in order:
                spool = spools[sample.video]
                for extension, (offset, length) in ((IMAGE, sample.image), (LABELS, sample.labels)):
                    name = f"{sample.key}.{extension}"
                    spool.seek(offset)
                    data = spool.read(length)
                    members.append(MemberStats(name, len(data), tar.add_bytes(name, data)))
        if not order:
            note = orjson.dumps(
                {"reported": [{"video": r.video, "reason": r.reason} for r in reported]},
                option=orjson.OPT_SORT_KEYS,
            )
            members.append(MemberStats(EMPTY_MEMBER, len(note), tar.add_bytes(EMPTY_MEMBER, note)))
    return FrameShardResult(samples=len(order), members=members, reported=reported)
