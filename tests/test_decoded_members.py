"""Decoded JSON twins in the shards, and what a malformed source file does to them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import webdataset as wds

from flows.convert import objectron_to_wds
from tasks.objectron.sample_data import write_sample_dataset
from tasks.stats import ShardStats
from tasks.storage import open_storage

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_malformed_files_are_kept_raw_and_reported_per_sample(tmp_path: Path) -> None:
    source_dir = tmp_path / "source"
    dataset = write_sample_dataset(
        open_storage(str(source_dir)), videos=4, seed=3, video_bytes=4096, placeholders=0,
        unannotated=0, include_no_split_video=False,
    )  # fmt: skip
    truncated_key, garbage_key = dataset.annotated[0], dataset.annotated[1]
    geometry = source_dir / "videos" / truncated_key / "geometry.pbdata"
    geometry.write_bytes(geometry.read_bytes()[:-7])  # cut inside the last record
    annotation = source_dir / "annotations" / f"{garbage_key}.pbdata"
    annotation.write_bytes(b"\x0f\x00not a protobuf message at all")

    dest_dir = tmp_path / "dest"
    summary = objectron_to_wds(
        dest=str(dest_dir), source=str(source_dir), shard_size=10, concurrency_limit=None
    )
    assert (summary["built"], summary["failed"], summary["samples"]) == (1, 0, 4)

    samples = {
        s["__key__"]: s
        for s in wds.WebDataset(str(dest_dir / "objectron-000000.tar"), shardshuffle=False)
    }
    broken_geometry = samples[truncated_key]
    assert broken_geometry["geometry.pbdata"] == geometry.read_bytes()
    assert "geometry.json" not in broken_geometry
    assert "anno.json" in broken_geometry
    errors = json.loads(broken_geometry["json"])["decode_errors"]
    assert list(errors) == ["geometry.pbdata"] and "truncated" in errors["geometry.pbdata"].lower()

    broken_anno = samples[garbage_key]
    assert broken_anno["anno.pbdata"] == annotation.read_bytes()
    assert "anno.json" not in broken_anno and "geometry.json" in broken_anno
    assert list(json.loads(broken_anno["json"])["decode_errors"]) == ["anno.pbdata"]

    for key in dataset.annotated[2:]:
        assert "decode_errors" not in json.loads(samples[key]["json"])
        assert {"geometry.json", "anno.json"} <= set(samples[key])

    stats = ShardStats.from_json((dest_dir / "objectron-000000.stats.json").read_bytes())
    assert sorted((f.key, f.member) for f in stats.decode_errors) == sorted(
        [(truncated_key, "geometry.pbdata"), (garbage_key, "anno.pbdata")]
    )


def test_decode_false_writes_raw_members_only(tmp_path: Path) -> None:
    source_dir = tmp_path / "source"
    write_sample_dataset(open_storage(str(source_dir)), videos=2, seed=1, video_bytes=2048)
    dest_dir = tmp_path / "dest"
    objectron_to_wds(
        dest=str(dest_dir), source=str(source_dir), shard_size=10, decode=False,
        concurrency_limit=None,
    )  # fmt: skip
    for sample in wds.WebDataset(str(dest_dir / "objectron-000000.tar"), shardshuffle=False):
        assert not {"geometry.json", "anno.json"} & set(sample)
        assert "geometry.pbdata" in sample
