"""Faults injected for real: a proxy between the client and fake-gcs-server returns 503/429,
resets connections mid-body on reads and uploads, and stalls; permanent errors; sources that
change between planning and building."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest

from flows.convert import ShardsFailed, objectron_to_wds
from tasks.fake_gcs import FakeGcsServer
from tasks.listing import list_source_api
from tasks.objectron.sample_data import write_sample_dataset
from tasks.planning import plan_shards
from tasks.samples import assemble_samples, parse_split_index, split_index_names
from tasks.specs import ShardSpec, make_spec, read_spec
from tasks.storage import open_storage
from tests.fault_proxy import FaultPlan, FaultProxy

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture(scope="module")
def big_source(fake_gcs: FakeGcsServer) -> str:
    """Videos large enough that each shard is uploaded in several resumable chunks (1 MiB)."""
    fake_gcs.create_bucket("faults-source")
    write_sample_dataset(
        open_storage("gs://faults-source"), videos=8, seed=5, video_bytes=700 * 1024,
        placeholders=1, unannotated=1, include_no_split_video=False,
    )  # fmt: skip
    return "gs://faults-source"


def shard_files(url: str) -> dict[str, bytes]:
    dest = open_storage(url)
    return {i.name: dest.read_bytes(i.name) for i in dest.list() if i.name.endswith(".tar")}


PARAMS: dict[str, Any] = {"shard_size": 2, "chunk_size_mib": 1, "concurrency_limit": None}


def first_shard_spec(source_url: str) -> ShardSpec:
    """The spec the flow will plan first for `source_url` with PARAMS."""
    source = open_storage(source_url)
    objects = list_source_api(source)
    splits = parse_split_index({n: source.read_bytes(n) for n in split_index_names(objects)})
    plans = plan_shards(assemble_samples(objects, splits).samples, shard_size=PARAMS["shard_size"])
    return make_spec(plans[0], source_url)


def test_transient_faults_are_retried_and_output_is_identical(
    big_source: str, fake_gcs: FakeGcsServer, proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    fake_gcs.create_bucket("faults-clean")
    fake_gcs.create_bucket("faults-faulty")
    # The reference run, without faults (still through the proxy, at rate 0).
    objectron_to_wds(dest="gs://faults-clean", source=big_source, **PARAMS)
    clean = shard_files("gs://faults-clean")
    assert len(clean) == 5

    proxy.set_plan(FaultPlan(rate=0.12, seed=3, stall_seconds=0.5))
    before = proxy.requests
    with caplog.at_level(logging.WARNING):
        summary = objectron_to_wds(dest="gs://faults-faulty", source=big_source, **PARAMS)
    proxy.set_plan(FaultPlan())
    assert summary["failed"] == 0 and summary["built"] == 5
    assert shard_files("gs://faults-faulty") == clean

    injected = sum(proxy.injected.values())
    assert injected >= 2 * len(clean), (proxy.injected, proxy.requests - before)
    for kind in ("503", "429", "reset_read", "reset_upload", "stall"):
        assert proxy.injected[kind] > 0, f"no {kind} fault was injected: {proxy.injected}"
    retry_lines = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage().lower()]
    assert retry_lines, "retries are not visible in the logs"


def test_permanent_errors_fail_the_shard_at_once_naming_the_object(
    big_source: str, fake_gcs: FakeGcsServer, proxy: FaultProxy, prefect_server: str
) -> None:
    fake_gcs.create_bucket("faults-permanent")
    forbidden_object = first_shard_spec(big_source).members[0].source
    assert forbidden_object is not None
    proxy.set_plan(FaultPlan(permanent=[(re.escape(forbidden_object), 403)]))
    with pytest.raises(ShardsFailed) as failure:
        objectron_to_wds(dest="gs://faults-permanent", source=big_source, **PARAMS)
    message = str(failure.value)
    assert "objectron-000000.tar" in message
    assert f"{big_source}/{forbidden_object}" in message
    assert "permission" in message.lower()
    assert proxy.injected["permanent_403"] == 1, "the forbidden read was retried"
    assert len(shard_files("gs://faults-permanent")) == 4


def test_missing_source_object_fails_without_retry(
    big_source: str, fake_gcs: FakeGcsServer, proxy: FaultProxy
) -> None:
    fake_gcs.create_bucket("faults-missing")
    target = first_shard_spec(big_source).members[1].source
    assert target is not None
    proxy.set_plan(FaultPlan(permanent=[(re.escape(target) + r"($|\?)", 404)]))
    with pytest.raises(ShardsFailed) as failure:
        objectron_to_wds(dest="gs://faults-missing", source=big_source, **PARAMS)
    assert f"{big_source}/{target}" in str(failure.value)
    assert "does not exist" in str(failure.value)
    # Two lookups, no retry: the pinned read, then one stat that tells "deleted" from
    # "overwritten" (a changed source gets its own message).
    assert proxy.injected["permanent_404"] == 2


def test_source_overwritten_after_planning_is_detected(
    fake_gcs: FakeGcsServer, tmp_path: Any
) -> None:
    """The listing (here a `gsutil ls -a -l -r` file) pins generations; an object overwritten
    since then fails its shard with a message naming it, and no shard mixes versions."""
    fake_gcs.create_bucket("changing-source")
    fake_gcs.create_bucket("changing-dest")
    source = open_storage("gs://changing-source")
    write_sample_dataset(source, videos=4, seed=2, video_bytes=4096, placeholders=0)
    lines = [
        f"{info.size}  2020-11-04T00:00:00Z  {source.url_for(info.name)}#{info.generation}"
        "  metageneration=1"
        for info in source.list()
    ]
    listing = tmp_path / "objectron-files.txt"
    listing.write_text("\n".join(lines) + "\n")
    victim = next(i.name for i in source.list() if i.name.endswith("geometry.pbdata"))
    data = source.read_bytes(victim)
    source.delete(victim)
    source.create_bytes(victim, data[:-1] + b"\x00")  # a new generation, same size

    with pytest.raises(ShardsFailed) as failure:
        objectron_to_wds(
            dest="gs://changing-dest", source=source.url, listing_file=str(listing),
            shard_size=1, concurrency_limit=None,
        )  # fmt: skip
    message = str(failure.value)
    assert f"{source.url}/{victim}" in message and "changed since it was planned" in message
    assert message.count("objectron-0") == 1, "only the shard with the changed object fails"
    dest = open_storage("gs://changing-dest")
    built = [i.name for i in dest.list() if i.name.endswith(".tar")]
    planned = [i.name for i in dest.list() if i.name.endswith(".spec.json")]
    assert len(planned) >= 4 and len(built) == len(planned) - 1
    for name in built:
        assert victim.removeprefix("videos/").removesuffix("/geometry.pbdata") not in " ".join(
            m.name for m in read_spec(dest, name.removesuffix(".tar")).members
        )


def test_an_unreachable_storage_service_is_named_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nothing answers at the emulator address: after the retry policy gives up, a storage
    error that says what to check (the command turns it into its one-line refusal)."""
    from tasks.processes import free_port
    from tasks.storage import GcsStorage, StorageError, is_transient, open_storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")
    storage = open_storage("gs://nobody-home")
    assert isinstance(storage, GcsStorage)
    storage._retry = storage._retry.with_timeout(2.0)  # the policy's 180 s, shortened
    with pytest.raises(StorageError, match="could not reach the storage service") as failure:
        storage.check_root()
    assert "STORAGE_EMULATOR_HOST" in str(failure.value)
    assert not is_transient(failure.value)
