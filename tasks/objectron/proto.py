"""Protobuf message classes for Objectron's annotation and AR-metadata files, built at import time.

Objectron ships `.proto` files, not Python modules, and generated `_pb2` modules are tied to the
protoc and protobuf versions that made them. Describing the messages here with protobuf's
descriptor API keeps the project free of protoc (at build and at run time) and of generated
code, while parsing still goes through protobuf's own (upb) decoder: there is no hand-written
wire-format code in this project.

Two packages, as docs/objectron.md lists them (field numbers, types and packing are wire facts
and must match the files in gs://objectron exactly; names only matter to this module):

- `xeno.pursuit.proto` (proto3, so repeated scalars are packed): `Sequence`, the content of an
  `annotations/CLASS/batch-I/J.pbdata` file, with `Object`, `KeyPoint`, `FrameAnnotation`,
  `ObjectAnnotation`, `AnnotatedKeyPoint`, `Point3D`, `NormalizedPoint2D`.
- `research.compvideo.arcapture` (proto2): `ARFrame`, one record of `geometry.pbdata`, with
  every message ARFrame reaches, with every field of Objectron's `a_r_capture_metadata.proto`:
  `ARCamera`, `AVDepthData` (and `AVCameraCalibrationData`), `ARLightEstimate`, `ARFaceAnchor`
  (`ARFaceGeometry`, `ARBlendShapeMap`), `ARPlaneAnchor` (`ARPlaneGeometry`), `ARPointCloud`,
  `CMMotionManagerSnapshot` (`CMDeviceMotion`, `CMAccelerometerData`, `CMGyroData`,
  `CMMagnetometerData`, `CMVector`, `CMCalibratedMagneticField`). The lossless JSON twins
  (tasks/objectron/lossless.py) carry every one of them.

The messages live in a private `DescriptorPool`, so they cannot clash with another copy of the
same schema registered in the default pool (for example Objectron's own generated modules).

`geometry.pbdata` is not one message but a sequence of records, each a 4-byte little-endian
length and one serialized `ARFrame`; `split_geometry_records` and `join_geometry_records`
handle that framing.
"""

from __future__ import annotations

import importlib.resources
import struct
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.protobuf import descriptor, descriptor_pool, message_factory

if TYPE_CHECKING:
    from google.protobuf import descriptor_pb2

__all__ = [
    "ARCamera",
    "ARFaceAnchor",
    "ARFrame",
    "ARLightEstimate",
    "ARPlaneAnchor",
    "ARPlaneGeometry",
    "ARPointCloud",
    "AVDepthData",
    "AnnotatedKeyPoint",
    "CMMotionManagerSnapshot",
    "EulerAngles",
    "FrameAnnotation",
    "KeyPoint",
    "NormalizedPoint2D",
    "Object",
    "ObjectAnnotation",
    "PlaneVector",
    "Point",
    "Point3D",
    "Sequence",
    "join_geometry_records",
    "split_geometry_records",
]

ANNOTATION_PACKAGE = "xeno.pursuit.proto"
ARCAPTURE_PACKAGE = "research.compvideo.arcapture"

# Size of the little-endian unsigned length prefix of each geometry.pbdata record.
RECORD_HEADER = struct.Struct("<I")

# FieldDescriptor has FieldDescriptorProto's type and label numbers: using it here keeps
# protobuf's descriptor_pb2 (~10 MiB of memory) out of processes that only parse files, such as
# the decode workers. The schema is built from the definitions below only to write
# `schema.binpb`; at import it is loaded from that file.
_FD = descriptor.FieldDescriptor
_DOUBLE = _FD.TYPE_DOUBLE
_FLOAT = _FD.TYPE_FLOAT
_INT32 = _FD.TYPE_INT32
_INT64 = _FD.TYPE_INT64
_BOOL = _FD.TYPE_BOOL
_STRING = _FD.TYPE_STRING
_BYTES = _FD.TYPE_BYTES
_ENUM = _FD.TYPE_ENUM
_MESSAGE = _FD.TYPE_MESSAGE


