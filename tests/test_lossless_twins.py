"""The JSON twins carry every field of Objectron's official schema.

Messages with every leaf field of `ARFrame` and `Sequence` populated (repeated ones twice, each
value distinct, int64 beyond 2**53, enums off their defaults, bytes with every byte value) are
written with the project's schema (whose field numbers and types are the official .proto files'),
made into twins as a `convert` run makes them (`decoded_json`), and every leaf is looked up at
its documented place (`records[i].PATH`, `sequence.PATH`) and compared with protobuf's own parse.
The README's field table is checked against the same list of leaves.
"""

from __future__ import annotations

import base64
import itertools
import random
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from google.protobuf import descriptor

from tasks.objectron import proto as pb
from tasks.objectron.decode_pool import decoded_json
from tasks.objectron.lossless import leaf_keys, leaf_paths, message_document

_FD = descriptor.FieldDescriptor
ROOT = Path(__file__).resolve().parent.parent


def _f32(value: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", value))[0])


def populate(message: Any, counter: itertools.count[int]) -> None:
    """Set every field of `message` (recursively), each scalar to a value of its own."""
    for field in message.DESCRIPTOR.fields:
        repeats = 2 if field.is_repeated else 1
        for _ in range(repeats):
            if field.type == _FD.TYPE_MESSAGE:
                target = (
                    getattr(message, field.name).add()
                    if field.is_repeated
                    else getattr(message, field.name)
                )
                populate(target, counter)
                continue
            value = _value(field, next(counter))
            if field.is_repeated:
                getattr(message, field.name).append(value)
            else:
                setattr(message, field.name, value)


def _value(field: descriptor.FieldDescriptor, n: int) -> Any:
    kind = field.type
    if kind == _FD.TYPE_FLOAT:
        return _f32(n + 0.1)  # not a short decimal as a double: widening must be exact
    if kind == _FD.TYPE_DOUBLE:
        return n + 0.123456789012345
    if kind == _FD.TYPE_INT32:
        return n
    if kind == _FD.TYPE_INT64:
        return 2**60 + n  # beyond a double's integers
    if kind == _FD.TYPE_BOOL:
        return True  # the default is false
    if kind == _FD.TYPE_STRING:
        return f"text-{n}-é"
    if kind == _FD.TYPE_BYTES:
        return bytes(range(256)) + bytes([n % 256])
    if kind == _FD.TYPE_ENUM:
        return field.enum_type.values[-1].number  # off the default (the first)
    raise AssertionError(f"no value for {field.full_name}")


def values_in_message(message: Any, path: list[str]) -> list[Any]:
    """Every value at `path` below `message`, repeated fields expanded, as JSON writes them."""
    head, *rest = path
    field = message.DESCRIPTOR.fields_by_name[head]
    items = list(getattr(message, head)) if field.is_repeated else [getattr(message, head)]
    if rest:
        return [value for item in items for value in values_in_message(item, rest)]
    if field.type == _FD.TYPE_ENUM:
        return [field.enum_type.values_by_number[v].name for v in items]
    if field.type == _FD.TYPE_BYTES:
        return [base64.b64encode(v).decode() for v in items]
    return items


def values_in_document(document: Any, key: list[str]) -> list[Any]:
    """Every value at a documented key (`camera.transform`, `raw_feature_points.point[0]`: the
    first component of each point) below `document`."""
    head, *rest = key
    name, _, component = head.partition("[")
    value = document[name]
    if component:  # a vector's component: of the vector, or of each in a repeated one
        index = int(component.rstrip("]"))
        vectors = value if value and isinstance(value[0], list) else [value]
        return [vector[index] for vector in vectors]
    items = value if isinstance(value, list) else [value]
    if rest:
        return [found for item in items for found in values_in_document(item, rest)]
    return items


def geometry_file(records: int = 2) -> tuple[bytes, list[Any]]:
    counter = itertools.count(1)
    frames = []
    for _ in range(records):
        frame = pb.ARFrame()
        populate(frame, counter)
        frames.append(frame)
    return pb.join_geometry_records(f.SerializeToString() for f in frames), frames


def annotation_file() -> tuple[bytes, Any]:
    sequence = pb.Sequence()
    populate(sequence, itertools.count(1000))
    return sequence.SerializeToString(), sequence


def test_every_leaf_of_the_schema_is_in_the_twins_equal_to_the_protobuf_parse() -> None:
    geometry_bytes, _ = geometry_file()
    annotation_bytes, _ = annotation_file()
    geometry = orjson.loads(decoded_json("geometry", geometry_bytes))
    annotation = orjson.loads(decoded_json("annotation", annotation_bytes))
    frame_keys = leaf_keys(pb.ARFrame.DESCRIPTOR)
    sequence_keys = leaf_keys(pb.Sequence.DESCRIPTOR)
    # The official schema's 149 leaves (112 under ARFrame, 37 under Sequence).
    assert (len(frame_keys), len(sequence_keys)) == (112, 37)
    assert [path for path, _ in frame_keys] == leaf_paths(pb.ARFrame.DESCRIPTOR)

    not_carried = []
    parsed_frames = [pb.ARFrame.FromString(r) for r in pb.split_geometry_records(geometry_bytes)]
    assert len(geometry["records"]) == len(parsed_frames) == 2
    for path, key in frame_keys:
        for parsed, record in zip(parsed_frames, geometry["records"], strict=True):
            expected = values_in_message(parsed, path.split("."))
            try:
                found = values_in_document(record, key.split("."))
            except (KeyError, TypeError):
                not_carried.append(f"ARFrame.{path}")
                break
            assert expected and found == expected, (path, found, expected)
    parsed_sequence = pb.Sequence.FromString(annotation_bytes)
    for path, key in sequence_keys:
        expected = values_in_message(parsed_sequence, path.split("."))
        try:
            found = values_in_document(annotation["sequence"], key.split("."))
        except (KeyError, TypeError):
            not_carried.append(f"Sequence.{path}")
            continue
        assert expected and found == expected, (path, found, expected)
    assert not_carried == []
    # Floats are the stored float32 widened exactly, not a shorter decimal.
    roll = geometry["records"][0]["camera"]["euler_angles"][0]
    assert roll == parsed_frames[0].camera.euler_angles.roll and roll != round(roll, 6)
    # The flattened views are still there, as before.
    assert set(geometry) == {"frames", "records"}
    assert set(annotation) == {"objects", "frames", "sequence"}


def test_absent_fields_are_null_or_the_proto3_default() -> None:
    frame = pb.ARFrame(timestamp=1.5)
    geometry = orjson.loads(
        decoded_json("geometry", pb.join_geometry_records([frame.SerializeToString()]))
    )
    (record,) = geometry["records"]
    assert record["timestamp"] == 1.5
    assert record["camera"] is None and record["depth_data"] is None
    assert record["plane_anchor"] == []
    assert record["depth_data_timestamp"] is None  # proto2: absent, not 0
    camera_only = pb.ARFrame(camera=pb.ARCamera())
    (record,) = orjson.loads(
        decoded_json("geometry", pb.join_geometry_records([camera_only.SerializeToString()]))
    )["records"]
    assert record["camera"]["tracking_state"] is None  # the schema's default UNAVAILABLE applies
    assert record["camera"]["transform"] == []
    sequence = pb.Sequence(objects=[pb.Object(id=3)])
    annotation = orjson.loads(decoded_json("annotation", sequence.SerializeToString()))
    (obj,) = annotation["sequence"]["objects"]
    assert obj["id"] == 3 and obj["category"] == "" and obj["type"] == "UNDEFINED_TYPE"
    assert annotation["sequence"]["frame_annotations"] == []


def test_the_readme_field_table_lists_every_leaf() -> None:
    readme = (ROOT / "README.md").read_text()
    listed = set(
        re.findall(r"^\| `((?:records|sequence)\.[a-z0-9_.\[\]]+)` \|", readme, re.MULTILINE)
    )
    expected = {f"records.{key}" for _, key in leaf_keys(pb.ARFrame.DESCRIPTOR)}
    expected |= {f"sequence.{key}" for _, key in leaf_keys(pb.Sequence.DESCRIPTOR)}
    assert sorted(expected - listed) == [] and sorted(listed - expected) == []


def _cloud_frame(points: list[tuple[float | None, float | None, float | None]]) -> Any:
    frame = pb.ARFrame(timestamp=2.0)
    cloud = frame.raw_feature_points
    cloud.count = len(points)
    for x, y, z in points:
        point = cloud.point.add()
        for name, value in zip("xyz", (x, y, z), strict=True):
            if value is not None:
                setattr(point, name, value)
        cloud.identifier.append(2**62 + len(cloud.identifier))
    plane = frame.plane_anchor.add(identifier="floor")
    for index in range(5):
        plane.geometry.vertices.add(x=_f32(index / 3), y=0.0, z=_f32(-index / 7))
        plane.geometry.texture_coordinates.add(u=_f32(index / 9), v=_f32(1 - index / 9))
    return frame


def _expected_vectors(repeated: Any, names: str) -> list[list[float | None]]:
    """A repeated vector as the twins write it, read message by message: the reference."""
    return [[getattr(v, n) if v.HasField(n) else None for n in names] for v in repeated]


def test_repeated_vectors_read_from_the_wire_equal_the_message_by_message_parse() -> None:
    rng = random.Random(7)
    points = [
        (_f32(rng.uniform(-9, 9)), _f32(rng.uniform(-9, 9)), _f32(rng.random())) for _ in range(300)
    ]
    points += [(0.0, -0.0, 1e-40), (3.4e38, -1.5, 2.0)]  # zeros and extremes are values too
    frame = _cloud_frame(points)
    (record,) = orjson.loads(
        decoded_json("geometry", pb.join_geometry_records([frame.SerializeToString()]))
    )["records"]
    assert record["raw_feature_points"]["point"] == _expected_vectors(
        frame.raw_feature_points.point, "xyz"
    )
    assert record["raw_feature_points"]["identifier"] == list(frame.raw_feature_points.identifier)
    geometry = frame.plane_anchor[0].geometry
    (plane,) = record["plane_anchor"]
    assert plane["geometry"]["vertices"] == _expected_vectors(geometry.vertices, "xyz")
    assert plane["geometry"]["texture_coordinates"] == _expected_vectors(
        geometry.texture_coordinates, "uv"
    )
    assert plane["geometry"]["boundary_vertices"] == []


def test_a_vector_encoded_otherwise_gives_the_same_json_by_the_message_path() -> None:
    """A point without its z (proto2: absent, so null) is not the usual fixed run of bytes:
    the wire reader declines and the message path writes the cloud, with the same values."""
    frame = _cloud_frame([(1.5, 2.5, 3.5), (4.5, 5.5, None), (6.5, 7.5, 8.5)])
    (record,) = orjson.loads(
        decoded_json("geometry", pb.join_geometry_records([frame.SerializeToString()]))
    )["records"]
    assert record["raw_feature_points"]["point"] == [
        [1.5, 2.5, 3.5],
        [4.5, 5.5, None],
        [6.5, 7.5, 8.5],
    ]
    # Which path wrote it: an array straight from the wire, or a list of lists.
    assert isinstance(message_document(frame.raw_feature_points)["point"], list)
    regular = _cloud_frame([(1.5, 2.5, 3.5), (4.5, 5.5, 6.5)])
    from_wire = message_document(regular.raw_feature_points)["point"]
    assert isinstance(from_wire, np.ndarray) and from_wire.dtype == np.float64
