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

Videos are random bytes (nothing decodes them), but `geometry.pbdata` and the annotations are
real protobuf messages with plausible, deterministic numbers: `sample_values` returns the
numbers for one video, so a test can check a decoder against what was written.

Everything is a pure function of the seed and the options, and writing is create-only: a rerun
with the same arguments skips every object that is already there with the same bytes, and an
object with different bytes is an error (never overwritten), so a sample dataset can be reused
and cannot be silently corrupted.
"""

from __future__ import annotations

import functools
import importlib.resources
import math
import random
import struct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from tasks.objectron import proto as pb
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

IMAGE_WIDTH = 1440
IMAGE_HEIGHT = 1920
FPS = 30.0
# Objects are written by this many threads: on GCS each object is one or two round trips, and
# those (not CPU) dominate the run time.
WRITE_THREADS = 8
# Real index files stop at batch-51; names from these ranges are certainly in no index file.
UNANNOTATED_BATCHES = range(1001, 1100)
PLACEHOLDER_BATCHES = range(2001, 2100)

# Objectron's box keypoints in the object frame: the centre first, then the 8 corners.
UNIT_BOX: tuple[tuple[float, float, float], ...] = (
    (0.0, 0.0, 0.0),
    (-0.5, -0.5, -0.5),
    (-0.5, -0.5, 0.5),
    (-0.5, 0.5, -0.5),
    (-0.5, 0.5, 0.5),
    (0.5, -0.5, -0.5),
    (0.5, -0.5, 0.5),
    (0.5, 0.5, -0.5),
    (0.5, 0.5, 0.5),
)
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
        total_bytes: Size of all objects of the dataset (index files included).
        objects: Number of objects of the dataset.
        objects_written: Objects created by this call.
        objects_existing: Objects that were there already with the same bytes (skipped).
    """

    annotated: list[str]
    unannotated: list[str]
    placeholders: list[str]
    no_split: list[str]
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


