"""A folder on this machine behind the storage seam: atomic, create-only commits by link()."""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, cast

from tasks.storage.base import (
    DEFAULT_CHUNK_SIZE,
    AlreadyExists,
    ObjectInfo,
    ObjectNotFound,
    PermissionDenied,
    SourceChanged,
    Storage,
)

# A local partial file carries this marker so listings skip it and readers never see it.
PARTIAL_MARKER = ".objectron-wds-partial-"
# Buffer of local file objects. Small on purpose: reads and writes of a piece at least this
# large bypass it (no copy), and a large buffer costs a fresh allocation per file opened (at
# 16 MiB that made a local copy several times slower: benchmarks/RESULTS.md).
LOCAL_BUFFER = 64 * 1024


class LocalStorage(Storage):
    """A folder on this machine. Commits are `link()` of a finished, fsynced temporary file:
    atomic and create-only, so a reader never sees a partial file at its final name.
    `chunk_size` is how much written data is handed to the disk at a time (`_WriteBehindFile`)."""

    def __init__(self, root: Path, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self.root = root.expanduser().resolve()
        self.url = str(self.root)
        self.chunk_size = chunk_size

    def _path(self, name: str) -> Path:
        path = (self.root / name).resolve()
        if path != self.root and self.root not in path.parents:
            raise ValueError(f"{name!r} would resolve outside {self.root}")
        return path

    def check_root(self) -> None:
        if not self.root.exists():
            raise ObjectNotFound(f"folder {self.root} does not exist")
        if not self.root.is_dir():
            raise ObjectNotFound(f"{self.root} is not a folder")
        if not os.access(self.root, os.R_OK | os.X_OK):
            raise PermissionDenied(f"folder {self.root} is not readable by this user")

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        if not self.root.is_dir():
            return
        found: list[ObjectInfo] = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, self.root)
            for filename in filenames:
                if PARTIAL_MARKER in filename:
                    continue
                name = filename if rel_dir == "." else f"{rel_dir}/{filename}"
                name = name.replace(os.sep, "/")
                if name.startswith(prefix):
                    st = os.stat(os.path.join(dirpath, filename))
                    found.append(ObjectInfo(name, st.st_size, str(st.st_mtime_ns)))
        yield from sorted(found, key=lambda info: info.name)

    def stat(self, name: str) -> ObjectInfo | None:
        try:
            st = self._path(name).stat()
        except FileNotFoundError:
            return None
        return ObjectInfo(name, st.st_size, str(st.st_mtime_ns))

    def open_read(self, name: str, generation: str | None = None) -> IO[bytes]:
        path = self._path(name)
        try:
            handle = open(path, "rb", buffering=LOCAL_BUFFER)  # noqa: SIM115 - caller closes
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"{path} does not exist") from exc
        except PermissionError as exc:
            raise PermissionDenied(f"{path} is not readable: {exc.strerror}") from exc
        if generation is not None:
            current = str(os.fstat(handle.fileno()).st_mtime_ns)
            if current != generation:
                handle.close()
                raise SourceChanged(
                    f"{path} changed since it was planned (version {generation}, now {current})"
                )
        return handle

    @contextlib.contextmanager
    def open_create(self, name: str, *, durable: bool = True) -> Iterator[IO[bytes]]:
        final = self._path(name)
        if final.exists():
            raise AlreadyExists(f"{final} exists already")
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
        except PermissionError as exc:
            raise PermissionDenied(f"cannot create folder {final.parent}: {exc.strerror}") from exc
        partial = final.with_name(f".{final.name}{PARTIAL_MARKER}{uuid.uuid4().hex}")
        try:
            handle = _WriteBehindFile(open(partial, "xb", buffering=0), self.chunk_size)  # noqa: SIM115
        except PermissionError as exc:
            raise PermissionDenied(f"cannot write in {final.parent}: {exc.strerror}") from exc
        try:
            with handle:
                yield cast(IO[bytes], handle)
                handle.flush()
                if durable:
                    os.fsync(handle.fileno())
            try:
                # link() fails if the final name exists: create-only, and atomic for readers.
                os.link(partial, final)
            except FileExistsError as exc:
                raise AlreadyExists(f"{final} was created by someone else meanwhile") from exc
        finally:
            partial.unlink(missing_ok=True)

    def replace_bytes(self, name: str, data: bytes) -> None:
        final = self._path(name)
        final.parent.mkdir(parents=True, exist_ok=True)
        partial = final.with_name(f".{final.name}{PARTIAL_MARKER}{uuid.uuid4().hex}")
        try:
            partial.write_bytes(data)
            os.replace(partial, final)
        finally:
            partial.unlink(missing_ok=True)

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)


def _sync_file_range_function() -> Any:
    """libc's sync_file_range (Linux), or None where there is none."""
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (AttributeError, OSError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_SYNC_FILE_RANGE = _sync_file_range_function()
_SYNC_FILE_RANGE_WRITE = 2  # start write-out of the range's dirty pages; do not wait


class _WriteBehindFile(io.BufferedWriter):
    """A local file being written that hands its data to the disk as it goes.

    Commits fsync the file (a shard must be on disk before its name appears), but the kernel
    starts writing dirty pages back on its own only when gigabytes are dirty or after 30 s, so
    the whole file would be written out during that one fsync, after the copy. Here every
    `write_behind` bytes start their write-out at once (sync_file_range, as PostgreSQL's
    `*_flush_after` settings do), so the disk writes while the rest is copied and the final
    fsync has little left to wait for. Where sync_file_range is missing this is a plain
    buffered file."""

    def __init__(self, raw: Any, write_behind: int) -> None:
        super().__init__(raw, buffer_size=LOCAL_BUFFER)
        self._write_behind = max(write_behind, LOCAL_BUFFER)
        self._written = 0
        self._handed_over = 0

    def write(self, data: Any) -> int:
        count = super().write(data)
        self._written += count
        if _SYNC_FILE_RANGE is not None and self._written - self._handed_over >= self._write_behind:
            self.flush()
            # Advisory: an error here changes nothing that the final fsync does not check.
            _SYNC_FILE_RANGE(
                self.fileno(),
                self._handed_over,
                self._written - self._handed_over,
                _SYNC_FILE_RANGE_WRITE,
            )
            self._handed_over = self._written
        return count
