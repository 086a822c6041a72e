"""An Objectron-shaped sample dataset, written through the storage seam, for tests and demos.

The real bucket is 4.4 TB and slow to list; the pipeline's behaviour (listing, planning, shard
building, verification) depends only on its *layout* and on a few traps in it. This module
writes a small bucket or folder with the same layout (docs/objectron.md):

- `videos/CLASS/batch-I/J/video.MOV`, `geometry.pbdata`, `id.txt` for every video;
- `annotations/CLASS/batch-I/J.pbdata` for the annotated ones, whose names come from the real,
  vendored index files (including `book/batch-3/18`, annotated but in neither split);
- unannotated videos, named outside every index file, as the bucket has thousands of them;
- 0-byte placeholders (`video.MOV`, `geometry.pbdata`, `id.txt` all empty) like the bucket's
  non-public batches;
- the real index files, byte for byte, at `v1/index/NAME`.

`geometry.pbdata` and the annotations are real protobuf messages with plausible, deterministic
numbers in Objectron's conventions (a landscape sensor camera, 2D keypoints of the upright
portrait picture): `sample_values` returns the numbers for one video, so a test can check a
decoder against what was written. Each `video.MOV` is a real H.264 QuickTime video (PyAV and
libx264, 30 fps, 192x256 upright by default) whose frames show the annotated box drawn where
its 2D keypoints say and a frame counter that `read_frame_counter` reads back from the pixels,
so a test can check frames against labels; about half are stored landscape with a rotation tag,
as Objectron's are. Benchmarks that only move bytes can ask for random stand-in bytes instead
(`video_bytes`).

Traps, on by default: one video shorter than its annotation, one that does not decode, one
whose annotation names the wrong class (`SampleDataset` names them).

Everything is a pure function of the seed and the options, and writing is create-only: a rerun
with the same arguments skips every object that is already there with the same bytes, and an
object with different bytes is an error (never overwritten), so a sample dataset can be reused
and cannot be silently corrupted.
"""

from __future__ import annotations

import functools
import importlib.resources
import io
import math
import random
import struct
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

import av
import numpy
from PIL import Image, ImageDraw, ImageFont

from tasks.objectron import proto as pb
from tasks.objectron.box import EDGES, UNIT_BOX
from tasks.storage import AlreadyExists, Storage, StorageError

CLASSES: tuple[str, ...] = (
    "bike",
    "book",
    "bottle",
    "camera",
    "cereal_box",
    "chair",
    "cup",
    "laptop",
    "shoe",
)
SPLITS: tuple[str, ...] = ("", "_train", "_test")
# The 27 index files: CLASS_annotations, CLASS_annotations_train, CLASS_annotations_test.
INDEX_NAMES: tuple[str, ...] = tuple(f"{c}_annotations{s}" for c in CLASSES for s in SPLITS)
INDEX_PREFIX = "v1/index/"
# The one public, annotated video that is in neither split.
NO_SPLIT_KEY = "book/batch-3/18"

# The AR camera is the landscape sensor (its image_resolution); the videos and the 2D
# keypoints are the upright (portrait) picture, the sensor image turned 90 degrees clockwise.
SENSOR_WIDTH = 1920
SENSOR_HEIGHT = 1440
FPS = 30.0
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
# The part of the upright picture that every 2D keypoint of `sample_values` lies in, as
# (x_min, y_min, x_max, y_max), normalized: clear of the counter and the digits below it.
KEYPOINT_AREA = (0.05, 0.2, 0.95, 0.95)
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
# Objects are written by this many threads: on GCS each object is one or two round trips, and
# those (not CPU) dominate the run time.
WRITE_THREADS = 8
# Real index files stop at batch-51; names from these ranges are certainly in no index file.
UNANNOTATED_BATCHES = range(1001, 1100)
PLACEHOLDER_BATCHES = range(2001, 2100)

# A QuickTime `ftyp` box, so tools that sniff file types see the random videos as .MOV files.
_MOV_HEADER = b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00qt  "

Vector = tuple[float, float, float]
_FLOAT32 = struct.Struct("<f")


