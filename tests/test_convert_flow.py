"""The objectron-to-wds flow end to end: fake-gcs-server (real HTTP, real client) and a Prefect
test server; shards read back with webdataset and compared byte for byte with the sources."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
import webdataset as wds

from flows.convert import NoSamples, objectron_to_wds
from tasks.build import build_shard
from tasks.listing import list_source_api, parse_listing_file, resolve_listed_names
from tasks.objectron.decode import decode_annotation, decode_geometry
from tasks.objectron.sample_data import write_sample_dataset
from tasks.parameters import InvalidInput
from tasks.planning import plan_shards
from tasks.samples import assemble_samples, parse_split_index, split_index_names
from tasks.specs import PlanConflict, make_spec, read_spec, upload_specs
from tasks.storage import Storage, open_storage
from tasks.tar import read_recorded_digest
from tests.conftest import SourceBucket
from tests.objectron_fixtures import gsutil_ls_r

pytestmark = pytest.mark.usefixtures("prefect_server")

SOURCE_FIELDS = {"video.mov": "video.MOV", "geometry.pbdata": "geometry.pbdata"}


def shard_names(dest: Storage) -> list[str]:
    return sorted(info.name for info in dest.list() if info.name.endswith(".tar"))


def read_samples(dest: Storage, tmp_path: Path) -> list[dict[str, Any]]:
    """Copy the shards out of storage and read them with webdataset."""
    local = []
    for name in shard_names(dest):
        path = tmp_path / name
        path.write_bytes(dest.read_bytes(name))
        local.append(str(path))
    return list(wds.WebDataset(local, shardshuffle=False))


def check_sample_against_source(sample: dict[str, Any], source: SourceBucket) -> None:
    key = sample["__key__"]
    meta = json.loads(sample["json"])
    assert meta["key"] == key
    assert meta["class"] == key.split("/")[0]
    for field, filename in SOURCE_FIELDS.items():
        assert sample[field] == source.storage.read_bytes(f"videos/{key}/{filename}"), field
        assert meta["sources"][field]["url"] == f"{source.url}/videos/{key}/{filename}"
        assert meta["sources"][field]["size"] == len(sample[field])
    assert json.loads(sample["geometry.json"]) == orjson.loads(
        orjson.dumps(
            decode_geometry(sample["geometry.pbdata"], lossless=True),
            option=orjson.OPT_SERIALIZE_NUMPY,  # point clouds are arrays
        )
    )
    if key in source.dataset.annotated:
        assert sample["anno.pbdata"] == source.storage.read_bytes(f"annotations/{key}.pbdata")
        anno = json.loads(sample["anno.json"])
        assert anno == orjson.loads(
            orjson.dumps(decode_annotation(sample["anno.pbdata"], lossless=True))
        )
        assert len(anno["frames"]) == len(json.loads(sample["geometry.json"])["frames"])
    else:
        assert "anno.pbdata" not in sample and "anno.json" not in sample
    assert "decode_errors" not in meta


def test_convert_gives_shards_webdataset_reads_back(
    sample_bucket: SourceBucket, new_bucket: str, tmp_path: Path
) -> None:
    summary = objectron_to_wds(
        dest=new_bucket, source=sample_bucket.url, shard_size=3, max_shards=5, concurrency=3
    )
    dest = open_storage(new_bucket)
    assert shard_names(dest) == [f"objectron-{i:06d}.tar" for i in range(5)]
    assert (summary["shards"], summary["built"], summary["samples"]) == (5, 5, 15)

    samples = read_samples(dest, tmp_path)
    assert len(samples) == 15
    assert len({s["__key__"] for s in samples}) == 15
    placeholders = set(sample_bucket.dataset.placeholders)
    for sample in samples:
        assert sample["__key__"] not in placeholders
        check_sample_against_source(sample, sample_bucket)

    index = json.loads(dest.read_bytes("objectron-shardindex.json"))
    assert index["__kind__"] == "wids-shard-index-v1"
    assert [(s["url"], s["nsamples"]) for s in index["shardlist"]] == [
        (f"objectron-{i:06d}.tar", 3) for i in range(5)
    ]
    for entry in index["shardlist"]:
        stat = dest.stat(entry["url"])
        assert stat is not None and stat.size == entry["filesize"]
    # The tarp spec beside each shard names every member with a gsutil source.
    tarp = dest.read_bytes("objectron-000000.txt").decode().splitlines()
    raw_members = [m for m in read_spec(dest, "objectron-000000").members if not m.decoded_from]
    assert len(tarp) == len(raw_members) == 3 * 4 - sum("anno.pbdata" not in s for s in samples[:3])
    assert tarp[0].split(" ", 1)[1].startswith(f"pipe:gsutil cat {sample_bucket.url}/videos/")


def test_runs_are_byte_identical_and_a_rerun_builds_nothing(
    sample_bucket: SourceBucket, fake_gcs: Any
) -> None:
    fake_gcs.create_bucket("identical-a")
    fake_gcs.create_bucket("identical-b")
    params = {"source": sample_bucket.url, "shard_size": 4, "max_shards": 3, "shuffle_seed": 11}
    objectron_to_wds(dest="gs://identical-a/out", **params)
    objectron_to_wds(dest="gs://identical-b", concurrency=1, **params)
    a, b = open_storage("gs://identical-a/out"), open_storage("gs://identical-b")
    assert shard_names(a) == shard_names(b) == [f"objectron-{i:06d}.tar" for i in range(3)]
    for name in shard_names(a):
        assert a.read_bytes(name) == b.read_bytes(name)

    generations = {info.name: info.generation for info in a.list()}
    third = objectron_to_wds(dest="gs://identical-a/out", **params)
    assert (third["built"], third["skipped"], third["failed"]) == (0, 3, 0)
    after = {info.name: info.generation for info in a.list()}
    for name in shard_names(a):
        assert after[name] == generations[name], f"{name} was rewritten"


def test_only_with_anno_keeps_annotated_videos_only(
    sample_bucket: SourceBucket, new_bucket: str, tmp_path: Path
) -> None:
    summary = objectron_to_wds(
        dest=new_bucket, source=sample_bucket.url, shard_size=10, only_with_anno=True
    )
    samples = read_samples(open_storage(new_bucket), tmp_path)
    keys = {s["__key__"] for s in samples}
    assert keys == set(sample_bucket.dataset.annotated)
    assert all("anno.pbdata" in s for s in samples)
    assert summary["left_out"]["no annotation (only_with_anno)"] == len(
        sample_bucket.dataset.unannotated
    )


def test_listing_file_gives_the_same_plan_as_the_api(
    sample_bucket: SourceBucket, new_bucket: str, tmp_path: Path
) -> None:
    source = sample_bucket.storage
    api_objects = list_source_api(source)
    all_names = [info.name for info in source.list()]
    listing = tmp_path / "objectron-files.txt"
    listing.write_text(gsutil_ls_r(source.url, all_names))
    file_objects = resolve_listed_names(source, parse_listing_file(listing.read_text(), source.url))
    assert file_objects == api_objects

    splits = parse_split_index(
        {name: source.read_bytes(name) for name in split_index_names(api_objects)}
    )

    def digests(objects: list[Any]) -> list[str]:
        plans = plan_shards(assemble_samples(objects, splits).samples, shard_size=3)
        return [make_spec(plan, source.url).digest for plan in plans]

    assert digests(file_objects) == digests(api_objects)
    # And through the flow: the listing file run writes the same shards as an API run would.
    objectron_to_wds(
        dest=new_bucket, source=source.url, listing_file=str(listing), shard_size=3, max_shards=2
    )
    dest = open_storage(new_bucket)
    assert [read_spec(dest, f"objectron-{i:06d}").digest for i in range(2)] == digests(api_objects)[
        :2
    ]


def test_local_folders_as_source_and_destination(
    sample_folder: SourceBucket, tmp_path: Path
) -> None:
    dest_dir = tmp_path / "shards"
    summary = objectron_to_wds(
        dest=str(dest_dir), source=sample_folder.url, shard_size=3, max_shards=3
    )
    assert summary["built"] == 3
    assert sorted(p.name for p in dest_dir.glob("*.tar")) == [
        f"objectron-{i:06d}.tar" for i in range(3)
    ]
    assert not list(dest_dir.glob(".*")), "temporary files were left behind"
    samples = list(
        wds.WebDataset(sorted(str(p) for p in dest_dir.glob("*.tar")), shardshuffle=False)
    )
    assert len(samples) == 9
    for sample in samples:
        check_sample_against_source(sample, sample_folder)
    tarp = (dest_dir / "objectron-000000.txt").read_text().splitlines()[0]
    assert tarp.split(" ", 1)[1].startswith(f"file:{sample_folder.url}/videos/")
    rerun = objectron_to_wds(
        dest=str(dest_dir), source=sample_folder.url, shard_size=3, max_shards=3
    )
    assert (rerun["built"], rerun["skipped"]) == (0, 3)


def test_different_plan_is_refused_before_writing_unless_overwrite(
    sample_bucket: SourceBucket, new_bucket: str
) -> None:
    objectron_to_wds(dest=new_bucket, source=sample_bucket.url, shard_size=3, max_shards=2)
    dest = open_storage(new_bucket)
    before = {info.name: info.generation for info in dest.list()}
    old_digest = read_spec(dest, "objectron-000000").digest
    with pytest.raises(PlanConflict) as error:
        objectron_to_wds(
            dest=new_bucket, source=sample_bucket.url, shard_size=3, max_shards=3, shuffle_seed=5
        )
    assert old_digest[:16] in str(error.value)
    assert "overwrite=True" in str(error.value)
    assert {info.name: info.generation for info in dest.list()} == before, "something was written"

    summary = objectron_to_wds(
        dest=new_bucket,
        source=sample_bucket.url,
        shard_size=3,
        max_shards=3,
        shuffle_seed=5,
        overwrite=True,
    )
    assert summary["built"] == 3
    new_digest = read_spec(dest, "objectron-000000").digest
    assert new_digest != old_digest
    head = dest.read_head("objectron-000000.tar", 2048)
    assert read_recorded_digest(head) == new_digest


def test_interrupted_build_leaves_nothing_and_next_run_completes(
    fake_gcs: Any, new_bucket: str, tmp_path: Path
) -> None:
    """A source read dies mid-shard, after several upload chunks went out: no object appears at
    the shard's name, on GCS and in a local folder; the next build makes the shard complete."""
    fake_gcs.create_bucket("interrupt-source")
    source = open_storage("gs://interrupt-source")
    write_sample_dataset(source, videos=3, seed=1, video_bytes=1024 * 1024)
    plans = plan_shards(assemble_samples(list_source_api(source)).samples, shard_size=3)
    spec = make_spec(plans[0], source.url)
    assert sum(m.size or 0 for m in spec.members) > 3 * 1024 * 1024
    for dest_url in (new_bucket, str(tmp_path / "local")):
        dest = open_storage(dest_url, chunk_size=256 * 1024)
        upload_specs(dest, [spec])
        broken = CutShortSource(source, fail_after_bytes=2 * 1024 * 1024)
        with pytest.raises(ConnectionResetError):
            build_shard(broken, dest, spec)
        assert broken.bytes_read >= 2 * 1024 * 1024, "the failure came before the upload started"
        assert not dest.exists(spec.shard)
        assert [i.name for i in dest.list() if i.name.endswith(".tar")] == []
        stats = build_shard(source, dest, spec)
        assert stats.status == "built"
        samples = list(wds.WebDataset(_copy_local(dest, spec.shard, tmp_path), shardshuffle=False))
        assert len(samples) == 3


