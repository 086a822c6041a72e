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
import re
import struct
from pathlib import Path
from typing import Any

import orjson
from google.protobuf import descriptor

from tasks.objectron import proto as pb
from tasks.objectron.decode_pool import decoded_json
from tasks.objectron.lossless import leaf_paths

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


def values_in_document(document: Any, path: list[str]) -> list[Any]:
    head, *rest = path
    value = document[head]
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
    frame_paths = leaf_paths(pb.ARFrame.DESCRIPTOR)
    sequence_paths = leaf_paths(pb.Sequence.DESCRIPTOR)
    # The official schema's 149 leaves (112 under ARFrame, 37 under Sequence).
    assert (len(frame_paths), len(sequence_paths)) == (112, 37)

    not_carried = []
    parsed_frames = [pb.ARFrame.FromString(r) for r in pb.split_geometry_records(geometry_bytes)]
    assert len(geometry["records"]) == len(parsed_frames) == 2
    for path in frame_paths:
        for parsed, record in zip(parsed_frames, geometry["records"], strict=True):
            expected = values_in_message(parsed, path.split("."))
            try:
                found = values_in_document(record, path.split("."))
            except (KeyError, TypeError):
                not_carried.append(f"ARFrame.{path}")
                break
            assert expected and found == expected, (path, found, expected)
    parsed_sequence = pb.Sequence.FromString(annotation_bytes)
    for path in sequence_paths:
        expected = values_in_message(parsed_sequence, path.split("."))
        try:
            found = values_in_document(annotation["sequence"], path.split("."))
        except (KeyError, TypeError):
            not_carried.append(f"Sequence.{path}")
            continue
        assert expected and found == expected, (path, found, expected)
    assert not_carried == []
    # Floats are the stored float32 widened exactly, not a shorter decimal.
    roll = geometry["records"][0]["camera"]["euler_angles"]["roll"]
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
    listed = set(re.findall(r"^\| `((?:records|sequence)\.[a-z0-9_.]+)` \|", readme, re.MULTILINE))
    expected = {f"records.{p}" for p in leaf_paths(pb.ARFrame.DESCRIPTOR)}
    expected |= {f"sequence.{p}" for p in leaf_paths(pb.Sequence.DESCRIPTOR)}
    assert sorted(expected - listed) == [] and sorted(listed - expected) == []
