"""The storage seam: one small interface over Google Cloud Storage and local folders.

| module | what it holds |
|---|---|
| `base.py` | `Storage` (the interface every stage uses), its errors, `ObjectInfo` |
| `local.py` | `LocalStorage`: a folder; atomic, create-only commits |
| `gcs.py` | `GcsStorage`: a bucket through google-cloud-storage; clients and credentials |
| `gcs_transfer.py` | GCS bytes over an `AuthorizedSession`: one-GET reads, create-only uploads |
| `retry.py` | which errors are transient, and the retry policy of every GCS call |
| `secrets.py` | redaction of credentials from messages and logs |

Stages import from here (`from tasks.storage import Storage, open_storage`), not from the
modules, so the layout behind the seam can change without touching them.
"""

from __future__ import annotations

from pathlib import Path

from tasks.storage.base import (
    DEFAULT_CHUNK_SIZE,
    AlreadyExists,
    MiB,
    ObjectInfo,
    ObjectNotFound,
    PermissionDenied,
    SourceChanged,
    Storage,
    StorageError,
    TransientStorageError,
    b64_to_hex,
    is_inside,
)
from tasks.storage.gcs import (
    ACCESS_TOKEN_VARIABLE,
    CREDENTIALS_BLOCK_VARIABLE,
    GcsStorage,
    credentials_from_block,
    make_gcs_client,
)
from tasks.storage.local import PARTIAL_MARKER, LocalStorage
from tasks.storage.retry import REQUEST_TIMEOUT, is_transient, storage_retry
from tasks.storage.secrets import RedactingFilter, redact, register_secret

__all__ = [
    "ACCESS_TOKEN_VARIABLE",
    "CREDENTIALS_BLOCK_VARIABLE",
    "DEFAULT_CHUNK_SIZE",
    "PARTIAL_MARKER",
    "REQUEST_TIMEOUT",
    "AlreadyExists",
    "GcsStorage",
    "LocalStorage",
    "MiB",
    "ObjectInfo",
    "ObjectNotFound",
    "PermissionDenied",
    "RedactingFilter",
    "SourceChanged",
    "Storage",
    "StorageError",
    "TransientStorageError",
    "b64_to_hex",
    "credentials_from_block",
    "is_inside",
    "is_transient",
    "make_gcs_client",
    "open_storage",
    "redact",
    "register_secret",
    "storage_retry",
]


def open_storage(url: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Storage:
    """`gs://bucket[/prefix]` gives GCS; anything else (`file://` or a path) a local folder."""
    if url.startswith("gs://"):
        bucket, _, prefix = url[len("gs://") :].partition("/")
        if not bucket:
            raise ValueError(f"{url!r} names no bucket: write gs://BUCKET[/PREFIX]")
        return GcsStorage(bucket, prefix.strip("/"), chunk_size=chunk_size)
    if "://" in url and not url.startswith("file://"):
        raise ValueError(f"{url!r}: only gs:// URLs and local paths are supported")
    return LocalStorage(Path(url.removeprefix("file://")), chunk_size=chunk_size)
