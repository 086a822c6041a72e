"""tasks.objectron.decode: round trips against the generator's numbers, and clear failures."""

from __future__ import annotations

import json
import random
import struct

import pytest
from google.protobuf import message as protobuf_message

from tasks.objectron import proto as pb
from tasks.objectron import sample_data as sd
from tasks.objectron.decode import DecodeError, decode_annotation, decode_geometry
from tasks.storage import LocalStorage

FRAMES = 5


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalStorage, sd.SampleDataset]:
    storage = LocalStorage(tmp_path_factory.mktemp("bucket"))
    result = sd.write_sample_dataset(
        storage,
        videos=3,
        seed=7,
        video_bytes=1024,
        frames=FRAMES,
        unannotated=1,
        placeholders=1,
        traps=False,  # the wrong-category trap would change a category checked below
    )
    return storage, result


def close_f32(actual: list[float], expected: list[float]) -> bool:
    """Equal within float32 precision (the values are float32 on the wire)."""
    return actual == pytest.approx(expected, rel=1e-6, abs=1e-7)


# --- round trips ---------------------------------------------------------------------------


def test_geometry_written_by_generator_decodes_to_its_numbers(
    dataset: tuple[LocalStorage, sd.SampleDataset],
) -> None:
    storage, result = dataset
    for key in result.annotated + result.unannotated:
        decoded = decode_geometry(storage.read_bytes(f"videos/{key}/geometry.pbdata"))
        expected = sd.sample_frame_values(key, seed=7, frames=FRAMES)
        assert len(decoded["frames"]) == FRAMES
        for frame, values in zip(decoded["frames"], expected, strict=True):
            assert frame["timestamp"] == values.timestamp  # a double: exact
            assert frame["tracking_state"] == "NORMAL"
            assert (frame["image_width"], frame["image_height"]) == (1920, 1440)  # the sensor
            assert close_f32(frame["camera_transform"], values.transform)
            assert close_f32(frame["intrinsics"], values.intrinsics)
            assert close_f32(frame["projection_matrix"], values.projection_matrix)
            assert close_f32(frame["view_matrix"], values.view_matrix)
            # The generator rounds to float32 before writing, so nothing is lost at all.
            assert frame["view_matrix"] == values.view_matrix


def test_annotation_written_by_generator_decodes_to_its_numbers(
    dataset: tuple[LocalStorage, sd.SampleDataset],
) -> None:
    storage, result = dataset
    for key in result.annotated:
        decoded = decode_annotation(storage.read_bytes(f"annotations/{key}.pbdata"))
        values = sd.sample_values(key, seed=7, frames=FRAMES)
        (obj,) = decoded["objects"]
        assert obj["category"] == key.split("/")[0]
        assert (obj["type"], obj["method"], obj["id"]) == ("BOUNDING_BOX", "ANNOTATION", 0)
        assert close_f32(obj["rotation"], values.box.rotation)
        assert close_f32(obj["translation"], values.box.translation)
        assert close_f32(obj["scale"], values.box.scale)
        assert obj["keypoints"] == [list(k) for k in sd.UNIT_BOX]
        assert [f["frame_id"] for f in decoded["frames"]] == list(range(FRAMES))
        for frame, expected in zip(decoded["frames"], values.frames, strict=True):
            assert frame["timestamp"] == expected.timestamp
            (annotation,) = frame["objects"]
            assert annotation["object_id"] == 0
            assert annotation["visibility"] == pytest.approx(expected.visibility, rel=1e-6)
            assert len(annotation["keypoints_2d"]) == len(annotation["keypoints_3d"]) == 9
            assert annotation["keypoint_ids"] == list(range(9))
            for got, want in zip(annotation["keypoints_2d"], expected.keypoints_2d, strict=True):
                assert close_f32(got, want)
            for got, want in zip(annotation["keypoints_3d"], expected.keypoints_3d, strict=True):
                assert close_f32(got, want)
            camera = frame["camera"]
            assert camera["tracking_state"] == "NORMAL"
            assert close_f32(camera["transform"], expected.transform)
            assert close_f32(camera["intrinsics"], expected.intrinsics)
            assert (camera["image_width"], camera["image_height"]) == (1920, 1440)


def test_output_is_plain_json_with_stable_key_order(
    dataset: tuple[LocalStorage, sd.SampleDataset],
) -> None:
    storage, result = dataset
    key = result.annotated[0]
    annotation = decode_annotation(storage.read_bytes(f"annotations/{key}.pbdata"))
    geometry = decode_geometry(storage.read_bytes(f"videos/{key}/geometry.pbdata"))
    for decoded in (annotation, geometry):
        assert json.loads(json.dumps(decoded)) == decoded  # only JSON types inside
    assert list(annotation) == ["objects", "frames"]
    assert list(annotation["objects"][0]) == [
        "id", "category", "type", "rotation", "translation", "scale", "keypoints", "method",
    ]  # fmt: skip
    assert list(annotation["frames"][0]) == [
        "frame_id", "timestamp", "objects", "camera", "plane_center", "plane_normal",
    ]  # fmt: skip
    assert list(annotation["frames"][0]["objects"][0]) == [
        "object_id", "visibility", "keypoint_ids", "keypoints_2d", "keypoints_3d",
    ]  # fmt: skip
    assert list(annotation["frames"][0]["camera"]) == [
        "intrinsics", "transform", "projection_matrix", "view_matrix",
        "image_width", "image_height", "tracking_state",
    ]  # fmt: skip
    assert list(geometry["frames"][0]) == [
        "timestamp", "tracking_state", "camera_transform", "intrinsics",
        "projection_matrix", "view_matrix", "image_width", "image_height",
    ]  # fmt: skip


