"""Prototype (benchmarks only): a faster `tasks.listing.parse_listing_file` for big listings.

The current parser runs two regular expressions on every line; most lines of a real listing
are `SIZE  TIME  URL[#GEN]  [metageneration=N]` or a bare URL, which `str.split` separates in a
fraction of the time. Lines the fast path does not recognise (URLs with spaces, anything odd)
go through the original per-line logic, so the result and the errors are the same;
`benchmarks/run.py` checks that on the full-scale synthetic listing before timing it.
"""

from __future__ import annotations

from tasks.listing import (
    _GENERATION_SUFFIX,
    _LONG_LINE,
    _TOTAL_LINE,
    UNKNOWN_GENERATION,
    UNKNOWN_SIZE,
    ListedName,
    ListingFileError,
)


def parse_listing_file_fast(text: str, source_url: str) -> list[ListedName]:
    root = source_url.rstrip("/") + "/"
    names: dict[str, ListedName] = {}
    bad: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        parts = raw.split()
        if not parts:
            continue
        size, generation = UNKNOWN_SIZE, UNKNOWN_GENERATION
        count = len(parts)
        first = parts[0]
        if count == 1 and first.startswith(root):
            url = first  # plain `ls -r` line, folder line or header
        elif (
            (count == 3 or (count == 4 and parts[3].startswith("metageneration=")))
            and first.isdigit()
            and parts[2].startswith(root)
            and len(parts[1]) == 20
            and parts[1].endswith("Z")
        ):
            size, url = int(first), parts[2]
        else:
            # Anything else: the original rules, line by line.
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
            continue
        hash_at = url.rfind("#")
        if hash_at != -1 and url[hash_at + 1 :].isdigit():
            generation = url[hash_at + 1 :]
            url = url[:hash_at]
        elif hash_at != -1:
            match = _GENERATION_SUFFIX.search(url)
            if match:
                generation, url = match["gen"], url[: match.start()]
        name = url[len(root) :]
        names[name] = ListedName(name, size, generation)
    if bad:
        shown = "; ".join(bad[:10]) + (f"; and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise ListingFileError(
            f"the listing file has {len(bad)} malformed line(s) "
            f"(expected `gsutil ls -r {source_url}` output): {shown}"
        )
    return sorted(names.values(), key=lambda listed: listed.name)