class SampleDataConflict(StorageError):
    """An object of the sample dataset exists already with different bytes."""


@dataclass(frozen=True)
class BoxValues:
    """The annotated object of a sample video (float32-representable numbers).

    Attributes:
        rotation: 3x3 row-major rotation, object to world.
        translation: Box centre in world coordinates (metres).
        scale: Box size along its own axes (metres).
        keypoints: The 9 keypoints in the object frame (`UNIT_BOX`), as [x, y, z].
    """

    rotation: list[float]
    translation: list[float]
    scale: list[float]
    keypoints: list[list[float]]


@dataclass(frozen=True)
class FrameValues:
    """One frame of a sample video: its camera and the box as seen from it.

    Matrices are row-major and flat, as the protobuf messages store them. Floats other than
    `timestamp` (a double on the wire) are float32-representable.

    Attributes:
        timestamp: Seconds, as ARKit reports them (time since device boot).
        transform: 4x4 camera-to-world transform.
        view_matrix: 4x4 world-to-camera transform (the inverse of `transform`).
        projection_matrix: 4x4 OpenGL-style projection for the image size.
        intrinsics: 3x3 pinhole intrinsics [fx, 0, cx, 0, fy, cy, 0, 0, 1] in pixels.
        euler_angles: (roll, pitch, yaw) in radians.
        keypoints_3d: The 9 box keypoints in camera coordinates (camera looks along -z).
        keypoints_2d: The 9 keypoints as [x, y, depth]: x, y normalized to [0, 1] (clamped),
            depth in metres in front of the camera.
        visibility: The annotation's visibility value.
    """

    timestamp: float
    transform: list[float]
    view_matrix: list[float]
    projection_matrix: list[float]
    intrinsics: list[float]
    euler_angles: list[float]
    keypoints_3d: list[list[float]]
    keypoints_2d: list[list[float]]
    visibility: float


@dataclass(frozen=True)
class SampleValues:
    """Every number written for one annotated video (`sample_values`)."""

    key: str
    category: str
    box: BoxValues
    frames: list[FrameValues]


@dataclass(frozen=True)
class SampleDataset:
    """What `write_sample_dataset` wrote, by role. Keys are `CLASS/batch-I/J`.

    Attributes:
        annotated: Videos with an annotation file, all named in the index files.
        unannotated: Complete videos without annotation, named in no index file.
        placeholders: Videos whose three objects are 0 bytes, named in no index file.
        no_split: Annotated videos that are in `CLASS_annotations` but in neither split.
        short_videos: Annotated videos whose `video.MOV` has fewer frames than their
            annotation and geometry (a trap: frames must never be shifted onto labels).
        corrupt_videos: Annotated videos whose `video.MOV` opens but does not decode.
        wrong_category: Annotated videos whose annotation names another class than the
            folder (as in Objectron issue #62; the folder name is the truth).
        rotated: Videos (annotated or not) stored landscape with a rotation tag
            (`stored_rotation` 90); empty with stand-in `video_bytes`.
        total_bytes: Size of all objects of the dataset (index files included).
        objects: Number of objects of the dataset.
        objects_written: Objects created by this call.
        objects_existing: Objects that were there already with the same bytes (skipped).
    """

    annotated: list[str]
    unannotated: list[str]
    placeholders: list[str]
    no_split: list[str]
    short_videos: list[str]
    corrupt_videos: list[str]
    wrong_category: list[str]
    rotated: list[str]
    total_bytes: int
    objects: int
    objects_written: int
    objects_existing: int


# --- index files ---------------------------------------------------------------------------


@functools.cache
def _vendored_index() -> tuple[tuple[str, bytes], ...]:
    folder = importlib.resources.files("tasks.objectron") / "index"
    return tuple((name, (folder / name).read_bytes()) for name in INDEX_NAMES)


def index_files() -> dict[str, bytes]:
    """The 27 vendored Objectron index files, exactly as published.

    Returns:
        File name (e.g. `book_annotations_test`) to content, in `INDEX_NAMES` order.
    """
    return dict(_vendored_index())