def test_frame_without_camera_or_timestamp_decodes_to_none() -> None:
    data = pb.join_geometry_records([b"", pb.ARFrame(timestamp=1.25).SerializeToString()])
    frames = decode_geometry(data)["frames"]
    assert frames[0] == dict.fromkeys(frames[0])  # every value None
    assert frames[1]["timestamp"] == 1.25 and frames[1]["intrinsics"] is None
    annotation = decode_annotation(
        pb.Sequence(frame_annotations=[pb.FrameAnnotation(frame_id=3)]).SerializeToString()
    )
    assert annotation == {
        "objects": [],
        "frames": [
            {"frame_id": 3, "timestamp": 0.0, "objects": [], "camera": None,
             "plane_center": None, "plane_normal": None}
        ],
    }  # fmt: skip


def test_plane_and_keypoint_ids_are_kept() -> None:
    """A frame's supporting plane, and which keypoints a frame annotates when it annotates a
    subset (ids 0, 3, 8 here: positions in the list are not ids)."""
    keypoints = [
        pb.AnnotatedKeyPoint(id=i, point_2d=pb.NormalizedPoint2D(x=0.1 * i, y=0.5, depth=1.0))
        for i in (0, 3, 8)
    ]
    frame = pb.FrameAnnotation(
        frame_id=0,
        annotations=[pb.ObjectAnnotation(object_id=2, keypoints=keypoints)],
        plane_center=[0.25, -1.5, 2.0],
        plane_normal=[0.0, 1.0, 0.0],
    )
    (decoded,) = decode_annotation(pb.Sequence(frame_annotations=[frame]).SerializeToString())[
        "frames"
    ]
    assert decoded["plane_center"] == [0.25, -1.5, 2.0]
    assert decoded["plane_normal"] == [0.0, 1.0, 0.0]
    (annotation,) = decoded["objects"]
    assert annotation["keypoint_ids"] == [0, 3, 8]
    assert [k[0] for k in annotation["keypoints_2d"]] == pytest.approx([0.0, 0.3, 0.8])


def test_unknown_enum_value_and_unknown_field_numbers_are_tolerated() -> None:
    # Object.type = 7 (no such enum value), plus field 15, which this schema does not have.
    obj = b"\x18\x07" + b"\x78\x01"
    decoded = decode_annotation(b"\x0a" + bytes([len(obj)]) + obj)
    assert decoded["objects"][0]["type"] == 7
    assert decoded["objects"][0]["method"] == "UNKNOWN_METHOD"


# --- failures ------------------------------------------------------------------------------


def test_truncated_geometry_raises(dataset: tuple[LocalStorage, sd.SampleDataset]) -> None:
    storage, result = dataset
    data = storage.read_bytes(f"videos/{result.annotated[0]}/geometry.pbdata")
    last = len(data) - 4 - len(pb.split_geometry_records(data)[-1])
    with pytest.raises(DecodeError, match=rf"record {FRAMES - 1} at byte offset {last}"):
        decode_geometry(data[:-10])
    with pytest.raises(DecodeError, match="too few for the 4-byte length"):
        decode_geometry(data + b"\x07")


def test_placeholder_files_raise() -> None:
    with pytest.raises(DecodeError, match="empty"):
        decode_geometry(b"")
    with pytest.raises(DecodeError, match="empty"):
        decode_annotation(b"")


def test_invalid_wire_type_raises_decode_error_wrapping_protobuf() -> None:
    with pytest.raises(DecodeError, match="annotation: 2 bytes are not a valid Sequence") as info:
        decode_annotation(b"\x0f\x00")
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value.__cause__, protobuf_message.DecodeError)


def test_random_bytes_as_annotation_raise() -> None:
    for seed in range(200):
        rng = random.Random(seed)
        garbage = rng.randbytes(rng.randrange(1, 2000))
        with pytest.raises(DecodeError):
            decode_annotation(garbage)


def test_short_garbage_that_protobuf_accepts_is_still_rejected() -> None:
    # Field 1 as a varint: protobuf keeps it as an unknown field, but Sequence.objects is a
    # message, so these are not annotation bytes.
    with pytest.raises(DecodeError, match=r"top-level field number\(s\) \[1\]"):
        decode_annotation(b"\x08\x01")
    # Field 5 (varint): legal wire format, but a Sequence has only fields 1 and 2.
    with pytest.raises(DecodeError, match=r"\[5\]"):
        decode_annotation(b"\x28\x01")


def test_known_field_with_wrong_wire_type_is_corruption() -> None:
    obj = b"\x0d" + struct.pack("<I", 1)  # Object.id (int32) sent as fixed32
    with pytest.raises(
        DecodeError, match=r"Sequence\.objects\[0\]\.id \(field 1\) has wire type 5"
    ):
        decode_annotation(b"\x0a" + bytes([len(obj)]) + obj)
    camera = b"\x0d" + struct.pack("<f", 1.0)  # ARCamera.tracking_state sent as fixed32
    frame = b"\x22" + bytes([len(camera)]) + camera
    data = pb.join_geometry_records([b"", frame])
    with pytest.raises(DecodeError, match=r"record 1 \(byte offset 4\).*ARFrame\.camera"):
        decode_geometry(data)


def test_garbage_geometry_record_names_the_record() -> None:
    good = sd.build_geometry(sd.sample_values("cup/batch-1/1", frames=2))
    data = good + pb.join_geometry_records([b"\x0f\x00"])
    with pytest.raises(DecodeError, match=rf"geometry record 2 \(byte offset {len(good)}\)"):
        decode_geometry(data)


def test_decoding_a_video_as_geometry_raises() -> None:
    video = sd.build_video("cup/batch-1/1", video_bytes=4096)
    with pytest.raises(DecodeError, match="geometry"):
        decode_geometry(video)
