"""Decode a local video into upright, resized JPEGs of chosen frames, as fast as FFmpeg's CLI.

Frame `n` is the n-th frame the decoder outputs, in presentation order, counted from 0: the
convention of Objectron's notebook (FFmpeg `select=eq(n,FRAME_ID)`), so annotation `frame_id`
`n` is `DecodedFrame.frame_id` `n`.

Upright means the stream's display matrix applied as FFmpeg's command line applies it
(autorotate); PyAV decodes the stored orientation and leaves that to us. Objectron's videos are
stored landscape (1920x1440) with a matrix that turns them 90 degrees clockwise.

The pipeline, chosen by measuring (benchmarks/frames.py, RESULTS.md "issue 15: frames"):
FFmpeg's threaded decoder; each wanted frame goes to a small thread pool that scales it with
libswscale in the *stored* orientation (to the rotated target size, limited to full range, the
JPEG range), turns the three YUV planes upright with numpy (cheap after scaling; it moves a
quarter of the bytes a rotate-then-scale filter graph would) and encodes them with simplejpeg
(libjpeg-turbo, straight from YUV planes, no RGB round trip). swscale and libjpeg-turbo release
the GIL, so the encoders run beside the decoder's own threads. A bounded number of frames is in
flight, so memory stays flat whatever the video's length.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import av
import av.error
import numpy as np
import simplejpeg
from av.buffer import Buffer
from av.video.frame import VideoFrame
from av.video.reformatter import Interpolation, VideoReformatter

__all__ = [
    "DecodedFrame",
    "VideoTooShort",
    "VideoUnreadable",
    "decode_frames",
    "fit_inside",
    "upright_rotation",
]

# Frames handed to the encoders and not yet yielded, per encoder thread: enough to keep every
# thread busy while the decoder produces the next one, few enough that a 1440x1920 video's
# decoded frames (4 MiB each) keep the peak flat.
_IN_FLIGHT_PER_THREAD = 3


class VideoUnreadable(Exception):
    """The video does not decode (not a video, corrupt, no video stream, no frames);
    `str(exc)` is a one-line reason fit for a report."""


class VideoTooShort(VideoUnreadable):
    """The stream ended after `decoded` frames, before the `needed` ones (the highest
    annotated frame + 1): its labels would not line up, so the caller drops the video."""

    def __init__(self, decoded: int, needed: int) -> None:
        super().__init__(f"the video has {decoded} frames, {needed} needed")
        self.decoded = decoded
        self.needed = needed

    def __reduce__(self) -> tuple[type[VideoTooShort], tuple[int, int]]:
        # Picklable with its attributes (a Prefect task or a worker process may carry it).
        return (VideoTooShort, (self.decoded, self.needed))


@dataclass(frozen=True)
class DecodedFrame:
    """One wanted frame, upright and resized, as a JPEG."""

    frame_id: int  # n-th frame of the video stream in presentation order, from 0
    jpeg: bytes
    width: int  # of the JPEG
    height: int
    source_width: int  # of the upright decoded frame, before resizing
    source_height: int
    rotation: int  # clockwise degrees applied to make it upright: 0, 90, 180 or 270


def fit_inside(width: int, height: int, box: tuple[int, int] | None) -> tuple[int, int]:
    """The size of a `width` x `height` image scaled (up or down) to fit inside `box`
    (width, height), aspect kept, each side rounded half up to whole pixels (at least 1);
    the side that touches the box is exactly the box's. None keeps the size."""
    if box is None:
        return width, height
    box_width, box_height = box
    if box_width < 1 or box_height < 1:
        raise ValueError(f"image_size must be positive, got {box_width}x{box_height}")
    if box_width * height <= box_height * width:  # the width touches the box
        return box_width, max(1, (2 * height * box_width + width) // (2 * width))
    return max(1, (2 * width * box_height + height) // (2 * height)), box_height


def upright_rotation(frame: VideoFrame) -> int:
    """Clockwise degrees (0, 90, 180, 270) that make `frame` upright, from its display
    matrix, as FFmpeg's CLI reads it (its `get_rotation`: minus the matrix's counter-clockwise
    angle). A mirrored matrix or an angle that is not a multiple of 90 is refused: the CLI
    would flip or interpolate, and `rotation` could not say so."""
    side_data = frame.side_data.get("DISPLAYMATRIX")
    if not isinstance(side_data, Buffer):
        return 0
    matrix = np.frombuffer(bytes(side_data), dtype="<i4")
    if len(matrix) != 9:
        raise VideoUnreadable(f"malformed display matrix ({len(matrix) * 4} bytes)")
    if int(matrix[0]) * int(matrix[4]) - int(matrix[1]) * int(matrix[3]) < 0:
        raise VideoUnreadable("the display matrix mirrors the picture (not supported)")
    angle = -float(frame.rotation) % 360  # clockwise
    clockwise = round(angle / 90) * 90 % 360
    if abs((angle - clockwise + 180) % 360 - 180) > 1:
        raise VideoUnreadable(
            f"the display matrix rotates by {angle:g} degrees clockwise "
            "(only multiples of 90 are supported)"
        )
    return clockwise


def _planes(frame: VideoFrame) -> list[np.ndarray]:
    """The Y, U, V planes of a yuv420p frame as views (rows cropped from their padding)."""
    return [
        np.frombuffer(memoryview(plane), np.uint8).reshape(plane.height, plane.line_size)[
            :, : plane.width
        ]
        for plane in frame.planes
    ]


def _turn(plane: np.ndarray, clockwise: int) -> np.ndarray:
    if clockwise == 0:
        return plane  # simplejpeg reads strided rows as they are
    if clockwise == 180:
        return np.ascontiguousarray(plane[::-1, ::-1])
    return np.ascontiguousarray(np.rot90(plane, k=-1 if clockwise == 90 else 1))


@dataclass(frozen=True)
class _Encoder:
    """Scale (stored orientation) + turn upright + JPEG, run in the encoder threads; one
    SwsContext per thread, reused across frames (a new one per frame costs its set-up)."""

    stored_size: tuple[int, int]  # the scaled frame before it is turned
    clockwise: int
    quality: int
    local: threading.local

    def __call__(self, frame: VideoFrame) -> bytes:
        reformatter = getattr(self.local, "reformatter", None)
        if reformatter is None:
            reformatter = self.local.reformatter = VideoReformatter()
        scaled = reformatter.reformat(
            frame,
            width=self.stored_size[0],
            height=self.stored_size[1],
            format="yuv420p",
            dst_color_range="JPEG",  # JFIF's YCbCr is full range; the video's is limited
            interpolation=Interpolation.BILINEAR,
            threads=1,  # the pool is the parallelism; swscale's own threads would oversubscribe
        )
        y, u, v = (_turn(plane, self.clockwise) for plane in _planes(scaled))
        return simplejpeg.encode_jpeg_yuv_planes(y, u, v, quality=self.quality)


def _one_line(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


def decode_frames(
    path: str | os.PathLike[str],
    wanted: Sequence[int],
    *,
    needed_frames: int,
    image_size: tuple[int, int] | None,
    jpeg_quality: int,
    threads: int = 2,
) -> Iterator[DecodedFrame]:
    """Yield the `wanted` frames (sorted, unique frame ids) of the video at `path`, upright,
    fitted inside `image_size` (width, height; None = full upright size), as JPEGs.

    Decodes no further than max(needed_frames, max(wanted) + 1) frames. If the stream ends
    before that, the frames decoded are yielded and then VideoTooShort is raised (its `needed`
    is that count). Anything FFmpeg cannot decode raises VideoUnreadable with a one-line
    reason; frames not yet yielded are then dropped. A missing file is FileNotFoundError (the
    caller's mistake, not a bad video). `threads` is both the decoder's thread count and the
    number of encoder threads.
    """
    wanted = list(wanted)
    if any(b <= a for a, b in itertools.pairwise(wanted)) or (wanted and wanted[0] < 0):
        raise ValueError("wanted must be sorted ascending, unique and non-negative")
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be 1-100, got {jpeg_quality}")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such video file: {os.fspath(path)}")
    limit = max(needed_frames, wanted[-1] + 1 if wanted else 0)
    return _decode(os.fspath(path), wanted, limit, image_size, jpeg_quality, threads)


def _decode(
    path: str,
    wanted: list[int],
    limit: int,
    image_size: tuple[int, int] | None,
    quality: int,
    threads: int,
) -> Iterator[DecodedFrame]:
    try:
        container = av.open(path, metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise VideoUnreadable(f"not a video FFmpeg can open: {_one_line(exc)}") from None
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="frames-jpeg")
    pending: deque[tuple[Future[bytes], Callable[[bytes], DecodedFrame]]] = deque()
    try:
        if not container.streams.video:
            raise VideoUnreadable("no video stream")
        stream = container.streams.video[0]
        context = stream.codec_context
        context.thread_type = "AUTO"  # frame + slice threads, as FFmpeg's CLI decodes
        context.thread_count = threads
        encoder: _Encoder | None = None
        make: Callable[[int], Callable[[bytes], DecodedFrame]] | None = None
        next_wanted = 0
        decoded = 0
        frames = container.decode(stream)
        while decoded < max(limit, 1):  # at least one frame: a video with none is unreadable
            try:
                frame = next(frames)
            except StopIteration:
                break
            except av.error.FFmpegError as exc:
                raise VideoUnreadable(
                    f"decoding failed after {decoded} frames: {_one_line(exc)}"
                ) from None
            frame_id = decoded
            decoded += 1
            if next_wanted >= len(wanted) or wanted[next_wanted] != frame_id:
                continue
            next_wanted += 1
            if encoder is None or make is None:
                encoder, make = _plan(frame, image_size, quality)
            pending.append((pool.submit(encoder, frame), make(frame_id)))
            while len(pending) > threads * _IN_FLIGHT_PER_THREAD:
                yield _finished(*pending.popleft())
        if decoded == 0:
            raise VideoUnreadable("the video stream has no frames")
        while pending:
            yield _finished(*pending.popleft())
        if decoded < limit:
            raise VideoTooShort(decoded=decoded, needed=limit)
    finally:
        for future, _ in pending:
            future.cancel()
        pool.shutdown(wait=True)
        container.close()


def _finished(future: Future[bytes], finish: Callable[[bytes], DecodedFrame]) -> DecodedFrame:
    """The encoded frame, an FFmpeg error in scaling it a VideoUnreadable like any other."""
    try:
        return finish(future.result())
    except av.error.FFmpegError as exc:
        raise VideoUnreadable(f"scaling a frame failed: {_one_line(exc)}") from None


def _plan(
    frame: VideoFrame, image_size: tuple[int, int] | None, quality: int
) -> tuple[_Encoder, Callable[[int], Callable[[bytes], DecodedFrame]]]:
    """From the first wanted frame: the encoder and the sizes every frame of the video gets
    (a stream's size and display matrix are fixed)."""
    clockwise = upright_rotation(frame)
    turned = clockwise in (90, 270)
    source_width, source_height = (
        (frame.height, frame.width) if turned else (frame.width, frame.height)
    )
    width, height = fit_inside(source_width, source_height, image_size)
    stored = (height, width) if turned else (width, height)
    encoder = _Encoder(stored, clockwise, quality, threading.local())

    def make(frame_id: int) -> Callable[[bytes], DecodedFrame]:
        def finish(jpeg: bytes) -> DecodedFrame:
            return DecodedFrame(
                frame_id, jpeg, width, height, source_width, source_height, clockwise
            )

        return finish

    return encoder, make