def parse_index(data: bytes) -> list[str]:
    """The video keys of one index file (one `CLASS/batch-I/J` a line; blank lines ignored).

    Args:
        data: The file's content; a missing final newline is fine (`book_annotations`).

    Returns:
        The keys in file order.
    """
    return [line.strip() for line in data.decode("ascii").splitlines() if line.strip()]


def all_index_keys() -> frozenset[str]:
    """Every key named in any of the 27 index files."""
    return frozenset(key for _, data in _vendored_index() for key in parse_index(data))


# --- deterministic numbers -----------------------------------------------------------------


def _f32(value: float) -> float:
    """`value` rounded to the nearest float32, as a Python float (what a float field stores)."""
    return float(_FLOAT32.unpack(_FLOAT32.pack(value))[0])


def _f32s(values: list[float]) -> list[float]:
    return [_f32(v) for v in values]


def _sub(a: Vector, b: Vector) -> Vector:
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2])


def _dot(a: Vector, b: Vector) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _cross(a: Vector, b: Vector) -> Vector:
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def _normalize(a: Vector) -> Vector:
    n = math.sqrt(_dot(a, a))
    return (a[0] / n, a[1] / n, a[2] / n)


def _rng(seed: int, *parts: str) -> random.Random:
    # A string seed is hashed with SHA-512 by `random`, so it is stable across processes and
    # Python runs (unlike hash()), and each (seed, key, purpose) gets an independent stream.
    return random.Random(":".join(["objectron-wds-sample", str(seed), *parts]))


def _matvec(matrix: list[float], columns: int, vector: list[float]) -> list[float]:
    """`matrix` (row-major, `columns` wide) times `vector`, rows as many as `vector` has."""
    return [
        sum(matrix[r * columns + c] * vector[c] for c in range(len(vector)))
        for r in range(len(vector))
    ]


