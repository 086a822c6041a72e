"""The video painter of the sample dataset: real H.264 videos (PyAV and libx264) whose frames
show the annotated box where its 2D keypoints say and a frame counter that `read_frame_counter`
reads back from the pixels; about half stored landscape with a rotation tag, as Objectron's are.
Or random stand-in bytes for benchmarks that only move bytes.
"""

from __future__ import annotations

import functools
import io
import math
import random
import struct
from collections.abc import Iterable
from fractions import Fraction

import av
import numpy
from PIL import Image, ImageDraw, ImageFont

from tasks.objectron.box import EDGES
from tasks.objectron.sample_capture import FPS, FrameValues, sample_values, seeded_rng

# The sample videos: upright size, and what their pictures show (`render_frame`).
DEFAULT_VIDEO_SIZE = "192x256"
VIDEO_WIDTH = 192
VIDEO_HEIGHT = 256
BACKGROUND_COLOUR = (40, 40, 48)
BOX_COLOUR = (255, 255, 0)
# The frame counter: a start cell (black), COUNTER_BITS bits (white = 1, most significant
# first), an even-parity cell and a guard cell (white), across the top COUNTER_HEIGHT of the
# picture; big enough to survive JPEG and a resize to 120x160.
COUNTER_BITS = 10
COUNTER_CELLS = COUNTER_BITS + 3
COUNTER_HEIGHT = 1 / 16
# Fixed encoder settings. One thread keeps x264's decisions in order; `no-asm` keeps them off
# the heap: with its AVX-512 routines (the CPUs here have them) the bytes of a video depended on
# what the process had allocated before, so the same video came out a few bytes different in
# 1 to 3 of 40 videos between two passes in one process, and under load between two runs (a
# flaky test). x264's C routines are bit-exact with its assembly, identical on every CPU, and
# cost about 1.8x the encoding time (a 30-frame 1440x1920 video: 3.3 s instead of 1.9 s).
X264_OPTIONS: tuple[tuple[str, str], ...] = (
    ("threads", "1"),
    ("preset", "veryfast"),
    ("crf", "18"),
    ("g", "30"),
    ("x264-params", "no-asm=1"),
)
# A QuickTime `ftyp` box, so tools that sniff file types see the random videos as .MOV files.
_MOV_HEADER = b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00qt  "


def parse_video_size(text: str) -> tuple[int, int]:
    """`"WIDTHxHEIGHT"` (the upright picture, e.g. `192x256`) as (width, height).

    Raises:
        ValueError: Not two positive even numbers (H.264 in 4:2:0 needs even sides), or larger
            than 4096 on a side.
    """
    width_text, sep, height_text = text.strip().lower().partition("x")
    if not (sep and width_text.isdigit() and height_text.isdigit()):
        raise ValueError(f"video_size must be WIDTHxHEIGHT, e.g. 192x256, got {text!r}")
    width, height = int(width_text), int(height_text)
    if not (2 <= width <= 4096 and 2 <= height <= 4096 and width % 2 == 0 and height % 2 == 0):
        raise ValueError(
            f"video_size {text!r}: each side must be an even number of pixels from 2 to 4096"
        )
    return width, height


def stored_rotation(key: str, *, seed: int = 0) -> int:
    """How the sample video of `key` is stored: 0 (upright) or 90 (landscape with a tag).

    About half the videos are stored as Objectron's are, landscape (the upright picture turned
    90 degrees counter-clockwise) with a display matrix that makes players, and FFmpeg's
    command line, turn it 90 degrees clockwise; the value is those clockwise degrees, the
    `rotation` the frames product records. The others are stored upright without a tag.
    """
    return 90 if seeded_rng(seed, key, "orientation").random() < 0.5 else 0


def _cell_edges(length: int, cells: int) -> list[int]:
    return [round(length * i / cells) for i in range(cells + 1)]


