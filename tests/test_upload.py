"""GCS writes: our resumable upload sends the object chunk by chunk from one reused buffer,
resends what the service did not keep, catches a chunk stored twice, and leaves nothing at the
name when it fails or is interrupted."""

from __future__ import annotations

import os
import re
import tracemalloc

import pytest

from tasks.storage import (
    AlreadyExists,
    GcsStorage,
    MiB,
    PermissionDenied,
    Storage,
    TransientStorageError,
    is_transient,
    open_storage,
)
from tests.fault_proxy import FaultPlan, FaultProxy

CHUNK = 256 * 1024  # GCS's unit: the smallest chunk a resumable upload takes


def _write(dest: Storage, name: str, data: bytes, piece: int) -> None:
    with dest.open_create(name) as out:
        for start in range(0, len(data), piece):
            out.write(data[start : start + piece])


@pytest.mark.parametrize(
    "size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 100, 7 * CHUNK + 5]
)
def test_objects_of_every_size_round_the_chunk_come_back_whole(new_bucket: str, size: int) -> None:
    dest = open_storage(new_bucket, chunk_size=CHUNK)
    data = os.urandom(size)
    _write(dest, "shard.tar", data, piece=100_003)  # pieces that straddle chunk ends
    assert dest.read_bytes("shard.tar") == data
    info = dest.stat("shard.tar")
    assert info is not None and info.size == size


def test_writes_of_bytearrays_and_memoryviews_are_sent_as_written(new_bucket: str) -> None:
    dest = open_storage(new_bucket, chunk_size=CHUNK)
    parts = [os.urandom(CHUNK + 7), os.urandom(3), os.urandom(2 * CHUNK)]
    with dest.open_create("mixed.tar") as out:
        out.write(bytearray(parts[0]))
        out.write(memoryview(parts[1]))
        out.write(parts[2])
    assert dest.read_bytes("mixed.tar") == b"".join(parts)


def test_an_interrupted_upload_leaves_nothing(new_bucket: str) -> None:
    dest = open_storage(new_bucket, chunk_size=CHUNK)
    with pytest.raises(RuntimeError, match="source broke"), dest.open_create("cut.tar") as out:
        out.write(os.urandom(3 * CHUNK))  # two chunks sent already
        raise RuntimeError("source broke")
    assert dest.stat("cut.tar") is None


def test_chunks_the_service_kept_only_part_of_are_completed(
    new_bucket: str, proxy: FaultProxy
) -> None:
    data = os.urandom(12 * CHUNK + 999)
    proxy.set_plan(FaultPlan(rate=0.5, kinds=("partial_upload",), seed=4))
    dest = open_storage(new_bucket, chunk_size=2 * CHUNK)
    _write(dest, "partial.tar", data, piece=MiB)
    proxy.set_plan(FaultPlan())
    assert proxy.injected["partial_upload"] >= 2, proxy.injected
    assert dest.read_bytes("partial.tar") == data


def test_a_chunk_the_service_kept_none_of_is_sent_again(new_bucket: str, proxy: FaultProxy) -> None:
    data = os.urandom(6 * CHUNK + 1)
    # Each kind once (each_kind_once), at the first chunk, and practically never again.
    proxy.set_plan(FaultPlan(rate=1e-12, kinds=("stuck_upload",)))
    dest = open_storage(new_bucket, chunk_size=2 * CHUNK)
    _write(dest, "stuck-once.tar", data, piece=CHUNK)
    assert proxy.injected["stuck_upload"] == 1
    assert dest.read_bytes("stuck-once.tar") == data


