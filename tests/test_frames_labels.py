"""tasks.frames.labels: the frame sample's JSON against a scene built here from first principles.

The scene (a camera orbiting two boxes) is written as real protobuf files and read back with the
project's decoders. Its 2D keypoints come from the sensor's pinhole model and Objectron's
upright convention (`x_up = H_s - v_s`, `y_up = u_s`), not from the code under test, so the
intrinsics that `frame_labels` writes must reproduce them on their own.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from tasks.frames.labels import (
    ImageInfo,
    camera_axes,
    frame_labels,
    is_turned,
    project,
    upright_intrinsics,
)
from tasks.objectron import proto as pb
from tasks.objectron.decode import decode_annotation, decode_geometry
from tasks.objectron.sample_data import UNIT_BOX

FRAMES = 8
FX, FY, CX, CY = 1490.0, 1510.0, 953.5, 725.25  # fx != fy and an off-centre point: swaps show
VIDEO = "book/batch-4/7"
SOURCES = {
    "video": {"url": "gs://objectron/videos/book/batch-4/7/video.MOV", "generation": "1"},
    "geometry": {"url": "gs://objectron/videos/book/batch-4/7/geometry.pbdata", "generation": "2"},
    "annotation": {"url": "gs://objectron/annotations/book/batch-4/7.pbdata", "generation": "3"},
}
# Frame 3 annotates only some keypoints of object 1; frame 5's record has no camera; frame 6's
# camera has no tracking state; frames 0-3 have a supporting plane.
SUBSET_FRAME, SUBSET_IDS = 3, [0, 2, 5, 8]
NO_CAMERA_FRAME = 5
NO_TRACKING_FRAME = 6
PLANE_FRAMES = range(4)


@dataclass(frozen=True)
class Box:
    id: int
    category: str
    rotation: np.ndarray  # 3x3, object to world
    translation: np.ndarray
    scale: np.ndarray

    def world_keypoints(self) -> list[np.ndarray]:
        return [self.rotation @ (self.scale * np.array(k)) + self.translation for k in UNIT_BOX]


def _turn_y(phi: float) -> np.ndarray:
    c, s = math.cos(phi), math.sin(phi)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


BOXES = [
    # The annotation's category is wrong for object 0 (it is in the `book` folder).
    Box(0, "cup", _turn_y(0.4), np.array([0.05, 0.15, -0.02]), np.array([0.3, 0.3, 0.2])),
    Box(1, "book", _turn_y(-1.1), np.array([-0.12, 0.05, 0.1]), np.array([0.2, 0.1, 0.25])),
]


def _camera_to_world(index: int, landscape_sensor: bool) -> np.ndarray:
    """Camera-to-world of frame `index`: orbiting the boxes and looking at them, rolled a
    little (so no axis is special), and a quarter turn more for a landscape sensor held
    upright, as a phone records Objectron's portrait videos."""
    theta = 0.3 + 0.05 * index
    eye = np.array([1.6 * math.sin(theta), 0.6, 1.6 * math.cos(theta)])
    z_axis = eye / np.linalg.norm(eye)  # the camera looks down -Z, at the origin
    x_axis = np.cross([0.0, 1.0, 0.0], z_axis)
    x_axis /= np.linalg.norm(x_axis)
    y_axis = np.cross(z_axis, x_axis)
    roll = 0.1 + (math.pi / 2 if landscape_sensor else 0.0)  # portrait hold of a landscape sensor
    c, s = math.cos(roll), math.sin(roll)
    x_axis, y_axis = c * x_axis + s * y_axis, -s * x_axis + c * y_axis
    transform = np.eye(4)
    transform[:3, 0], transform[:3, 1], transform[:3, 2], transform[:3, 3] = (
        x_axis,
        y_axis,
        z_axis,
        eye,
    )
    return transform


def _f32(values: Any) -> list[float]:
    return [float(v) for v in np.asarray(values, dtype=np.float32).reshape(-1)]


def _upright_normalized(
    point: np.ndarray, camera_width: int, camera_height: int, turned: bool
) -> tuple[float, float]:
    """The annotation's 2D keypoint: the sensor's pinhole model, then Objectron's upright
    convention when the image is the turned sensor image."""
    u_s = CX + FX * point[0] / -point[2]
    v_s = CY - FY * point[1] / -point[2]
    if turned:
        return (camera_height - v_s) / camera_height, u_s / camera_width
    return u_s / camera_width, v_s / camera_height