def _counter_cells(index: int) -> list[bool]:
    """The strip's cells, True = white: start (black), the bits MSB first, parity, guard."""
    bits = [bool(index >> (COUNTER_BITS - 1 - b) & 1) for b in range(COUNTER_BITS)]
    return [False, *bits, sum(bits) % 2 == 1, True]


@functools.lru_cache(maxsize=4)
def _background(width: int, height: int) -> numpy.ndarray:
    # Filling a large array from a colour tuple is slow in numpy; copying a template is not.
    picture = numpy.empty((height, width, 3), numpy.uint8)
    picture[:] = BACKGROUND_COLOUR
    picture.flags.writeable = False
    return picture


@functools.cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def render_frame(
    frame: FrameValues, index: int, width: int = VIDEO_WIDTH, height: int = VIDEO_HEIGHT
) -> numpy.ndarray:
    """One upright picture of a sample video, as an RGB array (height, width, 3).

    On a dark background: the box's 12 edges (`EDGES`) in `BOX_COLOUR`, lines of
    `max(4, width / 64)` pixels between the positions `keypoints_2d * (width, height)`
    (continuous coordinates, origin at the top-left corner of the top-left pixel), exact to
    half a pixel; then, over everything, the frame counter, a strip
    of `COUNTER_CELLS` black and white cells across the top `COUNTER_HEIGHT` of the picture
    that `read_frame_counter` reads back, and the number in digits below it for people.

    Args:
        frame: The frame's values (only `keypoints_2d` is used).
        index: The frame number shown, 0 to 2**COUNTER_BITS - 1.
        width: Upright picture width in pixels.
        height: Upright picture height in pixels.

    Raises:
        ValueError: `index` does not fit the counter.
    """
    if not 0 <= index < 2**COUNTER_BITS:
        raise ValueError(f"frame index {index} does not fit {COUNTER_BITS} bits")
    picture = _background(width, height).copy()
    points = [(x * width, y * height) for x, y, _ in frame.keypoints_2d]
    half_width = max(4, round(width / 64)) / 2
    for a, b in EDGES:
        (xa, ya), (xb, yb) = points[a], points[b]
        # In pieces a few line widths long: the union of their round-capped strokes is the
        # whole stroke, and small pieces keep the pixels looked at near the line.
        pieces = max(1, math.ceil(math.hypot(xb - xa, yb - ya) / (8 * half_width)))
        for k in range(pieces):
            start = (xa + (xb - xa) * k / pieces, ya + (yb - ya) * k / pieces)
            end = (xa + (xb - xa) * (k + 1) / pieces, ya + (yb - ya) * (k + 1) / pieces)
            _draw_segment(picture, start, end, half_width, BOX_COLOUR)

    strip = round(height * COUNTER_HEIGHT)
    xs = _cell_edges(width, COUNTER_CELLS)
    for cell, white in enumerate(_counter_cells(index)):
        picture[:strip, xs[cell] : xs[cell + 1]] = 255 if white else 0
    # The number for people: black digits on a white label below the strip, at the left.
    text = str(index)
    font = _font(max(8, round(height / 20)))
    left, top, right, bottom = (round(v) for v in font.getbbox(text))
    margin = max(2, round(height / 100))
    label = Image.new("RGB", (right - left + 2 * margin, bottom - top + 2 * margin), "white")
    ImageDraw.Draw(label).text((margin - left, margin - top), text, fill="black", font=font)
    label_pixels = numpy.asarray(label)[: height - strip, :width]
    picture[strip : strip + label_pixels.shape[0], : label_pixels.shape[1]] = label_pixels
    return picture


