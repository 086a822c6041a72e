"""The protobuf writers of the sample dataset: `geometry.pbdata` (length-framed ARFrame records:
camera, feature points, a floor plane) and the annotation `Sequence`, from a capture's values
(tasks/objectron/sample_capture.py).
"""

from __future__ import annotations

from typing import Any

from tasks.objectron import proto as pb
from tasks.objectron.sample_capture import (
    POINTS_SEEN,
    SENSOR_HEIGHT,
    SENSOR_WIDTH,
    FrameValues,
    SampleValues,
    feature_cloud,
    seeded_rng,
)


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
    rng = seeded_rng(seed, values.key, "geometry")
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
