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


def check_dest(dest: str, variable: str) -> None:
    """An empty dest would mean the worker's working directory. Deployments take their
    default from a Prefect variable (`variable`), which is empty if it was never set."""
    if not dest.strip():
        raise InvalidInput(
            "dest is empty: give gs://BUCKET/PREFIX or a folder (deployments default to the "
            f"Prefect variable {variable}: `objectron-wds setup --dest ...`, then deploy)"
        )


def validate_parameters(
    *,
    shard_size: int,
    max_shards: int | None,
    concurrency: int,
    chunk_size_mib: int,
    series: str,
    shard_size_name: str = "shard_size",
) -> None:
    """Check the numeric and naming parameters (no I/O); `shard_size_name` is what the flow
    calls its shard size (`videos_per_shard` for frames)."""
    validate_plan_parameters(shard_size, max_shards, shard_size_name)
    check_concurrency(concurrency)
    if not 1 <= chunk_size_mib <= 256:
        raise InvalidInput(f"chunk_size_mib must be between 1 and 256, got {chunk_size_mib}")
    if not series or not all(c.isalnum() or c in "_-" for c in series):
        raise InvalidInput(
            f"series {series!r} must be letters, digits, '_' or '-' (it starts every shard name)"
        )


def validate_plan_parameters(
    shard_size: int, max_shards: int | None, shard_size_name: str = "shard_size"
) -> None:
    """Raise InvalidInput with a clear message for parameters no plan can satisfy."""
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        unit = "videos" if shard_size_name == "videos_per_shard" else "samples"
        raise InvalidInput(
            f"{shard_size_name} must be a whole number of {unit} >= 1, got {shard_size!r}"
        )
    if max_shards is not None and (
        isinstance(max_shards, bool) or not isinstance(max_shards, int) or max_shards < 1
    ):
        raise InvalidInput(
            f"max_shards must be a whole number >= 1, or left empty for all shards; "
            f"got {max_shards!r}"
        )


# Objectron's videos are 1440x1920; 8K on a side is far beyond any camera in the dataset.
MAX_IMAGE_SIDE = 8192


def check_image_size(image_size: str) -> tuple[int, int] | None:
    """`WIDTHxHEIGHT` (e.g. `480x640`: 480 wide, 640 high) -> (width, height); `full` -> None."""
    if image_size == "full":
        return None
    width, sep, height = image_size.partition("x")
    if not (sep and width.isdigit() and height.isdigit()):
        raise InvalidInput(
            f"image_size must be WIDTHxHEIGHT (e.g. 480x640) or full, got {image_size!r}"
        )
    size = int(width), int(height)
    if not all(1 <= side <= MAX_IMAGE_SIDE for side in size):
        raise InvalidInput(
            f"image_size sides must be between 1 and {MAX_IMAGE_SIDE} pixels, got {image_size!r}"
        )
    return size


def validate_frame_parameters(*, stride: int, image_size: str, jpeg_quality: int) -> None:
    """The frame options of `objectron-wds frames` (no I/O)."""
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise InvalidInput(
            f"stride must be a whole number >= 1 (1 = every annotated frame), got {stride!r}"
        )
    check_image_size(image_size)
    if isinstance(jpeg_quality, bool) or not isinstance(jpeg_quality, int):
        raise InvalidInput(f"jpeg_quality must be a whole number, 1 to 100, got {jpeg_quality!r}")
    if not 1 <= jpeg_quality <= 100:
        raise InvalidInput(f"jpeg_quality must be between 1 and 100, got {jpeg_quality}")


# Child runs of one fan-out; beyond this a plan is better split by `classes` or `split`.
MAX_PARALLEL_RUNS = 256


def check_parallel_runs(parallel_runs: int, build_plan: str | None) -> None:
    """`parallel_runs` 1 to MAX_PARALLEL_RUNS; a child run (`build_plan` set) fans out no more."""
    if (
        isinstance(parallel_runs, bool)
        or not isinstance(parallel_runs, int)
        or not 1 <= parallel_runs <= MAX_PARALLEL_RUNS
    ):
        raise InvalidInput(
            f"parallel_runs must be a whole number from 1 to {MAX_PARALLEL_RUNS}, "
            f"got {parallel_runs!r}"
        )
    if build_plan and parallel_runs > 1:
        raise InvalidInput(
            "build_plan is set by a run with parallel_runs > 1 for the runs it starts; "
            "give one or the other, not both"
        )