def sample_values(key: str, *, seed: int = 0, frames: int = 12) -> SampleValues:
    """The numbers that `write_sample_dataset` writes for one annotated video.

    A camera orbits the annotated box at 30 fps, always looking at its centre, held upright
    (portrait), like the phones that recorded Objectron. The numbers follow Objectron's
    conventions (the common brief and docs/objectron.md):

    - the camera is the landscape sensor: `SENSOR_WIDTH` x `SENSOR_HEIGHT` (1920x1440),
      intrinsics and projection for sensor pixels, +X sensor-right, +Y sensor-up, looking
      down -Z; held in portrait, sensor -X is up in the world;
    - `keypoints_3d` are camera coordinates: `view[:3,:3] @ (R (scale * unit) + t) + view[:3,3]`,
      computed from the float32 values as written, so the box relation holds to float32
      precision for a reader who derives R_cam and t_cam from the files;
    - `keypoints_2d` are normalized to the upright (portrait) image, the sensor image turned 90
      degrees clockwise: `x = (H_s - v_s) / H_s`, `y = u_s / W_s` with
      `u_s = cx + fx X / -Z`, `v_s = cy - fy Y / -Z`, again from the float32 values.

    Distances are chosen so that the whole box stays inside `KEYPOINT_AREA` of the upright
    image in every frame (clear of the frame counter drawn at the top of the sample videos).

    Args:
        key: The video, `CLASS/batch-I/J`; its class is the object's category.
        seed: The dataset seed.
        frames: Number of frames.

    Returns:
        The values, with floats already rounded to float32 where the wire stores float32.
    """
    rng = _rng(seed, key, "values")
    category = key.split("/", 1)[0]

    scale = (rng.uniform(0.1, 0.5), rng.uniform(0.1, 0.5), rng.uniform(0.1, 0.5))
    # The box stands on the floor (y = 0), turned about the vertical axis.
    translation = (rng.uniform(-0.2, 0.2), scale[1] / 2, rng.uniform(-0.2, 0.2))
    phi = rng.uniform(-math.pi, math.pi)
    c, s = math.cos(phi), math.sin(phi)
    rotation = ((c, 0.0, s), (0.0, 1.0, 0.0), (-s, 0.0, c))
    box = BoxValues(
        rotation=_f32s([v for row in rotation for v in row]),
        translation=_f32s(list(translation)),
        scale=_f32s(list(scale)),
        keypoints=[_f32s(list(k)) for k in UNIT_BOX],
    )
    # Objectron's convention: world = rotation * (scale * keypoint) + translation, here from
    # the float32 numbers as written.
    world_points = [
        [
            w + t
            for w, t in zip(
                _matvec(box.rotation, 3, [u * d for u, d in zip(unit, box.scale, strict=True)]),
                box.translation,
                strict=True,
            )
        ]
        for unit in UNIT_BOX
    ]

    radius = rng.uniform(1.0, 1.6)
    height = rng.uniform(0.3, 0.8)
    theta0 = rng.uniform(-math.pi, math.pi)
    step = rng.uniform(0.01, 0.03)
    roll = rng.uniform(-0.05, 0.05)
    fx = fy = rng.uniform(1400.0, 1600.0)
    cx = SENSOR_WIDTH / 2 + rng.uniform(-4.0, 4.0)
    cy = SENSOR_HEIGHT / 2 + rng.uniform(-4.0, 4.0)
    near, far = 0.001, 1000.0
    projection = [
        2 * fx / SENSOR_WIDTH, 0.0, 1 - 2 * cx / SENSOR_WIDTH, 0.0,
        0.0, 2 * fy / SENSOR_HEIGHT, 2 * cy / SENSOR_HEIGHT - 1, 0.0,
        0.0, 0.0, -(far + near) / (far - near), -2 * far * near / (far - near),
        0.0, 0.0, -1.0, 0.0,
    ]  # fmt: skip
    intrinsics = _f32s([fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0])
    fx32, cx32, fy32, cy32 = intrinsics[0], intrinsics[2], intrinsics[4], intrinsics[5]
    # Timestamps are doubles on the wire; millisecond start times keep them short in JSON.
    start = round(rng.uniform(1000.0, 90000.0), 3)

    frame_values: list[FrameValues] = []
    for i in range(frames):
        theta = theta0 + i * step
        eye: Vector = (
            translation[0] + radius * math.sin(theta),
            height,
            translation[2] + radius * math.cos(theta),
        )
        # The camera looks along its -z axis, so +z points from the target to the eye.
        z_axis = _normalize(_sub(eye, translation))
        # Right and up of the portrait picture; the sensor's +X is portrait-down and its +Y
        # portrait-right (a proper rotation: (-up) x right = z).
        right = _normalize(_cross((0.0, 1.0, 0.0), z_axis))
        up = _cross(z_axis, right)
        x_axis: Vector = (-up[0], -up[1], -up[2])
        y_axis = right
        transform = [
            *(x_axis[0], y_axis[0], z_axis[0], eye[0]),
            *(x_axis[1], y_axis[1], z_axis[1], eye[1]),
            *(x_axis[2], y_axis[2], z_axis[2], eye[2]),
            *(0.0, 0.0, 0.0, 1.0),
        ]
        view = _f32s(
            [
                *(*x_axis, -_dot(x_axis, eye)),
                *(*y_axis, -_dot(y_axis, eye)),
                *(*z_axis, -_dot(z_axis, eye)),
                *(0.0, 0.0, 0.0, 1.0),
            ]
        )
        keypoints_3d: list[list[float]] = []
        keypoints_2d: list[list[float]] = []
        for point in world_points:
            cam = _f32s(
                [
                    sum(view[4 * r + k] * point[k] for k in range(3)) + view[4 * r + 3]
                    for r in range(3)
                ]
            )
            depth = -cam[2]
            u_sensor = cx32 + fx32 * cam[0] / depth
            v_sensor = cy32 - fy32 * cam[1] / depth
            keypoints_3d.append(cam)
            keypoints_2d.append(
                _f32s([(SENSOR_HEIGHT - v_sensor) / SENSOR_HEIGHT, u_sensor / SENSOR_WIDTH, depth])
            )
        pitch = -math.atan2(height - translation[1], radius)
        frame_values.append(
            FrameValues(
                timestamp=start + i / FPS,
                transform=_f32s(transform),
                view_matrix=view,
                projection_matrix=_f32s(projection),
                intrinsics=intrinsics,
                euler_angles=_f32s([roll, pitch, theta]),
                keypoints_3d=keypoints_3d,
                keypoints_2d=keypoints_2d,
                visibility=_f32(rng.uniform(0.6, 1.0)),
            )
        )
    return SampleValues(key=key, category=category, box=box, frames=frame_values)


