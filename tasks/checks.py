"""Stage 0, pre-flight checks: refuse bad input before anything is written.

Each check raises `InvalidInput` with a message that names the problem and what to do.
"""

from __future__ import annotations

import os
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.planning import validate_plan_parameters
from tasks.policy import RETRY_POLICY, redact_errors
from tasks.storage import GcsStorage, LocalStorage, StorageError, is_inside, open_storage

MAX_CONCURRENCY = 64


class InvalidInput(ValueError):
    """The run's parameters or locations cannot work; nothing was written."""


def check_concurrency(concurrency: int) -> None:
    """Shards handled at the same time by one run: 1 to MAX_CONCURRENCY."""
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise InvalidInput(
            f"concurrency must be between 1 and {MAX_CONCURRENCY}, got {concurrency}"
        )


def validate_parameters(
    *,
    shard_size: int,
    max_shards: int | None,
    concurrency: int,
    chunk_size_mib: int,
    series: str,
) -> None:
    """Check the numeric and naming parameters (no I/O)."""
    try:
        validate_plan_parameters(shard_size, max_shards)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    check_concurrency(concurrency)
    if not 1 <= chunk_size_mib <= 256:
        raise InvalidInput(f"chunk_size_mib must be between 1 and 256, got {chunk_size_mib}")
    if not series or not all(c.isalnum() or c in "_-" for c in series):
        raise InvalidInput(
            f"series {series!r} must be letters, digits, '_' or '-' (it starts every shard name)"
        )


def check_listing_file(location: str) -> None:
    """A listing file, when given, must exist (a local path or a gs:// object)."""
    if location.startswith("gs://"):
        folder, _, name = location.rpartition("/")
        try:
            found = open_storage(folder).exists(name)
        except (StorageError, ValueError) as exc:
            raise InvalidInput(f"listing file {location}: {exc}") from exc
    else:
        found = Path(location).is_file()
    if not found:
        raise InvalidInput(
            f"listing file {location} does not exist (make one with `gsutil ls -r SOURCE`, "
            "or leave listing_file empty to list the bucket through the API)"
        )


def check_locations(source_url: str, dest_url: str) -> None:
    """The source must exist and be readable; the destination must be writable and must not lie
    inside the source (the shards would become part of what is converted)."""
    if is_inside(dest_url, source_url):
        raise InvalidInput(
            f"the destination {dest_url} lies inside the source {source_url}; "
            "choose a destination outside it"
        )
    try:
        open_storage(source_url).check_root()
    except StorageError as exc:
        raise InvalidInput(f"source {source_url}: {exc}") from exc
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    try:
        dest = open_storage(dest_url)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    if isinstance(dest, LocalStorage):
        _check_local_destination(dest.root)
    elif isinstance(dest, GcsStorage):
        try:
            dest.check_root()
        except StorageError as exc:
            raise InvalidInput(f"destination {dest_url}: {exc}") from exc


def _check_local_destination(root: Path) -> None:
    existing = root
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InvalidInput(f"destination {root}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InvalidInput(
            f"destination {root}: this user may not write in {existing}; "
            "choose a folder you can write to"
        )
    if existing == root and not os.access(root, os.R_OK):
        raise InvalidInput(f"destination {root} is not readable; existing shards cannot be checked")


@task(name="check-locations", cache_policy=NO_CACHE, persist_result=False, **RETRY_POLICY)
@redact_errors
def preflight(source_url: str, dest_url: str, listing_file: str | None = None) -> None:
    """Refuse unusable source and destination locations before anything is written."""
    check_locations(source_url, dest_url)
    if listing_file:
        check_listing_file(listing_file)