def _message(
    container: descriptor_pb2.FileDescriptorProto | descriptor_pb2.DescriptorProto,
    name: str,
    fields: list[tuple[Any, ...]] | None = None,
) -> descriptor_pb2.DescriptorProto:
    """Add a message type to a file (or a nested type to a message) and return it.

    Each entry of `fields` is the positional arguments of `_field` after the message.
    """
    from google.protobuf import descriptor_pb2

    if isinstance(container, descriptor_pb2.FileDescriptorProto):
        message = container.message_type.add(name=name)
    else:
        message = container.nested_type.add(name=name)
    for spec in fields or []:
        _field(message, *spec)
    return message


def _field(
    message: descriptor_pb2.DescriptorProto,
    name: str,
    number: int,
    type_: int,
    repeated: bool = False,
    type_name: str = "",
    packed: bool | None = None,
    default: str | None = None,
) -> None:
    """Add one field. `type_name` is fully qualified with a leading dot, as descriptors need."""
    field = message.field.add(name=name, number=number, type=type_)
    field.label = _FD.LABEL_REPEATED if repeated else _FD.LABEL_OPTIONAL
    if type_name:
        field.type_name = type_name
    if packed is not None:
        # Only set where the .proto says `[packed = true]`: proto2 defaults to unpacked, and
        # the packing decides the bytes a writer produces (readers accept both forms).
        field.options.packed = packed
    if default is not None:
        field.default_value = default


def _enum(message: descriptor_pb2.DescriptorProto, name: str, values: list[str]) -> None:
    """Add a nested enum whose values are numbered 0, 1, 2, ... in the order given."""
    enum = message.enum_type.add(name=name)
    for number, value in enumerate(values):
        enum.value.add(name=value, number=number)