def sample_frame_values(key: str, *, seed: int = 0, frames: int = 12) -> list[FrameValues]:
    """The per-frame numbers of one video; shorthand for `sample_values(...).frames`.

    Args:
        key: The video, `CLASS/batch-I/J`.
        seed: The dataset seed.
        frames: Number of frames.

    Returns:
        One `FrameValues` per frame, in frame order.
    """
    return sample_values(key, seed=seed, frames=frames).frames


# --- serialized files ----------------------------------------------------------------------


def _camera(frame: FrameValues) -> Any:
    roll, pitch, yaw = frame.euler_angles
    return pb.ARCamera(
        tracking_state=pb.ARCamera.NORMAL,
        tracking_state_reason=pb.ARCamera.NONE,
        transform=frame.transform,
        euler_angles=pb.EulerAngles(roll=roll, pitch=pitch, yaw=yaw),
        image_resolution_width=SENSOR_WIDTH,
        image_resolution_height=SENSOR_HEIGHT,
        intrinsics=frame.intrinsics,
        projection_matrix=frame.projection_matrix,
        view_matrix=frame.view_matrix,
    )


# Feature points of a sample video: this many on the box's faces and on the floor around it.
BOX_POINTS = 24
FLOOR_POINTS = 24
# The share of the points ARKit reports in a frame (a different subset each frame).
POINTS_SEEN = 0.8


def feature_cloud(values: SampleValues, *, seed: int = 0) -> tuple[list[int], list[Vector]]:
    """The stable feature points of a sample video: ids and world positions (float32), on the
    faces of its box and on the floor (y = 0) within 1.5 m of it, some of them outside the
    picture of some frames."""
    rng = _rng(seed, values.key, "feature-points")
    rotation, centre, scale = values.box.rotation, values.box.translation, values.box.scale
    points: list[Vector] = []
    for _ in range(BOX_POINTS):
        local = [rng.uniform(-0.5, 0.5) for _ in range(3)]
        local[rng.randrange(3)] = rng.choice((-0.5, 0.5))  # on a face
        scaled = [local[i] * scale[i] for i in range(3)]
        world = [
            sum(rotation[3 * r + c] * scaled[c] for c in range(3)) + centre[r] for r in range(3)
        ]
        points.append((_f32(world[0]), _f32(world[1]), _f32(world[2])))
    for _ in range(FLOOR_POINTS):
        angle, radius = rng.uniform(0, 2 * math.pi), rng.uniform(0.3, 1.5)
        points.append(
            (
                _f32(centre[0] + radius * math.cos(angle)),
                0.0,
                _f32(centre[2] + radius * math.sin(angle)),
            )
        )
    ids = [rng.getrandbits(63) for _ in points]
    return ids, points


def build_geometry(values: SampleValues, *, seed: int = 0) -> bytes:
    """A `geometry.pbdata` file for the values: one length-framed `ARFrame` per frame.

    Besides the camera, each frame carries its feature point cloud (a seeded subset of
    `feature_cloud`: stable ids, points on the box and on the floor) and one horizontal plane
    anchor (the floor), so the file exercises the packed and the unpacked repeated fields too.

    Args:
        values: From `sample_values`.
        seed: The dataset seed (for the point cloud and the plane identifier).

    Returns:
        The file's bytes.
    """
    rng = _rng(seed, values.key, "geometry")
    plane_id = f"{rng.getrandbits(128):032X}"
    ids, cloud = feature_cloud(values, seed=seed)
    records: list[bytes] = []
    for frame in values.frames:
        seen = [i for i in range(len(cloud)) if rng.random() < POINTS_SEEN]
        message = pb.ARFrame(
            timestamp=frame.timestamp,
            camera=_camera(frame),
            plane_anchor=[
                pb.ARPlaneAnchor(
                    identifier=plane_id,
                    transform=[1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1],
                    alignment=pb.ARPlaneAnchor.HORIZONTAL,
                    center=pb.PlaneVector(x=0.0, y=0.0, z=0.0),
                    extent=pb.PlaneVector(x=3.0, y=0.0, z=3.0),
                )
            ],
            raw_feature_points=pb.ARPointCloud(
                count=len(seen),
                point=[pb.Point(x=cloud[i][0], y=cloud[i][1], z=cloud[i][2]) for i in seen],
                identifier=[ids[i] for i in seen],
            ),
        )
        records.append(message.SerializeToString())
    return pb.join_geometry_records(records)