def build_scene(camera_width: int, camera_height: int, turned: bool) -> tuple[bytes, bytes]:
    """(annotation bytes, geometry bytes) of the scene seen by a camera of this resolution."""
    records = []
    frame_annotations = []
    for index in range(FRAMES):
        transform = _camera_to_world(index, landscape_sensor=camera_width > camera_height)
        view = np.linalg.inv(transform)
        camera = pb.ARCamera(
            transform=_f32(transform),
            image_resolution_width=camera_width,
            image_resolution_height=camera_height,
            intrinsics=_f32([FX, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0]),
            projection_matrix=_f32(np.eye(4)),
            view_matrix=_f32(view),
        )
        if index != NO_TRACKING_FRAME:
            camera.tracking_state = pb.ARCamera.NORMAL
        frame = pb.ARFrame(timestamp=100.0 + index / 30)
        if index != NO_CAMERA_FRAME:
            frame.camera.CopyFrom(camera)
        records.append(frame.SerializeToString())

        annotations = []
        for box in BOXES:
            ids = SUBSET_IDS if (index == SUBSET_FRAME and box.id == 1) else list(range(9))
            keypoints = []
            for keypoint_id in ids:
                world = box.world_keypoints()[keypoint_id]
                point = view[:3, :3] @ world + view[:3, 3]
                x, y = _upright_normalized(point, camera_width, camera_height, turned)
                keypoints.append(
                    pb.AnnotatedKeyPoint(
                        id=keypoint_id,
                        point_3d=pb.Point3D(x=point[0], y=point[1], z=point[2]),
                        point_2d=pb.NormalizedPoint2D(x=x, y=y, depth=-point[2]),
                    )
                )
            annotations.append(
                pb.ObjectAnnotation(object_id=box.id, keypoints=keypoints, visibility=0.75)
            )
        frame_annotation = pb.FrameAnnotation(
            frame_id=index, annotations=annotations, camera=camera, timestamp=0.0
        )
        if index in PLANE_FRAMES:
            frame_annotation.plane_center.extend([0.0, 0.0, 0.0])
            frame_annotation.plane_normal.extend([0.0, 1.0, 0.0])
        frame_annotations.append(frame_annotation)
    objects = [
        pb.Object(
            id=box.id,
            category=box.category,
            type=pb.Object.BOUNDING_BOX,
            rotation=_f32(box.rotation),
            translation=_f32(box.translation),
            scale=_f32(box.scale),
            keypoints=[pb.KeyPoint(x=k[0], y=k[1], z=k[2]) for k in UNIT_BOX],
            method=pb.Object.ANNOTATION,
        )
        for box in BOXES
    ]
    sequence = pb.Sequence(objects=objects, frame_annotations=frame_annotations)
    return sequence.SerializeToString(), pb.join_geometry_records(records)


def all_labels(
    camera: tuple[int, int], source: tuple[int, int], size: tuple[int, int], turned: bool
) -> list[dict[str, Any]]:
    annotation_bytes, geometry_bytes = build_scene(*camera, turned=turned)
    annotation = decode_annotation(annotation_bytes)
    geometry = decode_geometry(geometry_bytes)
    image = ImageInfo(size[0], size[1], source[0], source[1], 90 if turned else 0)
    return [
        frame_labels(
            video=VIDEO,
            class_name="book",
            split="train",
            frame_id=frame["frame_id"],
            annotation=annotation,
            frame=frame,
            geometry_frame=geometry["frames"][frame["frame_id"]],
            image=image,
            sources=SOURCES,
        )
        for frame in annotation["frames"]
    ]


