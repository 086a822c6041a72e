"""The stages before the builds (checks, listing, split index, specs) ask storage their
independent questions at once, not one after another: on a real link each question is a round
trip of 20-100 ms, paid by every run (benchmarks/RESULTS.md, issue 19). The answers are the
same as asked one by one, and errors still name the problem."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tasks.checks import check_locations, take_recent_check
from tasks.listing import SOURCE_PREFIXES, list_source_api
from tasks.parameters import InvalidInput
from tasks.planning import plan_shards
from tasks.samples import assemble_samples, read_split_index, split_index_names
from tasks.specs import PlanConflict, ShardFiles, make_spec, upload_specs
from tasks.storage import (
    ACCESS_TOKEN_VARIABLE,
    CREDENTIALS_BLOCK_VARIABLE,
    GcsStorage,
    ObjectInfo,
    open_storage,
)
from tasks.storage.gcs import KEY_FILE_VARIABLE
from tests.conftest import SourceBucket
from tests.fault_proxy import FaultPlan, FaultProxy
from tests.token_server import TokenServer

LATENCY = 0.3  # long enough that requests sent together overlap even on a busy machine


@pytest.fixture
def slow_proxy(proxy: FaultProxy) -> FaultProxy:
    proxy.set_plan(FaultPlan(latency_seconds=LATENCY))
    return proxy


def test_checks_listing_and_index_reads_go_out_at_once(
    sample_bucket: SourceBucket, new_bucket: str, slow_proxy: FaultProxy
) -> None:
    since = time.time()
    check_locations(sample_bucket.url, new_bucket)
    checks = [
        (arrived, answered)
        for arrived, answered, _method, path in slow_proxy.handled
        if arrived >= since and path.split("?")[0].endswith(("/b/objectron-sample", new_bucket[4:]))
    ]
    assert len(checks) == 2
    assert max(arrived for arrived, _ in checks) < min(answered for _, answered in checks)

    source = open_storage(sample_bucket.url)
    since = time.time()
    objects = list_source_api(source)
    assert slow_proxy.max_in_flight(since) >= len(SOURCE_PREFIXES)
    one_by_one = sorted(
        (info for prefix in SOURCE_PREFIXES for info in sample_bucket.storage.list(prefix)),
        key=lambda info: info.name,
    )
    assert objects == one_by_one

    names = split_index_names(objects)
    assert len(names) >= 4
    since = time.time()
    files = read_split_index(source, names)
    assert slow_proxy.max_in_flight(since) >= 4
    assert files == {name: sample_bucket.storage.read_bytes(name) for name in names}
    assert list(files) == names


def test_spec_files_are_written_at_once(
    sample_bucket: SourceBucket, new_bucket: str, slow_proxy: FaultProxy
) -> None:
    samples = assemble_samples(list_source_api(sample_bucket.storage)).samples
    specs = [make_spec(plan, sample_bucket.url) for plan in plan_shards(samples, shard_size=2)]
    dest = open_storage(new_bucket)
    since = time.time()
    result = upload_specs(dest, specs)
    assert sorted(result.written) == sorted(spec.shard for spec in specs)
    assert slow_proxy.max_in_flight(since) >= len(specs)
    for spec in specs:
        files = ShardFiles(spec.base)
        assert dest.read_bytes(files.spec) == spec.to_json()
        assert dest.read_bytes(files.tarp) == spec.tarp_lines().encode()
    # A second run of the same plan confirms every spec: nothing written, nothing refused, and
    # nothing read back (the listing's MD5 of each stored spec is that of the run's own).
    since = time.time()
    again = upload_specs(open_storage(new_bucket), specs)
    assert again.written == [] and sorted(again.unchanged) == sorted(s.shard for s in specs)
    spec_names = {ShardFiles(spec.base).spec for spec in specs}
    asked = [path for arrived, _, _, path in slow_proxy.handled if arrived >= since]
    assert asked and [path for path in asked if any(name in path for name in spec_names)] == []


def test_runs_started_at_once_confirm_each_others_spec_files_by_one_listing(
    sample_bucket: SourceBucket,
    new_bucket: str,
    slow_proxy: FaultProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    samples = assemble_samples(list_source_api(sample_bucket.storage)).samples
    specs = [make_spec(plan, sample_bucket.url) for plan in plan_shards(samples, shard_size=2)]
    upload_specs(open_storage(new_bucket), specs)
    # A run that listed the destination before the first run's creates landed (all runs of a
    # plan started at once do): its listing is empty, and each of its creates finds the file.
    late = open_storage(new_bucket)
    listings: list[str] = []
    real_list = late.list

    def listed_before_the_other_run_wrote(prefix: str = "") -> Iterator[ObjectInfo]:
        listings.append(prefix)
        return iter(()) if len(listings) == 1 else real_list(prefix)

    monkeypatch.setattr(late, "list", listed_before_the_other_run_wrote)
    since = time.time()
    again = upload_specs(late, specs)
    assert again.written == [] and sorted(again.unchanged) == sorted(s.shard for s in specs)
    assert len(listings) == 2  # the stale one, then one to confirm every file it found
    spec_files = {n for s in specs for n in (ShardFiles(s.base).spec, ShardFiles(s.base).tarp)}
    reads = [
        path
        for arrived, _, method, path in slow_proxy.handled
        if arrived >= since and method == "GET" and any(name in path for name in spec_files)
    ]
    assert reads == []

    # Another plan's run on the same destination, started at the same moment: refused by name.
    other = [make_spec(plan, sample_bucket.url) for plan in plan_shards(samples, shard_size=3)]
    late_other = open_storage(new_bucket)
    listings.clear()
    real_list = late_other.list
    monkeypatch.setattr(late_other, "list", listed_before_the_other_run_wrote)
    with pytest.raises(
        PlanConflict, match=r"objectron-0+\.(txt|spec\.json) exists with different content"
    ):
        upload_specs(late_other, other)


def test_when_several_checks_fail_the_source_is_named_first(fake_gcs: object) -> None:
    with pytest.raises(InvalidInput, match="source gs://no-such-source-x"):
        check_locations("gs://no-such-source-x", "gs://no-such-dest-x", "gs://no-such-list/x")
    with pytest.raises(InvalidInput, match="destination gs://no-such-dest-x"):
        check_locations("gs://objectron-sample", "gs://no-such-dest-x", "gs://no-such-list/x")


def test_a_check_by_the_command_is_taken_once_by_the_run_it_starts(
    sample_bucket: SourceBucket, new_bucket: str
) -> None:
    check_locations(sample_bucket.url, new_bucket)  # the flow's own check: not remembered
    assert not take_recent_check(sample_bucket.url, new_bucket)
    check_locations(sample_bucket.url, new_bucket, remember=True)  # the command's
    assert not take_recent_check(sample_bucket.url, new_bucket, "gs://other/listing")
    assert take_recent_check(sample_bucket.url, new_bucket)
    assert not take_recent_check(sample_bucket.url, new_bucket)  # once
    with pytest.raises(InvalidInput):
        check_locations(sample_bucket.url, "gs://no-such-dest-x", remember=True)
    assert not take_recent_check(sample_bucket.url, "gs://no-such-dest-x")


def test_one_connection_per_storage_with_room_for_its_threads(
    new_bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    dest = open_storage(new_bucket)
    assert isinstance(dest, GcsStorage)
    with ThreadPoolExecutor(16) as pool:
        connections = list(pool.map(lambda _: dest.connection, range(16)))
    assert all(c is connections[0] for c in connections)
    with caplog.at_level(logging.WARNING, logger="urllib3"), ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda i: dest.create_bytes(f"x-{i}", b"x"), range(64)))
        list(pool.map(lambda i: dest.read_bytes(f"x-{i}"), range(64)))
    assert "Connection pool is full" not in caplog.text


def test_default_credentials_are_looked_up_once_and_refreshed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every storage object makes a client; with application default credentials (a key file
    here, whose token_uri is a local token server) they share one credentials object, so a
    run fetches one token, not one per stage and per shard."""
    from google.auth.transport.requests import Request

    from tasks.storage.gcs import connect_gcs, default_credentials

    tokens = TokenServer().start()
    default_credentials.cache_clear()
    try:
        monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
        monkeypatch.delenv(CREDENTIALS_BLOCK_VARIABLE, raising=False)
        monkeypatch.delenv(ACCESS_TOKEN_VARIABLE, raising=False)
        monkeypatch.setenv(KEY_FILE_VARIABLE, str(tokens.write_key_file(tmp_path / "key.json")))
        first, second = connect_gcs(), connect_gcs()
        credentials = first.session.credentials
        assert second.session.credentials is credentials
        assert first.client._credentials is credentials  # the client's requests too
        credentials.before_request(Request(), "GET", "https://storage.example/x", {})
        second.session.credentials.before_request(Request(), "GET", "https://x.example", {})
        assert len(tokens.grants) == 1
    finally:
        default_credentials.cache_clear()
        tokens.stop()
