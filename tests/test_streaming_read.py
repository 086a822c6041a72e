"""GCS reads stream: one GET per object, resumed where it broke off after a reset, holding only
the piece asked for (the library's chunked reader holds a whole chunk)."""

from __future__ import annotations

import os
import tracemalloc

import pytest

from tasks.storage import MiB, ObjectNotFound, SourceChanged, open_storage
from tasks.tar import read_pieces
from tests.fault_proxy import FaultPlan, FaultProxy


def test_a_read_reset_mid_body_resumes_with_the_same_bytes(
    new_bucket: str, proxy: FaultProxy
) -> None:
    data = os.urandom(3 * MiB + 12345)
    open_storage(new_bucket).replace_bytes("video.MOV", data)
    generation = open_storage(new_bucket).stat("video.MOV").generation  # type: ignore[union-attr]
    # Every download body is cut in half: each resumed request gets half of what is left.
    proxy.set_plan(FaultPlan(rate=1.0, kinds=("reset_read",), seed=1))
    source = open_storage(new_bucket, chunk_size=MiB)
    with source.open_read("video.MOV", generation) as reader:
        read = b"".join(read_pieces(reader, len(data), "video.MOV"))
    # Read whole (specs, stats, claims are read so): every break resumed, nothing cut off.
    whole = source.read_bytes("video.MOV", generation)
    proxy.set_plan(FaultPlan())
    assert read == data
    assert whole == data
    assert proxy.injected["reset_read"] >= 6, proxy.injected


def test_memory_of_a_read_is_the_piece_not_the_chunk(new_bucket: str) -> None:
    size = 48 * MiB
    open_storage(new_bucket, chunk_size=16 * MiB).replace_bytes("big.MOV", os.urandom(size))
    source = open_storage(new_bucket, chunk_size=16 * MiB)
    total = 0
    tracemalloc.start()
    try:
        with source.open_read("big.MOV") as reader:
            for piece in read_pieces(reader, size, "big.MOV"):
                total += len(piece)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == size
    # 1 MiB pieces: a few of them at most, never a 16 MiB chunk.
    assert peak < 6 * MiB, f"peak {peak / MiB:.1f} MiB while reading 1 MiB pieces"


def test_a_read_is_one_request_and_refuses_another_generation(
    new_bucket: str, proxy: FaultProxy
) -> None:
    """Size and generation come from the media GET's headers: no metadata request first (on
    GCS each request is a round trip per member). A pinned generation that was overwritten is
    a changed source, not a missing one."""
    data = os.urandom(2 * MiB + 7)
    writer = open_storage(new_bucket)
    writer.replace_bytes("video.MOV", data)
    generation = writer.stat("video.MOV").generation  # type: ignore[union-attr]
    source = open_storage(new_bucket)
    source.check_root()  # the client's first requests, if any, before counting
    before = proxy.requests
    with source.open_read("video.MOV", generation) as reader:
        read = b"".join(read_pieces(reader, len(data), "video.MOV"))
    assert read == data
    assert proxy.requests - before == 1
    with source.open_read("video.MOV") as reader:  # unpinned: the current version
        assert reader.read() == data
    writer.replace_bytes("video.MOV", b"new version")
    with pytest.raises(SourceChanged, match="changed since it was planned"):
        source.open_read("video.MOV", generation)
    with pytest.raises(ObjectNotFound, match="does not exist"):
        source.open_read("missing.MOV")
    writer.replace_bytes("empty", b"")
    with source.open_read("empty") as reader:
        assert reader.read() == b""
