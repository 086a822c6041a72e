"""The preview picture of frame shards: a contact sheet of frames with their boxes drawn.

It is the picture a user looks at to trust the labels, so the boxes are drawn from the labels
alone (`keypoints_2d` of `KEY.json`, scaled to each tile), never from the geometry that produced
them: a box off its object in the sheet is a label off its object in the shard.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from PIL import Image, ImageDraw, ImageFont
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.objectron.box import EDGES as BOX_EDGES
from tasks.policy import RETRY_POLICY, redact_errors

__all__ = [
    "BACKGROUND",
    "BOX_COLOURS",
    "EDGES",
    "GAP",
    "LABEL_HEIGHT",
    "NotAFrameShard",
    "contact_sheet",
    "preview_samples",
    "preview_shard",
    "write_preview",
]

# Objectron's 12 box edges between keypoints 1-8 (keypoint 0 is the centre).
EDGES = BOX_EDGES
# One colour per object of a frame, in order (cycled): saturated, far from video colours' greys.
BOX_COLOURS: tuple[tuple[int, int, int], ...] = (
    (0, 255, 0),
    (255, 0, 255),
    (0, 200, 255),
    (255, 200, 0),
)
# The frame's AR feature points (labels `points`, with ar_points): small dots.
POINT_COLOUR = (255, 64, 64)
BACKGROUND = (24, 24, 24)
TEXT_COLOUR = (235, 235, 235)
GAP = 4  # pixels around and between tiles
LABEL_HEIGHT = 14  # the strip under each tile that holds its key
SHEET_QUALITY = 90

# WebDataset's split of a member name into key and extension: the extension starts at the
# first dot of the last path component (webdataset's `base_plus_ext`).
_MEMBER_NAME = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")


def _edges_to_draw(keypoint_ids: Sequence[int]) -> list[tuple[int, int]]:
    """Positions (in the annotated lists) of the ends of each edge whose two keypoints are
    annotated: a frame may annotate a subset of the keypoints, and ids are not positions."""
    position = {keypoint_id: index for index, keypoint_id in enumerate(keypoint_ids)}
    return [(position[a], position[b]) for a, b in EDGES if a in position and b in position]


def _tile(jpeg: bytes, labels: dict[str, Any], tile_width: int) -> Image.Image:
    """The frame scaled to `tile_width` (aspect kept) with its objects' box edges drawn, and
    its feature points as dots when the labels have them."""
    with Image.open(io.BytesIO(jpeg)) as decoded:
        frame = decoded.convert("RGB")
    tile_height = max(1, round(tile_width * frame.height / frame.width))
    tile = frame.resize((tile_width, tile_height), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(tile)
    line_width = max(1, tile_width // 120)
    for index, obj in enumerate(labels.get("objects") or []):
        colour = BOX_COLOURS[index % len(BOX_COLOURS)]
        points = [(x * tile_width, y * tile_height) for x, y, *_ in obj["keypoints_2d"]]
        for a, b in _edges_to_draw(obj["keypoint_ids"]):
            draw.line([points[a], points[b]], fill=colour, width=line_width)
    radius = max(1.0, tile_width / 160)
    for place in (labels.get("points") or {}).get("image") or []:
        if place is not None:
            x, y = place[0] * tile_width, place[1] * tile_height
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=POINT_COLOUR)
    return tile


def contact_sheet(
    samples: Sequence[tuple[bytes, dict[str, Any]]], *, columns: int = 4, tile_width: int = 240
) -> bytes:
    """A JPEG grid of frames with each object's 12 box edges drawn and each sample's key
    written under its tile.

    Args:
        samples: `(KEY.jpg bytes, parsed KEY.json)` pairs, in the order to show them (row by
            row).
        columns: Tiles per row.
        tile_width: Width of each tile in pixels; heights follow each frame's aspect.

    Returns:
        The sheet as JPEG bytes.

    Raises:
        ValueError: No samples, or columns or tile_width below 1.
    """
    if not samples:
        raise ValueError("a contact sheet needs at least one sample")
    if columns < 1 or tile_width < 1:
        raise ValueError(f"columns and tile_width must be >= 1, got {columns} and {tile_width}")
    tiles = [
        (_tile(jpeg, labels, tile_width), str(labels.get("key", ""))) for jpeg, labels in samples
    ]
    columns = min(columns, len(tiles))
    rows = -(-len(tiles) // columns)
    cell_height = max(tile.height for tile, _ in tiles) + LABEL_HEIGHT
    sheet = Image.new(
        "RGB",
        (GAP + columns * (tile_width + GAP), GAP + rows * (cell_height + GAP)),
        BACKGROUND,
    )
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=LABEL_HEIGHT - 3)
    for index, (tile, key) in enumerate(tiles):
        left = GAP + (index % columns) * (tile_width + GAP)
        top = GAP + (index // columns) * (cell_height + GAP)
        sheet.paste(tile, (left, top))
        draw.text((left + 1, top + tile.height + 1), key, fill=TEXT_COLOUR, font=font)
    out = io.BytesIO()
    # 4:4:4: chroma subsampling would smear the thin coloured lines into the frame's colours.
    sheet.save(out, format="JPEG", quality=SHEET_QUALITY, subsampling=0)
    return out.getvalue()


def _tar_files(stream: IO[bytes]) -> Iterator[tuple[str, bytes]]:
    """(name, data) of each regular file of an uncompressed tar stream, in order.

    A reader of its own rather than `tarfile`: tarfile (and so webdataset) refuses an archive
    holding only a pax global header, which is what a frame shard whose videos were all
    reported is (the spec digest header, then the end of the archive). GNU tar reads it.
    """

    def read_exactly(size: int) -> bytes:
        data = stream.read(size)
        while len(data) < size:
            more = stream.read(size - len(data))
            if not more:
                raise ValueError(f"the tar stream ends inside a member ({len(data)} of {size})")
            data += more
        return data

    overrides: dict[str, str] = {}
    while True:
        block = stream.read(tarfile.BLOCKSIZE)
        if not block:
            return  # a stream cut between members: what is there is whole
        if len(block) < tarfile.BLOCKSIZE:
            block += read_exactly(tarfile.BLOCKSIZE - len(block))
        if block == bytes(tarfile.BLOCKSIZE):
            return  # the end-of-archive marker
        info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        size = int(overrides.get("size", info.size))
        data = read_exactly(size)
        read_exactly(-size % tarfile.BLOCKSIZE)
        if info.type == tarfile.XHDTYPE:  # pax extended header: applies to the next member
            overrides = _pax_records(data)
            continue
        name = overrides.get("path", info.name)
        overrides = {}
        if info.type in tarfile.REGULAR_TYPES:
            yield name, data


def _pax_records(data: bytes) -> dict[str, str]:
    """The `LENGTH KEY=VALUE\n` records of a pax extended header."""
    records: dict[str, str] = {}
    offset = 0
    while offset < len(data):
        length = int(data[offset : data.index(b" ", offset)])
        key, _, value = data[data.index(b" ", offset) + 1 : offset + length - 1].partition(b"=")
        records[key.decode("utf-8")] = value.decode("utf-8", "surrogateescape")
        offset += length
    return records


def preview_samples(tar_stream: IO[bytes], count: int) -> list[tuple[bytes, dict[str, Any]]]:
    """The first `count` samples of a frame shard that have both a `jpg` and a `json` member.

    Reads the tar as a stream (a shard can be read straight from a bucket) and stops as soon as
    it has `count` samples. A sample's members are adjacent in a WebDataset tar; one that lacks
    either member is passed over.

    Args:
        tar_stream: An uncompressed tar, readable from its start (need not be seekable).
        count: How many samples at most.

    Returns:
        `(jpg bytes, parsed json)` pairs in the shard's order.

    Raises:
        ValueError: The stream ends inside a member; tarfile.HeaderError: not a tar.
    """
    found: list[tuple[bytes, dict[str, Any]]] = []
    if count < 1:
        return found
    current_key: str | None = None
    members: dict[str, bytes] = {}

    def take() -> None:
        if "jpg" in members and "json" in members:
            found.append((members["jpg"], json.loads(members["json"])))

    for name, data in _tar_files(tar_stream):
        match = _MEMBER_NAME.match(name)
        if match is None:
            continue
        key, extension = match.groups()
        if key != current_key:
            take()
            if len(found) >= count:
                return found
            current_key, members = key, {}
        if extension in ("jpg", "json"):
            members[extension] = data
    take()
    return found[:count]


class NotAFrameShard(ValueError):
    """The shard given to `preview` holds no frame samples (a video shard, or empty)."""


def _split_url(shard_url: str) -> tuple[str, str]:
    """`gs://b/p/NAME.tar` -> ("gs://b/p", "NAME.tar"); a local path likewise."""
    folder, _, name = shard_url.rstrip("/").rpartition("/")
    return folder or ".", name


def preview_shard(shard_url: str, out: Path, *, samples: int = 16) -> int:
    """Draw the first `samples` frames of a frame shard (a path or gs:// URL) into `out`
    (JPEG); returns how many were drawn.

    Raises:
        FileNotFoundError: No such shard.
        NotAFrameShard: It holds no jpg + json samples.
    """
    from tasks.storage import open_storage

    folder, name = _split_url(shard_url)
    storage = open_storage(folder)
    if not storage.exists(name):
        raise FileNotFoundError(f"{shard_url}: no such shard")
    with storage.open_read(name) as stream:
        found = preview_samples(stream, samples)
    if not found:
        raise NotAFrameShard(
            f"{shard_url} holds no frame samples (KEY.jpg + KEY.json): is it a shard of "
            "`objectron-wds frames`, and were all its videos reported (see NAME.stats.json)?"
        )
    data = contact_sheet(found)
    partial = out.with_name(f".{out.name}.partial")
    partial.write_bytes(data)
    partial.replace(out)  # never a half-written picture at the name asked for
    return len(found)


PREVIEW_SAMPLES = 16


@task(name="write-preview", cache_policy=NO_CACHE, persist_result=False, **RETRY_POLICY)
@redact_errors
def write_preview(dest_url: str, shard: str, name: str) -> str | None:
    """The contact sheet of `shard`'s first frames at `dest_url/name` (replaced: derived
    data); its URL, or None when the shard has no samples (all its videos were reported)."""
    from tasks.storage import open_storage

    logger = get_run_logger()
    dest = open_storage(dest_url)
    with dest.open_read(shard) as stream:
        found = preview_samples(stream, PREVIEW_SAMPLES)
    if not found:
        logger.warning("No preview: %s holds no frame samples", shard)
        return None
    dest.replace_bytes(name, contact_sheet(found))
    url = dest.url_for(name)
    logger.info("Preview of %s (%d frames with their boxes): %s", shard, len(found), url)
    return url