def build_annotation(values: SampleValues) -> bytes:
    """An `annotations/CLASS/batch-I/J.pbdata` file: one `Sequence` with one box.

    Args:
        values: From `sample_values`.

    Returns:
        The serialized `Sequence`.
    """
    obj = pb.Object(
        id=0,
        category=values.category,
        type=pb.Object.BOUNDING_BOX,
        rotation=values.box.rotation,
        translation=values.box.translation,
        scale=values.box.scale,
        keypoints=[pb.KeyPoint(x=x, y=y, z=z) for x, y, z in values.box.keypoints],
        method=pb.Object.ANNOTATION,
    )
    frame_annotations = []
    for frame_id, frame in enumerate(values.frames):
        keypoints = [
            pb.AnnotatedKeyPoint(
                id=index,
                point_3d=pb.Point3D(x=p3[0], y=p3[1], z=p3[2]),
                point_2d=pb.NormalizedPoint2D(x=p2[0], y=p2[1], depth=p2[2]),
            )
            for index, (p3, p2) in enumerate(
                zip(frame.keypoints_3d, frame.keypoints_2d, strict=True)
            )
        ]
        frame_annotations.append(
            pb.FrameAnnotation(
                frame_id=frame_id,
                annotations=[
                    pb.ObjectAnnotation(
                        object_id=0, keypoints=keypoints, visibility=frame.visibility
                    )
                ],
                camera=_camera(frame),
                timestamp=frame.timestamp,
            )
        )
    sequence = pb.Sequence(objects=[obj], frame_annotations=frame_annotations)
    return bytes(sequence.SerializeToString())


# --- videos --------------------------------------------------------------------------------


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
    return 90 if _rng(seed, key, "orientation").random() < 0.5 else 0


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
        rng = _rng(seed, key, "video")
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


def build_id_txt(key: str, *, seed: int = 0) -> bytes:
    """A small `id.txt`: a 32-digit hex identifier and a newline."""
    return f"{_rng(seed, key, 'id').getrandbits(128):032x}\n".encode("ascii")


# --- the dataset ---------------------------------------------------------------------------


def _choose_keys(
    seed: int, videos: int, unannotated: int, placeholders: int, include_no_split_video: bool
) -> tuple[list[str], list[str], list[str]]:
    """Pick annotated, unannotated and placeholder keys, deterministically from the seed."""
    rng = _rng(seed, "names")
    indexed = all_index_keys()
    pools = {
        (cls, split): parse_index(data)
        for name, data in _vendored_index()
        for cls, split in [_split_of(name)]
        if split
    }
    annotated: list[str] = [NO_SPLIT_KEY] if include_no_split_video and videos > 0 else []
    chosen = set(annotated)
    for slot in range(videos - len(annotated)):
        # Round-robin over the classes; every fifth video from the test split, like the 80/20
        # split of the real data, so even small datasets have both splits.
        cls = CLASSES[slot % len(CLASSES)]
        candidates = pools[(cls, "test" if slot % 5 == 4 else "train")]
        remaining = [key for key in candidates if key not in chosen]
        if not remaining:
            raise ValueError(f"videos={videos}: the index files have too few {cls} videos")
        key = rng.choice(remaining)
        chosen.add(key)
        annotated.append(key)

    def unindexed(count: int, batches: range) -> list[str]:
        keys: list[str] = []
        for slot in range(count):
            while True:
                cls = CLASSES[slot % len(CLASSES)]
                key = f"{cls}/batch-{rng.choice(batches)}/{rng.randrange(0, 60)}"
                # The batch ranges lie far above the real ones; the check makes sure anyway.
                if key not in chosen and key not in indexed:
                    break
            chosen.add(key)
            keys.append(key)
        return keys

    return (
        annotated,
        unindexed(unannotated, UNANNOTATED_BATCHES),
        unindexed(placeholders, PLACEHOLDER_BATCHES),
    )