def _arcapture_file() -> descriptor_pb2.FileDescriptorProto:
    """`a_r_capture_metadata.proto`: proto2, the AR session data of geometry.pbdata."""
    from google.protobuf import descriptor_pb2

    pkg = f".{ARCAPTURE_PACKAGE}"
    f = descriptor_pb2.FileDescriptorProto(
        name="a_r_capture_metadata.proto", package=ARCAPTURE_PACKAGE, syntax="proto2"
    )
    xyz = [("x", 1, _FLOAT), ("y", 2, _FLOAT), ("z", 3, _FLOAT)]
    uv = [("u", 1, _FLOAT), ("v", 2, _FLOAT)]

    calibration = _message(f, "AVCameraCalibrationData")
    _field(calibration, "intrinsic_matrix", 1, _FLOAT, repeated=True, packed=True)
    _field(calibration, "intrinsic_matrix_reference_dimension_width", 2, _FLOAT)
    _field(calibration, "intrinsic_matrix_reference_dimension_height", 3, _FLOAT)
    _field(calibration, "extrinsic_matrix", 4, _FLOAT, repeated=True, packed=True)
    _field(calibration, "pixel_size", 5, _FLOAT)
    _field(calibration, "lens_distortion_lookup_values", 6, _FLOAT, repeated=True, packed=True)
    _field(
        calibration, "inverse_lens_distortion_lookup_values", 7, _FLOAT, repeated=True, packed=True
    )
    _field(calibration, "lens_distortion_center_x", 8, _FLOAT)
    _field(calibration, "lens_distortion_center_y", 9, _FLOAT)

    depth = _message(f, "AVDepthData")
    _enum(depth, "Accuracy", ["UNDEFINED_ACCURACY", "RELATIVE", "ABSOLUTE"])
    _enum(depth, "Quality", ["UNDEFINED_QUALITY", "HIGH", "LOW"])
    dep = f"{pkg}.AVDepthData"
    _field(depth, "depth_data_map", 1, _BYTES)
    _field(depth, "depth_data_type", 2, _STRING)
    _field(depth, "depth_data_accuracy", 3, _ENUM, type_name=f"{dep}.Accuracy", default="RELATIVE")
    _field(depth, "depth_data_filtered", 4, _BOOL)
    _field(depth, "depth_data_quality", 5, _ENUM, type_name=f"{dep}.Quality")
    _field(
        depth, "camera_calibration_data", 6, _MESSAGE, type_name=f"{pkg}.AVCameraCalibrationData"
    )
    _field(depth, "depth_data_map_original_minimum_value", 7, _FLOAT)
    _field(depth, "depth_data_map_original_maximum_value", 8, _FLOAT)
    _field(depth, "depth_data_map_width", 9, _INT32)
    _field(depth, "depth_data_map_height", 10, _INT32)
    _field(depth, "depth_data_map_raw_values", 11, _BYTES)

    light = _message(f, "ARLightEstimate")
    _message(light, "DirectionVector", xyz)
    _field(light, "ambient_intensity", 1, _DOUBLE)
    _field(light, "ambient_color_temperature", 2, _DOUBLE)
    _field(light, "spherical_harmonics_coefficients", 3, _FLOAT, repeated=True, packed=True)
    _field(
        light, "primary_light_direction", 4, _MESSAGE,
        type_name=f"{pkg}.ARLightEstimate.DirectionVector",
    )  # fmt: skip
    _field(light, "primary_light_intensity", 5, _FLOAT)

    for surface in ("ARFaceGeometry", "ARPlaneGeometry"):
        geometry = _message(f, surface)
        _message(geometry, "Vertex", xyz)
        _message(geometry, "TextureCoordinate", uv)
        vertex, texture = f"{pkg}.{surface}.Vertex", f"{pkg}.{surface}.TextureCoordinate"
        _field(geometry, "vertices", 1, _MESSAGE, repeated=True, type_name=vertex)
        _field(geometry, "vertex_count", 2, _INT32)
        _field(geometry, "texture_coordinates", 3, _MESSAGE, repeated=True, type_name=texture)
        _field(geometry, "texture_coordinate_count", 4, _INT32)
        _field(geometry, "triangle_indices", 5, _INT32, repeated=True, packed=True)
        _field(geometry, "triangle_count", 6, _INT32)
        if surface == "ARPlaneGeometry":
            _field(geometry, "boundary_vertices", 7, _MESSAGE, repeated=True, type_name=vertex)
            _field(geometry, "boundary_vertex_count", 8, _INT32)

    blend = _message(f, "ARBlendShapeMap")
    _message(
        blend, "MapEntry",
        [("blend_shape_location", 1, _STRING), ("blend_shape_coefficient", 2, _FLOAT)],
    )  # fmt: skip
    entry = f"{pkg}.ARBlendShapeMap.MapEntry"
    _field(blend, "entries", 1, _MESSAGE, repeated=True, type_name=entry)

    face = _message(f, "ARFaceAnchor")
    _field(face, "geometry", 1, _MESSAGE, type_name=f"{pkg}.ARFaceGeometry")
    _field(face, "blend_shapes", 2, _MESSAGE, type_name=f"{pkg}.ARBlendShapeMap")
    _field(face, "transform", 3, _FLOAT, repeated=True)  # not packed in the .proto
    _field(face, "is_tracked", 4, _BOOL)

    _message(f, "CMVector", [("x", 1, _DOUBLE), ("y", 2, _DOUBLE), ("z", 3, _DOUBLE)])
    vector = f"{pkg}.CMVector"
    magnetic = _message(f, "CMCalibratedMagneticField")
    _enum(magnetic, "CalibrationAccuracy", ["UNCALIBRATED", "LOW", "MEDIUM", "HIGH"])
    _field(magnetic, "field", 1, _MESSAGE, type_name=vector)
    _field(
        magnetic, "calibration_accuracy", 2, _ENUM,
        type_name=f"{pkg}.CMCalibratedMagneticField.CalibrationAccuracy",
    )  # fmt: skip
    motion = _message(f, "CMDeviceMotion")
    _message(
        motion, "Quaternion",
        [("x", 1, _DOUBLE), ("y", 2, _DOUBLE), ("z", 3, _DOUBLE), ("w", 4, _DOUBLE)],
    )  # fmt: skip
    _field(motion, "timestamp", 1, _DOUBLE)
    _field(motion, "attitude_quaternion", 2, _MESSAGE, type_name=f"{pkg}.CMDeviceMotion.Quaternion")
    _field(motion, "gravity", 3, _MESSAGE, type_name=vector)
    _field(motion, "user_acceleration", 4, _MESSAGE, type_name=vector)
    _field(motion, "magnetic_field", 5, _MESSAGE, type_name=f"{pkg}.CMCalibratedMagneticField")
    _field(motion, "rotation_rate", 6, _MESSAGE, type_name=vector)
    for name, value in (
        ("CMAccelerometerData", "acceleration"),
        ("CMGyroData", "rotation_rate"),
        ("CMMagnetometerData", "magnetic_field"),
    ):
        _message(f, name, [("timestamp", 1, _DOUBLE), (value, 2, _MESSAGE, False, vector)])
    _message(
        f,
        "CMMotionManagerSnapshot",
        [
            ("device_motion", 1, _MESSAGE, True, f"{pkg}.CMDeviceMotion"),
            ("accelerometer_data", 2, _MESSAGE, True, f"{pkg}.CMAccelerometerData"),
            ("gyro_data", 3, _MESSAGE, True, f"{pkg}.CMGyroData"),
            ("magnetometer_data", 4, _MESSAGE, True, f"{pkg}.CMMagnetometerData"),
        ],
    )

    camera = _message(f, "ARCamera")
    _enum(camera, "TrackingState", ["UNDEFINED_TRACKING_STATE", "UNAVAILABLE", "LIMITED", "NORMAL"])
    _enum(
        camera,
        "TrackingStateReason",
        [
            "UNDEFINED_TRACKING_STATE_REASON",
            "NONE",
            "INITIALIZING",
            "EXCESSIVE_MOTION",
            "INSUFFICIENT_FEATURES",
            "RELOCALIZING",
        ],
    )
    _message(camera, "EulerAngles", [("roll", 1, _FLOAT), ("pitch", 2, _FLOAT), ("yaw", 3, _FLOAT)])
    cam = f"{pkg}.ARCamera"
    # The defaults are those of Objectron's .proto; they only matter when a field is absent.
    _field(
        camera, "tracking_state", 1, _ENUM, type_name=f"{cam}.TrackingState", default="UNAVAILABLE"
    )
    _field(
        camera,
        "tracking_state_reason",
        2,
        _ENUM,
        type_name=f"{cam}.TrackingStateReason",
        default="NONE",
    )
    _field(camera, "transform", 3, _FLOAT, repeated=True, packed=True)
    _field(camera, "euler_angles", 4, _MESSAGE, type_name=f"{cam}.EulerAngles")
    _field(camera, "image_resolution_width", 5, _INT32)
    _field(camera, "image_resolution_height", 6, _INT32)
    _field(camera, "intrinsics", 7, _FLOAT, repeated=True, packed=True)
    _field(camera, "projection_matrix", 8, _FLOAT, repeated=True, packed=True)
    _field(camera, "view_matrix", 9, _FLOAT, repeated=True, packed=True)

    plane = _message(f, "ARPlaneAnchor")
    _enum(plane, "Alignment", ["UNDEFINED", "HORIZONTAL", "VERTICAL"])
    _enum(plane, "PlaneClassification", ["NONE", "WALL", "FLOOR", "CEILING", "TABLE", "SEAT"])
    _enum(plane, "PlaneClassificationStatus", ["UNKNOWN", "UNAVAILABLE", "UNDETERMINED", "KNOWN"])
    _message(plane, "PlaneVector", [("x", 1, _FLOAT), ("y", 2, _FLOAT), ("z", 3, _FLOAT)])
    anchor = f"{pkg}.ARPlaneAnchor"
    _field(plane, "identifier", 1, _STRING)
    # The one repeated float in this file that the .proto does NOT declare packed.
    _field(plane, "transform", 2, _FLOAT, repeated=True)
    _field(plane, "alignment", 3, _ENUM, type_name=f"{anchor}.Alignment")
    _field(plane, "geometry", 4, _MESSAGE, type_name=f"{pkg}.ARPlaneGeometry")
    _field(plane, "center", 5, _MESSAGE, type_name=f"{anchor}.PlaneVector")
    _field(plane, "extent", 6, _MESSAGE, type_name=f"{anchor}.PlaneVector")
    _field(plane, "classification_supported", 7, _BOOL)
    _field(plane, "classification", 8, _ENUM, type_name=f"{anchor}.PlaneClassification")
    _field(
        plane, "classification_status", 9, _ENUM, type_name=f"{anchor}.PlaneClassificationStatus"
    )

    cloud = _message(f, "ARPointCloud")
    _message(cloud, "Point", [("x", 1, _FLOAT), ("y", 2, _FLOAT), ("z", 3, _FLOAT)])
    _field(cloud, "count", 1, _INT32)
    _field(cloud, "point", 2, _MESSAGE, repeated=True, type_name=f"{pkg}.ARPointCloud.Point")
    _field(cloud, "identifier", 3, _INT64, repeated=True, packed=True)

    _message(
        f,
        "ARFrame",
        [
            ("timestamp", 1, _DOUBLE),
            ("depth_data", 2, _MESSAGE, False, f"{pkg}.AVDepthData"),
            ("depth_data_timestamp", 3, _DOUBLE),
            ("camera", 4, _MESSAGE, False, f"{pkg}.ARCamera"),
            ("light_estimate", 5, _MESSAGE, False, f"{pkg}.ARLightEstimate"),
            ("face_anchor", 6, _MESSAGE, False, f"{pkg}.ARFaceAnchor"),
            ("plane_anchor", 7, _MESSAGE, True, f"{pkg}.ARPlaneAnchor"),
            ("raw_feature_points", 8, _MESSAGE, False, f"{pkg}.ARPointCloud"),
            ("motion_manager_snapshot", 9, _MESSAGE, False, f"{pkg}.CMMotionManagerSnapshot"),
        ],
    )
    return f


