"""tasks.frames.preview: box edges drawn where the labels put them; samples read from a tar."""

from __future__ import annotations

import io
import json
import os
import tarfile
from typing import Any

import pytest
import simplejpeg
from PIL import Image

from tasks.frames.preview import (
    BOX_COLOURS,
    EDGES,
    GAP,
    LABEL_HEIGHT,
    POINT_COLOUR,
    contact_sheet,
    preview_samples,
)
from tasks.objectron.sample_data import UNIT_BOX
from tasks.tar import TarStreamWriter

GREY = 128
WIDTH, HEIGHT = 480, 640
TILE = 240


def grey_jpeg(width: int = WIDTH, height: int = HEIGHT) -> bytes:
    pixels = bytearray([GREY]) * (width * height * 3)
    image = Image.frombytes("RGB", (width, height), bytes(pixels))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=95)
    return out.getvalue()


def box_keypoints(x: float = 0.5, y: float = 0.5, size: float = 1.0) -> list[list[float]]:
    """An oblique view of a box centred at (x, y): the 9 keypoints as [x, y, depth], x and y
    normalized."""
    return [
        [x + size * (0.25 * sx + 0.08 * sz), y + size * (0.2 * sy - 0.06 * sz), 2.0]
        for sx, sy, sz in (tuple(2 * c for c in corner) for corner in UNIT_BOX)
    ]


def labels(key: str, objects: list[tuple[list[int], list[list[float]]]]) -> dict[str, Any]:
    return {
        "key": key,
        "objects": [
            {"id": index, "keypoint_ids": ids, "keypoints_2d": [points[i] for i in ids]}
            for index, (ids, points) in enumerate(objects)
        ],
    }


def decode(sheet: bytes) -> Any:
    return simplejpeg.decode_jpeg(sheet, colorspace="RGB")


def colour_near(pixels: Any, x: float, y: float, colour: tuple[int, int, int]) -> bool:
    """Some pixel within 1 of (x, y) is close to `colour` (JPEG blurs a 2-pixel line)."""
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            pixel = pixels[round(y) + dy, round(x) + dx]
            if all(abs(int(p) - c) < 70 for p, c in zip(pixel, colour, strict=True)):
                return True
    return False


def greyish(pixels: Any, x: float, y: float) -> bool:
    """Every pixel within 1 of (x, y) is the frame's grey."""
    return all(
        all(abs(int(p) - GREY) < 25 for p in pixels[round(y) + dy, round(x) + dx])
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    )