def _split_of(index_name: str) -> tuple[str, str]:
    """`cup_annotations_test` -> ("cup", "test"); the full list gives split ""."""
    cls, _, split = index_name.partition("_annotations")
    return cls, split.lstrip("_")


def _write_one(storage: Storage, name: str, produce: Callable[[], bytes]) -> tuple[int, bool]:
    """Create `name` with the produced bytes; returns (size, created).

    An existing object with the same bytes is left alone (created False); one with different
    bytes raises SampleDataConflict.
    """
    data = produce()
    try:
        storage.create_bytes(name, data)
    except AlreadyExists:
        existing = storage.read_bytes(name)
        if existing != data:
            raise SampleDataConflict(
                f"{storage.url_for(name)} exists with different content ({len(existing)} bytes; "
                f"the sample dataset has {len(data)} bytes there): write to an empty location, "
                "or use the seed and options that made the existing data"
            ) from None
        return len(data), False
    return len(data), True


def _choose_traps(
    seed: int, annotated: list[str], frames: int, real_videos: bool
) -> tuple[list[str], list[str], list[str]]:
    """Pick the short-video, corrupt-video and wrong-category keys (one each, distinct).

    `book/batch-3/18` is never a trap, so that trap stays about one thing. The video traps need
    real videos (stand-in bytes decode for nobody) and, for the short one, 2 frames or more.
    """
    candidates = sorted(key for key in annotated if key != NO_SPLIT_KEY)
    _rng(seed, "traps").shuffle(candidates)
    short: list[str] = []
    corrupt: list[str] = []
    if real_videos:
        if frames >= 2 and candidates:
            short.append(candidates.pop())
        if candidates:
            corrupt.append(candidates.pop())
    wrong = [candidates.pop()] if candidates else []
    return short, corrupt, wrong