def _object_file() -> descriptor_pb2.FileDescriptorProto:
    """`object.proto`: proto3, the annotated 3D objects (`Object`, `KeyPoint`)."""
    from google.protobuf import descriptor_pb2

    pkg = f".{ANNOTATION_PACKAGE}"
    f = descriptor_pb2.FileDescriptorProto(
        name="object.proto", package=ANNOTATION_PACKAGE, syntax="proto3"
    )
    _message(
        f,
        "KeyPoint",
        [
            ("x", 1, _FLOAT),
            ("y", 2, _FLOAT),
            ("z", 3, _FLOAT),
            ("confidence_radius", 4, _FLOAT),
            ("name", 5, _STRING),
            ("hidden", 6, _BOOL),
        ],
    )
    obj = _message(f, "Object")
    _enum(obj, "Type", ["UNDEFINED_TYPE", "BOUNDING_BOX", "SKELETON", "MESH"])
    _enum(obj, "Method", ["UNKNOWN_METHOD", "ANNOTATION", "AUGMENTATION"])
    # proto3 packs repeated scalars by default, so no packed option is set on these.
    _field(obj, "id", 1, _INT32)
    _field(obj, "category", 2, _STRING)
    _field(obj, "type", 3, _ENUM, type_name=f"{pkg}.Object.Type")
    _field(obj, "rotation", 4, _FLOAT, repeated=True)
    _field(obj, "translation", 5, _FLOAT, repeated=True)
    _field(obj, "scale", 6, _FLOAT, repeated=True)
    _field(obj, "keypoints", 7, _MESSAGE, repeated=True, type_name=f"{pkg}.KeyPoint")
    _field(obj, "method", 8, _ENUM, type_name=f"{pkg}.Object.Method")
    return f


