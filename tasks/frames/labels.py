"""The labels of one frame sample (`KEY.json`), from the decoded annotation and geometry.

Objectron's AR camera is the landscape sensor (1920x1440, looking down -Z, +X sensor-right,
+Y sensor-up), while the labels' 2D keypoints and the written JPEG are the upright, portrait
image: the sensor image turned 90 degrees clockwise (`x_upright = H_sensor - v_sensor`,
`y_upright = u_sensor`, Objectron's geometry tutorial). A trainer wants intrinsics that work on
the JPEG it reads, so `camera.intrinsics` are rewritten for the JPEG's own pixel axes, and the
axes the 3D points are read in are fixed here, once (`camera_axes`, `project`):

- the image is the sensor image turned (a landscape camera, a portrait image: all of Objectron):
  the upright camera's axes are `(Y, X, -Z)`: right, down and forward in the upright image (a
  proper rotation of ARKit's camera axes);
- camera and image have the same orientation: `(X, -Y, -Z)` (right, down, forward again).

Then `u = K[0] * x / z + K[1] * y / z + K[2]`, `v = K[4] * y / z + K[5]`, in pixels of the JPEG,
with continuous coordinates whose origin is the top-left corner of the top-left pixel: scaling
to the JPEG multiplies focal lengths and principal point alike (`c' = c * s`, no half-pixel
shift), each axis by its own factor (JPEG side / sensor side), so rounding a side to whole
pixels moves nothing.

`keypoints_2d` and `keypoints_3d` are passed through exactly as annotated; the box pose is
turned into this frame's camera coordinates (ARKit's axes, like `keypoints_3d`) with the frame's
view matrix, so that `keypoints_3d[i] = rotation @ (scale * UNIT_BOX[keypoint_ids[i]]) +
translation` up to annotation noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "ImageInfo",
    "camera_axes",
    "feature_points",
    "frame_key",
    "frame_labels",
    "is_turned",
    "project",
    "upright_intrinsics",
]


@dataclass(frozen=True)
class ImageInfo:
    """The written JPEG and the frame it came from.

    Attributes:
        width: JPEG width in pixels.
        height: JPEG height in pixels.
        source_width: Width of the upright decoded frame (rotation applied, before resizing).
        source_height: Height of the upright decoded frame.
        rotation: Clockwise degrees applied to the stored frame to make it upright (0, 90,
            180 or 270).
    """

    width: int
    height: int
    source_width: int
    source_height: int
    rotation: int


def frame_key(video: str, frame_id: int) -> str:
    """The WebDataset key of a frame sample: `CLASS/batch-I/J/FFFFFF` (6 digits, so keys sort
    in frame order)."""
    return f"{video}/{frame_id:06d}"


def is_turned(camera_width: int, camera_height: int, width: int, height: int) -> bool:
    """Whether the image is the camera's sensor image turned by 90 degrees: one is portrait
    (taller than wide) and the other is not. True for all of Objectron (landscape sensor,
    portrait video)."""
    return (camera_height > camera_width) != (height > width)


def camera_axes(point_3d: Sequence[float], *, turned: bool = True) -> tuple[float, float, float]:
    """A point in ARKit camera coordinates, in the upright image's camera axes: right, down,
    forward (so a point in front of the camera has a positive third coordinate).

    Args:
        point_3d: `[X, Y, Z]` in ARKit's camera axes (+X sensor-right, +Y sensor-up, looking
            down -Z), as `keypoints_3d` holds them.
        turned: The image is the sensor image turned 90 degrees clockwise (`is_turned`).

    Returns:
        `(Y, X, -Z)` when turned, else `(X, -Y, -Z)`.
    """
    x, y, z = (float(c) for c in point_3d)
    if turned:
        return (y, x, -z)
    return (x, -y, -z)


def project(
    intrinsics: Sequence[float], point_3d: Sequence[float], *, turned: bool = True
) -> tuple[float, float]:
    """Project a camera-coordinate point with the written intrinsics: the module's convention,
    the one definition that tests and the README use.

    Args:
        intrinsics: `camera.intrinsics` of a frame sample (9, row-major).
        point_3d: A point in ARKit camera coordinates (`keypoints_3d` entry).
        turned: As for `camera_axes` (True for Objectron's portrait frames).

    Returns:
        `(u, v)` in the JPEG's pixels (origin at the top-left corner of the top-left pixel);
        `keypoints_2d[i][:2] * (width, height)` for an annotated keypoint.
    """
    x, y, z = camera_axes(point_3d, turned=turned)
    k = [float(v) for v in intrinsics]
    w = k[6] * x + k[7] * y + k[8] * z
    return ((k[0] * x + k[1] * y + k[2] * z) / w, (k[3] * x + k[4] * y + k[5] * z) / w)


def upright_intrinsics(
    intrinsics: Sequence[float], camera_width: int, camera_height: int, width: int, height: int
) -> list[float]:
    """The camera's intrinsics for an image of `width` x `height` pixels of the upright frame.

    Args:
        intrinsics: `[fx, 0, cx, 0, fy, cy, 0, 0, 1]` in sensor pixels, as ARKit stores them.
        camera_width: The camera's image resolution width (sensor pixels).
        camera_height: The camera's image resolution height.
        width: The target image's width (the JPEG).
        height: The target image's height.

    Returns:
        9 values, row-major, for `project` with `turned=is_turned(...)`. Turned (a landscape
        sensor, a portrait image): `[fy*sx, 0, (H_s - cy)*sx, 0, fx*sy, cx*sy, 0, 0, 1]` with
        `sx = width / H_s`, `sy = height / W_s`; same orientation: `[fx*sx, 0, cx*sx, 0,
        fy*sy, cy*sy, 0, 0, 1]` with `sx = width / W_s`, `sy = height / H_s`.

    Raises:
        ValueError: Not 9 intrinsics, or a size that is not positive.
    """
    if len(intrinsics) != 9:
        raise ValueError(f"intrinsics must be 9 values (3x3, row-major), got {len(intrinsics)}")
    if min(camera_width, camera_height, width, height) <= 0:
        raise ValueError(
            f"sizes must be positive, got camera {camera_width}x{camera_height}, "
            f"image {width}x{height}"
        )
    sensor = np.array(intrinsics, dtype=np.float64).reshape(3, 3)
    if is_turned(camera_width, camera_height, width, height):
        # Sensor normalized coordinates from upright ones: x_n = y_up, y_n = -x_up (with
        # x_n = X/-Z, y_n = -Y/-Z pointing down the sensor image); then upright pixels from
        # sensor pixels: x_up = H_s - v_s, y_up = u_s. Written as matrices so that any skew
        # ARKit might report lands where it belongs.
        normalized = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
        pixels = np.array([[0.0, -1.0, float(camera_height)], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
        scale = np.diag([width / camera_height, height / camera_width, 1.0])
        upright = scale @ pixels @ sensor @ normalized
    else:
        upright = np.diag([width / camera_width, height / camera_height, 1.0]) @ sensor
    return [float(v) + 0.0 for v in upright.reshape(9)]  # + 0.0: no -0.0 in the JSON


def _values(values: Sequence[float] | None, count: int) -> list[float] | None:
    """`values` as a list when it holds `count` numbers, else None: the decoders give an empty
    list for a repeated field the file does not have."""
    if values is None or len(values) != count:
        return None
    return [float(v) for v in values]


def _camera(geometry_frame: dict[str, Any], image: ImageInfo) -> dict[str, Any]:
    intrinsics = _values(geometry_frame.get("intrinsics"), 9)
    camera_width = geometry_frame.get("image_width")
    camera_height = geometry_frame.get("image_height")
    if intrinsics is not None and camera_width and camera_height:
        intrinsics = upright_intrinsics(
            intrinsics, camera_width, camera_height, image.width, image.height
        )
    else:
        intrinsics = None  # sensor pixels of an unknown sensor size: useless for the JPEG
    return {
        "intrinsics": intrinsics,
        "extrinsics": _values(geometry_frame.get("camera_transform"), 16),
        "projection": _values(geometry_frame.get("projection_matrix"), 16),
        "view": _values(geometry_frame.get("view_matrix"), 16),
        "tracking_state": geometry_frame.get("tracking_state"),
    }


def _box_in_camera(
    obj: dict[str, Any] | None, view: list[float] | None
) -> tuple[list[float] | None, list[float] | None, list[float] | None]:
    """rotation (9), translation (3) and scale (3) of the object's box in camera coordinates."""
    if obj is None:
        return None, None, None
    scale = _values(obj.get("scale"), 3)
    rotation_world = _values(obj.get("rotation"), 9)
    translation_world = _values(obj.get("translation"), 3)
    if view is None or rotation_world is None or translation_world is None:
        return None, None, scale
    view_matrix = np.array(view, dtype=np.float64).reshape(4, 4)
    turn = view_matrix[:3, :3]
    rotation = turn @ np.array(rotation_world).reshape(3, 3)
    translation = turn @ np.array(translation_world) + view_matrix[:3, 3]
    return (
        [float(v) for v in rotation.reshape(9)],
        [float(v) for v in translation],
        scale,
    )


def feature_points(
    cloud: dict[str, Any] | None,
    camera: dict[str, Any],
    geometry_frame: dict[str, Any],
    image: ImageInfo,
) -> dict[str, Any]:
    """The frame's raw feature points for its labels: `{"ids", "camera", "image"}`.

    `camera[i]` is the view matrix applied to the stored world point (ARKit camera axes, like
    `keypoints_3d`); `image[i]` is its place in the JPEG, normalized like `keypoints_2d`'s x and
    y (`project(intrinsics, camera[i]) / (width, height)`), or None for a point behind the
    camera or outside the image. No cloud: empty lists; no view matrix: `camera` and `image`
    None for every point; no intrinsics: `image` None for every point.
    """
    if cloud is None:
        return {"ids": [], "camera": [], "image": []}
    ids = [int(i) for i in cloud["identifier"]]
    world = np.array(cloud["point"], dtype=np.float64).reshape(-1, 3)
    view = camera["view"]
    if view is None:
        return {"ids": ids, "camera": [None] * len(world), "image": [None] * len(world)}
    view_matrix = np.array(view, dtype=np.float64).reshape(4, 4)
    in_camera = world @ view_matrix[:3, :3].T + view_matrix[:3, 3]
    intrinsics = camera["intrinsics"]
    turned = is_turned(
        geometry_frame.get("image_width") or 0,
        geometry_frame.get("image_height") or 0,
        image.width,
        image.height,
    )
    places: list[list[float] | None] = []
    for point in in_camera:
        if intrinsics is None or point[2] >= 0:  # ARKit's camera looks down -Z
            places.append(None)
            continue
        u, v = project(intrinsics, point, turned=turned)
        x, y = u / image.width, v / image.height
        places.append([x, y] if 0.0 <= x <= 1.0 and 0.0 <= y <= 1.0 else None)
    return {
        "ids": ids,
        "camera": [[float(c) + 0.0 for c in point] for point in in_camera],
        "image": places,
    }


def frame_labels(
    *,
    video: str,
    class_name: str,
    split: str | None,
    frame_id: int,
    annotation: dict[str, Any],
    frame: dict[str, Any],
    geometry_frame: dict[str, Any],
    image: ImageInfo,
    sources: dict[str, Any],
    points: bool = False,
) -> dict[str, Any]:
    """The `KEY.json` of one frame sample: every field present, None where the source has
    nothing (the contract in the README).

    Args:
        video: `CLASS/batch-I/J`.
        class_name: The class folder name: the label to trust (annotation categories can be
            wrong).
        split: `train`, `test` or None (in neither index file).
        frame_id: The annotated frame's id: frame `frame_id` of the decoded video.
        annotation: `decode_annotation(...)` of the video's annotation (its objects give each
            box's world pose and category).
        frame: The entry of `annotation["frames"]` with this frame id.
        geometry_frame: `decode_geometry(...)["frames"][frame_id]`: timestamp and camera.
        image: The JPEG's size, the upright source size and the rotation applied.
        sources: `{"video": {"url", "generation"}, "geometry": {...}, "annotation": {...}}`,
            written as given.
        points: Add `points` (`feature_points`) from `geometry_frame["raw_feature_points"]`
            (decode_geometry(..., points=True)).

    Returns:
        A JSON-ready dict in the contract's key order.

    Raises:
        ValueError: `frame` is not the annotation of `frame_id` (a misaligned call).
    """
    if frame.get("frame_id") != frame_id:
        raise ValueError(
            f"{video}: labels for frame {frame_id} were given the annotation of frame "
            f"{frame.get('frame_id')}"
        )
    camera = _camera(geometry_frame, image)
    objects_by_id = {obj["id"]: obj for obj in annotation.get("objects", [])}
    objects = []
    for entry in frame.get("objects", []):
        obj = objects_by_id.get(entry["object_id"])
        rotation, translation, scale = _box_in_camera(obj, camera["view"])
        objects.append(
            {
                "id": entry["object_id"],
                "category": obj.get("category") if obj is not None else None,
                "keypoint_ids": list(entry["keypoint_ids"]),
                "keypoints_2d": [list(point) for point in entry["keypoints_2d"]],
                "keypoints_3d": [list(point) for point in entry["keypoints_3d"]],
                "visibility": entry.get("visibility"),
                "rotation": rotation,
                "translation": translation,
                "scale": scale,
            }
        )
    center = frame.get("plane_center")
    normal = frame.get("plane_normal")
    plane = (
        None
        if center is None and normal is None
        else {"center": _values(center, 3), "normal": _values(normal, 3)}
    )
    labels = {
        "key": frame_key(video, frame_id),
        "video": video,
        "class": class_name,
        "split": split,
        "frame_id": frame_id,
        "timestamp": geometry_frame.get("timestamp"),
        "image": asdict(image),
        "camera": camera,
        "objects": objects,
        "plane": plane,
        "sources": sources,
    }
    if points:
        labels["points"] = feature_points(
            geometry_frame.get("raw_feature_points"), camera, geometry_frame, image
        )
    return labels