def sample_values(key: str, *, seed: int = 0, frames: int = 12) -> SampleValues:
    """The numbers that `write_sample_dataset` writes for one annotated video.

    A camera orbits the annotated box at 30 fps, always looking at its centre; the frame
    values are derived from that geometry, so they are consistent with one another (the view
    matrix inverts the transform, the 2D keypoints are projections of the 3D ones).

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
    # Objectron's convention: world = rotation * (scale * keypoint) + translation.
    world_points: list[Vector] = []
    for k in UNIT_BOX:
        scaled: Vector = (k[0] * scale[0], k[1] * scale[1], k[2] * scale[2])
        world_points.append(
            (
                _dot(rotation[0], scaled) + translation[0],
                _dot(rotation[1], scaled) + translation[1],
                _dot(rotation[2], scaled) + translation[2],
            )
        )
    box = BoxValues(
        rotation=_f32s([v for row in rotation for v in row]),
        translation=_f32s(list(translation)),
        scale=_f32s(list(scale)),
        keypoints=[_f32s(list(k)) for k in UNIT_BOX],
    )

    radius = rng.uniform(1.2, 2.0)
    height = rng.uniform(0.3, 0.8)
    theta0 = rng.uniform(-math.pi, math.pi)
    step = rng.uniform(0.01, 0.03)
    roll = rng.uniform(-0.05, 0.05)
    fx = fy = rng.uniform(1400.0, 1600.0)
    cx = IMAGE_WIDTH / 2 + rng.uniform(-4.0, 4.0)
    cy = IMAGE_HEIGHT / 2 + rng.uniform(-4.0, 4.0)
    near, far = 0.001, 1000.0
    projection = [
        2 * fx / IMAGE_WIDTH, 0.0, 1 - 2 * cx / IMAGE_WIDTH, 0.0,
        0.0, 2 * fy / IMAGE_HEIGHT, 2 * cy / IMAGE_HEIGHT - 1, 0.0,
        0.0, 0.0, -(far + near) / (far - near), -2 * far * near / (far - near),
        0.0, 0.0, -1.0, 0.0,
    ]  # fmt: skip
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
        x_axis = _normalize(_cross((0.0, 1.0, 0.0), z_axis))
        y_axis = _cross(z_axis, x_axis)
        axes = (x_axis, y_axis, z_axis)
        transform = [
            *(x_axis[0], y_axis[0], z_axis[0], eye[0]),
            *(x_axis[1], y_axis[1], z_axis[1], eye[1]),
            *(x_axis[2], y_axis[2], z_axis[2], eye[2]),
            *(0.0, 0.0, 0.0, 1.0),
        ]
        view = [
            *(*x_axis, -_dot(x_axis, eye)),
            *(*y_axis, -_dot(y_axis, eye)),
            *(*z_axis, -_dot(z_axis, eye)),
            *(0.0, 0.0, 0.0, 1.0),
        ]
        keypoints_3d: list[list[float]] = []
        keypoints_2d: list[list[float]] = []
        for point in world_points:
            rel = _sub(point, eye)
            cam = [_dot(axis, rel) for axis in axes]
            depth = -cam[2]
            u = (cx + fx * cam[0] / depth) / IMAGE_WIDTH
            v = (cy - fy * cam[1] / depth) / IMAGE_HEIGHT
            keypoints_3d.append(_f32s(cam))
            keypoints_2d.append(_f32s([min(max(u, 0.0), 1.0), min(max(v, 0.0), 1.0), depth]))
        pitch = -math.atan2(height - translation[1], radius)
        frame_values.append(
            FrameValues(
                timestamp=start + i / FPS,
                transform=_f32s(transform),
                view_matrix=_f32s(view),
                projection_matrix=_f32s(projection),
                intrinsics=_f32s([fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]),
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
        image_resolution_width=IMAGE_WIDTH,
        image_resolution_height=IMAGE_HEIGHT,
        intrinsics=frame.intrinsics,
        projection_matrix=frame.projection_matrix,
        view_matrix=frame.view_matrix,
    )


def build_geometry(values: SampleValues, *, seed: int = 0) -> bytes:
    """A `geometry.pbdata` file for the values: one length-framed `ARFrame` per frame.

    Besides the camera, each frame carries a small feature point cloud and one horizontal
    plane anchor, so the file exercises the packed and the unpacked repeated fields too.

    Args:
        values: From `sample_values`.
        seed: The dataset seed (for the point cloud and the plane identifier).

    Returns:
        The file's bytes.
    """
    rng = _rng(seed, values.key, "geometry")
    plane_id = f"{rng.getrandbits(128):032X}"
    records: list[bytes] = []
    for frame in values.frames:
        points = [
            pb.Point(x=rng.uniform(-1, 1), y=rng.uniform(0, 1), z=rng.uniform(-1, 1))
            for _ in range(16)
        ]
        message = pb.ARFrame(
            timestamp=frame.timestamp,
            camera=_camera(frame),
            plane_anchor=[
                pb.ARPlaneAnchor(
                    identifier=plane_id,
                    transform=[1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1],
                    alignment=pb.ARPlaneAnchor.HORIZONTAL,
                    center=pb.PlaneVector(x=0.0, y=0.0, z=0.0),
                    extent=pb.PlaneVector(x=2.0, y=0.0, z=2.0),
                )
            ],
            raw_feature_points=pb.ARPointCloud(
                count=len(points),
                point=points,
                identifier=[rng.getrandbits(63) for _ in points],
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


def build_video(key: str, *, seed: int = 0, video_bytes: int = 256 * 1024) -> bytes:
    """Stand-in `video.MOV` bytes: a QuickTime `ftyp` box, then random bytes.

    Args:
        key: The video, `CLASS/batch-I/J`.
        seed: The dataset seed.
        video_bytes: The nominal size; each video is 80-120 % of it (deterministically).

    Returns:
        The bytes.
    """
    rng = _rng(seed, key, "video")
    size = round(video_bytes * rng.uniform(0.8, 1.2))
    body = rng.randbytes(max(0, size - len(_MOV_HEADER)))
    return (_MOV_HEADER + body)[:size]


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


def write_sample_dataset(
    storage: Storage,
    *,
    videos: int = 24,
    seed: int = 0,
    video_bytes: int = 256 * 1024,
    frames: int = 12,
    placeholders: int = 2,
    unannotated: int = 3,
    include_no_split_video: bool = True,
) -> SampleDataset:
    """Write an Objectron-shaped dataset below `storage` (see the module docstring).

    Args:
        storage: Where to write; names are those of the real bucket (`videos/...`,
            `annotations/...`, `v1/index/...`).
        videos: Number of annotated videos (their names come from the index files, spread
            over the 9 classes; `book/batch-3/18` is one of them if included).
        seed: Chooses the names and every byte written.
        video_bytes: Nominal `video.MOV` size; each is 80-120 % of it.
        frames: Frames per video, in `geometry.pbdata` and in the annotation.
        placeholders: Number of videos whose three objects are 0 bytes.
        unannotated: Number of complete videos without an annotation.
        include_no_split_video: Make `book/batch-3/18` one of the annotated videos.

    Returns:
        The keys by role and the object counts.

    Raises:
        ValueError: A count is negative, or `videos` exceeds what a class can supply.
        SampleDataConflict: An object exists with different bytes (nothing is overwritten;
            objects written before the conflict was found stay).
        StorageError: A write failed.
    """
    for option, value in [
        ("videos", videos),
        ("video_bytes", video_bytes),
        ("frames", frames),
        ("placeholders", placeholders),
        ("unannotated", unannotated),
    ]:
        if value < 0:
            raise ValueError(f"{option} must not be negative, got {value}")

    annotated, plain, empty = _choose_keys(
        seed, videos, unannotated, placeholders, include_no_split_video
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
            build_video, key, seed=seed, video_bytes=video_bytes
        )
        jobs[f"{folder}/geometry.pbdata"] = functools.partial(_geometry_for, key, seed, frames)
        jobs[f"{folder}/id.txt"] = functools.partial(build_id_txt, key, seed=seed)
    for key in annotated:
        jobs[f"annotations/{key}.pbdata"] = functools.partial(_annotation_for, key, seed, frames)
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
        total_bytes=sum(size for size, _ in results),
        objects=len(results),
        objects_written=written,
        objects_existing=len(results) - written,
    )


def _geometry_for(key: str, seed: int, frames: int) -> bytes:
    return build_geometry(sample_values(key, seed=seed, frames=frames), seed=seed)


def _annotation_for(key: str, seed: int, frames: int) -> bytes:
    return build_annotation(sample_values(key, seed=seed, frames=frames))
