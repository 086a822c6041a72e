"""Listing files in `gsutil ls -r` format, and their equivalence with the API listing."""

from __future__ import annotations

import pytest

from tasks.listing import (
    UNKNOWN_SIZE,
    ListingFileError,
    list_source_api,
    parse_listing_file,
    resolve_listed_names,
)
from tasks.storage import open_storage
from tests.objectron_fixtures import gsutil_ls_r

PLAIN = """gs://objectron/annotations/bike/batch-0/:
gs://objectron/annotations/bike/batch-0/1.pbdata

gs://objectron/videos/bike/batch-0/1/:
gs://objectron/videos/bike/batch-0/1/geometry.pbdata
gs://objectron/videos/bike/batch-0/1/video.MOV
"""

LONG = """     20534  2020-11-04T18:52:09Z  gs://objectron/videos/bike/batch-0/1/video.MOV#1604515929123456  metageneration=1
      3000  2020-11-04T18:52:10Z  gs://objectron/videos/bike/batch-0/1/geometry.pbdata
TOTAL: 2 objects, 23534 bytes (22.98 KiB)
"""  # noqa: E501


def test_plain_listing_skips_headers_and_blank_lines() -> None:
    listed = parse_listing_file(PLAIN, "gs://objectron")
    assert [e.name for e in listed] == [
        "annotations/bike/batch-0/1.pbdata",
        "videos/bike/batch-0/1/geometry.pbdata",
        "videos/bike/batch-0/1/video.MOV",
    ]
    assert all(e.size == UNKNOWN_SIZE for e in listed)


def test_long_listing_gives_sizes_and_generations() -> None:
    listed = {e.name: e for e in parse_listing_file(LONG, "gs://objectron/")}
    video = listed["videos/bike/batch-0/1/video.MOV"]
    assert (video.size, video.generation) == (20534, "1604515929123456")
    geometry = listed["videos/bike/batch-0/1/geometry.pbdata"]
    assert (geometry.size, geometry.generation) == (3000, "")


def test_malformed_lines_are_reported_with_line_numbers() -> None:
    text = PLAIN + "this is not a url\ngs://elsewhere/videos/x/video.MOV\n"
    with pytest.raises(ListingFileError) as error:
        parse_listing_file(text, "gs://objectron")
    message = str(error.value)
    assert "line 7: 'this is not a url'" in message and "line 8:" in message
    assert "not an object URL under gs://objectron/" in message


def test_listing_file_resolves_to_the_same_objects_as_the_api(tmp_path) -> None:  # type: ignore[no-untyped-def]
    storage = open_storage(str(tmp_path))
    for name, data in {
        "videos/cup/batch-1/1/video.MOV": b"v" * 30,
        "videos/cup/batch-1/1/geometry.pbdata": b"g" * 7,
        "videos/cup/batch-1/1/id.txt": b"id",
        "annotations/cup/batch-1/1.pbdata": b"a",
        "v1/index/cup_annotations_train": b"cup/batch-1/1\n",
        "v1/records_shuffled/cup/x": b"not needed",
    }.items():
        storage.create_bytes(name, data)
    api = list_source_api(storage)
    text = gsutil_ls_r(storage.url, [info.name for info in storage.list()])
    from_file = resolve_listed_names(storage, parse_listing_file(text, storage.url))
    assert from_file == api
    assert "v1/records_shuffled/cup/x" not in {info.name for info in api}
