"""The seam: the interface every stage uses, its errors, and what a listing reports.

Every stage talks to storage only through `Storage`, so the same pipeline runs against
`gs://bucket/prefix` (real GCS, or fake-gcs-server when `STORAGE_EMULATOR_HOST` is set) and
against a plain folder. Names passed to a `Storage` are relative to its root and use `/`.

What the pipeline relies on, in both implementations:
- `list` gives size and generation for every object (generation pins a source version);
- `open_read` streams, and refuses a source whose generation is no longer the planned one;
- `open_create` streams a new object that becomes visible at its final name only when the
  writer is closed without an error, and never replaces an existing object.
"""

from __future__ import annotations

import base64
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

MiB = 1024 * 1024
DEFAULT_CHUNK_SIZE = 16 * MiB


class StorageError(Exception):
    """A storage operation failed; the message names the object."""


class ObjectNotFound(StorageError):
    """The object (or bucket, or folder) does not exist."""


class AlreadyExists(StorageError):
    """A create-only write found an object at the name already."""


class TransientStorageError(StorageError):
    """A fault that a retry may cure, e.g. a checksum mismatch after a read cut short."""


class SourceChanged(StorageError):
    """A source object no longer has the generation (or size) the plan pinned."""


class PermissionDenied(StorageError):
    """The credentials in use may not read or write this object."""


@dataclass(frozen=True)
class ObjectInfo:
    """One object as a listing reports it."""

    name: str
    size: int
    # GCS: the object generation. Local: the file's mtime in nanoseconds, which changes when the
    # file is rewritten, so it pins a version in the same way.
    generation: str
    # Base64 digests as GCS reports them; None for local files.
    md5: str | None = None
    crc32c: str | None = None


class Storage(ABC):
    """A bucket prefix or a folder, addressed by names relative to its root."""

    url: str

    def url_for(self, name: str) -> str:
        """The full URL (or path) of `name`, for specs, metadata and messages."""
        return f"{self.url.rstrip('/')}/{name}" if name else self.url

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose name starts with `prefix`, in name order."""

    @abstractmethod
    def stat(self, name: str) -> ObjectInfo | None:
        """The object's listing entry, or None if it does not exist."""

    @abstractmethod
    def open_read(self, name: str, generation: str | None = None) -> IO[bytes]:
        """A streaming reader; with `generation`, raises SourceChanged if the object moved on."""

    @abstractmethod
    def open_create(
        self, name: str, *, durable: bool = True
    ) -> contextlib.AbstractContextManager[IO[bytes]]:
        """A streaming writer for a new object.

        The object appears at `name` only when the block exits without an exception; on an
        exception nothing is left at `name`. Raises AlreadyExists if `name` exists (checked
        before writing where the backend allows, and again when the object is committed).
        `durable=False` is for objects that are worthless after a crash anyway (claims): a
        local folder then commits without waiting for the disk; GCS writes are always durable.
        """

    @abstractmethod
    def delete(self, name: str) -> None:
        """Remove `name`; a missing object is not an error."""

    @abstractmethod
    def check_root(self) -> None:
        """Raise ObjectNotFound / PermissionDenied if the root cannot be used at all."""

    def exists(self, name: str) -> bool:
        return self.stat(name) is not None

    def read_bytes(self, name: str, generation: str | None = None) -> bytes:
        with self.open_read(name, generation) as reader:
            return reader.read()

    def read_head(self, name: str, length: int) -> bytes:
        """The first `length` bytes (fewer if the object is shorter)."""
        with self.open_read(name) as reader:
            return reader.read(length)

    @abstractmethod
    def replace_bytes(self, name: str, data: bytes) -> None:
        """Write a small derived object (an index), replacing any old one atomically."""

    def create_bytes(self, name: str, data: bytes, *, durable: bool = True) -> None:
        """Write a small object, create-only (raises AlreadyExists); `durable` as in
        `open_create`."""
        with self.open_create(name, durable=durable) as writer:
            writer.write(data)


def is_inside(inner: str, outer: str) -> bool:
    """True if location `inner` is `outer` or lies below it (so writing there would change it)."""
    a, b = _normalise_location(inner), _normalise_location(outer)
    return a == b or a.startswith(b.rstrip("/") + "/")


def _normalise_location(url: str) -> str:
    if url.startswith("gs://"):
        return url.rstrip("/")
    return str(Path(url.removeprefix("file://")).resolve())


def b64_to_hex(value: str | None) -> str | None:
    """GCS reports digests in base64; specs and stats show hex."""
    return None if value is None else base64.b64decode(value).hex()
