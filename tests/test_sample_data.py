"""tasks.objectron.sample_data: values, layout, index fidelity, create-only reruns, GCS emulator.

Expectations about the index files are computed here from the vendored files on disk, not
through the module's own helpers, so a parsing bug in the module cannot hide itself.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import imageio_ffmpeg
import numpy
import pytest
import simplejpeg
from PIL import Image

import tasks.objectron
from tasks.objectron import box
from tasks.objectron import proto as pb
from tasks.objectron import sample_data as sd
from tasks.storage import LocalStorage, Storage, open_storage

INDEX_DIR = Path(tasks.objectron.__file__).parent / "index"
# Objectron's corners 1-8 (dataset/box.py), written out here rather than taken from the module.
UNIT_BOX_CORNERS = [
    [0.0, 0.0, 0.0],
    *([x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)),
]
EDGES_BY_HAND = [(1, 5), (2, 6), (3, 7), (4, 8), (1, 3), (5, 7), (2, 4), (6, 8)]
EDGES_BY_HAND += [(1, 2), (3, 4), (5, 6), (7, 8)]
CLASSES = ["bike", "book", "bottle", "camera", "cereal_box", "chair", "cup", "laptop", "shoe"]


def read_index(name: str) -> set[str]:
    return {line for line in (INDEX_DIR / name).read_text().split("\n") if line}


def indexed(*suffixes: str) -> set[str]:
    return {key for c in CLASSES for s in suffixes for key in read_index(f"{c}_annotations{s}")}


ALL_INDEXED = indexed("", "_train", "_test")
SPLIT_INDEXED = indexed("_train", "_test")
TEST_INDEXED = indexed("_test")


def names_and_sizes(storage: Storage) -> dict[str, int]:
    return {info.name: info.size for info in storage.list()}


def expected_names(result: sd.SampleDataset) -> set[str]:
    names = {f"v1/index/{c}_annotations{s}" for c in CLASSES for s in ("", "_train", "_test")}
    for key in result.annotated + result.unannotated + result.placeholders:
        names |= {f"videos/{key}/{f}" for f in ("video.MOV", "geometry.pbdata", "id.txt")}
    names |= {f"annotations/{key}.pbdata" for key in result.annotated}
    return names


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalStorage, sd.SampleDataset]:
    storage = LocalStorage(tmp_path_factory.mktemp("bucket"))
    return storage, sd.write_sample_dataset(storage)


# --- index files ---------------------------------------------------------------------------


def test_index_files_are_the_27_vendored_files_byte_for_byte() -> None:
    files = sd.index_files()
    assert len(files) == 27
    for name, data in files.items():
        assert data == (INDEX_DIR / name).read_bytes(), name
    assert not files["book_annotations"].endswith(b"\n")
    assert files["cup_annotations_test"].endswith(b"\n")


def test_parse_index_handles_missing_final_newline() -> None:
    assert sd.parse_index(b"a/batch-1/2\nb/batch-3/4") == ["a/batch-1/2", "b/batch-3/4"]
    assert sd.parse_index(b"a/batch-1/2\n\n") == ["a/batch-1/2"]
    book = sd.parse_index(sd.index_files()["book_annotations"])
    assert book == (INDEX_DIR / "book_annotations").read_text().split("\n")
    assert len(book) == 2024


def test_all_index_keys() -> None:
    keys = sd.all_index_keys()
    assert keys == ALL_INDEXED
    assert "book/batch-3/18" in keys and "book/batch-3/18" not in SPLIT_INDEXED


# --- values and files ----------------------------------------------------------------------


def matmul4(a: list[float], b: list[float]) -> list[float]:
    return [sum(a[4 * r + k] * b[4 * k + c] for k in range(4)) for r in range(4) for c in range(4)]


def test_sample_values_are_deterministic_and_depend_on_seed_and_key() -> None:
    a = sd.sample_values("cup/batch-1/2", seed=3, frames=4)
    assert a == sd.sample_values("cup/batch-1/2", seed=3, frames=4)
    assert a != sd.sample_values("cup/batch-1/2", seed=4, frames=4)
    assert a.box != sd.sample_values("cup/batch-1/3", seed=3, frames=4).box
    assert a.category == "cup" and len(a.frames) == 4
    assert sd.sample_frame_values("cup/batch-1/2", seed=3, frames=4) == a.frames


def test_sample_values_are_geometrically_consistent() -> None:
    values = sd.sample_values("shoe/batch-7/1", seed=0, frames=6)
    identity = [1.0 if r == c else 0.0 for r in range(4) for c in range(4)]
    for frame in values.frames:
        product = matmul4(frame.view_matrix, frame.transform)
        assert product == pytest.approx(identity, abs=1e-5)
        fx, _, cx, _, fy, cy, *_ = frame.intrinsics
        # The landscape sensor's principal point, not the portrait picture's.
        assert cx == pytest.approx(960, abs=5) and cy == pytest.approx(720, abs=5)
        for (x, y, z), (u, v, depth) in zip(frame.keypoints_3d, frame.keypoints_2d, strict=True):
            assert z < 0 and depth == -z
            # Sensor pixels by the pinhole model, then the upright picture (sensor turned 90
            # degrees clockwise): x_up = H_s - v_s, y_up = u_s.
            u_sensor = cx + fx * x / depth
            v_sensor = cy - fy * y / depth
            assert u == pytest.approx((1440 - v_sensor) / 1440, abs=1e-6)
            assert v == pytest.approx(u_sensor / 1920, abs=1e-6)
    # 30 fps timestamps
    steps = [b.timestamp - a.timestamp for a, b in itertools.pairwise(values.frames)]
    assert steps == pytest.approx([1 / 30] * 5)


def test_keypoints_3d_are_the_box_in_camera_coordinates() -> None:
    # keypoints_3d = R_cam (scale * unit) + t_cam, R_cam = view[:3,:3] R_world,
    # t_cam = view[:3,:3] t_world + view[:3,3], from the float32 numbers as written.
    values = sd.sample_values("cup/batch-2/9", seed=1, frames=5)
    rotation = numpy.array(values.box.rotation, dtype=numpy.float64).reshape(3, 3)
    translation = numpy.array(values.box.translation, dtype=numpy.float64)
    scale = numpy.array(values.box.scale, dtype=numpy.float64)
    unit = numpy.array(UNIT_BOX_CORNERS, dtype=numpy.float64)
    for frame in values.frames:
        view = numpy.array(frame.view_matrix, dtype=numpy.float64).reshape(4, 4)
        r_cam = view[:3, :3] @ rotation
        t_cam = view[:3, :3] @ translation + view[:3, 3]
        expected = (r_cam @ (unit * scale).T).T + t_cam
        assert numpy.abs(numpy.array(frame.keypoints_3d) - expected).max() < 1e-6


def test_world_up_is_up_in_the_upright_picture() -> None:
    # The box is turned about the vertical axis only, so its local +y is world up: corner 3
    # (-,+,-) lies straight above corner 1 (-,-,-), and must be drawn above it (smaller y).
    for j in range(20):
        for frame in sd.sample_values(f"bike/batch-1/{j}", frames=3).frames:
            top, bottom = frame.keypoints_2d[3], frame.keypoints_2d[1]
            assert top[1] < bottom[1]
            assert abs(top[0] - bottom[0]) < abs(top[1] - bottom[1])


def test_keypoints_stay_inside_the_picture_clear_of_the_counter() -> None:
    x_min, y_min, x_max, y_max = sd.KEYPOINT_AREA
    assert y_min > sd.COUNTER_HEIGHT * 2  # the strip and the digits below it
    # 60 videos, 300 frames each (the orbit turns 3-9 radians: every side of the box).
    for j in range(60):
        key = f"{CLASSES[j % 9]}/batch-{j % 5}/{j}"
        for frame in sd.sample_values(key, seed=j % 3, frames=300).frames[::5]:
            for x, y, _ in frame.keypoints_2d:
                assert x_min <= x <= x_max and y_min <= y <= y_max, (key, x, y)


def test_sample_values_floats_are_float32() -> None:
    values = sd.sample_values("bike/batch-0/2", seed=0, frames=2)
    floats = values.box.rotation + values.frames[1].transform + values.frames[1].keypoints_2d[3]
    for value in floats:
        assert pb.Point3D(x=value).x == value  # storing as float32 does not change it
    assert any(value != round(value, 3) for value in floats)  # not trivially short numbers


def test_stand_in_video_size_and_header() -> None:
    sizes = [len(sd.build_video(f"cup/batch-1/{j}", seed=0, video_bytes=10_000)) for j in range(40)]
    assert all(8_000 <= size <= 12_000 for size in sizes)
    assert len(set(sizes)) > 30  # sizes vary from video to video
    video = sd.build_video("cup/batch-1/1", seed=0, video_bytes=10_000)
    assert video[4:8] == b"ftyp"
    assert video == sd.build_video("cup/batch-1/1", seed=0, video_bytes=10_000)
    assert video != sd.build_video("cup/batch-1/1", seed=1, video_bytes=10_000)
    assert sd.build_video("cup/batch-1/1", video_bytes=0) == b""


def test_build_geometry_has_one_normal_camera_record_per_frame() -> None:
    values = sd.sample_values("laptop/batch-2/3", seed=0, frames=5)
    records = pb.split_geometry_records(sd.build_geometry(values))
    assert len(records) == 5
    for record, frame in zip(records, values.frames, strict=True):
        message = pb.ARFrame.FromString(record)
        assert message.timestamp == frame.timestamp
        camera = message.camera
        assert camera.tracking_state == pb.ARCamera.NORMAL
        assert (camera.image_resolution_width, camera.image_resolution_height) == (1920, 1440)
        assert list(camera.transform) == frame.transform
        assert [len(camera.intrinsics), len(camera.projection_matrix)] == [9, 16]
        assert list(camera.view_matrix) == frame.view_matrix
        euler = camera.euler_angles
        assert [euler.roll, euler.pitch, euler.yaw] == frame.euler_angles


def test_build_annotation_is_one_bounding_box_sequence() -> None:
    values = sd.sample_values("chair/batch-4/5", seed=0, frames=3)
    sequence = pb.Sequence.FromString(sd.build_annotation(values))
    (obj,) = sequence.objects
    assert obj.category == "chair" and obj.type == pb.Object.BOUNDING_BOX
    assert [len(obj.rotation), len(obj.translation), len(obj.scale), len(obj.keypoints)] == [
        9,
        3,
        3,
        9,
    ]
    assert [f.frame_id for f in sequence.frame_annotations] == [0, 1, 2]
    for frame in sequence.frame_annotations:
        (annotation,) = frame.annotations
        assert len(annotation.keypoints) == 9
        assert all(0 <= k.point_2d.x <= 1 and 0 <= k.point_2d.y <= 1 for k in annotation.keypoints)
        assert frame.camera.tracking_state == pb.ARCamera.NORMAL


# --- videos --------------------------------------------------------------------------------


def keys_stored(rotation: int, count: int = 1) -> list[str]:
    """Keys whose sample video is stored with `rotation` (seed 0)."""
    keys = (f"cup/batch-1/{j}" for j in itertools.count())
    return list(itertools.islice((k for k in keys if sd.stored_rotation(k) == rotation), count))


def decode_upright(data: bytes) -> list[tuple[int, numpy.ndarray]]:
    """(PyAV's rotation, the upright RGB picture) of every frame, the tag applied by hand:
    PyAV reports the display matrix's counter-clockwise degrees and does not apply them."""
    frames = []
    with av.open(io.BytesIO(data)) as container:
        for frame in container.decode(video=0):
            picture = frame.to_ndarray(format="rgb24")
            frames.append((frame.rotation, numpy.rot90(picture, k=frame.rotation // 90)))
    return frames


def ffmpeg_frames(data: bytes, width: int, height: int, tmp_path: Path) -> numpy.ndarray:
    """The frames as FFmpeg's command line outputs them (it applies the tag: autorotate)."""
    path = tmp_path / "video.MOV"
    path.write_bytes(data)
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path)]
    command += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    raw = subprocess.run(command, capture_output=True, check=True).stdout
    assert len(raw) % (width * height * 3) == 0, "ffmpeg's frames are not the upright size"
    return numpy.frombuffer(raw, numpy.uint8).reshape(-1, height, width, 3)


def is_box_colour(pixel: numpy.ndarray) -> bool:
    """Bright yellow, give or take what 4:2:0 chroma and JPEG leave of it."""
    r, g, b = (int(v) for v in pixel)
    return r > 170 and g > 170 and b < min(r, g) - 80


def box_edge_points(frame: sd.FrameValues, width: int, height: int) -> list[tuple[int, int]]:
    """Pixel (column, row) of the middle of each of the 12 edges, from the keypoints."""
    points = []
    for a, b in EDGES_BY_HAND:
        (xa, ya, _), (xb, yb, _) = frame.keypoints_2d[a], frame.keypoints_2d[b]
        points.append((int((xa + xb) / 2 * width), int((ya + yb) / 2 * height)))
    return points


def test_box_module_has_objectrons_edges_and_corners() -> None:
    assert set(box.EDGES) == set(EDGES_BY_HAND) and len(box.EDGES) == 12
    assert [list(k) for k in box.UNIT_BOX] == UNIT_BOX_CORNERS
    assert sd.UNIT_BOX is box.UNIT_BOX and sd.EDGES is box.EDGES  # re-exported
    for a, b in box.EDGES:  # each edge joins corners that differ along one axis
        assert sum(p != q for p, q in zip(box.UNIT_BOX[a], box.UNIT_BOX[b], strict=True)) == 1


@pytest.mark.parametrize("rotation", [0, 90])
def test_video_frames_show_counter_and_box_where_keypoints_say(rotation: int) -> None:
    (key,) = keys_stored(rotation)
    data = sd.build_video(key, frames=12)
    assert data[4:8] == b"ftyp"
    values = sd.sample_values(key, frames=12)
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.average_rate == 30
        stored = (stream.codec_context.width, stream.codec_context.height)
    assert stored == ((256, 192) if rotation == 90 else (192, 256))
    frames = decode_upright(data)
    assert len(frames) == 12
    for index, (tag, picture) in enumerate(frames):
        assert tag == (-90 if rotation == 90 else 0)
        assert picture.shape == (256, 192, 3)
        assert sd.read_frame_counter(picture) == index
        frame = values.frames[index]
        for column, row in box_edge_points(frame, 192, 256):
            assert is_box_colour(picture[row, column]), (index, column, row, picture[row, column])
        # and not everywhere: the bottom corners are background
        assert not is_box_colour(picture[250, 5]) and not is_box_colour(picture[250, 186])


@pytest.mark.parametrize("rotation", [0, 90])
def test_ffmpeg_command_line_shows_the_upright_picture(rotation: int, tmp_path: Path) -> None:
    (key,) = keys_stored(rotation)
    data = sd.build_video(key, frames=6)
    frames = ffmpeg_frames(data, 192, 256, tmp_path)
    assert [sd.read_frame_counter(picture) for picture in frames] == list(range(6))
    values = sd.sample_values(key, frames=6)
    for index, picture in enumerate(frames):
        drawn = sd.render_frame(values.frames[index], index).astype(int)
        assert numpy.abs(picture.astype(int) - drawn).mean() < 4  # H.264 at crf 18
        # PyAV plus the tag by hand gives the same picture as FFmpeg's autorotate
        assert numpy.array_equal(decode_upright(data)[index][1], picture)


def test_frame_counter_reads_every_index_after_resize_and_jpeg() -> None:
    frame = sd.sample_values("cup/batch-1/1", frames=1).frames[0]
    for index in range(2**sd.COUNTER_BITS):
        picture = Image.fromarray(sd.render_frame(frame, index)).resize((120, 160), Image.BILINEAR)
        jpeg = simplejpeg.encode_jpeg(numpy.asarray(picture), quality=90, colorspace="RGB")
        assert sd.read_frame_counter(simplejpeg.decode_jpeg(jpeg)) == index
    # a full-size picture, resized down, and the other way round: JPEG first, then resize
    for index in (0, 1, 512, 1023, 341, 682):
        big = sd.render_frame(frame, index, 1440, 1920)
        jpeg = simplejpeg.encode_jpeg(big, quality=90, colorspace="RGB")
        small = Image.fromarray(simplejpeg.decode_jpeg(jpeg)).resize((120, 160), Image.BICUBIC)
        assert sd.read_frame_counter(numpy.asarray(small)) == index
        assert sd.read_frame_counter(big.astype(numpy.float32)) == index


def test_frame_counter_refuses_pictures_without_one() -> None:
    frame = sd.sample_values("cup/batch-1/1", frames=1).frames[0]
    picture = sd.render_frame(frame, 300)
    with pytest.raises(ValueError, match="no frame counter"):
        sd.read_frame_counter(numpy.full((256, 192, 3), 128, numpy.uint8))
    with pytest.raises(ValueError, match="no frame counter"):
        sd.read_frame_counter(numpy.rot90(picture))  # stored landscape: not upright
    damaged = picture.copy()
    damaged[:16, 15 * 3 : 15 * 4] = 255 - damaged[:16, 15 * 3 : 15 * 4]  # one bit cell flipped
    with pytest.raises(ValueError, match="parity"):
        sd.read_frame_counter(damaged)
    with pytest.raises(ValueError, match="does not fit"):
        sd.render_frame(frame, 1024)


def test_videos_are_byte_identical_across_processes() -> None:
    keys = keys_stored(0) + keys_stored(90)
    script = (
        "import hashlib, sys\n"
        "from tasks.objectron.sample_data import build_video\n"
        "for key in sys.argv[1:]:\n"
        "    print(hashlib.sha256(build_video(key, frames=20)).hexdigest())\n"
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", script, *keys], capture_output=True, text=True, check=True
        ).stdout.split()
        for _ in range(2)
    ]
    here = [hashlib.sha256(sd.build_video(key, frames=20)).hexdigest() for key in keys]
    assert runs[0] == runs[1] == here
    assert len(set(here)) == 2
    assert sd.build_video(keys[0], frames=20, seed=1) != sd.build_video(keys[0], frames=20)


def test_videos_are_the_same_bytes_whatever_was_encoded_before() -> None:
    # With x264's AVX-512 routines, 1 to 3 of these 40 videos came out different when made
    # again in threads of the same process: the bytes depended on what the heap held before
    # (see X264_OPTIONS).
    keys = [f"cup/batch-{b}/{j}" for b in range(1, 5) for j in range(10)]
    first = [sd.build_video(key) for key in keys]
    for _ in range(3):
        with ThreadPoolExecutor(max_workers=sd.WRITE_THREADS) as pool:
            again = list(pool.map(sd.build_video, keys))
        assert [key for key, a, b in zip(keys, first, again, strict=True) if a != b] == []


def _busy_cores(count: int) -> list[subprocess.Popen[bytes]]:
    """Processes that keep `count` cores busy until killed (the load CI once failed under)."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def test_sample_data_is_the_same_bytes_from_two_processes_at_once_on_busy_cores(
    tmp_path: Path,
) -> None:
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from tasks.objectron.sample_data import write_sample_dataset\n"
        "from tasks.storage import LocalStorage\n"
        "write_sample_dataset(LocalStorage(Path(sys.argv[1])), videos=int(sys.argv[2]))\n"
    )
    busy = _busy_cores(2)
    try:
        writers = [
            subprocess.Popen([sys.executable, "-c", script, str(tmp_path / name), "40"])
            for name in "ab"
        ]
        assert [writer.wait(timeout=300) for writer in writers] == [0, 0]
    finally:
        for process in busy:
            process.kill()
            process.wait()
    a, b = LocalStorage(tmp_path / "a"), LocalStorage(tmp_path / "b")
    names = sorted(info.name for info in a.list())
    assert names == sorted(info.name for info in b.list())
    assert sum(name.endswith("video.MOV") for name in names) > 40
    assert [name for name in names if a.read_bytes(name) != b.read_bytes(name)] == []


def test_video_size_and_frame_count_options() -> None:
    (key,) = keys_stored(90)
    frames = decode_upright(sd.build_video(key, frames=3, video_size="480x640"))
    assert [picture.shape for _, picture in frames] == [(640, 480, 3)] * 3
    assert [sd.read_frame_counter(picture) for _, picture in frames] == [0, 1, 2]
    # the most frames the counter can number, on small pictures to keep the test quick
    frames = decode_upright(sd.build_video(key, frames=1024, video_size="96x128"))
    assert [sd.read_frame_counter(picture) for _, picture in frames] == list(range(1024))
    for bad in ("640", "0x0", "191x256", "axb", "8192x8192"):
        with pytest.raises(ValueError, match="video_size"):
            sd.parse_video_size(bad)
    assert sd.parse_video_size("1440x1920") == (1440, 1920)
    with pytest.raises(ValueError, match="1 to 1024 frames"):
        sd.build_video(key, frames=1025)


def test_scrambled_video_opens_but_does_not_decode() -> None:
    (key,) = keys_stored(0)
    good = sd.build_video(key, frames=12)
    bad = sd.build_video(key, frames=12, corrupt=True)
    assert len(bad) == len(good) and bad[:32] == good[:32] and bad != good
    assert_undecodable(bad)
    with pytest.raises(ValueError, match="no mdat"):
        sd.scramble_video(b"\x00\x00\x00\x08free")


def assert_undecodable(data: bytes) -> None:
    """PyAV either raises or gives no frame at all (what the frames product must report)."""
    decoded = 0
    try:
        with av.open(io.BytesIO(data)) as container:
            assert container.streams.video  # the container itself is fine
            decoded = sum(1 for _ in container.decode(video=0))
    except av.FFmpegError:
        return
    assert decoded == 0


# --- a dataset in a local folder -----------------------------------------------------------


def test_layout_matches_the_real_bucket(written: tuple[LocalStorage, sd.SampleDataset]) -> None:
    storage, result = written
    listing = names_and_sizes(storage)
    assert set(listing) == expected_names(result)
    assert (len(result.annotated), len(result.unannotated), len(result.placeholders)) == (24, 3, 2)
    assert result.objects == len(listing) == 27 + 24 * 4 + 3 * 3 + 2 * 3
    assert result.objects_written == result.objects and result.objects_existing == 0
    assert result.total_bytes == sum(listing.values())
    for key in result.annotated + result.unannotated:
        assert listing[f"videos/{key}/video.MOV"] > 1000  # real H.264: a few kB at 192x256
        assert listing[f"videos/{key}/geometry.pbdata"] > 0
        assert 0 < listing[f"videos/{key}/id.txt"] < 100


def test_placeholders_are_empty(written: tuple[LocalStorage, sd.SampleDataset]) -> None:
    storage, result = written
    for key in result.placeholders:
        for filename in ("video.MOV", "geometry.pbdata", "id.txt"):
            assert storage.read_bytes(f"videos/{key}/{filename}") == b""
        assert not storage.exists(f"annotations/{key}.pbdata")


def test_names_come_from_the_index_files(written: tuple[LocalStorage, sd.SampleDataset]) -> None:
    _, result = written
    assert set(result.annotated) <= ALL_INDEXED
    assert {key.split("/")[0] for key in result.annotated} == set(CLASSES)
    assert set(result.annotated) & TEST_INDEXED  # both splits are represented
    assert set(result.annotated) & (SPLIT_INDEXED - TEST_INDEXED)
    assert result.no_split == ["book/batch-3/18"]
    assert not (set(result.unannotated) | set(result.placeholders)) & ALL_INDEXED
    assert not set(result.unannotated) & set(result.placeholders)
    assert len(set(result.annotated)) == 24


def test_index_files_are_copied_verbatim(written: tuple[LocalStorage, sd.SampleDataset]) -> None:
    storage, _ = written
    for path in INDEX_DIR.glob("*_annotations*"):
        assert storage.read_bytes(f"v1/index/{path.name}") == path.read_bytes()


def test_rerun_with_same_seed_is_a_no_op(written: tuple[LocalStorage, sd.SampleDataset]) -> None:
    storage, first = written
    before = {info.name: (info.size, info.generation) for info in storage.list()}
    again = sd.write_sample_dataset(storage)
    assert again.objects_written == 0 and again.objects_existing == first.objects
    assert (again.annotated, again.total_bytes) == (first.annotated, first.total_bytes)
    after = {info.name: (info.size, info.generation) for info in storage.list()}
    assert after == before  # nothing was rewritten


def test_same_seed_gives_same_bytes_elsewhere(tmp_path: Path) -> None:
    a, b, c = (LocalStorage(tmp_path / name) for name in "abc")
    ra = sd.write_sample_dataset(a, videos=4, video_bytes=2048, frames=3)
    rb = sd.write_sample_dataset(b, videos=4, video_bytes=2048, frames=3)
    rc = sd.write_sample_dataset(c, videos=4, video_bytes=2048, frames=3, seed=1)
    assert ra == rb
    for info in a.list():
        assert a.read_bytes(info.name) == b.read_bytes(info.name), info.name
    assert rc.annotated != ra.annotated
    assert a.read_bytes("annotations/book/batch-3/18.pbdata") != c.read_bytes(
        "annotations/book/batch-3/18.pbdata"
    )


def test_different_existing_content_raises(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.create_bytes("videos/book/batch-3/18/id.txt", b"someone else's\n")
    with pytest.raises(sd.SampleDataConflict, match=r"18/id\.txt exists with different content"):
        sd.write_sample_dataset(storage, videos=1, video_bytes=1024, frames=2)
    assert storage.read_bytes("videos/book/batch-3/18/id.txt") == b"someone else's\n"


def test_other_seed_over_existing_dataset_raises(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    sd.write_sample_dataset(storage, videos=1, video_bytes=1024, frames=2)
    with pytest.raises(sd.SampleDataConflict):
        sd.write_sample_dataset(storage, videos=1, video_bytes=1024, frames=2, seed=5)


def test_options(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    result = sd.write_sample_dataset(
        storage,
        videos=10,
        placeholders=0,
        unannotated=0,
        include_no_split_video=False,
        video_bytes=512,
        frames=1,
    )
    assert result.no_split == [] and "book/batch-3/18" not in result.annotated
    assert set(result.annotated) <= SPLIT_INDEXED and len(result.annotated) == 10
    assert (result.unannotated, result.placeholders) == ([], [])
    assert set(names_and_sizes(storage)) == expected_names(result)


def test_negative_counts_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="placeholders must not be negative"):
        sd.write_sample_dataset(LocalStorage(tmp_path), placeholders=-1)


# --- traps ---------------------------------------------------------------------------------


def test_traps_are_one_short_one_corrupt_one_wrong_category(
    written: tuple[LocalStorage, sd.SampleDataset],
) -> None:
    storage, result = written
    traps = result.short_videos + result.corrupt_videos + result.wrong_category
    assert [len(result.short_videos), len(result.corrupt_videos), len(result.wrong_category)] == [
        1,
        1,
        1,
    ]
    assert len(set(traps)) == 3 and set(traps) <= set(result.annotated)
    assert "book/batch-3/18" not in traps
    for key in result.annotated:
        video = storage.read_bytes(f"videos/{key}/video.MOV")
        annotation = pb.Sequence.FromString(storage.read_bytes(f"annotations/{key}.pbdata"))
        records = pb.split_geometry_records(storage.read_bytes(f"videos/{key}/geometry.pbdata"))
        assert len(annotation.frame_annotations) == len(records) == 12
        category = annotation.objects[0].category
        if key in result.wrong_category:
            assert category in CLASSES and category != key.split("/")[0]
        else:
            assert category == key.split("/")[0]
        if key in result.corrupt_videos:
            assert_undecodable(video)
            continue
        frames = decode_upright(video)
        counters = [sd.read_frame_counter(picture) for _, picture in frames]
        assert counters == list(range(8 if key in result.short_videos else 12)), key
        tags = {tag for tag, _ in frames}
        assert tags == ({-90} if key in result.rotated else {0})
    # about half stored landscape, both kinds present
    assert 0.25 < len(result.rotated) / len(result.annotated + result.unannotated) < 0.75
    assert result.rotated == sorted(
        k for k in result.annotated + result.unannotated if sd.stored_rotation(k) == 90
    )


def test_traps_can_be_turned_off(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    result = sd.write_sample_dataset(storage, videos=6, frames=4, traps=False)
    assert (result.short_videos, result.corrupt_videos, result.wrong_category) == ([], [], [])
    for key in result.annotated:
        frames = decode_upright(storage.read_bytes(f"videos/{key}/video.MOV"))
        assert [sd.read_frame_counter(picture) for _, picture in frames] == [0, 1, 2, 3]
        annotation = pb.Sequence.FromString(storage.read_bytes(f"annotations/{key}.pbdata"))
        assert annotation.objects[0].category == key.split("/")[0]


def test_stand_in_videos_keep_the_category_trap_only(tmp_path: Path) -> None:
    result = sd.write_sample_dataset(LocalStorage(tmp_path), videos=6, video_bytes=2048, frames=2)
    assert (result.short_videos, result.corrupt_videos, result.rotated) == ([], [], [])
    assert len(result.wrong_category) == 1


def test_real_video_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="frames must be 1 to 1024"):
        sd.write_sample_dataset(LocalStorage(tmp_path), videos=1, frames=2000)
    with pytest.raises(ValueError, match="video_size"):
        sd.write_sample_dataset(LocalStorage(tmp_path), videos=1, video_size="big")
    assert list(LocalStorage(tmp_path).list()) == []  # refused before writing anything


# --- fake-gcs-server -----------------------------------------------------------------------


@pytest.mark.slow
def test_writes_to_gcs_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.fake_gcs import FakeGcsServer
    from tasks.objectron.decode import decode_annotation

    with FakeGcsServer() as server:
        server.create_bucket("sample-bucket")  # GCS names need 3+ characters
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
        storage = open_storage("gs://sample-bucket/prefix")
        result = sd.write_sample_dataset(storage, videos=6, video_bytes=16 * 1024, frames=3)
        listing = names_and_sizes(storage)
        assert set(listing) == expected_names(result)
        assert result.total_bytes == sum(listing.values())
        for key in result.placeholders:
            assert listing[f"videos/{key}/video.MOV"] == 0
        key = result.annotated[0]
        decoded = decode_annotation(storage.read_bytes(f"annotations/{key}.pbdata"))
        expected = sd.sample_values(key, frames=3)
        assert decoded["objects"][0]["translation"] == expected.box.translation
        assert (
            storage.read_bytes("v1/index/book_annotations")
            == (INDEX_DIR / "book_annotations").read_bytes()
        )
        again = sd.write_sample_dataset(storage, videos=6, video_bytes=16 * 1024, frames=3)
        assert again.objects_written == 0 and again.objects_existing == result.objects
