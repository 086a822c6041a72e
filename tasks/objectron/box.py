"""Objectron's 3D box: its 9 keypoints in the object frame and the 12 edges between them.

One definition for everything that makes or draws boxes (the sample videos, the frame labels,
the preview), taken from Objectron's `objectron/dataset/box.py`: keypoint 0 is the centre,
1-8 the corners of the unit cube, and a vertex in the world is
`rotation @ (scale * keypoint) + translation`.
"""

from __future__ import annotations

# The centre first, then the 8 corners: 1 (-,-,-), 2 (-,-,+), 3 (-,+,-), 4 (-,+,+),
# 5 (+,-,-), 6 (+,-,+), 7 (+,+,-), 8 (+,+,+).
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

# The 12 edges as pairs of keypoint indices (into UNIT_BOX): 4 along x, 4 along y, 4 along z.
EDGES: tuple[tuple[int, int], ...] = (
    (1, 5), (2, 6), (3, 7), (4, 8),
    (1, 3), (5, 7), (2, 4), (6, 8),
    (1, 2), (3, 4), (5, 6), (7, 8),
)  # fmt: skip
