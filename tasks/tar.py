"""Tar members from pinned sources: a sequential tar writer with fixed header fields, and exact
reads of source members (their planned size, their listing's CRC32C).

Fixed fields (mtime, owner, mode, order) and a leading pax global header recording the spec
digest make the same plan give byte-identical shards, and let a later run tell whether an
existing shard came from the same spec.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterable, Iterator
from typing import IO

import google_crc32c

from tasks.specs import MemberSpec
from tasks.storage import SourceChanged, Storage, TransientStorageError, b64_to_hex

BLOCK = tarfile.BLOCKSIZE  # 512
RECORD = tarfile.RECORDSIZE  # 10240: tar files are padded to whole records, as GNU tar does
COPY_PIECE = 1024 * 1024
# A fixed timestamp for every member (2020-11-04, the Objectron release), so output does not
# depend on when it was built.
FIXED_MTIME = 1604448000
DIGEST_COMMENT_PREFIX = "objectron-wds spec sha256:"


def _ustar_template() -> bytearray:
    """The 512-byte header every member shares, but for its name, size and checksum: the
    fields `_tarfile_header` writes for them."""
    template = bytearray(_tarfile_header("x", 0))
    template[0:100] = bytes(100)
    return template


def _member_header(name: str, size: int) -> bytes:
    """The member's tar header: tarfile's PAX_FORMAT bytes exactly.

    The common case (an ASCII name of up to 100 bytes, under 8 GiB) is filled into a copy of
    one template: tarfile builds every header field by field in Python, which was the largest
    share of the GIL a frame build's process holds, two headers per frame (benchmarks/RESULTS.md,
    issue 20). Anything else goes through tarfile (a pax extended header first)."""
    raw = name.encode("utf-8", "strict")
    if len(raw) > 100 or not raw.isascii() or size >= 8**11 or "\0" in name:
        return _tarfile_header(name, size)
    header = _TEMPLATE.copy()
    header[0 : len(raw)] = raw
    header[124:136] = b"%011o\0" % size
    header[148:156] = b"        "
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def _tarfile_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = FIXED_MTIME
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    # PAX: names longer than 100 bytes or not ASCII get an extended header instead of failing.
    return info.tobuf(tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")


_TEMPLATE = _ustar_template()


class TarStreamWriter:
    """Writes a tar archive sequentially to a file object, member by member."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.offset = 0

    def _write(self, data: bytes | memoryview) -> None:
        self.out.write(data)
        self.offset += len(data)

    def _pad(self, multiple: int) -> None:
        remainder = self.offset % multiple
        if remainder:
            self._write(bytes(multiple - remainder))

    def write_global_header(self, headers: dict[str, str]) -> None:
        self._write(tarfile.TarInfo.create_pax_global_header(headers))

    def add_bytes(self, name: str, data: bytes) -> str:
        """Add a member from memory; returns its CRC32C (hex)."""
        self._write(_member_header(name, len(data)))
        self._write(data)
        self._pad(BLOCK)
        return google_crc32c.Checksum(data).digest().hex()

    def add_stream(self, name: str, size: int, reader: IO[bytes]) -> str:
        """Copy exactly `size` bytes from `reader` as member `name`; returns its CRC32C (hex).

        Raises:
            SourceChanged: the reader ended before `size` bytes.
        """
        self._write(_member_header(name, size))
        checksum = google_crc32c.Checksum()
        for piece in read_pieces(reader, size, name):
            checksum.update(piece)
            self._write(piece)
        self._pad(BLOCK)
        return checksum.digest().hex()

    def close(self) -> None:
        """End-of-archive: two zero blocks, then padding to a whole record."""
        self._write(bytes(2 * BLOCK))
        self._pad(RECORD)


def read_recorded_digest(head: bytes) -> str | None:
    """The spec digest a shard recorded in its leading pax global header, or None."""
    if len(head) < BLOCK:
        return None
    try:
        info = tarfile.TarInfo.frombuf(head[:BLOCK], "utf-8", "strict")
    except tarfile.HeaderError:
        return None
    if info.type != tarfile.XGLTYPE:
        return None
    payload = head[BLOCK : BLOCK + info.size].decode("utf-8", errors="replace")
    for record in payload.split("\n"):
        _length, _, keyvalue = record.partition(" ")
        key, _, value = keyvalue.partition("=")
        if key == "comment" and value.startswith(DIGEST_COMMENT_PREFIX):
            return value[len(DIGEST_COMMENT_PREFIX) :]
    return None


def check_checksum(member: MemberSpec, actual_hex: str, url: str) -> None:
    expected = b64_to_hex(member.crc32c)
    if expected is not None and expected != actual_hex:
        # Same generation, different bytes: the read was corrupted in transit; a retry may cure.
        raise TransientStorageError(
            f"{url}: CRC32C {actual_hex} does not match the listing's {expected}"
        )


def read_pieces(reader: IO[bytes], size: int, name: str) -> Iterator[bytes]:
    """Exactly `size` bytes of `reader`, in pieces of at most COPY_PIECE.

    Raises:
        SourceChanged: the reader ended before `size` bytes.
    """
    remaining = size
    while remaining:
        piece = reader.read(min(COPY_PIECE, remaining))
        if not piece:
            raise SourceChanged(f"{name}: source ended after {size - remaining} of {size} bytes")
        yield piece
        remaining -= len(piece)


def read_whole(source: Storage, member: MemberSpec) -> bytes:
    """Exactly `member.size` bytes of a source member, from its planned generation."""
    assert member.source is not None and member.size is not None
    with source.open_read(member.source, member.generation) as reader:
        return b"".join(read_pieces(reader, member.size, member.name))


def webdataset_sample_count(names: Iterable[str]) -> int:
    """How many samples webdataset makes of a tar with these member names, in order: its own
    grouping by key, after skipping what it skips (top-level `__NAME__` metadata members)."""
    from webdataset.tariterators import group_by_keys

    files = (
        {"fname": name, "data": b"", "__url__": ""}
        for name in names
        if not ("/" not in name and name.startswith("__") and name.endswith("__"))
    )
    return sum(1 for _ in group_by_keys(files))
