"""Synthetic Objectron-shaped data at full scale, for the planning, overhead and scale
measures: the 20,088 video keys (the real annotated ones of the index files and more), a
`gsutil ls -a -l -r` listing of them, and a local folder of tiny objects with those keys."""

from __future__ import annotations

import random
from pathlib import Path

MB = 1_000_000

FULL_SCALE_VIDEOS = 20_088
REAL_LISTING_LINES = 210_448
LISTING_TIME = "2020-09-24T18:10:41Z"


def annotated_keys() -> list[str]:
    """The 14,584 public, annotated video keys of the vendored index files."""
    from tasks.objectron.sample_data import CLASSES, index_files, parse_index

    files = index_files()
    return sorted(key for c in CLASSES for key in parse_index(files[f"{c}_annotations"]))


def full_scale_keys(videos: int = FULL_SCALE_VIDEOS) -> tuple[list[str], set[str]]:
    """`videos` keys shaped like the real ones: every annotated key of the index files, then
    unannotated ones in batches above the real annotated ones (as the bucket has); returns
    (sorted keys, the annotated subset)."""
    from tasks.objectron.sample_data import CLASSES

    annotated = annotated_keys()[:videos]
    keys = list(annotated)
    slot = 0
    while len(keys) < videos:
        cls = CLASSES[slot % len(CLASSES)]
        number = slot // len(CLASSES)
        keys.append(f"{cls}/batch-{100 + number // 40}/{number % 40}")
        slot += 1
    return sorted(keys), set(annotated)


def _folder_tree(keys: list[str]) -> dict[str, dict[str, list[str]]]:
    tree: dict[str, dict[str, list[str]]] = {}
    for key in keys:
        cls, batch, index = key.split("/")
        tree.setdefault(cls, {}).setdefault(batch, []).append(index)
    return tree


class _Listing:
    """Accumulates `gsutil ls -a -l -r` lines."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.lines: list[str] = []
        self.objects = 0
        self.total_bytes = 0
        self.generation = 1600971041000000

    def folders(self, header: str, urls: list[str]) -> None:
        """A block listing sub-folders: `HEADER:`, one indented URL each, a blank line."""
        self.lines.append(f"{header}:")
        self.lines.extend(f"{'':>33}{url}" for url in urls)
        self.lines.append("")

    def objects_block(self, header: str, entries: list[tuple[str, int]]) -> None:
        """A block listing objects: size, time, URL#generation, metageneration."""
        self.lines.append(f"{header}:")
        for url, size in entries:
            self.generation += self.rng.randrange(1, 5000)
            self.lines.append(
                f"{size:>10}  {LISTING_TIME}  {url}#{self.generation}  metageneration=1"
            )
            self.objects += 1
            self.total_bytes += size
        self.lines.append("")