def _draw_segment(
    picture: numpy.ndarray,
    start: tuple[float, float],
    end: tuple[float, float],
    half_width: float,
    colour: tuple[int, int, int],
) -> None:
    """Paint every pixel whose centre lies within `half_width` of the segment (round caps).

    Done by hand rather than with Pillow's wide lines, which land up to a pixel off: a test
    that looks for the box where the keypoints say should find it there to half a pixel.
    Points are continuous coordinates (pixel (i, j) covers [i, i+1) x [j, j+1)).
    """
    height, width = picture.shape[:2]
    (x0, y0), (x1, y1) = start, end
    left = max(0, math.floor(min(x0, x1) - half_width))
    right = min(width, math.ceil(max(x0, x1) + half_width) + 1)
    top = max(0, math.floor(min(y0, y1) - half_width))
    bottom = min(height, math.ceil(max(y0, y1) + half_width) + 1)
    if left >= right or top >= bottom:
        return
    # Pixel centres relative to the start, as a row and a column that broadcast.
    xs = numpy.arange(left, right, dtype=numpy.float64)[numpy.newaxis, :] + (0.5 - x0)
    ys = numpy.arange(top, bottom, dtype=numpy.float64)[:, numpy.newaxis] + (0.5 - y0)
    dx, dy = x1 - x0, y1 - y0
    length2 = dx * dx + dy * dy
    t = numpy.clip((xs * dx + ys * dy) / length2, 0.0, 1.0) if length2 > 0 else 0.0
    distance2 = (xs - t * dx) ** 2 + (ys - t * dy) ** 2
    picture[top:bottom, left:right][distance2 <= half_width * half_width] = colour


def read_frame_counter(rgb: numpy.ndarray) -> int:
    """The frame number that `render_frame` drew, read back from an upright RGB picture.

    Works at any size and after lossy coding (tested after JPEG at quality 90 and a resize to
    120x160): it averages the middle of each cell of the strip and compares it with the
    midpoint of the black start cell and the white guard cell.

    Args:
        rgb: Array (height, width, 3), upright, any integer or float dtype on a 0-255 scale.

    Returns:
        The frame number.

    Raises:
        ValueError: No counter strip (start and guard cells not black and white) or a parity
            mismatch: the picture is not an upright sample-video frame, or is too damaged.
    """
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"expected an RGB array (height, width, 3), got shape {rgb.shape}")
    height, width = rgb.shape[:2]
    luma = rgb[..., :3].astype(numpy.float64) @ numpy.array([0.299, 0.587, 0.114])
    strip = height * COUNTER_HEIGHT
    top, bottom = round(strip * 0.25), max(round(strip * 0.75), round(strip * 0.25) + 1)
    levels = []
    for cell in range(COUNTER_CELLS):
        left = round(width * (cell + 0.25) / COUNTER_CELLS)
        right = max(round(width * (cell + 0.75) / COUNTER_CELLS), left + 1)
        levels.append(float(luma[top:bottom, left:right].mean()))
    black, white = levels[0], levels[-1]
    if white - black < 96:
        raise ValueError(
            f"no frame counter: start cell {black:.0f}, guard cell {white:.0f} (want black, white)"
        )
    threshold = (black + white) / 2
    cells = [level > threshold for level in levels]
    bits = cells[1 : 1 + COUNTER_BITS]
    if sum(bits) % 2 != int(cells[1 + COUNTER_BITS]):
        raise ValueError(f"frame counter parity mismatch (cell levels {levels})")
    return sum(1 << (COUNTER_BITS - 1 - b) for b, bit in enumerate(bits) if bit)


