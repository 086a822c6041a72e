"""Shard planning: a pure, deterministic function of samples and parameters."""

from __future__ import annotations

import pytest

from tasks.planning import plan_shards, shard_name
from tasks.samples import assemble_samples
from tests.objectron_fixtures import listing, video_folder


def samples(n: int):  # type: ignore[no-untyped-def]
    folders = [video_folder(f"cup/batch-{i // 10}/{i % 10}") for i in range(n)]
    return assemble_samples(listing(*folders)).samples


def test_shards_have_shard_size_samples_and_zero_padded_names() -> None:
    plans = plan_shards(samples(10), shard_size=3)
    assert [p.name for p in plans] == [shard_name("objectron", i) for i in range(4)]
    assert plans[0].name == "objectron-000000"
    assert [len(p.samples) for p in plans] == [3, 3, 3, 1]
    keys = [s.key for p in plans for s in p.samples]
    assert sorted(keys) == sorted(s.key for s in samples(10))
    assert len(set(keys)) == 10


def test_plan_does_not_depend_on_input_order() -> None:
    forward = samples(25)
    backward = list(reversed(forward))
    a = plan_shards(forward, shard_size=4, shuffle_seed=3)
    b = plan_shards(backward, shard_size=4, shuffle_seed=3)
    assert a == b


def test_seed_changes_order_and_none_keeps_key_order() -> None:
    items = samples(25)
    seed1 = [s.key for p in plan_shards(items, shard_size=5, shuffle_seed=1) for s in p.samples]
    seed2 = [s.key for p in plan_shards(items, shard_size=5, shuffle_seed=2) for s in p.samples]
    unshuffled = [
        s.key for p in plan_shards(items, shard_size=5, shuffle_seed=None) for s in p.samples
    ]
    assert seed1 != seed2
    assert unshuffled == sorted(unshuffled)


def test_max_shards_takes_the_first_shards_of_the_full_plan() -> None:
    items = samples(20)
    full = plan_shards(items, shard_size=3)
    capped = plan_shards(items, shard_size=3, max_shards=2)
    assert capped == full[:2]


@pytest.mark.parametrize(
    ("shard_size", "max_shards", "message"),
    [
        (0, None, "shard_size"),
        (-3, None, "shard_size"),
        (3, -1, "max_shards"),
        (3, 0, "max_shards"),
    ],
)
def test_bad_parameters_are_refused(shard_size: int, max_shards: int | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_shards(samples(3), shard_size=shard_size, max_shards=max_shards)
