"""tasks.objectron.sample_data: values, layout, index fidelity, create-only reruns, GCS emulator.

Expectations about the index files are computed here from the vendored files on disk, not
through the module's own helpers, so a parsing bug in the module cannot hide itself.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy
import pytest

import tasks.objectron
from tasks.objectron import proto as pb
from tasks.objectron import sample_data as sd
from tasks.storage import LocalStorage, Storage, open_storage

INDEX_DIR = Path(tasks.objectron.__file__).parent / "index"
# Objectron's corners 1-8 (dataset/box.py), written out here rather than taken from the module.
UNIT_BOX_CORNERS = [
    [0.0, 0.0, 0.0],
    *([x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)),
]
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