def test_a_service_that_keeps_nothing_is_given_up_on_with_backoff(
    new_bucket: str, proxy: FaultProxy
) -> None:
    """Every chunk answered with "kept nothing": not an endless loop of resends, but the retry
    policy's backoff and, at its deadline, an error naming the object; nothing is left."""
    dest = open_storage(new_bucket, chunk_size=CHUNK)
    assert isinstance(dest, GcsStorage)
    dest._retry = dest._retry.with_timeout(3.0)  # the policy's 180 s, shortened for the test
    proxy.set_plan(FaultPlan(rate=1.0, kinds=("stuck_upload",)))
    with pytest.raises(Exception, match="takes no more") as failure:
        _write(dest, "stuck.tar", os.urandom(3 * CHUNK), piece=CHUNK)
    proxy.set_plan(FaultPlan())
    assert is_transient(failure.value)
    # Three 308s per attempt, then backoff: a handful of attempts in 3 s, not thousands.
    assert 3 <= proxy.injected["stuck_upload"] <= 60, proxy.injected
    assert dest.stat("stuck.tar") is None


def test_a_chunk_stored_twice_is_caught_and_the_object_deleted(
    new_bucket: str, proxy: FaultProxy
) -> None:
    """The first chunk arrives but its answer is lost; the resend is appended by the emulator
    (real GCS would say it has the bytes already). The finished object is then larger than what
    was sent: an error worth retrying, and the wrong object is gone."""
    data = os.urandom(5 * CHUNK)
    # Once, at the first chunk (each_kind_once), and never again (a rate of practically 0).
    proxy.set_plan(FaultPlan(rate=1e-12, kinds=("lost_upload_response",)))
    dest = open_storage(new_bucket, chunk_size=CHUNK)
    with pytest.raises(TransientStorageError, match="deleted") as failure:
        _write(dest, "twice.tar", data, piece=CHUNK)
    proxy.set_plan(FaultPlan())
    assert proxy.injected["lost_upload_response"] == 1
    assert f"stored {6 * CHUNK} bytes" in str(failure.value)
    assert dest.stat("twice.tar") is None
    _write(dest, "twice.tar", data, piece=CHUNK)  # written again: whole
    assert dest.read_bytes("twice.tar") == data


def test_memory_of_an_upload_is_one_chunk(new_bucket: str) -> None:
    """The request body is the buffer itself; `blob.open("wb")` held about three chunks."""
    chunk = 8 * MiB
    dest = open_storage(new_bucket, chunk_size=chunk)
    piece = os.urandom(MiB)
    tracemalloc.start()
    try:
        with dest.open_create("big.tar") as out:
            for _ in range(40):
                out.write(piece)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert dest.stat("big.tar").size == 40 * MiB  # type: ignore[union-attr]
    assert peak < 1.5 * chunk, f"peak {peak / MiB:.1f} MiB for {chunk / MiB:.0f} MiB chunks"


@pytest.mark.parametrize("size", [100, 3 * CHUNK], ids=["one request", "resumable"])
def test_write_errors_name_the_object_and_errors_of_the_writing_code_pass_through(
    new_bucket: str, proxy: FaultProxy, size: int
) -> None:
    from google.api_core import exceptions as gexc

    dest = open_storage(new_bucket, chunk_size=CHUNK)
    data = os.urandom(size)
    _write(dest, "taken.tar", data, piece=CHUNK)
    with pytest.raises(AlreadyExists, match=r"taken\.tar"):
        _write(dest, "taken.tar", data, piece=CHUNK)
    assert dest.read_bytes("taken.tar") == data

    bucket = new_bucket.removeprefix("gs://")
    proxy.set_plan(FaultPlan(permanent=[(rf"/upload/storage/v1/b/{bucket}/o", 403)]))
    denied = re.escape(f"no permission to write {new_bucket}/denied.tar")
    with pytest.raises(PermissionDenied, match=denied):
        _write(dest, "denied.tar", data, piece=CHUNK)
    proxy.set_plan(FaultPlan())
    assert dest.stat("denied.tar") is None

    # A NotFound raised by the code that writes (a source read, say) stays what it was: it is
    # not the destination bucket that is missing.
    with pytest.raises(gexc.NotFound, match="a source object"), dest.open_create("x.tar") as out:
        out.write(data)
        raise gexc.NotFound("a source object")
    assert dest.stat("x.tar") is None
