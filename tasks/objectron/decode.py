"""Decode Objectron annotation and geometry files into plain, JSON-ready Python data.

Training code that reads the shards should not need protobuf schemas, generated modules or
Objectron's framing rules: `decode_annotation` and `decode_geometry` turn the raw
`*.pbdata` bytes into dicts of lists, ints, floats, strings, None and float64 arrays (point
clouds and other repeated vectors, read straight from the wire: tasks/objectron/lossless.py),
with a fixed key order, so their JSON is deterministic and can be stored next to the raw files
(the build writes the twins with orjson and `OPT_SERIALIZE_NUMPY`:
tasks/objectron/decode_pool.py). Each file is converted once, into the lossless document of
every field; the flattened views are read from it and share its lists.

Conventions of the output:
- matrices stay flat and row-major, exactly as stored (3x3 -> 9 floats, 4x4 -> 16 floats);
- float32 fields come out as the Python float equal to the stored float32 (protobuf widens
  them exactly), so they round-trip to the same float32; doubles (timestamps) are unchanged;
- enums come out as their names (`"NORMAL"`, `"BOUNDING_BOX"`), or as the number when it is
  not one the schema knows;
- a value the file does not contain is None (proto2 fields, absent cameras).

Errors: anything that is not a well-formed file raises `DecodeError` (a ValueError) naming the
record or field and what was wrong; protobuf's own exception is chained, never leaked. Besides
what protobuf rejects, a field whose number the schema knows but whose wire type is wrong is
treated as corruption: protobuf would keep it silently as an "unknown field", but no writer of
these files produces it, and random bytes often do.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from google.protobuf import descriptor, unknown_fields
from google.protobuf import message as protobuf_message

from tasks.objectron import proto as pb
from tasks.objectron.lossless import converter as lossless_converter
from tasks.objectron.lossless import message_document

__all__ = ["DecodeError", "decode_annotation", "decode_geometry"]


class DecodeError(ValueError):
    """The bytes are not a well-formed Objectron annotation or geometry file."""


# Wire types: 0 varint, 1 64-bit, 2 length-delimited, 3/4 group, 5 32-bit.
_FD = descriptor.FieldDescriptor
_WIRE_TYPE = {
    _FD.TYPE_DOUBLE: 1,
    _FD.TYPE_FIXED64: 1,
    _FD.TYPE_SFIXED64: 1,
    _FD.TYPE_FLOAT: 5,
    _FD.TYPE_FIXED32: 5,
    _FD.TYPE_SFIXED32: 5,
    _FD.TYPE_STRING: 2,
    _FD.TYPE_BYTES: 2,
    _FD.TYPE_MESSAGE: 2,
    _FD.TYPE_GROUP: 3,
}  # every other type (ints, bools, enums) is a varint: 0

# ARFrame fields whose content is not checked for wrong wire types, so a damaged point cloud
# does not cost a frame whose camera is intact (the damaged field is dropped, as protobuf drops
# it: its values are then null in the lossless document).
_GEOMETRY_UNCHECKED = frozenset(
    f"{pb.ARCAPTURE_PACKAGE}.ARFrame.{name}" for name in ("plane_anchor", "raw_feature_points")
)


def _wire_type_problem(
    message: Any, data: bytes, path: str, unchecked: frozenset[str] = frozenset()
) -> str | None:
    """Describe the first known field with a wrong wire type in `message` (parsed from `data`)
    or below, or None. Drops `message`'s unknown fields (the decoders read known fields only).

    Decided in protobuf's C code where it can be: without its unknown fields, a message
    re-encodes to exactly its input's size unless the input held unknown fields (or was
    encoded unusually). Files straight from Objectron's writers have none, and then the
    field-by-field walk below (most of the decode time when it ran on every file) is skipped.
    """
    message.DiscardUnknownFields()
    if message.ByteSize() == len(data):
        return None
    return _walk_wire_types(_parse(type(message), data, path), path, unchecked)


def _walk_wire_types(message: Any, path: str, unchecked: frozenset[str]) -> str | None:
    fields = message.DESCRIPTOR.fields_by_number
    for unknown in unknown_fields.UnknownFieldSet(message):
        field = fields.get(unknown.field_number)
        if field is None:
            continue  # a field number this schema lacks: legal, and kept by protobuf
        expected = {_WIRE_TYPE.get(field.type, 0)}
        if field.is_repeated and field.type not in (
            _FD.TYPE_STRING,
            _FD.TYPE_BYTES,
            _FD.TYPE_MESSAGE,
        ):
            expected.add(2)  # repeated scalars may be packed
        # A proto2 enum value the schema does not know also lands here, with the right type.
        if unknown.wire_type not in expected:
            return (
                f"{path}.{field.name} (field {field.number}) has wire type {unknown.wire_type}, "
                f"expected {' or '.join(str(w) for w in sorted(expected))}"
            )
    for field, value in message.ListFields():
        if field.type != _FD.TYPE_MESSAGE or field.full_name in unchecked:
            continue
        if field.is_repeated:
            for index, item in enumerate(value):
                problem = _walk_wire_types(item, f"{path}.{field.name}[{index}]", unchecked)
                if problem:
                    return problem
        else:
            problem = _walk_wire_types(value, f"{path}.{field.name}", unchecked)
            if problem:
                return problem
    return None


def _parse(message_class: Any, data: bytes, what: str) -> Any:
    """Parse `data` as `message_class`, raising DecodeError that names `what` on failure."""
    message = message_class()
    try:
        message.ParseFromString(data)
    except protobuf_message.DecodeError as exc:
        raise DecodeError(
            f"{what}: {len(data)} bytes are not a valid {message_class.DESCRIPTOR.name} "
            f"message ({exc})"
        ) from exc
    return message


# The flattened views are read from the lossless documents (tasks/objectron/lossless.py), so a
# value is converted once and both views hold the same list; they run per frame and per
# keypoint (thousands per sample), so they are written flat.

_NO_POINT = [0.0, 0.0, 0.0]  # a keypoint without its point message: protobuf's defaults


def _camera(camera: dict[str, Any]) -> dict[str, Any]:
    return {
        "intrinsics": camera["intrinsics"],
        "transform": camera["transform"],
        "projection_matrix": camera["projection_matrix"],
        "view_matrix": camera["view_matrix"],
        "image_width": camera["image_resolution_width"],
        "image_height": camera["image_resolution_height"],
        "tracking_state": camera["tracking_state"],
    }


def _object_annotation(annotation: dict[str, Any]) -> dict[str, Any]:
    keypoints = annotation["keypoints"]
    return {
        "object_id": annotation["object_id"],
        "visibility": annotation["visibility"],
        # A frame may annotate a subset of the object's keypoints: the id says which one each
        # entry is (an index into the object's `keypoints`), not its position in this list.
        "keypoint_ids": [keypoint["id"] for keypoint in keypoints],
        "keypoints_2d": [keypoint["point_2d"] or _NO_POINT for keypoint in keypoints],
        "keypoints_3d": [keypoint["point_3d"] or _NO_POINT for keypoint in keypoints],
    }


def decode_annotation(data: bytes, *, lossless: bool = False) -> dict[str, Any]:
    """Decode an annotation file (`annotations/CLASS/batch-I/J.pbdata`, one `Sequence`).

    Args:
        data: The whole file.
        lossless: Add `"sequence"`: the file's `Sequence` with every field of the official
            schema (tasks/objectron/lossless.py); the JSON twins have it.

    Returns:
        `{"objects": [...], "frames": [...]}`. Each object is `{"id", "category", "type",
        "rotation" (9), "translation" (3), "scale" (3), "keypoints" ([[x, y, z], ...] in the
        object frame), "method"}`. Each frame is `{"frame_id", "timestamp", "objects": [{
        "object_id", "visibility", "keypoint_ids" (which of the object's keypoints each entry
        is), "keypoints_2d" ([[x, y, depth], ...], x and y normalized), "keypoints_3d"
        ([[x, y, z], ...], camera coordinates)}], "camera", "plane_center" (3 or None),
        "plane_normal" (3 or None)}` where camera is `{"intrinsics", "transform",
        "projection_matrix", "view_matrix", "image_width", "image_height", "tracking_state"}`
        or None. Note that the annotation's `category` is
        sometimes wrong in the real data (trust the folder name) and that its timestamps and
        visibilities are often 0 (take times from the geometry file by `frame_id`).

    Raises:
        DecodeError: Empty input, bytes protobuf rejects, a known field with the wrong wire
            type, or a message with no recognisable Sequence content.
    """
    if not data:
        raise DecodeError("annotation: the file is empty (0 bytes), so it holds no Sequence")
    sequence = _parse(pb.Sequence, data, "annotation")
    top_level = unknown_fields.UnknownFieldSet(sequence)
    if len(top_level):
        # Sequence has exactly two fields; anything else at the top means these are not
        # annotation bytes (the sub-messages may legally carry fields newer than the schema).
        numbers = sorted({field.field_number for field in top_level})
        raise DecodeError(
            f"annotation: not a Sequence: top-level field number(s) {numbers} are not "
            "1 (objects) or 2 (frame_annotations)"
        )
    if not sequence.objects and not sequence.frame_annotations:
        raise DecodeError(f"annotation: {len(data)} bytes decode to a Sequence with no content")
    problem = _wire_type_problem(sequence, data, "Sequence")
    if problem:
        raise DecodeError(f"annotation: corrupt field: {problem}")

    document = message_document(sequence)
    objects = [
        {
            "id": obj["id"],
            "category": obj["category"],
            "type": obj["type"],
            "rotation": obj["rotation"],
            "translation": obj["translation"],
            "scale": obj["scale"],
            "keypoints": [[k["x"], k["y"], k["z"]] for k in obj["keypoints"]],
            "method": obj["method"],
        }
        for obj in document["objects"]
    ]
    frames = [
        {
            "frame_id": frame["frame_id"],
            "timestamp": frame["timestamp"],
            "objects": [_object_annotation(annotation) for annotation in frame["annotations"]],
            "camera": None if frame["camera"] is None else _camera(frame["camera"]),
            # The supporting plane (the table or floor), when the annotator recorded one.
            "plane_center": frame["plane_center"] or None,
            "plane_normal": frame["plane_normal"] or None,
        }
        for frame in document["frame_annotations"]
    ]
    if lossless:
        return {"objects": objects, "frames": frames, "sequence": document}
    return {"objects": objects, "frames": frames}


# A geometry frame without a camera: every camera value is None (keys in the output's order).
_NO_CAMERA: dict[str, Any] = dict.fromkeys(
    (
        "tracking_state",
        "camera_transform",
        "intrinsics",
        "projection_matrix",
        "view_matrix",
        "image_width",
        "image_height",
    )
)


def decode_geometry(data: bytes, *, points: bool = False, lossless: bool = False) -> dict[str, Any]:
    """Decode an AR metadata file (`geometry.pbdata`: length-framed `ARFrame` records).

    The flattened view holds the timestamp and the camera of each frame (with `points`, also
    its raw feature points); `lossless` adds every other field too.

    Args:
        data: The whole file.
        points: Add `"raw_feature_points": {"count", "point" (an n x 3 float64 array, world
            coordinates), "identifier"}` to each frame (None where the record has none).
        lossless: Add `"records"`: every record as `ARFrame` with every field of the official
            schema (tasks/objectron/lossless.py); the JSON twins have it.

    Returns:
        `{"frames": [...]}`, one entry per record in file order: `{"timestamp",
        "tracking_state", "camera_transform" (16), "intrinsics" (9), "projection_matrix" (16),
        "view_matrix" (16), "image_width", "image_height"}`. A frame without a camera has None
        for every camera value; a frame without a timestamp has None there.

    Raises:
        DecodeError: Empty input (a 0-byte placeholder), a record cut short, a record protobuf
            rejects, or a known field with the wrong wire type; the message names the record
            and its byte offset.
    """
    if not data:
        raise DecodeError("geometry: the file is empty (0 bytes), so it holds no ARFrame")
    try:
        records = pb.split_geometry_records(data)
    except ValueError as exc:
        raise DecodeError(f"geometry: {exc}") from exc

    frames: list[dict[str, Any]] = []
    mirror: list[dict[str, Any]] = []
    to_document = lossless_converter(pb.ARFrame.DESCRIPTOR)
    offset = 0
    for index, record in enumerate(records):
        where = f"geometry record {index} (byte offset {offset})"
        frame = _parse(pb.ARFrame, record, where)
        problem = _wire_type_problem(frame, record, "ARFrame", _GEOMETRY_UNCHECKED)
        if problem:
            raise DecodeError(f"{where}: corrupt field: {problem}")
        document = to_document(frame)
        mirror.append(document)
        frames.append(_flat_frame(document, points))
        offset += pb.RECORD_HEADER.size + len(record)
    return {"frames": frames, "records": mirror} if lossless else {"frames": frames}


def _flat_frame(record: dict[str, Any], points: bool) -> dict[str, Any]:
    """One frame of the flattened view, from its record's lossless document."""
    extra = {"raw_feature_points": _feature_points(record)} if points else {}
    camera = record["camera"]
    if camera is None:
        return {"timestamp": record["timestamp"], **_NO_CAMERA, **extra}
    return {
        "timestamp": record["timestamp"],
        "tracking_state": camera["tracking_state"],
        "camera_transform": camera["transform"],
        "intrinsics": camera["intrinsics"],
        "projection_matrix": camera["projection_matrix"],
        "view_matrix": camera["view_matrix"],
        "image_width": camera["image_resolution_width"],
        "image_height": camera["image_resolution_height"],
        **extra,
    }


def _feature_points(record: dict[str, Any]) -> dict[str, Any] | None:
    """ARKit's sparse point cloud of one frame, world coordinates (an `n x 3` float64 array; an
    absent coordinate is protobuf's default 0), with the points' stable ids."""
    cloud = record["raw_feature_points"]
    if cloud is None:
        return None
    point = cloud["point"]
    if not isinstance(point, np.ndarray):  # read message by message: absent values are None
        rows = [[0.0 if c is None else c for c in p] for p in point]
        point = np.array(rows, dtype=np.float64).reshape(-1, 3)
    return {"count": cloud["count"], "point": point, "identifier": cloud["identifier"]}
