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

The parts live in modules of their own: the values of a synthetic capture (`sample_capture`),
the protobuf writers (`sample_protobuf`), the video painter (`sample_video`) and the traps
(`sample_traps`); this module writes the dataset, and its public names include theirs.

Everything is a pure function of the seed and the options, and writing is create-only: a rerun
with the same arguments skips every object that is already there with the same bytes, and an
object with different bytes is an error (never overwritten), so a sample dataset can be reused
and cannot be silently corrupted.
"""

from __future__ import annotations

import functools
import importlib.resources
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace

from tasks.objectron.box import EDGES, UNIT_BOX
from tasks.objectron.sample_capture import (
    CLASSES,
    FPS,
    KEYPOINT_AREA,
    SENSOR_HEIGHT,
    SENSOR_WIDTH,
    BoxValues,
    FrameValues,
    SampleValues,
    feature_cloud,
    sample_frame_values,
    sample_values,
    seeded_rng,
)
from tasks.objectron.sample_protobuf import build_annotation, build_geometry
from tasks.objectron.sample_traps import choose_traps, short_video_frames, wrong_category_for
from tasks.objectron.sample_video import (
    BACKGROUND_COLOUR,
    BOX_COLOUR,
    COUNTER_BITS,
    COUNTER_CELLS,
    COUNTER_HEIGHT,
    DEFAULT_VIDEO_SIZE,
    VIDEO_HEIGHT,
    VIDEO_WIDTH,
    X264_OPTIONS,
    build_video,
    encode_video,
    parse_video_size,
    read_frame_counter,
    render_frame,
    scramble_video,
    stored_rotation,
)
from tasks.storage import AlreadyExists, Storage, StorageError

# The parts of the sample data (the values of a capture, the protobuf writers, the video
# painter, the traps) live in the modules above; their public names are this module's too.
__all__ = [
    "BACKGROUND_COLOUR",
    "BOX_COLOUR",
    "CLASSES",
    "COUNTER_BITS",
    "COUNTER_CELLS",
    "COUNTER_HEIGHT",
    "DEFAULT_VIDEO_SIZE",
    "EDGES",
    "FPS",
    "INDEX_NAMES",
    "INDEX_PREFIX",
    "KEYPOINT_AREA",
    "NO_SPLIT_KEY",
    "SENSOR_HEIGHT",
    "SENSOR_WIDTH",
    "SPLITS",
    "UNIT_BOX",
    "VIDEO_HEIGHT",
    "VIDEO_WIDTH",
    "WRITE_THREADS",
    "X264_OPTIONS",
    "BoxValues",
    "FrameValues",
    "SampleDataConflict",
    "SampleDataset",
    "SampleValues",
    "all_index_keys",
    "build_annotation",
    "build_geometry",
    "build_id_txt",
    "build_video",
    "choose_traps",
    "encode_video",
    "feature_cloud",
    "index_files",
    "parse_index",
    "parse_video_size",
    "read_frame_counter",
    "render_frame",
    "sample_frame_values",
    "sample_values",
    "scramble_video",
    "seeded_rng",
    "short_video_frames",
    "stored_rotation",
    "write_sample_dataset",
    "wrong_category_for",
]  # fmt: skip

SPLITS: tuple[str, ...] = ("", "_train", "_test")
# The 27 index files: CLASS_annotations, CLASS_annotations_train, CLASS_annotations_test.
INDEX_NAMES: tuple[str, ...] = tuple(f"{c}_annotations{s}" for c in CLASSES for s in SPLITS)
INDEX_PREFIX = "v1/index/"
# The one public, annotated video that is in neither split.
NO_SPLIT_KEY = "book/batch-3/18"

# Objects are written by this many threads: on GCS each object is one or two round trips, and
# those (not CPU) dominate the run time.
WRITE_THREADS = 8
# Real index files stop at batch-51; names from these ranges are certainly in no index file.
UNANNOTATED_BATCHES = range(1001, 1100)
PLACEHOLDER_BATCHES = range(2001, 2100)


class SampleDataConflict(StorageError):
    """An object of the sample dataset exists already with different bytes."""


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


def build_id_txt(key: str, *, seed: int = 0) -> bytes:
    """A small `id.txt`: a 32-digit hex identifier and a newline."""
    return f"{seeded_rng(seed, key, 'id').getrandbits(128):032x}\n".encode("ascii")


# --- the dataset ---------------------------------------------------------------------------


def _choose_keys(
    seed: int, videos: int, unannotated: int, placeholders: int, include_no_split_video: bool
) -> tuple[list[str], list[str], list[str]]:
    """Pick annotated, unannotated and placeholder keys, deterministically from the seed."""
    rng = seeded_rng(seed, "names")
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
    no_traps: tuple[list[str], list[str], list[str]] = ([], [], [])
    short, corrupt, wrong = (
        choose_traps(seed, annotated, frames, real_videos, never=NO_SPLIT_KEY)
        if traps
        else no_traps
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
