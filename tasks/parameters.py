"""Run parameters and their checks: no I/O and no Prefect, so that the command line refuses a
bad value in a fraction of a second, in the same words the flow uses when a UI or deployment run
gets it (the flows call the same functions)."""

from __future__ import annotations

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
    validate_plan_parameters(shard_size, max_shards)
    check_concurrency(concurrency)
    if not 1 <= chunk_size_mib <= 256:
        raise InvalidInput(f"chunk_size_mib must be between 1 and 256, got {chunk_size_mib}")
    if not series or not all(c.isalnum() or c in "_-" for c in series):
        raise InvalidInput(
            f"series {series!r} must be letters, digits, '_' or '-' (it starts every shard name)"
        )


def validate_plan_parameters(shard_size: int, max_shards: int | None) -> None:
    """Raise InvalidInput with a clear message for parameters no plan can satisfy."""
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise InvalidInput(f"shard_size must be a whole number of samples >= 1, got {shard_size!r}")
    if max_shards is not None and (
        isinstance(max_shards, bool) or not isinstance(max_shards, int) or max_shards < 1
    ):
        raise InvalidInput(
            f"max_shards must be a whole number >= 1, or left empty for all shards; "
            f"got {max_shards!r}"
        )