# (camera resolution, upright decoded size, JPEG size, turned)
CASES = {
    # Objectron: a landscape sensor, a portrait video (stored landscape with a rotation tag).
    "turned-full": ((1920, 1440), (1440, 1920), (1440, 1920), True),
    "turned-480x640": ((1920, 1440), (1440, 1920), (480, 640), True),
    # 1440x1920 fitted into 257 wide: 257 x 342.67, rounded to 343: the axes scale differently.
    "turned-257x343": ((1920, 1440), (1440, 1920), (257, 343), True),
    # Camera and image of the same orientation: no axis swap.
    "landscape-full": ((1920, 1440), (1920, 1440), (1920, 1440), False),
    "landscape-640x480": ((1920, 1440), (1920, 1440), (640, 480), False),
    "portrait-480x640": ((1440, 1920), (1440, 1920), (480, 640), False),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_intrinsics_project_keypoints_3d_onto_keypoints_2d(
    case: tuple[tuple[int, int], tuple[int, int], tuple[int, int], bool],
) -> None:
    camera, source, size, turned = case
    assert is_turned(*camera, *size) is turned
    labels = all_labels(camera, source, size, turned)
    assert len(labels) == FRAMES
    checked = 0
    for sample in labels:
        intrinsics = sample["camera"]["intrinsics"]
        if sample["frame_id"] == NO_CAMERA_FRAME:
            assert intrinsics is None
            continue
        assert (sample["image"]["width"], sample["image"]["height"]) == size
        for obj in sample["objects"]:
            for p3, p2 in zip(obj["keypoints_3d"], obj["keypoints_2d"], strict=True):
                u, v = project(intrinsics, p3, turned=turned)
                # The contract says within a pixel; the scene is exact up to float32.
                assert abs(u - p2[0] * size[0]) < 0.01, (sample["key"], u, p2[0] * size[0])
                assert abs(v - p2[1] * size[1]) < 0.01, (sample["key"], v, p2[1] * size[1])
                checked += 1
    assert checked == (FRAMES - 1) * 18 - (9 - len(SUBSET_IDS))


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_box_pose_in_camera_gives_keypoints_3d(
    case: tuple[tuple[int, int], tuple[int, int], tuple[int, int], bool],
) -> None:
    labels = all_labels(*case)
    for sample in labels:
        for obj in sample["objects"]:
            if sample["frame_id"] == NO_CAMERA_FRAME:
                # No view matrix: the camera-frame pose is unknown; the size is not.
                assert obj["rotation"] is None and obj["translation"] is None
                assert obj["scale"] == pytest.approx(list(BOXES[obj["id"]].scale), rel=1e-6)
                continue
            rotation = np.array(obj["rotation"]).reshape(3, 3)
            assert rotation @ rotation.T == pytest.approx(np.eye(3), abs=1e-5)
            assert np.linalg.det(rotation) == pytest.approx(1.0, abs=1e-5)
            for keypoint_id, p3 in zip(obj["keypoint_ids"], obj["keypoints_3d"], strict=True):
                corner = np.array(obj["scale"]) * np.array(UNIT_BOX[keypoint_id])
                expected = rotation @ corner + np.array(obj["translation"])
                assert list(expected) == pytest.approx(p3, abs=1e-5), (sample["key"], keypoint_id)


def test_the_wrong_axis_convention_misses_by_far() -> None:
    """The projection check above can fail: the same labels read without the axis swap (or
    with the sensor's own intrinsics) land hundreds of pixels away."""
    labels = all_labels((1920, 1440), (1440, 1920), (480, 640), True)
    sample = labels[0]
    p3 = sample["objects"][0]["keypoints_3d"][1]
    p2 = sample["objects"][0]["keypoints_2d"][1]
    target = (p2[0] * 480, p2[1] * 640)
    u, v = project(sample["camera"]["intrinsics"], p3, turned=False)
    assert math.hypot(u - target[0], v - target[1]) > 20
    sensor = [FX / 3, 0.0, CX / 3, 0.0, FY / 3, CY / 3, 0.0, 0.0, 1.0]
    u, v = project(sensor, p3, turned=True)
    assert math.hypot(u - target[0], v - target[1]) > 20


def test_upright_intrinsics_by_hand() -> None:
    # Objectron's 1920x1440 sensor to its 480x640 records: s = 1/3 on both axes.
    k = upright_intrinsics([FX, 0, CX, 0, FY, CY, 0, 0, 1], 1920, 1440, 480, 640)
    assert k == pytest.approx([FY / 3, 0, (1440 - CY) / 3, 0, FX / 3, CX / 3, 0, 0, 1])
    k = upright_intrinsics([FX, 0, CX, 0, FY, CY, 0, 0, 1], 1920, 1440, 640, 480)
    assert k == pytest.approx([FX / 3, 0, CX / 3, 0, FY / 3, CY / 3, 0, 0, 1])
    # Per-axis factors when rounding made the aspect differ.
    k = upright_intrinsics([FX, 0, CX, 0, FY, CY, 0, 0, 1], 1920, 1440, 257, 343)
    assert k == pytest.approx(
        [FY * 257 / 1440, 0, (1440 - CY) * 257 / 1440, 0, FX * 343 / 1920, CX * 343 / 1920, 0, 0, 1]
    )
    assert camera_axes([1.0, 2.0, -3.0]) == (2.0, 1.0, 3.0)
    assert camera_axes([1.0, 2.0, -3.0], turned=False) == (1.0, -2.0, 3.0)
    with pytest.raises(ValueError, match="9 values"):
        upright_intrinsics([1.0, 2.0], 1920, 1440, 480, 640)
    with pytest.raises(ValueError, match="positive"):
        upright_intrinsics([FX, 0, CX, 0, FY, CY, 0, 0, 1], 1920, 0, 480, 640)


def test_fields_and_nulls() -> None:
    labels = all_labels((1920, 1440), (1440, 1920), (480, 640), True)
    keys = [
        "key", "video", "class", "split", "frame_id", "timestamp", "image", "camera", "objects",
        "plane", "sources",
    ]  # fmt: skip
    object_keys = [
        "id", "category", "keypoint_ids", "keypoints_2d", "keypoints_3d", "visibility",
        "rotation", "translation", "scale",
    ]  # fmt: skip
    for sample in labels:
        index = sample["frame_id"]
        assert list(sample) == keys
        assert sample["key"] == f"book/batch-4/7/{index:06d}"
        assert (sample["video"], sample["class"], sample["split"]) == (VIDEO, "book", "train")
        assert sample["timestamp"] == 100.0 + index / 30  # from geometry, not the annotation's 0
        assert sample["image"] == {
            "width": 480, "height": 640, "source_width": 1440, "source_height": 1920,
            "rotation": 90,
        }  # fmt: skip
        assert sample["sources"] == SOURCES
        assert list(sample["camera"]) == [
            "intrinsics", "extrinsics", "projection", "view", "tracking_state",
        ]  # fmt: skip
        camera = sample["camera"]
        if index == NO_CAMERA_FRAME:
            assert all(value is None for value in camera.values())
        else:
            assert camera["tracking_state"] == (None if index == NO_TRACKING_FRAME else "NORMAL")
            expected = _camera_to_world(index, landscape_sensor=True)
            assert camera["extrinsics"] == _f32(expected)  # as stored: camera-to-world
            assert camera["view"] == _f32(np.linalg.inv(expected))
            assert len(camera["projection"]) == 16
        if index in PLANE_FRAMES:
            assert sample["plane"] == {"center": [0.0, 0.0, 0.0], "normal": [0.0, 1.0, 0.0]}
        else:
            assert sample["plane"] is None
        assert [obj["id"] for obj in sample["objects"]] == [0, 1]
        for obj in sample["objects"]:
            assert list(obj) == object_keys
            assert obj["visibility"] == 0.75
            assert len(obj["keypoints_2d"]) == len(obj["keypoint_ids"])
        # The annotation's own category, even where it is wrong; `class` is the folder's.
        assert [obj["category"] for obj in sample["objects"]] == ["cup", "book"]
        subset = sample["objects"][1]["keypoint_ids"]
        assert subset == (SUBSET_IDS if index == SUBSET_FRAME else list(range(9)))
        json.dumps(sample, allow_nan=False)  # JSON-ready, no NaN


def test_an_object_missing_from_the_annotation_objects_has_null_pose() -> None:
    annotation_bytes, geometry_bytes = build_scene(1920, 1440, turned=True)
    annotation = decode_annotation(annotation_bytes)
    annotation["objects"] = annotation["objects"][:1]
    frame = annotation["frames"][0]
    sample = frame_labels(
        video=VIDEO,
        class_name="book",
        split=None,
        frame_id=0,
        annotation=annotation,
        frame=frame,
        geometry_frame=decode_geometry(geometry_bytes)["frames"][0],
        image=ImageInfo(480, 640, 1440, 1920, 90),
        sources=SOURCES,
    )
    assert sample["split"] is None
    second = sample["objects"][1]
    assert (second["category"], second["rotation"], second["scale"]) == (None, None, None)
    assert len(second["keypoints_3d"]) == 9


def test_a_misaligned_call_is_refused() -> None:
    annotation_bytes, geometry_bytes = build_scene(1920, 1440, turned=True)
    annotation = decode_annotation(annotation_bytes)
    with pytest.raises(ValueError, match="frame 2 were given the annotation of frame 1"):
        frame_labels(
            video=VIDEO,
            class_name="book",
            split="test",
            frame_id=2,
            annotation=annotation,
            frame=annotation["frames"][1],
            geometry_frame=decode_geometry(geometry_bytes)["frames"][2],
            image=ImageInfo(480, 640, 1440, 1920, 90),
            sources=SOURCES,
        )