def encode_video(
    pictures: Iterable[numpy.ndarray], *, width: int, height: int, rotation: int = 0
) -> bytes:
    """H.264 in QuickTime (.MOV) at 30 fps from upright RGB pictures, in memory.

    The bytes depend only on the pictures and the arguments (and the FFmpeg and x264 builds):
    x264 runs on one thread, and the muxer is bit-exact (no version string, no creation time).

    Args:
        pictures: Upright RGB arrays (height, width, 3), uint8.
        width: Upright width (even).
        height: Upright height (even).
        rotation: 0 to store the pictures as they are, without a tag; 90 to store them turned
            90 degrees counter-clockwise (landscape) with a display matrix that turns them back
            clockwise for display.

    Returns:
        The file's bytes.
    """
    if rotation not in (0, 90):
        raise ValueError(f"rotation must be 0 or 90, got {rotation}")
    stored_width, stored_height = (height, width) if rotation == 90 else (width, height)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mov", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("libx264", rate=int(FPS), options=dict(X264_OPTIONS))
        stream.width, stream.height, stream.pix_fmt = stored_width, stored_height, "yuv420p"
        if rotation == 90:
            # The display matrix holds counter-clockwise degrees: -90 shows the stored
            # landscape picture turned 90 degrees clockwise (checked against ffmpeg's CLI).
            stream.set_display_rotation(-90)
        for number, picture in enumerate(pictures):
            stored = numpy.ascontiguousarray(numpy.rot90(picture)) if rotation else picture
            frame = av.VideoFrame.from_ndarray(stored, format="rgb24")
            frame.pts = number
            frame.time_base = Fraction(1, int(FPS))
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def scramble_video(data: bytes, *, seed: int = 0) -> bytes:
    """A `.MOV` whose container is intact and whose coded frames are garbage.

    The `mdat` box's payload (the H.264 packets) is replaced by seeded random bytes of the same
    length; `moov` (tracks, sample tables) is untouched, so the file opens and demuxes, and
    decoding fails (PyAV raises InvalidDataError), like a video damaged in storage.
    """
    out = bytearray(data)
    rng = random.Random(f"objectron-wds-scramble:{seed}")
    position = 0
    while position + 8 <= len(out):
        size, kind = struct.unpack_from(">I4s", out, position)
        header = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", out, position + 8)
            header = 16
        elif size == 0:
            size = len(out) - position
        if kind == b"mdat":
            out[position + header : position + size] = rng.randbytes(size - header)
            return bytes(out)
        position += size
    raise ValueError("no mdat box: not a QuickTime file")


def build_video(
    key: str,
    *,
    seed: int = 0,
    video_bytes: int | None = None,
    frames: int = 12,
    video_size: str = DEFAULT_VIDEO_SIZE,
    video_frames: int | None = None,
    corrupt: bool = False,
) -> bytes:
    """The `video.MOV` of one sample video.

    By default a real H.264 video (`encode_video`) of `render_frame` pictures of the key's
    `sample_values`, stored as `stored_rotation` says.

    Args:
        key: The video, `CLASS/batch-I/J`.
        seed: The dataset seed.
        video_bytes: When given, stand-in bytes instead of a video: a QuickTime `ftyp` box,
            then random bytes, 80-120 % of this size (deterministically); for benchmarks that
            move large videos without decoding them.
        frames: Frames of the sample's geometry and annotation.
        video_size: Upright `WIDTHxHEIGHT`.
        video_frames: Frames in the video (default `frames`): fewer makes a video shorter than
            its annotation.
        corrupt: Scramble the coded frames (`scramble_video`).

    Returns:
        The bytes.
    """
    if video_bytes is not None:
        rng = seeded_rng(seed, key, "video")
        size = round(video_bytes * rng.uniform(0.8, 1.2))
        body = rng.randbytes(max(0, size - len(_MOV_HEADER)))
        return (_MOV_HEADER + body)[:size]
    count = frames if video_frames is None else video_frames
    if not 1 <= count <= 2**COUNTER_BITS:
        raise ValueError(f"a sample video has 1 to {2**COUNTER_BITS} frames, got {count}")
    width, height = parse_video_size(video_size)
    values = sample_values(key, seed=seed, frames=max(frames, count))
    pictures = (render_frame(values.frames[i], i, width, height) for i in range(count))
    data = encode_video(
        pictures, width=width, height=height, rotation=stored_rotation(key, seed=seed)
    )
    return scramble_video(data, seed=seed) if corrupt else data