def test_bad_input_fails_with_a_clear_message_and_writes_nothing(
    sample_bucket: SourceBucket, new_bucket: str, fake_gcs: Any, tmp_path: Path
) -> None:
    dest = open_storage(new_bucket)
    with pytest.raises(InvalidInput, match="shard_size"):
        objectron_to_wds(dest=new_bucket, source=sample_bucket.url, shard_size=0)
    with pytest.raises(InvalidInput, match="max_shards"):
        objectron_to_wds(dest=new_bucket, source=sample_bucket.url, max_shards=-1)
    with pytest.raises(InvalidInput, match="inside the source"):
        objectron_to_wds(dest=f"{sample_bucket.url}/out", source=sample_bucket.url)
    with pytest.raises(InvalidInput, match="does not exist"):
        objectron_to_wds(dest=new_bucket, source="gs://no-such-bucket-here")
    fake_gcs.create_bucket("empty-source")
    with pytest.raises(NoSamples, match="no samples"):
        objectron_to_wds(dest=new_bucket, source="gs://empty-source")
    with pytest.raises(NoSamples, match="no samples"):
        objectron_to_wds(dest=new_bucket, source=f"{sample_bucket.url}/no/such/prefix")
    assert list(dest.list()) == []


def _copy_local(dest: Storage, name: str, tmp_path: Path) -> str:
    path = tmp_path / f"copy-{name}"
    path.write_bytes(dest.read_bytes(name))
    return str(path)


