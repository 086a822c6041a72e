"""Stage 1, listing: which objects the source holds, with size and generation.

Two inputs give the same result: the storage API (paged listing of the three prefixes the
conversion needs) or a listing file in `gsutil ls -r` format, as the reference notebook used.
A plain `gsutil ls -r` file has names only; the sizes and generations it lacks are fetched per
object (`gsutil ls -l -r` or `-a -l -r` files carry them, and then nothing is fetched).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.parameters import InvalidInput
from tasks.policy import RETRY_POLICY, redact_errors
from tasks.storage import ObjectInfo, Storage

# The only parts of the bucket a conversion reads.
SOURCE_PREFIXES = ("videos/", "annotations/", "v1/index/")
UNKNOWN_GENERATION = ""
UNKNOWN_SIZE = -1


class ListingFileError(InvalidInput):
    """A listing file has lines that are neither object URLs nor gsutil's decorations."""


def list_source_api(source: Storage) -> list[ObjectInfo]:
    """Every object under the conversion's prefixes, in name order. The prefixes are listed at
    once: each listing is a round trip per page, and none depends on another."""
    with ThreadPoolExecutor(len(SOURCE_PREFIXES), thread_name_prefix="list") as pool:
        listings = list(pool.map(lambda prefix: list(source.list(prefix)), SOURCE_PREFIXES))
    return sorted((info for listing in listings for info in listing), key=lambda info: info.name)


# `gsutil ls -l` puts size and time before the URL; `-a` appends `#generation` (and, with -l,
# `metageneration=N` after it).
_LONG_LINE = re.compile(
    r"^\s*(?P<size>\d+)\s+(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)\s+(?P<url>\S.*?)"
    r"(?:\s+metageneration=\d+)?\s*$"
)
_TOTAL_LINE = re.compile(r"^TOTAL: \d+ objects?, \d+ bytes")
_GENERATION_SUFFIX = re.compile(r"#(?P<gen>\d+)$")


@dataclass(frozen=True)
class ListedName:
    """One object named by a listing file; size and generation only if the file had them."""

    name: str
    size: int = UNKNOWN_SIZE
    generation: str = UNKNOWN_GENERATION


def parse_listing_file(text: str, source_url: str) -> list[ListedName]:
    """Parse `gsutil ls -r` output (plain, `-l` or `-a`) for objects below `source_url`.

    Folder header lines (`gs://bucket/dir/:`), blank lines and the `TOTAL:` line are skipped.

    Raises:
        ListingFileError: naming the line numbers of lines that are not object URLs, or of URLs
            outside `source_url`.
    """
    root = source_url.rstrip("/") + "/"
    names: dict[str, ListedName] = {}
    bad: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        parts = raw.split()
        if not parts:
            continue
        size, generation = UNKNOWN_SIZE, UNKNOWN_GENERATION
        # Fast path, for the lines that make up almost all of a 210,000-line listing: a bare URL,
        # or `SIZE  TIME  URL[#GEN]  [metageneration=N]`. str.split is several times quicker
        # than the regular expressions, which handle everything else (names with spaces, ...).
        if len(parts) == 1 and parts[0].startswith(root):
            url = parts[0]
        elif (
            (len(parts) == 3 or (len(parts) == 4 and parts[3].startswith("metageneration=")))
            and parts[0].isdigit()
            and parts[2].startswith(root)
            and len(parts[1]) == 20
            and parts[1].endswith("Z")
        ):
            size, url = int(parts[0]), parts[2]
        else:
            line = raw.rstrip("\r")
            stripped = line.strip()
            if _TOTAL_LINE.match(stripped):
                continue
            long_match = _LONG_LINE.match(line)
            url = long_match["url"] if long_match else stripped
            if long_match:
                size = int(long_match["size"])
            if not url.startswith(root):
                bad.append(f"line {number}: {stripped[:80]!r} is not an object URL under {root}")
                continue
        if url.endswith("/:") or url.endswith("/"):
            continue  # folder header
        gen_match = _GENERATION_SUFFIX.search(url)
        if gen_match:
            generation = gen_match["gen"]
            url = url[: gen_match.start()]
        name = url[len(root) :]
        names[name] = ListedName(name, size, generation)
    if bad:
        shown = "; ".join(bad[:10]) + (f"; and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise ListingFileError(
            f"the listing file has {len(bad)} malformed line(s) "
            f"(expected `gsutil ls -r {source_url}` output): {shown}"
        )
    return sorted(names.values(), key=lambda listed: listed.name)


def is_needed(name: str) -> bool:
    """True for the objects a conversion reads: video folders, annotations, split index."""
    return name.startswith(SOURCE_PREFIXES)


def resolve_listed_names(
    source: Storage, listed: Iterable[ListedName], *, threads: int = 16
) -> list[ObjectInfo]:
    """Turn listing-file entries into ObjectInfo, asking storage for what the file lacked.

    Names the file lists but storage no longer has are dropped (a listing file may be older
    than the bucket); the sample assembly then reports the incomplete video folders.
    """
    needed = [entry for entry in listed if is_needed(entry.name)]
    complete = [
        ObjectInfo(e.name, e.size, e.generation)
        for e in needed
        if e.size != UNKNOWN_SIZE and e.generation != UNKNOWN_GENERATION
    ]
    to_fetch = [e for e in needed if e.size == UNKNOWN_SIZE or e.generation == UNKNOWN_GENERATION]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        fetched = list(pool.map(lambda e: source.stat(e.name), to_fetch))
    for entry, info in zip(to_fetch, fetched, strict=True):
        if info is None:
            continue
        # A generation pinned by `ls -a` wins: the plan then refuses a newer version.
        complete.append(replace(info, generation=entry.generation or info.generation))
    return sorted(complete, key=lambda info: info.name)


def read_listing_file(location: str) -> str:
    """The text of a listing file given as a local path or a gs:// URL."""
    from tasks.storage import ObjectNotFound, open_storage

    if location.startswith("gs://"):
        folder, _, name = location.rpartition("/")
        return open_storage(folder).read_bytes(name).decode("utf-8")
    try:
        with open(location, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError as exc:
        raise ObjectNotFound(f"listing file {location} does not exist") from exc


@task(name="list-source", cache_policy=NO_CACHE, persist_result=False, **RETRY_POLICY)
@redact_errors
def list_source(source_url: str, listing_file: str | None = None) -> list[ObjectInfo]:
    """List the source's videos, annotations and split index, with sizes and generations."""
    from tasks.storage import open_storage

    logger = get_run_logger()
    source = open_storage(source_url)
    if listing_file:
        listed = parse_listing_file(read_listing_file(listing_file), source.url)
        objects = resolve_listed_names(source, listed)
        logger.info(
            "Listing file %s: %d object URLs, %d needed, %d found with size and generation",
            listing_file, len(listed), sum(is_needed(e.name) for e in listed), len(objects),
        )  # fmt: skip
    else:
        objects = list_source_api(source)
        logger.info("Listed %d objects under %s (%s)", len(objects), source.url, SOURCE_PREFIXES)
    return objects