def _annotation_file() -> descriptor_pb2.FileDescriptorProto:
    """`annotation_data.proto`: proto3, the per-video `Sequence` of annotations/*.pbdata."""
    from google.protobuf import descriptor_pb2

    pkg = f".{ANNOTATION_PACKAGE}"
    f = descriptor_pb2.FileDescriptorProto(
        name="annotation_data.proto",
        package=ANNOTATION_PACKAGE,
        syntax="proto3",
        dependency=["a_r_capture_metadata.proto", "object.proto"],
    )
    _message(f, "NormalizedPoint2D", [("x", 1, _FLOAT), ("y", 2, _FLOAT), ("depth", 3, _FLOAT)])
    _message(f, "Point3D", [("x", 1, _FLOAT), ("y", 2, _FLOAT), ("z", 3, _FLOAT)])
    _message(
        f,
        "AnnotatedKeyPoint",
        [
            ("id", 1, _INT32),
            ("point_3d", 2, _MESSAGE, False, f"{pkg}.Point3D"),
            ("point_2d", 3, _MESSAGE, False, f"{pkg}.NormalizedPoint2D"),
        ],
    )
    _message(
        f,
        "ObjectAnnotation",
        [
            ("object_id", 1, _INT32),
            ("keypoints", 2, _MESSAGE, True, f"{pkg}.AnnotatedKeyPoint"),
            ("visibility", 3, _FLOAT),
        ],
    )
    _message(
        f,
        "FrameAnnotation",
        [
            ("frame_id", 1, _INT32),
            ("annotations", 2, _MESSAGE, True, f"{pkg}.ObjectAnnotation"),
            ("camera", 3, _MESSAGE, False, f".{ARCAPTURE_PACKAGE}.ARCamera"),
            ("timestamp", 4, _DOUBLE),
            ("plane_center", 5, _FLOAT, True),
            ("plane_normal", 6, _FLOAT, True),
        ],
    )
    _message(
        f,
        "Sequence",
        [
            ("objects", 1, _MESSAGE, True, f"{pkg}.Object"),
            ("frame_annotations", 2, _MESSAGE, True, f"{pkg}.FrameAnnotation"),
        ],
    )
    return f