class CutShortSource(Storage):
    """A source whose reads die with a connection reset after `fail_after_bytes` in total."""

    def __init__(self, inner: Storage, fail_after_bytes: int) -> None:
        self.inner = inner
        self.url = inner.url
        self.fail_after_bytes = fail_after_bytes
        self.bytes_read = 0

    def open_read(self, name: str, generation: str | None = None) -> Any:
        reader = self.inner.open_read(name, generation)
        outer = self

        class Reader:
            def read(self, size: int = -1) -> bytes:
                if outer.bytes_read >= outer.fail_after_bytes:
                    raise ConnectionResetError("connection reset by peer (injected)")
                data = reader.read(size)
                outer.bytes_read += len(data)
                return data

            def __enter__(self) -> Reader:
                return self

            def __exit__(self, *exc: object) -> None:
                reader.close()

        return Reader()

    def list(self, prefix: str = "") -> Any:
        return self.inner.list(prefix)

    def stat(self, name: str) -> Any:
        return self.inner.stat(name)

    def open_create(self, name: str, *, durable: bool = True) -> Any:
        raise AssertionError("sources are never written")

    def replace_bytes(self, name: str, data: bytes) -> None:
        raise AssertionError("sources are never written")

    def delete(self, name: str) -> None:
        raise AssertionError("sources are never written")

    def check_root(self) -> None:
        self.inner.check_root()


