"""Stage 2, sample assembly: one sample per video folder, with its geometry and annotation.

A sample is `videos/CLASS/batch-I/J/{video.MOV, geometry.pbdata}` plus
`annotations/CLASS/batch-I/J.pbdata` when it exists. Its WebDataset key is `CLASS/batch-I/J`, so
the members `KEY.video.mov`, `KEY.geometry.pbdata`, `KEY.anno.pbdata`, `KEY.json` group into one
sample when read back. What cannot become a sample is counted by reason, never silently dropped.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.members import ANNOTATION, GEOMETRY, VIDEO
from tasks.policy import RETRY_POLICY, redact_errors
from tasks.storage import ObjectInfo, Storage

# Member extensions inside the tar, in the order they are written for each sample.

_VIDEO_NAME = re.compile(r"^videos/(?P<key>[^/]+/[^/]+/[^/]+)/video\.MOV$")
# Key parts that are safe as tar paths and as WebDataset keys: no dots (WebDataset splits the
# extension at the first dot), no spaces, no `..`, nothing that escapes on extraction.
_SAFE_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")

SPLIT_INDEX_PREFIX = "v1/index/"
_SPLIT_INDEX_NAME = re.compile(r"^v1/index/(?P<cls>[^/]+)_annotations_(?P<split>train|test)$")

# Reasons a video folder is not shipped, as reported in stats and logs.
SKIP_PLACEHOLDER = "placeholder (0-byte video or geometry)"
SKIP_NO_GEOMETRY = "no geometry.pbdata"
SKIP_UNSAFE_NAME = "unsafe name (only letters, digits, _ and - are allowed in CLASS/batch/index)"
SKIP_NOT_ANNOTATED = "no annotation (only_with_anno)"
SPLITS = ("all", "train", "test")


def skip_not_in_split(split: str) -> str:
    return f"not in the {split} split"


@dataclass(frozen=True)
class Member:
    """One tar member of a sample, read from one source object."""

    extension: str
    source: ObjectInfo


@dataclass(frozen=True)
class Sample:
    """One video: its key, class (the folder name, which is more reliable than the annotation's
    own category), split if the index files name it, and its source members."""

    key: str
    category: str
    split: str | None
    members: tuple[Member, ...]

    @property
    def has_annotation(self) -> bool:
        return any(member.extension == ANNOTATION for member in self.members)

    @property
    def source_bytes(self) -> int:
        return sum(member.source.size for member in self.members)


@dataclass
class Assembly:
    """The samples found, and every video folder left out with the reason."""

    samples: list[Sample]
    skipped: dict[str, list[str]] = field(default_factory=dict)
    # Annotated videos (annotation present) that no split index file names.
    no_split: list[str] = field(default_factory=list)

    def skipped_counts(self) -> dict[str, int]:
        return {reason: len(keys) for reason, keys in sorted(self.skipped.items())}


def split_index_names(objects: Iterable[ObjectInfo]) -> list[str]:
    """The split index files (`v1/index/CLASS_annotations_train|test`) among the objects."""
    return [info.name for info in objects if _SPLIT_INDEX_NAME.match(info.name)]


def read_split_index(source: Storage, names: list[str], *, threads: int = 32) -> dict[str, bytes]:
    """The contents of the split index files `names`, read at once (18 small files in the
    Objectron bucket: one round trip each, none depending on another)."""
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="read index") as pool:
        return dict(zip(names, pool.map(source.read_bytes, names), strict=True))


def parse_split_index(files: Mapping[str, bytes]) -> dict[str, str]:
    """Map `CLASS/batch-I/J` to `train` or `test` from the index files' contents."""
    splits: dict[str, str] = {}
    for name, data in sorted(files.items()):
        match = _SPLIT_INDEX_NAME.match(name)
        if not match:
            continue
        for line in data.decode("utf-8").splitlines():
            key = line.strip()
            if key:
                splits[key] = match["split"]
    return splits


def assemble_samples(
    objects: Iterable[ObjectInfo],
    splits: Mapping[str, str] | None = None,
    *,
    only_with_anno: bool = False,
    classes: Iterable[str] | None = None,
    split: str = "all",
) -> Assembly:
    """Group listed objects into samples.

    Args:
        objects: the source listing (names relative to the source root).
        splits: `CLASS/batch-I/J` -> `train`/`test`, from `parse_split_index`.
        only_with_anno: keep only videos that have an annotation file.
        classes: keep only these classes (all when None).
        split: `all`, or keep only the videos the index files put in `train` or `test`.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    by_name = {info.name: info for info in objects}
    wanted_classes = set(classes) if classes is not None else None
    splits = splits or {}
    samples: list[Sample] = []
    skipped: dict[str, list[str]] = defaultdict(list)
    no_split: list[str] = []
    for name in sorted(by_name):
        match = _VIDEO_NAME.match(name)
        if not match:
            continue
        key = match["key"]
        category = key.split("/", 1)[0]
        if wanted_classes is not None and category not in wanted_classes:
            continue
        if not all(_SAFE_PART.match(part) for part in key.split("/")):
            skipped[SKIP_UNSAFE_NAME].append(key)
            continue
        video = by_name[name]
        geometry = by_name.get(f"videos/{key}/geometry.pbdata")
        if geometry is None:
            skipped[SKIP_NO_GEOMETRY].append(key)
            continue
        if video.size == 0 or geometry.size == 0:
            skipped[SKIP_PLACEHOLDER].append(key)
            continue
        members = [Member(VIDEO, video), Member(GEOMETRY, geometry)]
        annotation = by_name.get(f"annotations/{key}.pbdata")
        if annotation is not None and annotation.size > 0:
            members.append(Member(ANNOTATION, annotation))
        elif only_with_anno:
            skipped[SKIP_NOT_ANNOTATED].append(key)
            continue
        sample_split = splits.get(key)
        if sample_split is None and annotation is not None and splits:
            no_split.append(key)
        if split != "all" and sample_split != split:
            skipped[skip_not_in_split(split)].append(key)
            continue
        samples.append(Sample(key, category, sample_split, tuple(members)))
    return Assembly(samples, dict(skipped), no_split)


@task(name="assemble-samples", cache_policy=NO_CACHE, persist_result=False, **RETRY_POLICY)
@redact_errors
def assemble(
    source_url: str,
    objects: list[ObjectInfo],
    only_with_anno: bool = False,
    classes: list[str] | None = None,
    split: str = "all",
) -> Assembly:
    """Pair each video with its geometry and annotation; count what is left out and why."""
    from tasks.storage import open_storage

    logger = get_run_logger()
    source = open_storage(source_url)
    index_files = read_split_index(source, split_index_names(objects))
    splits = parse_split_index(index_files)
    if split != "all" and not splits:
        raise ValueError(
            f"split={split!r} needs the split index files v1/index/CLASS_annotations_{split} "
            f"in {source_url}, and there are none; use split='all'"
        )
    assembly = assemble_samples(
        objects, splits, only_with_anno=only_with_anno, classes=classes, split=split
    )
    logger.info(
        "%d samples (%d annotated); left out: %s; split index: %d files, %d keys",
        len(assembly.samples),
        sum(sample.has_annotation for sample in assembly.samples),
        assembly.skipped_counts() or "none",
        len(index_files),
        len(splits),
    )
    if assembly.no_split:
        logger.warning(
            "%d annotated video(s) are in no train/test index file, e.g. %s",
            len(assembly.no_split), ", ".join(assembly.no_split[:5]),
        )  # fmt: skip
    return assembly
