"""LocalStorage's write path: a file being written hands its data to the disk every chunk
(sync_file_range), and what it commits is exactly what was written."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tasks.storage import LocalStorage
from tasks.storage import local as storage

MIB = 1024 * 1024


def test_sync_file_range_is_found_on_linux() -> None:
    if sys.platform.startswith("linux"):
        assert storage._SYNC_FILE_RANGE is not None, "write-behind is off: libc lookup failed"


@pytest.mark.parametrize("with_write_behind", [True, False])
def test_writes_are_handed_to_the_disk_as_they_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_write_behind: bool
) -> None:
    calls: list[tuple[int, int, int]] = []  # (offset, length, return code)
    real = storage._SYNC_FILE_RANGE

    def recording(fd: int, offset: int, length: int, flags: int) -> int:
        result = real(fd, offset, length, flags) if real is not None else 0
        calls.append((offset, length, result))
        return int(result)

    monkeypatch.setattr(storage, "_SYNC_FILE_RANGE", recording if with_write_behind else None)
    dest = LocalStorage(tmp_path, chunk_size=1 * MIB)
    data = os.urandom(5 * MIB + 12345)
    piece = 300 * 1024  # not a divisor of the chunk: hand-overs happen mid-piece
    with dest.open_create("shard.tar") as out:
        for start in range(0, len(data), piece):
            out.write(data[start : start + piece])
    assert (tmp_path / "shard.tar").read_bytes() == data
    assert [p.name for p in tmp_path.iterdir()] == ["shard.tar"]  # no partial file left
    if not with_write_behind:
        assert calls == []
        return
    # Contiguous ranges from the start, each at least a chunk, all accepted by the kernel,
    # covering all but the tail under a chunk (that one the commit's fsync writes).
    pieces_per_hand_over = -(-MIB // piece)  # the first write that reaches a chunk
    assert len(calls) == len(data) // (pieces_per_hand_over * piece)
    offset = 0
    for start, length, result in calls:
        assert (start, result) == (offset, 0)
        assert length >= 1 * MIB
        offset += length
    assert len(data) - offset < 1 * MIB
