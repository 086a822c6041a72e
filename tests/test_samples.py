"""Sample assembly from a listing: placeholders, annotations, classes, splits, unsafe names."""

from __future__ import annotations

from tasks.samples import (
    ANNOTATION,
    GEOMETRY,
    SKIP_NO_GEOMETRY,
    SKIP_NOT_ANNOTATED,
    SKIP_PLACEHOLDER,
    SKIP_UNSAFE_NAME,
    VIDEO,
    assemble_samples,
    parse_split_index,
)
from tasks.storage import ObjectInfo
from tests.objectron_fixtures import listing, video_folder


def test_one_sample_per_video_folder_with_its_members() -> None:
    objects = listing(
        video_folder("bike/batch-1/2"),
        video_folder("cup/batch-3/4", annotation=None),
    )
    assembly = assemble_samples(objects)
    assert [s.key for s in assembly.samples] == ["bike/batch-1/2", "cup/batch-3/4"]
    bike, cup = assembly.samples
    assert bike.category == "bike"
    assert [m.extension for m in bike.members] == [VIDEO, GEOMETRY, ANNOTATION]
    assert bike.members[2].source.name == "annotations/bike/batch-1/2.pbdata"
    assert [m.extension for m in cup.members] == [VIDEO, GEOMETRY]
    assert not cup.has_annotation


def test_placeholders_are_skipped_and_counted() -> None:
    objects = listing(
        video_folder("shoe/batch-93/9", video=0, geometry=0, annotation=None),
        video_folder("shoe/batch-93/10", video=10, geometry=0, annotation=None),
        video_folder("shoe/batch-1/1"),
    )
    assembly = assemble_samples(objects)
    assert [s.key for s in assembly.samples] == ["shoe/batch-1/1"]
    assert sorted(assembly.skipped[SKIP_PLACEHOLDER]) == ["shoe/batch-93/10", "shoe/batch-93/9"]


def test_only_with_anno_keeps_only_annotated_videos() -> None:
    objects = listing(
        video_folder("cup/batch-1/1"),
        video_folder("cup/batch-1/2", annotation=None),
        video_folder("cup/batch-1/3", annotation=0),
    )
    kept = assemble_samples(objects, only_with_anno=True)
    assert [s.key for s in kept.samples] == ["cup/batch-1/1"]
    assert sorted(kept.skipped[SKIP_NOT_ANNOTATED]) == ["cup/batch-1/2", "cup/batch-1/3"]
    everything = assemble_samples(objects, only_with_anno=False)
    assert len(everything.samples) == 3


def test_missing_geometry_and_unsafe_names_are_reported() -> None:
    objects = listing(
        [ObjectInfo("videos/cup/batch-1/1/video.MOV", 10, "1")],
        video_folder("cup/batch-1/x.y"),
        video_folder("cup/batch 1/2"),
        video_folder("cup/bätch-1/2"),
        video_folder("cup/batch-1/ok"),
    )
    assembly = assemble_samples(objects)
    assert [s.key for s in assembly.samples] == ["cup/batch-1/ok"]
    assert assembly.skipped[SKIP_NO_GEOMETRY] == ["cup/batch-1/1"]
    assert sorted(assembly.skipped[SKIP_UNSAFE_NAME]) == sorted(
        ["cup/batch-1/x.y", "cup/batch 1/2", "cup/bätch-1/2"]
    )


def test_classes_filter_and_split_from_index_files() -> None:
    objects = listing(
        video_folder("book/batch-3/18"),
        video_folder("book/batch-1/1"),
        video_folder("book/batch-1/2"),
        video_folder("cup/batch-1/1"),
    )
    splits = parse_split_index(
        {
            "v1/index/book_annotations_train": b"book/batch-1/1\n",
            "v1/index/book_annotations_test": b"book/batch-1/2",
            "v1/index/book_annotations": b"book/batch-1/1\nbook/batch-1/2\nbook/batch-3/18",
        }
    )
    assert splits == {"book/batch-1/1": "train", "book/batch-1/2": "test"}
    assembly = assemble_samples(objects, splits, classes=["book"])
    assert {s.key: s.split for s in assembly.samples} == {
        "book/batch-1/1": "train",
        "book/batch-1/2": "test",
        "book/batch-3/18": None,
    }
    assert assembly.no_split == ["book/batch-3/18"]
