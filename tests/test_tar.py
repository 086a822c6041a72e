"""The streaming tar writer: readable by tarfile and webdataset, deterministic, self-describing."""

from __future__ import annotations

import io
import tarfile

import pytest
import webdataset as wds

from tasks.storage import SourceChanged
from tasks.tar import FIXED_MTIME, TarStreamWriter, read_recorded_digest


def write_tar(members: dict[str, bytes], digest: str = "ab" * 32) -> bytes:
    out = io.BytesIO()
    tar = TarStreamWriter(out)
    tar.write_global_header({"comment": f"objectron-wds spec sha256:{digest}"})
    for name, data in members.items():
        tar.add_stream(name, len(data), io.BytesIO(data))
    tar.close()
    return out.getvalue()


MEMBERS = {
    "cup/batch-1/1.video.mov": bytes(range(256)) * 5,
    "cup/batch-1/1.geometry.pbdata": b"\x01\x02",
    "cup/batch-1/1.json": b'{"class":"cup"}',
    "cup/batch-1/2.video.mov": b"",
    "cup/batch-1/2.json": b"{}",
}


def test_tarfile_reads_members_with_fixed_headers() -> None:
    data = write_tar(MEMBERS)
    assert len(data) % tarfile.RECORDSIZE == 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        infos = tar.getmembers()
        assert [i.name for i in infos] == list(MEMBERS)
        for info in infos:
            assert (info.mtime, info.uid, info.gid, info.mode) == (FIXED_MTIME, 0, 0, 0o644)
            extracted = tar.extractfile(info)
            assert extracted is not None
            assert extracted.read() == MEMBERS[info.name]


def test_same_members_give_identical_bytes_and_digest_is_recorded() -> None:
    assert write_tar(MEMBERS) == write_tar(dict(MEMBERS))
    assert read_recorded_digest(write_tar(MEMBERS, "cd" * 32)[:2048]) == "cd" * 32
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w") as tar:
        tar.addfile(tarfile.TarInfo("x.txt"), io.BytesIO(b""))
    assert read_recorded_digest(plain.getvalue()[:2048]) is None


def test_webdataset_groups_members_into_samples(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "shard.tar"
    path.write_bytes(write_tar(MEMBERS))
    samples = list(wds.WebDataset(str(path), shardshuffle=False))
    assert [s["__key__"] for s in samples] == ["cup/batch-1/1", "cup/batch-1/2"]
    assert samples[0]["video.mov"] == MEMBERS["cup/batch-1/1.video.mov"]
    assert set(samples[0]) - {"__key__", "__url__", "__local_path__"} == {
        "video.mov",
        "geometry.pbdata",
        "json",
    }


def test_short_source_raises_source_changed() -> None:
    tar = TarStreamWriter(io.BytesIO())
    with pytest.raises(SourceChanged, match="ended after 3 of 10 bytes"):
        tar.add_stream("a.bin", 10, io.BytesIO(b"abc"))


def test_member_headers_are_tarfiles_bytes_exactly() -> None:
    """The template fast path writes what tarfile's PAX_FORMAT writes, for every kind of name
    and size (long and non-ASCII names, and sizes past ustar's 8 GiB, take tarfile's path)."""
    import random
    import string

    from tasks.tar import _member_header, _tarfile_header

    rng = random.Random(7)
    alphabet = string.ascii_letters + string.digits + "/._- "
    names = ["a", "x" * 100, "x" * 101, "é.json", "cup/batch-1/1/000000.jpg"]
    names += ["".join(rng.choices(alphabet, k=rng.randint(1, 100))) for _ in range(500)]
    sizes = [0, 1, 511, 512, 513, 10**6, 8**11 - 1, 8**11, 10**12]
    for name in names:
        for size in (rng.choice(sizes), rng.randint(0, 10**9)):
            assert _member_header(name, size) == _tarfile_header(name, size), (name, size)