def test_train_and_test_splits_are_disjoint_series_that_cover_the_annotated_set(
    sample_bucket: SourceBucket, new_bucket: str, tmp_path: Path
) -> None:
    """The sample dataset uses the real index files; book/batch-3/18 is in neither split."""
    keys: dict[str, set[str]] = {}
    for split in ("train", "test"):
        summary = objectron_to_wds(
            dest=new_bucket, source=sample_bucket.url, shard_size=4, split=split
        )
        assert summary["series"] == f"objectron-{split}"
        dest = open_storage(new_bucket)
        names = [n for n in shard_names(dest) if n.startswith(f"objectron-{split}-")]
        assert names and names[0] == f"objectron-{split}-000000.tar"
        samples = []
        for name in names:
            path = tmp_path / name
            path.write_bytes(dest.read_bytes(name))
            samples += list(wds.WebDataset(str(path), shardshuffle=False))
        assert all(json.loads(s["json"])["split"] == split for s in samples)
        keys[split] = {s["__key__"] for s in samples}
        assert summary["no_split"] == sample_bucket.dataset.no_split
        assert dest.exists(f"objectron-{split}-shardindex.json")
    assert keys["train"] and keys["test"]
    assert not keys["train"] & keys["test"]
    assert keys["train"] | keys["test"] | set(sample_bucket.dataset.no_split) == set(
        sample_bucket.dataset.annotated
    )
    assert sample_bucket.dataset.no_split == ["book/batch-3/18"]
