"""Wire-format tests for tasks.objectron.proto: field numbers, packing, syntax, record framing.

The expected bytes here are written out by hand from docs/objectron.md, independently of the
descriptors, so a wrong field number, type or packing option changes them and fails a test.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pool

from tasks.objectron import proto as pb


def f32(value: float) -> bytes:
    return struct.pack("<f", value)


def f64(value: float) -> bytes:
    return struct.pack("<d", value)


# --- record framing ------------------------------------------------------------------------


def test_join_uses_4_byte_little_endian_lengths() -> None:
    records = [b"ab", b"", bytes(258)]
    data = pb.join_geometry_records(records)
    assert data == b"\x02\x00\x00\x00ab" + b"\x00\x00\x00\x00" + b"\x02\x01\x00\x00" + bytes(258)


def test_split_inverts_join() -> None:
    records = [b"x" * n for n in (0, 1, 5, 300, 70000)]
    assert pb.split_geometry_records(pb.join_geometry_records(records)) == records


def test_split_of_nothing_is_no_records() -> None:
    assert pb.split_geometry_records(b"") == []


def test_split_rejects_a_cut_record_and_names_its_offset() -> None:
    data = pb.join_geometry_records([b"abc", b"defgh"])  # second record starts at byte 7
    with pytest.raises(ValueError, match=r"record 1 at byte offset 7: .*says 5 bytes but only 3"):
        pb.split_geometry_records(data[:-2])


def test_split_rejects_a_cut_length_prefix() -> None:
    data = pb.join_geometry_records([b"abc"]) + b"\x05\x00"
    with pytest.raises(ValueError, match=r"record 1 at byte offset 7: 2 byte\(s\) left"):
        pb.split_geometry_records(data)


def test_split_is_not_varint_framing() -> None:
    # A varint-delimited reader would see length 3 here; the real framing says 0x303 bytes.
    data = b"\x03\x03\x00\x00" + bytes(0x303)
    assert [len(r) for r in pb.split_geometry_records(data)] == [0x303]


# --- xeno.pursuit.proto (proto3) -----------------------------------------------------------


def test_sequence_parses_hand_encoded_bytes() -> None:
    obj = b"\x08\x07" + b"\x12\x03cup" + b"\x18\x01" + b"\x40\x02"  # id, category, type, method
    frame = b"\x08\x05" + b"\x21" + f64(1.5)  # frame_id 5, timestamp (field 4, double)
    data = b"\x0a" + bytes([len(obj)]) + obj + b"\x12" + bytes([len(frame)]) + frame
    sequence = pb.Sequence.FromString(data)
    (parsed,) = sequence.objects
    assert (parsed.id, parsed.category, parsed.type, parsed.method) == (7, "cup", 1, 2)
    assert parsed.type == pb.Object.BOUNDING_BOX and parsed.method == pb.Object.AUGMENTATION
    assert (sequence.frame_annotations[0].frame_id, sequence.frame_annotations[0].timestamp) == (
        5,
        1.5,
    )


def test_object_repeated_floats_are_packed() -> None:
    obj = pb.Object(rotation=[1.0, 2.0], translation=[3.0], scale=[4.0])
    expected = (
        b"\x22\x08" + f32(1.0) + f32(2.0)  # field 4, wire type 2
        + b"\x2a\x04" + f32(3.0)  # field 5
        + b"\x32\x04" + f32(4.0)  # field 6
    )  # fmt: skip
    assert obj.SerializeToString() == expected


def test_keypoint_fields() -> None:
    point = pb.KeyPoint(x=1.0, y=2.0, z=3.0, confidence_radius=0.5, name="c", hidden=True)
    expected = (
        b"\x0d" + f32(1.0) + b"\x15" + f32(2.0) + b"\x1d" + f32(3.0) + b"\x25" + f32(0.5)
        + b"\x2a\x01c" + b"\x30\x01"
    )  # fmt: skip
    assert point.SerializeToString() == expected


def test_frame_annotation_fields() -> None:
    keypoint = pb.AnnotatedKeyPoint(
        id=2, point_3d=pb.Point3D(x=1.0), point_2d=pb.NormalizedPoint2D(depth=2.0)
    )
    annotation = pb.ObjectAnnotation(object_id=3, keypoints=[keypoint], visibility=0.5)
    frame = pb.FrameAnnotation(
        frame_id=4,
        annotations=[annotation],
        camera=pb.ARCamera(image_resolution_width=9),
        timestamp=2.0,
        plane_center=[1.0],
        plane_normal=[2.0],
    )
    kp = b"\x08\x02" + b"\x12\x05\x0d" + f32(1.0) + b"\x1a\x05\x1d" + f32(2.0)
    ann = b"\x08\x03" + b"\x12" + bytes([len(kp)]) + kp + b"\x1d" + f32(0.5)
    expected = (
        b"\x08\x04"
        + b"\x12" + bytes([len(ann)]) + ann
        + b"\x1a\x02\x28\x09"  # camera (field 3) holding image_resolution_width (field 5)
        + b"\x21" + f64(2.0)
        + b"\x2a\x04" + f32(1.0)  # plane_center, packed
        + b"\x32\x04" + f32(2.0)  # plane_normal, packed
    )  # fmt: skip
    assert frame.SerializeToString() == expected


def test_annotation_messages_are_proto3() -> None:
    # proto3 scalars have no presence: HasField on them is an error, and 0 is not written.
    with pytest.raises(ValueError):
        pb.Object().HasField("id")
    assert pb.Object(id=0, category="").SerializeToString() == b""


def test_enums() -> None:
    assert [pb.Object.Type.Name(n) for n in range(4)] == [
        "UNDEFINED_TYPE",
        "BOUNDING_BOX",
        "SKELETON",
        "MESH",
    ]
    assert [pb.Object.Method.Name(n) for n in range(3)] == [
        "UNKNOWN_METHOD",
        "ANNOTATION",
        "AUGMENTATION",
    ]
    assert [pb.ARCamera.TrackingState.Name(n) for n in range(4)] == [
        "UNDEFINED_TRACKING_STATE",
        "UNAVAILABLE",
        "LIMITED",
        "NORMAL",
    ]


# --- research.compvideo.arcapture (proto2) -------------------------------------------------


def test_arframe_field_numbers_and_types() -> None:
    fields = {f.name: (f.number, f.type) for f in pb.ARFrame.DESCRIPTOR.fields}
    message, double = 11, 1
    assert fields == {
        "timestamp": (1, double),
        "depth_data": (2, message),
        "depth_data_timestamp": (3, double),
        "camera": (4, message),
        "light_estimate": (5, message),
        "face_anchor": (6, message),
        "plane_anchor": (7, message),
        "raw_feature_points": (8, message),
        "motion_manager_snapshot": (9, message),
    }
    assert pb.ARFrame.DESCRIPTOR.fields_by_name["plane_anchor"].is_repeated


def test_arcamera_encoding() -> None:
    camera = pb.ARCamera(
        tracking_state=pb.ARCamera.NORMAL,
        tracking_state_reason=pb.ARCamera.RELOCALIZING,
        transform=[1.0],
        euler_angles=pb.EulerAngles(roll=1.0, pitch=2.0, yaw=3.0),
        image_resolution_width=1440,
        image_resolution_height=1920,
        intrinsics=[2.0],
        projection_matrix=[3.0],
        view_matrix=[4.0],
    )
    euler = b"\x0d" + f32(1.0) + b"\x15" + f32(2.0) + b"\x1d" + f32(3.0)
    expected = (
        b"\x08\x03" + b"\x10\x05"
        + b"\x1a\x04" + f32(1.0)  # transform: packed
        + b"\x22\x0f" + euler
        + b"\x28\xa0\x0b" + b"\x30\x80\x0f"  # 1440, 1920 as varints
        + b"\x3a\x04" + f32(2.0)
        + b"\x42\x04" + f32(3.0)
        + b"\x4a\x04" + f32(4.0)
    )  # fmt: skip
    assert camera.SerializeToString() == expected


def test_arcapture_is_proto2_with_schema_defaults() -> None:
    camera = pb.ARCamera()
    assert not camera.HasField("tracking_state")  # proto2 scalars have presence
    assert camera.tracking_state == pb.ARCamera.UNAVAILABLE
    assert camera.tracking_state_reason == pb.ARCamera.NONE
    # Explicitly set zero values are written in proto2.
    assert pb.ARFrame(timestamp=0.0).SerializeToString() == b"\x09" + f64(0.0)


def test_plane_anchor_transform_is_not_packed() -> None:
    anchor = pb.ARPlaneAnchor(
        identifier="p",
        transform=[1.0, 2.0],
        alignment=pb.ARPlaneAnchor.VERTICAL,
        center=pb.PlaneVector(x=1.0),
        extent=pb.PlaneVector(z=2.0),
        classification_supported=True,
        classification=pb.ARPlaneAnchor.TABLE,
        classification_status=pb.ARPlaneAnchor.KNOWN,
    )
    expected = (
        b"\x0a\x01p"
        + b"\x15" + f32(1.0) + b"\x15" + f32(2.0)  # one fixed32 per value: unpacked
        + b"\x18\x02"
        + b"\x2a\x05\x0d" + f32(1.0)
        + b"\x32\x05\x1d" + f32(2.0)
        + b"\x38\x01" + b"\x40\x04" + b"\x48\x03"
    )  # fmt: skip
    assert anchor.SerializeToString() == expected


def test_point_cloud_identifiers_are_packed_int64() -> None:
    cloud = pb.ARPointCloud(count=1, point=[pb.Point(x=1.0)], identifier=[1, 300])
    expected = b"\x08\x01" + b"\x12\x05\x0d" + f32(1.0) + b"\x1a\x03\x01\xac\x02"
    assert cloud.SerializeToString() == expected


def test_readers_accept_unpacked_form_of_packed_fields() -> None:
    # Field 3 (transform) as two separate fixed32 values instead of one packed run.
    camera = pb.ARCamera.FromString(b"\x1d" + f32(1.0) + b"\x1d" + f32(2.0))
    assert list(camera.transform) == [1.0, 2.0]


def test_unread_arframe_parts_survive_as_unknown_fields() -> None:
    # AVDepthData is declared without fields; its content must still parse and round-trip.
    depth = b"\x0a\x03png" + b"\x48\x80\x01"
    data = b"\x12" + bytes([len(depth)]) + depth + b"\x19" + f64(2.5)
    frame = pb.ARFrame.FromString(data)
    assert frame.depth_data_timestamp == 2.5
    assert frame.SerializeToString() == data


def test_messages_are_not_in_the_default_pool() -> None:
    with pytest.raises(KeyError):
        descriptor_pool.Default().FindMessageTypeByName("xeno.pursuit.proto.Sequence")
    assert pb.Sequence.DESCRIPTOR.full_name == "xeno.pursuit.proto.Sequence"
    assert pb.ARFrame.DESCRIPTOR.full_name == "research.compvideo.arcapture.ARFrame"


# --- the stored schema -----------------------------------------------------------------------


def test_stored_schema_is_the_one_the_definitions_build() -> None:
    """tasks/objectron/schema.binpb is what the classes are loaded from; after a change to the
    definitions, write it again with `python -m tasks.objectron.proto`."""
    stored = (Path(pb.__file__).parent / pb.SCHEMA_FILE).read_bytes()
    assert stored == pb.serialized_schema(), "run: .venv/bin/python -m tasks.objectron.proto"


def test_decoding_needs_no_descriptor_pb2() -> None:
    """The decode workers import only the decoder; protobuf's descriptor_pb2 would add ~10 MiB
    to each of them."""
    check = (
        "import sys, tasks.objectron.decode_worker; "
        "sys.exit('google.protobuf.descriptor_pb2' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", check], check=False).returncode == 0


def test_the_schema_file_can_be_written_again_and_its_absence_is_named(tmp_path: Path) -> None:
    """`python -m tasks.objectron.proto PATH` works without reading the file it writes; an
    install without the file fails at import with a message that says how to mend it, instead
    of building the schema in every decode worker."""
    out = tmp_path / "schema.binpb"
    subprocess.run([sys.executable, "-m", "tasks.objectron.proto", str(out)], check=True)
    assert out.read_bytes() == pb.serialized_schema()

    missing = (
        "import importlib.resources, pathlib, sys\n"
        f"importlib.resources.files = lambda package: pathlib.Path({str(tmp_path / 'empty')!r})\n"
        "import tasks.objectron.proto\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", missing], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "schema.binpb is missing" in result.stderr
    assert "python -m tasks.objectron.proto" in result.stderr