def short_video_frames(frames: int) -> int:
    """Frames in the video of the short-video trap: a third fewer than the annotation's."""
    return frames - max(1, frames // 3)


def wrong_category_for(key: str) -> str:
    """The category that the wrong-category trap writes for `key`: the next class's name."""
    cls = key.split("/", 1)[0]
    return CLASSES[(CLASSES.index(cls) + 1) % len(CLASSES)]


def write_sample_dataset(
    storage: Storage,
    *,
    videos: int = 24,
    seed: int = 0,
    video_bytes: int | None = None,
    frames: int = 12,
    video_size: str = DEFAULT_VIDEO_SIZE,
    placeholders: int = 2,
    unannotated: int = 3,
    include_no_split_video: bool = True,
    traps: bool = True,
) -> SampleDataset:
    """Write an Objectron-shaped dataset below `storage` (see the module docstring).

    Args:
        storage: Where to write; names are those of the real bucket (`videos/...`,
            `annotations/...`, `v1/index/...`).
        videos: Number of annotated videos (their names come from the index files, spread
            over the 9 classes; `book/batch-3/18` is one of them if included).
        seed: Chooses the names and every byte written.
        video_bytes: None (default): every `video.MOV` is a real H.264 video (`build_video`).
            A number: random stand-in bytes of 80-120 % of that size instead.
        frames: Frames per video, in `geometry.pbdata`, in the annotation and in the video
            (1 to 1024 for real videos).
        video_size: Upright `WIDTHxHEIGHT` of the real videos, e.g. `1440x1920`.
        placeholders: Number of videos whose three objects are 0 bytes.
        unannotated: Number of complete videos without an annotation.
        include_no_split_video: Make `book/batch-3/18` one of the annotated videos.
        traps: Make one short video, one corrupt video and one wrong category among the
            annotated videos (`SampleDataset` names them), when there are enough of them.

    Returns:
        The keys by role and the object counts.

    Raises:
        ValueError: A count is negative, `videos` exceeds what a class can supply, or
            `video_size` or `frames` is not possible for a real video.
        SampleDataConflict: An object exists with different bytes (nothing is overwritten;
            objects written before the conflict was found stay).
        StorageError: A write failed.
    """
    for option, value in [
        ("videos", videos),
        ("video_bytes", 0 if video_bytes is None else video_bytes),
        ("frames", frames),
        ("placeholders", placeholders),
        ("unannotated", unannotated),
    ]:
        if value < 0:
            raise ValueError(f"{option} must not be negative, got {value}")
    real_videos = video_bytes is None
    if real_videos:
        parse_video_size(video_size)
        if not 1 <= frames <= 2**COUNTER_BITS:
            raise ValueError(f"frames must be 1 to {2**COUNTER_BITS} for real videos, got {frames}")

    annotated, plain, empty = _choose_keys(
        seed, videos, unannotated, placeholders, include_no_split_video
    )
    short, corrupt, wrong = (
        _choose_traps(seed, annotated, frames, real_videos) if traps else ([], [], [])
    )
    split_keys = {
        key for name, data in _vendored_index() if _split_of(name)[1] for key in parse_index(data)
    }

    # Producers, not bytes: a large dataset is generated object by object in the writer
    # threads instead of being held in memory all at once.
    jobs: dict[str, Callable[[], bytes]] = {}
    for name, data in _vendored_index():
        jobs[f"{INDEX_PREFIX}{name}"] = functools.partial(bytes, data)
    for key in annotated + plain:
        folder = f"videos/{key}"
        jobs[f"{folder}/video.MOV"] = functools.partial(
            build_video,
            key,
            seed=seed,
            video_bytes=video_bytes,
            frames=frames,
            video_size=video_size,
            video_frames=short_video_frames(frames) if key in short else None,
            corrupt=key in corrupt,
        )
        jobs[f"{folder}/geometry.pbdata"] = functools.partial(_geometry_for, key, seed, frames)
        jobs[f"{folder}/id.txt"] = functools.partial(build_id_txt, key, seed=seed)
    for key in annotated:
        jobs[f"annotations/{key}.pbdata"] = functools.partial(
            _annotation_for, key, seed, frames, wrong_category_for(key) if key in wrong else None
        )
    for key in empty:
        for filename in ("video.MOV", "geometry.pbdata", "id.txt"):
            jobs[f"videos/{key}/{filename}"] = bytes
    ordered = sorted(jobs.items())

    results: list[tuple[int, bool]] = []
    if ordered:
        # The first object is written on this thread: a missing bucket or a permission error
        # then fails once, clearly, and a lazily created storage client exists before the
        # threads share it.
        results.append(_write_one(storage, *ordered[0]))
    with ThreadPoolExecutor(max_workers=WRITE_THREADS, thread_name_prefix="sample-data") as pool:
        futures = [pool.submit(_write_one, storage, name, produce) for name, produce in ordered[1:]]
        try:
            for future in as_completed(futures):
                results.append(future.result())
        except BaseException:
            for future in futures:
                future.cancel()
            raise

    written = sum(1 for _, created in results if created)
    return SampleDataset(
        annotated=sorted(annotated),
        unannotated=sorted(plain),
        placeholders=sorted(empty),
        no_split=sorted(key for key in annotated if key not in split_keys),
        short_videos=sorted(short),
        corrupt_videos=sorted(corrupt),
        wrong_category=sorted(wrong),
        rotated=sorted(
            key
            for key in annotated + plain
            if real_videos and stored_rotation(key, seed=seed) == 90
        ),
        total_bytes=sum(size for size, _ in results),
        objects=len(results),
        objects_written=written,
        objects_existing=len(results) - written,
    )


def _geometry_for(key: str, seed: int, frames: int) -> bytes:
    return build_geometry(sample_values(key, seed=seed, frames=frames), seed=seed)


def _annotation_for(key: str, seed: int, frames: int, category: str | None) -> bytes:
    values = sample_values(key, seed=seed, frames=frames)
    if category is not None:
        values = replace(values, category=category)
    return build_annotation(values)