def split_geometry_records(data: bytes) -> list[bytes]:
    """Split a `geometry.pbdata` file into its serialized `ARFrame` records.

    Each record is a 4-byte little-endian unsigned length N followed by N bytes (this is not
    protobuf's varint-delimited framing). An empty input has no records.

    Args:
        data: The whole file.

    Returns:
        The records' message bytes, in file order, without their length prefixes.

    Raises:
        ValueError: The data ends inside a length prefix or inside a record; the message names
            the byte offset where the cut record starts.
    """
    view = memoryview(data)
    records: list[bytes] = []
    offset = 0
    while offset < len(view):
        remaining = len(view) - offset
        if remaining < RECORD_HEADER.size:
            raise ValueError(
                f"truncated geometry record {len(records)} at byte offset {offset}: "
                f"{remaining} byte(s) left, too few for the {RECORD_HEADER.size}-byte length"
            )
        (length,) = RECORD_HEADER.unpack_from(view, offset)
        start = offset + RECORD_HEADER.size
        if start + length > len(view):
            raise ValueError(
                f"truncated geometry record {len(records)} at byte offset {offset}: its length "
                f"says {length} bytes but only {len(view) - start} follow"
            )
        records.append(bytes(view[start : start + length]))
        offset = start + length
    return records


def join_geometry_records(records: Iterable[bytes]) -> bytes:
    """Frame serialized `ARFrame` messages as a `geometry.pbdata` file.

    Args:
        records: Serialized messages, in frame order.

    Returns:
        Each record prefixed by its length as a 4-byte little-endian unsigned integer.

    Raises:
        ValueError: A record is 4 GiB or larger and cannot be framed.
    """
    parts: list[bytes] = []
    for index, record in enumerate(records):
        if len(record) > 0xFFFFFFFF:
            raise ValueError(
                f"geometry record {index} is {len(record)} bytes, over the 4 GiB limit"
            )
        parts.append(RECORD_HEADER.pack(len(record)))
        parts.append(bytes(record))
    return b"".join(parts)