def synthetic_listing(
    videos: int = FULL_SCALE_VIDEOS, target_lines: int = REAL_LISTING_LINES, seed: int = 0
) -> tuple[str, dict[str, int]]:
    """`gsutil ls -a -l -r gs://objectron` output for `videos` video folders: folder headers,
    sub-folder lines and blank separators as gsutil prints them, object lines with size, time,
    `#generation` and `metageneration=1` (so no object needs a stat), `sfm_arframe.pbdata` in
    every third folder, the 27 index files, and `v1/records_shuffled` objects (not needed by a
    conversion) to bring the total to about `target_lines`, as the real listing has.

    Returns (text, counts).
    """
    from tasks.objectron.sample_data import CLASSES, INDEX_NAMES

    out = _Listing(seed)
    rng = out.rng
    keys, annotated = full_scale_keys(videos)
    root = "gs://objectron"
    out.folders(f"{root}/", [f"{root}/{p}/" for p in ("annotations", "v1", "videos")])

    annotated_tree = _folder_tree(sorted(annotated))
    base = f"{root}/annotations"
    out.folders(f"{base}/", [f"{base}/{c}/" for c in annotated_tree])
    for cls, batches in annotated_tree.items():
        out.folders(f"{base}/{cls}/", [f"{base}/{cls}/{b}/" for b in batches])
        for batch, indexes in batches.items():
            folder = f"{base}/{cls}/{batch}"
            entries = [(f"{folder}/{i}.pbdata", rng.randrange(40_000, 400_000)) for i in indexes]
            out.objects_block(f"{folder}/", entries)

    tree = _folder_tree(keys)
    base = f"{root}/videos"
    out.folders(f"{base}/", [f"{base}/{c}/" for c in tree])
    serial = 0
    for cls, batches in tree.items():
        out.folders(f"{base}/{cls}/", [f"{base}/{cls}/{b}/" for b in batches])
        for batch, indexes in batches.items():
            folder = f"{base}/{cls}/{batch}"
            out.folders(f"{folder}/", [f"{folder}/{i}/" for i in indexes])
            for index in indexes:
                video = f"{folder}/{index}"
                serial += 1
                entries = [
                    (f"{video}/geometry.pbdata", rng.randrange(2_000_000, 4_000_000)),
                    (f"{video}/id.txt", 33),
                ]
                if serial % 3 == 0:
                    entries.append((f"{video}/sfm_arframe.pbdata", rng.randrange(MB, 3 * MB)))
                entries.append((f"{video}/video.MOV", rng.randrange(15 * MB, 25 * MB)))
                out.objects_block(f"{video}/", entries)

    base = f"{root}/v1"
    out.folders(f"{base}/", [f"{base}/{p}/" for p in ("index", "records_shuffled")])
    out.objects_block(
        f"{base}/index/", [(f"{base}/index/{n}", rng.randrange(5_000, 40_000)) for n in INDEX_NAMES]
    )
    # Filler: records the conversion does not read, so the line count matches the real listing.
    remaining = max(0, target_lines - len(out.lines) - 2 * len(CLASSES) - 4)
    count = max(remaining // len(CLASSES) - 2, 0)
    records = f"{base}/records_shuffled"
    out.folders(f"{records}/", [f"{records}/{c}/" for c in CLASSES])
    for cls in CLASSES:
        entries = [
            (
                f"{records}/{cls}/{cls}_train-{n:05d}-of-{count:05d}",
                rng.randrange(50 * MB, 150 * MB),
            )
            for n in range(count)
        ]
        out.objects_block(f"{records}/{cls}/", entries)
    total = out.total_bytes
    out.lines.append(f"TOTAL: {out.objects} objects, {total} bytes ({total / 2**40:.2f} TiB)")
    counts = {
        "lines": len(out.lines),
        "objects": out.objects,
        "videos": len(keys),
        "annotated": len(annotated),
    }
    return "\n".join(out.lines) + "\n", counts


def write_tiny_source(root: Path, keys: list[str], annotated: set[str]) -> int:
    """An Objectron-shaped folder with tiny objects: `video.MOV`, `geometry.pbdata`, `id.txt`
    per key, an annotation for the annotated keys, and the real index files. Returns the number
    of objects written. The geometry and annotation files are well-formed one-frame files (the
    same bytes for every key), so the build decodes them as it would real ones."""
    from tasks.objectron.sample_data import (
        INDEX_PREFIX,
        build_annotation,
        build_geometry,
        index_files,
        sample_values,
    )

    one_frame = sample_values("bike/batch-0/0", frames=1)
    geometry, annotation_bytes = build_geometry(one_frame), build_annotation(one_frame)
    written = 0
    for key in keys:
        folder = root / "videos" / key
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "video.MOV").write_bytes(b"\x00\x00\x00\x14ftypqt  " + key.encode())
        (folder / "geometry.pbdata").write_bytes(geometry)
        (folder / "id.txt").write_bytes(f"{abs(hash(key)):032d}\n".encode())
        written += 3
        if key in annotated:
            annotation = root / "annotations" / f"{key}.pbdata"
            annotation.parent.mkdir(parents=True, exist_ok=True)
            annotation.write_bytes(annotation_bytes)
            written += 1
    index_root = root / INDEX_PREFIX
    index_root.mkdir(parents=True, exist_ok=True)
    for name, data in index_files().items():
        (index_root / name).write_bytes(data)
        written += 1
    return written
