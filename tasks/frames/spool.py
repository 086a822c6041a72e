"""One video's frame work, in a frame worker process (tasks/frames/frame_worker.py) or in the
build thread: decode its geometry and annotation, decode the selected frames, make each one's
labels, and write the JPEGs and labels to the video's spool file.

Everything a job needs is in files named by its `VideoJob`, so only small JSON crosses the
worker's pipe. Imports no Prefect and nothing of the build machinery, so a worker starts
quickly and stays small.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from tasks.frames.labels import ImageInfo, frame_labels
from tasks.frames.video import DecodedFrame, VideoUnreadable, decode_frames
from tasks.members import ANNOTATION, GEOMETRY, VIDEO
from tasks.objectron.decode import DecodeError, decode_annotation, decode_geometry
from tasks.parameters import check_image_size

FRAME_ID_DIGITS = 6


class VideoReported(Exception):
    """This video gives no samples; the message is the reason recorded in the shard's stats."""


def selected_frame_ids(annotated: list[int], stride: int) -> list[int]:
    """Every `stride`-th annotated frame in frame-id order: the 1st, the (1+stride)th, ..."""
    return sorted(set(annotated))[::stride]


@dataclass(frozen=True)
class VideoJob:
    """One video's frame work, as a frame worker receives it: everything is in files."""

    key: str
    video_path: str
    annotation_path: str
    geometry_path: str
    metadata_text: str
    stride: int
    image_size: str
    jpeg_quality: int
    spool_path: str
    ar_points: bool = False

    def to_json(self) -> bytes:
        return orjson.dumps(self.__dict__)

    @classmethod
    def from_json(cls, data: bytes) -> VideoJob:
        return cls(**orjson.loads(data))


class FrameWorkFailed(Exception):
    """A frame worker failed on a video for a reason other than the video (a bug, a full disk)."""


def _sources(metadata: dict[str, Any]) -> dict[str, Any]:
    found = metadata.get("sources", {})

    def pick(extension: str) -> dict[str, Any] | None:
        entry = found.get(extension)
        return None if entry is None else {"url": entry["url"], "generation": entry["generation"]}

    return {"video": pick(VIDEO), "geometry": pick(GEOMETRY), "annotation": pick(ANNOTATION)}


def spool_video(job: VideoJob) -> list[tuple[str, int, int, int, int]]:
    """Decode one video's selected frames and write their JPEG and JSON to `job.spool_path`.

    Returns (sample key, image offset, image length, labels offset, labels length) per sample.
    Raises VideoReported when the video cannot give aligned samples (the spool file may then
    hold some of its samples: the caller drops them).
    """
    metadata: dict[str, Any] = orjson.loads(job.metadata_text) if job.metadata_text else {}
    try:
        annotation = decode_annotation(Path(job.annotation_path).read_bytes())
        geometry = decode_geometry(Path(job.geometry_path).read_bytes(), points=job.ar_points)
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
    wanted = selected_frame_ids(list(frames_by_id), job.stride)
    class_name = metadata.get("class") or job.key.split("/", 1)[0]
    sources = _sources(metadata)
    samples = []
    with open(job.spool_path, "wb") as spool:
        try:
            decoded: DecodedFrame
            for decoded in decode_frames(
                job.video_path,
                wanted,
                needed_frames=needed,
                image_size=check_image_size(job.image_size),
                jpeg_quality=job.jpeg_quality,
            ):
                labels = frame_labels(
                    video=job.key,
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
                    points=job.ar_points,
                )
                text = orjson.dumps(labels, option=orjson.OPT_SORT_KEYS)
                image_at = spool.tell()
                spool.write(decoded.jpeg)
                spool.write(text)
                samples.append(
                    (
                        f"{job.key}/{decoded.frame_id:0{FRAME_ID_DIGITS}d}",
                        image_at,
                        len(decoded.jpeg),
                        image_at + len(decoded.jpeg),
                        len(text),
                    )
                )
        except VideoUnreadable as exc:
            raise VideoReported(f"video: {exc}") from None
    return samples


def spool_answer(kind: int, payload: bytes) -> bytes:
    """A frame job's answer (what a worker sends back): the samples, or why it is reported."""
    try:
        return orjson.dumps({"samples": spool_video(VideoJob.from_json(payload))})
    except VideoReported as exc:
        return orjson.dumps({"reported": str(exc)})