SCHEMA_FILE = "schema.binpb"


def serialized_schema() -> bytes:
    """The three schema files, built from the definitions above: each a serialized
    FileDescriptorProto, framed like geometry records (4-byte little-endian length)."""
    files = (_arcapture_file(), _object_file(), _annotation_file())
    return join_geometry_records(f.SerializeToString(deterministic=True) for f in files)


def _stored_schema() -> bytes:
    """`serialized_schema()` as stored beside this module (tests/test_objectron_proto.py checks
    that it is current). A missing file is an install without the package data: say so, rather
    than quietly build the schema here (that imports descriptor_pb2 into every decode worker,
    the memory the file exists to save)."""
    if __name__ == "__main__":
        return serialized_schema()  # regenerating the file: it may be missing or stale
    try:
        return (importlib.resources.files("tasks.objectron") / SCHEMA_FILE).read_bytes()
    except FileNotFoundError as exc:
        raise RuntimeError(
            f"tasks/objectron/{SCHEMA_FILE} is missing from this install of objectron-wds; "
            "reinstall the package (it is package data in pyproject.toml), or regenerate it with "
            "`python -m tasks.objectron.proto`"
        ) from exc


# A private pool: the default pool may already hold these names (Objectron's generated modules
# register them), and adding a second, different definition there would fail.
_POOL = descriptor_pool.DescriptorPool()
for _file in split_geometry_records(_stored_schema()):
    _POOL.AddSerializedFile(_file)


def _class(full_name: str) -> Any:
    """The message class for a fully qualified message name in the private pool."""
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(full_name))


# The classes are created at run time, so static checkers cannot know their fields; they are
# typed Any rather than `type[Message]` so that field access type-checks in callers.
_A = ANNOTATION_PACKAGE
_R = ARCAPTURE_PACKAGE
Sequence: Any = _class(f"{_A}.Sequence")
Object: Any = _class(f"{_A}.Object")
KeyPoint: Any = _class(f"{_A}.KeyPoint")
FrameAnnotation: Any = _class(f"{_A}.FrameAnnotation")
ObjectAnnotation: Any = _class(f"{_A}.ObjectAnnotation")
AnnotatedKeyPoint: Any = _class(f"{_A}.AnnotatedKeyPoint")
Point3D: Any = _class(f"{_A}.Point3D")
NormalizedPoint2D: Any = _class(f"{_A}.NormalizedPoint2D")

ARFrame: Any = _class(f"{_R}.ARFrame")
ARCamera: Any = _class(f"{_R}.ARCamera")
EulerAngles: Any = _class(f"{_R}.ARCamera.EulerAngles")
ARPlaneAnchor: Any = _class(f"{_R}.ARPlaneAnchor")
PlaneVector: Any = _class(f"{_R}.ARPlaneAnchor.PlaneVector")
ARPlaneGeometry: Any = _class(f"{_R}.ARPlaneGeometry")
ARPointCloud: Any = _class(f"{_R}.ARPointCloud")
Point: Any = _class(f"{_R}.ARPointCloud.Point")
ARLightEstimate: Any = _class(f"{_R}.ARLightEstimate")
AVDepthData: Any = _class(f"{_R}.AVDepthData")
ARFaceAnchor: Any = _class(f"{_R}.ARFaceAnchor")
CMMotionManagerSnapshot: Any = _class(f"{_R}.CMMotionManagerSnapshot")


if __name__ == "__main__":
    # `python -m tasks.objectron.proto PATH`: write the schema built from the definitions.
    Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name(SCHEMA_FILE)).write_bytes(
        serialized_schema()
    )
