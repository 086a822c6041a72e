"""tasks/frames/video.py on real H.264 videos made here with PyAV + libx264.

The reference for "upright" is FFmpeg's command line (imageio-ffmpeg's binary, autorotate on
by default): our frames must equal what it outputs for tagged and untagged videos, within JPEG
noise. Every picture carries its frame number as five black/white blocks, so a frame's pixels
say which frame it is.
"""

from __future__ import annotations

import pickle
import subprocess
import threading
from pathlib import Path

import av
import imageio_ffmpeg
import numpy as np
import pytest
import simplejpeg

from tasks.frames.video import (
    DecodedFrame,
    VideoTooShort,
    VideoUnreadable,
    decode_frames,
    fit_inside,
)

UPRIGHT_W, UPRIGHT_H = 192, 256
BITS = 5  # frame counter: up to 32 frames


def upright_picture(index: int) -> np.ndarray:
    """An asymmetric upright RGB picture (every rotation and mirror of it differs) with the
    frame number in binary along the top."""
    ys = np.arange(UPRIGHT_H)[:, None]
    xs = np.arange(UPRIGHT_W)[None, :]
    img = np.zeros((UPRIGHT_H, UPRIGHT_W, 3), np.uint8)
    img[..., 2] = (xs * 255 // UPRIGHT_W).astype(np.uint8)  # blue grows to the right
    img[..., 1] = (ys * 160 // UPRIGHT_H).astype(np.uint8)  # green grows downwards
    img[48:112, 16:80] = (230, 30, 30)  # a red block left of centre, upper half
    img[176:240, 120:176] = (240, 240, 60)  # a yellow block lower right
    for bit in range(BITS):
        on = (index >> bit) & 1
        img[8:32, 8 + 36 * bit : 32 + 36 * bit] = 255 if on else 0
    return img


def read_counter(rgb: np.ndarray) -> int:
    """The frame number written by upright_picture, read back from an upright image of any
    size (the blocks are found at their relative positions)."""
    height, width = rgb.shape[:2]
    sy, sx = height / UPRIGHT_H, width / UPRIGHT_W
    value = 0
    for bit in range(BITS):
        y, x = int(20 * sy), int((20 + 36 * bit) * sx)
        if rgb[y, x].mean() > 128:
            value |= 1 << bit
    return value


def write_video(path: Path, frames: int, clockwise: int | None) -> None:
    """Store the upright pictures turned back by `clockwise` degrees, with a display matrix
    that turns them upright again (None: no matrix, stored upright)."""
    turn = clockwise or 0
    first = np.rot90(upright_picture(0), k=turn // 90)  # np.rot90: counter-clockwise
    with av.open(str(path), "w", format="mov") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.height, stream.width = first.shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "12", "preset": "veryfast"}
        if clockwise is not None:
            stream.set_display_rotation(-clockwise)  # PyAV takes counter-clockwise degrees
        for index in range(frames):
            stored = np.ascontiguousarray(np.rot90(upright_picture(index), k=turn // 90))
            frame = av.VideoFrame.from_ndarray(stored, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    made = {}
    for name, clockwise in [("untagged", None), ("cw90", 90), ("cw180", 180), ("cw270", 270)]:
        made[name] = root / f"{name}.mov"
        write_video(made[name], 12, clockwise)
    return made


def ffmpeg_frames(path: Path, size: tuple[int, int], scale: bool = False) -> np.ndarray:
    """Every frame as FFmpeg's CLI outputs it (autorotate), RGB, shape (n, h, w, 3)."""
    args = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path)]
    if scale:
        args += ["-vf", f"scale={size[0]}:{size[1]}", "-sws_flags", "bilinear"]
    args += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    raw = subprocess.run(args, check=True, capture_output=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, size[1], size[0], 3)


def rgb(frame: DecodedFrame) -> np.ndarray:
    return np.asarray(simplejpeg.decode_jpeg(frame.jpeg, colorspace="RGB"), dtype=np.int16)


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# --- sizes -------------------------------------------------------------------------------------


def test_fit_inside() -> None:
    assert fit_inside(1440, 1920, (480, 640)) == (480, 640)  # Objectron's records
    assert fit_inside(1920, 1440, (480, 640)) == (480, 360)  # landscape into a portrait box
    assert fit_inside(192, 256, (480, 640)) == (480, 640)  # up as well as down
    assert fit_inside(100, 33, (50, 50)) == (50, 17)  # 16.5 rounds up
    assert fit_inside(33, 100, (50, 50)) == (17, 50)
    assert fit_inside(1000, 1, (10, 10)) == (10, 1)  # never 0
    assert fit_inside(1440, 1920, None) == (1440, 1920)
    with pytest.raises(ValueError):
        fit_inside(10, 10, (0, 10))


# --- upright, against FFmpeg's CLI ------------------------------------------------------------


@pytest.mark.parametrize("name,rotation", [("untagged", 0), ("cw90", 90), ("cw180", 180),
                                           ("cw270", 270)])  # fmt: skip
def test_full_size_frames_equal_ffmpeg_cli(
    videos: dict[str, Path], name: str, rotation: int
) -> None:
    frames = list(
        decode_frames(videos[name], range(12), needed_frames=12, image_size=None, jpeg_quality=95)
    )
    reference = ffmpeg_frames(videos[name], (UPRIGHT_W, UPRIGHT_H))
    assert len(reference) == 12
    assert [f.frame_id for f in frames] == list(range(12))
    for frame in frames:
        assert (frame.width, frame.height) == (UPRIGHT_W, UPRIGHT_H)
        assert (frame.source_width, frame.source_height) == (UPRIGHT_W, UPRIGHT_H)
        assert frame.rotation == rotation
        ours = rgb(frame)
        assert mean_abs(ours, reference[frame.frame_id]) < 3.0, frame.frame_id
        # The comparison can tell orientations apart: the picture turned half-way is far off.
        assert mean_abs(ours, reference[frame.frame_id][::-1, ::-1]) > 30
        assert read_counter(ours) == frame.frame_id


@pytest.mark.parametrize("name", ["untagged", "cw90", "cw270"])
def test_resized_frames_equal_ffmpeg_cli_scaled(videos: dict[str, Path], name: str) -> None:
    box = (96, 160)  # fits to 96x128 (aspect kept), smaller than the box vertically
    frames = list(
        decode_frames(videos[name], [0, 5], needed_frames=12, image_size=box, jpeg_quality=95)
    )
    reference = ffmpeg_frames(videos[name], (96, 128), scale=True)
    for frame in frames:
        assert (frame.width, frame.height) == (96, 128)
        assert (frame.source_width, frame.source_height) == (UPRIGHT_W, UPRIGHT_H)
        # ~3 measured (scaling and JPEG at this small size); the picture turned over: ~85.
        assert mean_abs(rgb(frame), reference[frame.frame_id]) < 4.0
        assert mean_abs(rgb(frame), reference[frame.frame_id][::-1, ::-1]) > 30
        assert read_counter(rgb(frame)) == frame.frame_id


def test_upscaled_landscape_box(videos: dict[str, Path]) -> None:
    (frame,) = decode_frames(
        videos["cw90"], [3], needed_frames=12, image_size=(480, 480), jpeg_quality=90
    )
    assert (frame.width, frame.height) == (360, 480)
    assert simplejpeg.decode_jpeg_header(frame.jpeg)[:2] == (480, 360)  # (height, width)
    assert read_counter(rgb(frame)) == 3


# --- which frames ----------------------------------------------------------------------------


def test_yields_exactly_the_wanted_frames_in_order(videos: dict[str, Path]) -> None:
    wanted = [0, 1, 4, 7, 11]
    frames = list(
        decode_frames(
            videos["cw90"], wanted, needed_frames=12, image_size=(48, 64), jpeg_quality=90
        )
    )
    assert [f.frame_id for f in frames] == wanted
    assert [read_counter(rgb(f)) for f in frames] == wanted
    # FFmpeg's select=eq(n,7), the notebook's way of grabbing frame 7, is our frame 7.
    raw = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(videos["cw90"]),
         "-vf", r"select=eq(n\,7)", "-fps_mode", "passthrough",
         "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    assert read_counter(np.frombuffer(raw, np.uint8).reshape(UPRIGHT_H, UPRIGHT_W, 3)) == 7


def test_nothing_wanted_still_checks_the_length(videos: dict[str, Path]) -> None:
    assert list(decode_frames(videos["untagged"], [], needed_frames=12, image_size=None,
                              jpeg_quality=90)) == []  # fmt: skip
    with pytest.raises(VideoTooShort):
        list(decode_frames(videos["untagged"], [], needed_frames=13, image_size=None,
                           jpeg_quality=90))  # fmt: skip


def test_too_short_yields_what_was_decoded_then_raises(videos: dict[str, Path]) -> None:
    got: list[int] = []
    with pytest.raises(VideoTooShort) as info:
        for frame in decode_frames(
            videos["cw90"], [2, 11], needed_frames=20, image_size=(48, 64), jpeg_quality=90
        ):
            got.append(frame.frame_id)
    assert got == [2, 11]
    assert (info.value.decoded, info.value.needed) == (12, 20)
    assert str(info.value) == "the video has 12 frames, 20 needed"
    assert isinstance(info.value, VideoUnreadable)
    again = pickle.loads(pickle.dumps(info.value))
    assert (again.decoded, again.needed) == (12, 20)
    # A wanted frame past the end counts as needed too.
    with pytest.raises(VideoTooShort) as info:
        list(decode_frames(videos["cw90"], [15], needed_frames=5, image_size=None, jpeg_quality=90))
    assert (info.value.decoded, info.value.needed) == (12, 16)


def test_stops_decoding_after_the_needed_frames(tmp_path: Path) -> None:
    """A video whose second half is garbage decodes fine as long as only its first frames are
    needed: proof that decoding stopped early (the full video raises)."""
    path = tmp_path / "late-damage.mov"
    write_video(path, 30, 90)
    data = bytearray(path.read_bytes())
    start = data.find(b"mdat")
    rng = np.random.default_rng(1)
    lo, hi = start + (len(data) - start) * 2 // 3, len(data) - 2000  # moov is at the end
    data[lo:hi] = rng.integers(0, 256, hi - lo, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    frames = list(
        decode_frames(path, [0, 3], needed_frames=5, image_size=(48, 64), jpeg_quality=90)
    )
    assert [read_counter(rgb(f)) for f in frames] == [0, 3]
    with pytest.raises(VideoUnreadable):
        list(decode_frames(path, [0], needed_frames=30, image_size=(48, 64), jpeg_quality=90))


def test_closing_early_stops_the_encoder_threads(videos: dict[str, Path]) -> None:
    before = threading.active_count()
    frames = decode_frames(videos["cw90"], range(12), needed_frames=12, image_size=None,
                           jpeg_quality=90, threads=2)  # fmt: skip
    assert next(frames).frame_id == 0
    frames.close()  # type: ignore[attr-defined]
    assert threading.active_count() == before


# --- bad videos ------------------------------------------------------------------------------


def unreadable_reason(path: Path) -> str:
    with pytest.raises(VideoUnreadable) as info:
        list(decode_frames(path, [0], needed_frames=1, image_size=None, jpeg_quality=90))
    assert not isinstance(info.value, VideoTooShort)
    reason = str(info.value)
    assert reason and "\n" not in reason and "Traceback" not in reason
    return reason


def test_not_a_video(tmp_path: Path) -> None:
    (tmp_path / "junk.mov").write_bytes(np.random.default_rng(2).bytes(5000))
    (tmp_path / "empty.mov").write_bytes(b"")
    assert "not a video" in unreadable_reason(tmp_path / "junk.mov")
    assert "not a video" in unreadable_reason(tmp_path / "empty.mov")


def test_corrupt_stream(tmp_path: Path, videos: dict[str, Path]) -> None:
    data = bytearray(videos["cw90"].read_bytes())
    start = data.find(b"mdat") + 8
    data[start : start + 4000] = np.random.default_rng(3).bytes(4000)
    (tmp_path / "corrupt.mov").write_bytes(bytes(data))
    assert "decoding failed" in unreadable_reason(tmp_path / "corrupt.mov")


def test_no_video_stream(tmp_path: Path) -> None:
    path = tmp_path / "audio.mov"
    with av.open(str(path), "w", format="mov") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 800), np.int16), format="s16", layout="mono"
        )
        frame.rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    assert unreadable_reason(path) == "no video stream"


def test_no_frames(tmp_path: Path) -> None:
    path = tmp_path / "none.mov"
    with av.open(str(path), "w", format="mov") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height = 64, 48
        stream.pix_fmt = "yuv420p"
        container.start_encoding()  # a header and an empty track, no frames
    assert unreadable_reason(path)  # FFmpeg drops the empty track: "no video stream"


def test_bad_arguments(videos: dict[str, Path], tmp_path: Path) -> None:
    path = videos["untagged"]
    with pytest.raises(ValueError, match="sorted"):
        decode_frames(path, [3, 1], needed_frames=1, image_size=None, jpeg_quality=90)
    with pytest.raises(ValueError, match="sorted"):
        decode_frames(path, [1, 1], needed_frames=1, image_size=None, jpeg_quality=90)
    with pytest.raises(ValueError, match="jpeg_quality"):
        decode_frames(path, [1], needed_frames=1, image_size=None, jpeg_quality=0)
    with pytest.raises(FileNotFoundError):
        decode_frames(tmp_path / "missing.mov", [1], needed_frames=1, image_size=None,
                      jpeg_quality=90)  # fmt: skip
