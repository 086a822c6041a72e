"""Stage 3, shard planning: a pure function from samples and parameters to shards.

The reference built shards from a Python `set`, so every run planned different shards and
"already exists" then kept stale, mixed ones. Here the plan is sorted by key, shuffled with an
explicit seed, and cut in order: the same listing and parameters always give the same plan.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from tasks.parameters import validate_plan_parameters
from tasks.samples import Sample

SHARD_NUMBER_DIGITS = 6


@dataclass(frozen=True)
class ShardPlan:
    """One shard to build: its base name (no extension) and its samples in order."""

    name: str
    samples: tuple[Sample, ...]


def shard_name(series: str, number: int) -> str:
    """`objectron-000042`: zero-padded so names sort in shard order."""
    return f"{series}-{number:0{SHARD_NUMBER_DIGITS}d}"


def plan_shards(
    samples: Sequence[Sample],
    *,
    shard_size: int,
    max_shards: int | None = None,
    shuffle_seed: int | None = 0,
    series: str = "objectron",
) -> list[ShardPlan]:
    """Order the samples, shuffle them with `shuffle_seed` (None keeps key order), and cut them
    into shards of `shard_size` (the last may be smaller), at most `max_shards` of them."""
    validate_plan_parameters(shard_size, max_shards)
    ordered = sorted(samples, key=lambda sample: sample.key)
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(ordered)
    count = -(-len(ordered) // shard_size)
    if max_shards is not None:
        count = min(count, max_shards)
    return [
        ShardPlan(shard_name(series, i), tuple(ordered[i * shard_size : (i + 1) * shard_size]))
        for i in range(count)
    ]