def tile_origin(index: int, columns: int, cell_height: int) -> tuple[int, int]:
    return (
        GAP + (index % columns) * (TILE + GAP),
        GAP + (index // columns) * (cell_height + GAP),
    )


def edge_points(
    points: list[list[float]], a: int, b: int, origin: tuple[int, int], tile_height: int
) -> list[tuple[float, float]]:
    """Sheet pixels at 1/4, 1/2 and 3/4 along the edge a-b of a tile."""
    (ax, ay, _), (bx, by, _) = points[a], points[b]
    return [
        (
            origin[0] + (ax + t * (bx - ax)) * TILE,
            origin[1] + (ay + t * (by - ay)) * tile_height,
        )
        for t in (0.25, 0.5, 0.75)
    ]


def test_edges_are_objectrons_twelve() -> None:
    assert len(EDGES) == 12 and len(set(EDGES)) == 12
    for a, b in EDGES:
        # Each edge joins corners that differ along exactly one axis of the unit box.
        differing = [i for i in range(3) if UNIT_BOX[a][i] != UNIT_BOX[b][i]]
        assert len(differing) == 1, (a, b)
    assert {k for edge in EDGES for k in edge} == set(range(1, 9))


def test_sheet_has_the_edge_colour_where_the_edges_are() -> None:
    full = list(range(9))
    subset = [0, 1, 2, 5, 6]  # corners 1, 2, 5, 6: edges 1-5, 2-6, 1-2, 5-6 only
    points = box_keypoints()
    # Two small boxes apart from each other, for the frame with two objects.
    left, right = box_keypoints(0.27, 0.3, 0.5), box_keypoints(0.7, 0.7, 0.5)
    samples = [
        (grey_jpeg(), labels("book/batch-1/1/000000", [(full, points)])),
        (grey_jpeg(), labels("book/batch-1/1/000001", [(subset, points)])),
        # Two objects: the second in the second colour.
        (grey_jpeg(), labels("book/batch-1/2/000007", [(full, left), (full, right)])),
        # A frame without objects, and one of another size (a landscape JPEG).
        (grey_jpeg(), labels("book/batch-1/3/000000", [])),
        (grey_jpeg(640, 480), labels("book/batch-1/4/000002", [(full, points)])),
    ]
    columns = 3
    sheet = contact_sheet(samples, columns=columns, tile_width=TILE)
    pixels = decode(sheet)
    cell_height = TILE * HEIGHT // WIDTH + LABEL_HEIGHT
    assert pixels.shape == (GAP + 2 * (cell_height + GAP), GAP + columns * (TILE + GAP), 3)

    tile_heights = [320, 320, 320, 320, 180]
    drawn = {
        0: [(points, set(EDGES), BOX_COLOURS[0])],
        1: [(points, {(1, 5), (2, 6), (1, 2), (5, 6)}, BOX_COLOURS[0])],
        2: [(left, set(EDGES), BOX_COLOURS[0]), (right, set(EDGES), BOX_COLOURS[1])],
        3: [(points, set(), BOX_COLOURS[0])],
        4: [(points, set(EDGES), BOX_COLOURS[0])],
    }
    for index, objects in drawn.items():
        origin = tile_origin(index, columns, cell_height)
        for obj_points, edges, colour in objects:
            for a, b in EDGES:
                for x, y in edge_points(obj_points, a, b, origin, tile_heights[index]):
                    if (a, b) in edges:
                        assert colour_near(pixels, x, y, colour), (index, a, b, x, y)
                    else:
                        assert greyish(pixels, x, y), (index, a, b, x, y)
        # Away from the box the frame is untouched; the key strip under it holds text.
        assert greyish(pixels, origin[0] + 10, origin[1] + 10)
        strip = pixels[
            origin[1] + tile_heights[index] : origin[1] + tile_heights[index] + LABEL_HEIGHT,
            origin[0] : origin[0] + TILE,
        ]
        assert strip.max() > 150, index


def test_sheet_refuses_nothing_to_show() -> None:
    with pytest.raises(ValueError, match="at least one sample"):
        contact_sheet([])
    with pytest.raises(ValueError, match="columns"):
        contact_sheet([(grey_jpeg(), labels("a/b/c/000000", []))], columns=0)


def write_shard(samples: list[dict[str, bytes]]) -> bytes:
    out = io.BytesIO()
    writer = TarStreamWriter(out)
    writer.write_global_header({"comment": "spec sha256 0123"})
    for sample in samples:
        for name, data in sample.items():
            writer.add_bytes(name, data)
    writer.close()
    return out.getvalue()


def test_preview_samples_reads_the_first_pairs_of_a_stream() -> None:
    def sample(key: str, *members: str) -> dict[str, bytes]:
        content = {
            "jpg": f"jpeg of {key}".encode(),
            "json": json.dumps({"key": key}).encode(),
            "txt": b"other",
        }
        return {f"{key}.{member}": content[member] for member in members}

    shard = write_shard(
        [
            sample("book/batch-1/1/000003", "jpg", "json"),
            sample("book/batch-1/1/000000", "json"),  # no image: passed over
            sample("cup/batch-2/5/000011", "json", "txt", "jpg"),  # any member order
            sample("cup/batch-2/5/000012", "jpg", "json"),
            sample("cup/batch-2/5/000013", "jpg", "json"),
        ]
    )
    read, write = os.pipe()  # a stream that cannot seek, as a bucket read is
    with os.fdopen(write, "wb") as sink:
        sink.write(shard)
    with os.fdopen(read, "rb") as stream:
        got = preview_samples(stream, 3)
    assert [(jpg, labels["key"]) for jpg, labels in got] == [
        (b"jpeg of book/batch-1/1/000003", "book/batch-1/1/000003"),
        (b"jpeg of cup/batch-2/5/000011", "cup/batch-2/5/000011"),
        (b"jpeg of cup/batch-2/5/000012", "cup/batch-2/5/000012"),
    ]
    assert len(preview_samples(io.BytesIO(shard), 100)) == 4
    assert preview_samples(io.BytesIO(shard), 0) == []
    assert preview_samples(io.BytesIO(write_shard([])), 5) == []


def test_preview_of_a_shard_end_to_end() -> None:
    points = box_keypoints()
    members = []
    for index in range(6):
        key = f"chair/batch-3/9/{index:06d}"
        members.append(
            {
                f"{key}.jpg": grey_jpeg(),
                f"{key}.json": json.dumps(labels(key, [(list(range(9)), points)])).encode(),
            }
        )
    samples = preview_samples(io.BytesIO(write_shard(members)), 4)
    pixels = decode(contact_sheet(samples, columns=2, tile_width=TILE))
    cell_height = TILE * HEIGHT // WIDTH + LABEL_HEIGHT
    assert pixels.shape[:2] == (GAP + 2 * (cell_height + GAP), GAP + 2 * (TILE + GAP))
    for index in range(4):
        x, y = edge_points(points, 1, 5, tile_origin(index, 2, cell_height), 320)[1]
        assert colour_near(pixels, x, y, BOX_COLOURS[0])


def test_preview_samples_reads_long_names_empty_shards_and_refuses_a_cut_member() -> None:
    # A key longer than a ustar name field: the writer puts it in a pax header.
    key = "chair/" + "batch-" + "9" * 120 + "/1/000004"
    shard = write_shard([{f"{key}.jpg": b"jpg", f"{key}.json": b'{"key": "long"}'}])
    assert preview_samples(io.BytesIO(shard), 1) == [(b"jpg", {"key": "long"})]
    # A shard whose videos were all reported: only the spec header. tarfile refuses this one.
    empty = write_shard([])
    with pytest.raises(tarfile.ReadError), tarfile.open(fileobj=io.BytesIO(empty), mode="r|"):
        pass
    assert preview_samples(io.BytesIO(empty), 3) == []
    # Cut inside a member's data: an error, not a short sample.
    jpg = grey_jpeg()
    cut = write_shard([{"a/b/c/000000.jpg": jpg, "a/b/c/000000.json": b"{}"}])[: 512 * 4]
    with pytest.raises(ValueError, match="ends inside a member"):
        preview_samples(io.BytesIO(cut), 1)


def test_sheet_draws_the_feature_points_as_dots() -> None:
    """Labels with `points` (ar_points): a dot at each point inside the picture; a null place
    draws nothing."""
    sample = labels("book/batch-1/1/000000", [])
    sample["points"] = {
        "ids": [1, 2, 3],
        "camera": [[0, 0, -1]] * 3,
        "image": [[0.25, 0.25], None, [0.75, 0.6]],
    }
    sheet = contact_sheet([(grey_jpeg(), sample)], columns=1, tile_width=TILE)
    pixels = decode(sheet)
    cell_height = TILE * HEIGHT // WIDTH + LABEL_HEIGHT
    origin = tile_origin(0, 1, cell_height)
    tile_height = TILE * HEIGHT // WIDTH
    for x, y in ((0.25, 0.25), (0.75, 0.6)):
        at = (round(origin[0] + x * TILE), round(origin[1] + y * tile_height))
        assert colour_near(pixels, *at, POINT_COLOUR), at
    assert greyish(pixels, round(origin[0] + 0.5 * TILE), round(origin[1] + 0.5 * tile_height))
