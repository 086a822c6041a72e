"""Stage 0, pre-flight checks: refuse bad input before anything is written.

Each check raises `InvalidInput` with a message that names the problem and what to do.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.parameters import InvalidInput
from tasks.policy import RETRY_POLICY, redact_errors
from tasks.storage import GcsStorage, LocalStorage, StorageError, is_inside, open_storage


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


# Locations the command found usable just before it started a flow run in this process, and
# when (time.monotonic()): the run's first task would ask storage the same questions again,
# each a round trip. Taken by that run's check (once), and only if this recent.
RECENT_CHECK_SECONDS = 60.0
_checked_at: dict[tuple[str, str, str | None], float] = {}


def check_locations(
    source_url: str, dest_url: str, listing_file: str | None = None, *, remember: bool = False
) -> None:
    """The source must exist and be readable; the destination must be writable and must not lie
    inside the source (the shards would become part of what is converted); a listing file,
    when given, must exist. The storage checks run at once (each is a round trip); when several
    fail, the first of source, destination, listing file is the one raised. With `remember`
    (the command, before it starts the flow run), the flow run's own check takes this one."""
    if is_inside(dest_url, source_url):
        raise InvalidInput(
            f"the destination {dest_url} lies inside the source {source_url}; "
            "choose a destination outside it"
        )
    checks: list[Callable[[], None]] = [
        lambda: _check_source(source_url),
        lambda: _check_destination(dest_url),
    ]
    if listing_file:
        checks.append(lambda: check_listing_file(listing_file))
    with ThreadPoolExecutor(len(checks), thread_name_prefix="check") as pool:
        futures = [pool.submit(check) for check in checks]
    for future in futures:
        future.result()
    if remember:
        _checked_at[(source_url, dest_url, listing_file or None)] = time.monotonic()


def take_recent_check(source_url: str, dest_url: str, listing_file: str | None = None) -> bool:
    """True (once) if `check_locations(..., remember=True)` passed for these locations in this
    process less than RECENT_CHECK_SECONDS ago."""
    checked = _checked_at.pop((source_url, dest_url, listing_file or None), None)
    return checked is not None and time.monotonic() - checked < RECENT_CHECK_SECONDS


def _check_source(source_url: str) -> None:
    try:
        open_storage(source_url).check_root()
    except StorageError as exc:
        raise InvalidInput(f"source {source_url}: {exc}") from exc
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc


def _check_destination(dest_url: str) -> None:
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
    if take_recent_check(source_url, dest_url, listing_file):
        get_run_logger().info("Source and destination: checked by the command just before")
        return
    check_locations(source_url, dest_url, listing_file)
