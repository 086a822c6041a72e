"""The values of a synthetic AR capture: every number a sample video's geometry and annotation
hold (`sample_values`), and its feature point cloud (`feature_cloud`), deterministic in the seed.

Part of the sample dataset (tasks/objectron/sample_data.py). The numbers follow Objectron's
conventions: a landscape sensor camera orbiting a box that stands on the floor, 2D keypoints of
the upright portrait picture (docs/objectron.md).
"""

from __future__ import annotations

import math
import random
import struct
from dataclasses import dataclass

from tasks.objectron.box import UNIT_BOX

# Objectron's nine classes; a key's first part (CLASS/batch-I/J) is its object's category.
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

# The AR camera is the landscape sensor (its image_resolution); the videos and the 2D
# keypoints are the upright (portrait) picture, the sensor image turned 90 degrees clockwise.
SENSOR_WIDTH = 1920
SENSOR_HEIGHT = 1440
FPS = 30.0
# The part of the upright picture that every 2D keypoint of `sample_values` lies in, as
# (x_min, y_min, x_max, y_max), normalized: clear of the counter and the digits below it.
KEYPOINT_AREA = (0.05, 0.2, 0.95, 0.95)

Vector = tuple[float, float, float]
_FLOAT32 = struct.Struct("<f")


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


def seeded_rng(seed: int, *parts: str) -> random.Random:
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
    rng = seeded_rng(seed, key, "values")
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


BOX_POINTS = 24
FLOOR_POINTS = 24
# The share of the points ARKit reports in a frame (a different subset each frame).
POINTS_SEEN = 0.8


def feature_cloud(values: SampleValues, *, seed: int = 0) -> tuple[list[int], list[Vector]]:
    """The stable feature points of a sample video: ids and world positions (float32), on the
    faces of its box and on the floor (y = 0) within 1.5 m of it, some of them outside the
    picture of some frames."""
    rng = seeded_rng(seed, values.key, "feature-points")
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
