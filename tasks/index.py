"""Stage 6, index: a wids-style shard index so training code can open the dataset directly.

`SERIES-shardindex.json` lists every shard with its sample count and size; `url` is relative
to the index file, so the folder or bucket prefix can be copied elsewhere as a whole.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.policy import RETRY_POLICY, redact_errors
from tasks.stats import ShardStats
from tasks.storage import Storage


def index_name(series: str) -> str:
    return f"{series}-shardindex.json"


def shard_index(series: str, stats: Sequence[ShardStats]) -> dict[str, Any]:
    """The wids shard index document for `stats`, in shard-name order."""
    return {
        "__kind__": "wids-shard-index-v1",
        "wids_version": 1,
        "name": series,
        "shardlist": [
            {"url": s.shard, "nsamples": s.samples, "filesize": s.tar_bytes}
            for s in sorted(stats, key=lambda s: s.shard)
        ],
    }


def write_shard_index(dest: Storage, series: str, stats: Sequence[ShardStats]) -> str:
    """Write (or replace) the index; returns its URL."""
    name = index_name(series)
    document = shard_index(series, stats)
    dest.replace_bytes(name, (json.dumps(document, indent=1) + "\n").encode())
    return dest.url_for(name)


@task(name="write-shard-index", cache_policy=NO_CACHE, persist_result=False, **RETRY_POLICY)
@redact_errors
def write_index(dest_url: str, series: str, stats: list[ShardStats]) -> str:
    """Write the wids shard index (nsamples and filesize per shard) at the destination."""
    from tasks.storage import open_storage

    url = write_shard_index(open_storage(dest_url), series, stats)
    get_run_logger().info("Shard index of %d shards: %s", len(stats), url)
    return url
