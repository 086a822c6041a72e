"""Shard planning: a pure, deterministic function of samples and parameters."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

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


def test_spec_bytes_are_those_of_the_first_spec_format() -> None:
    """Existing destinations hold specs and shards whose digests were made from
    `dataclasses.asdict` of each member (minus empty fields), and no `frames` key for video
    shards: the spec's bytes, hence its digest, must stay exactly those; frame specs add only
    their options."""
    import json
    from dataclasses import asdict, replace

    from tasks.objectron.sample_data import write_sample_dataset
    from tasks.samples import assemble_samples, parse_split_index
    from tasks.specs import FrameOptions, make_spec
    from tasks.storage import LocalStorage

    storage = LocalStorage(Path(tempfile.mkdtemp()))
    write_sample_dataset(storage, videos=6, seed=3, video_bytes=1024)
    objects = list(storage.list())
    splits = parse_split_index({o.name: storage.read_bytes(o.name) for o in objects
                                if o.name.startswith("v1/index/")})  # fmt: skip
    samples = assemble_samples(objects, splits, only_with_anno=False).samples
    (plan,) = plan_shards(samples, shard_size=len(samples))
    spec = make_spec(plan, str(storage.url))

    def first_format(spec: Any) -> bytes:
        document = {
            "format": "objectron-wds-spec-v1", "shard": spec.shard,
            "source_url": spec.source_url, "samples": spec.samples,
            "members": [{k: v for k, v in asdict(m).items() if v is not None}
                        for m in spec.members],
        }  # fmt: skip
        return (json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()

    assert any(m.decoded_from for m in spec.members) and any(m.text for m in spec.members)
    assert spec.to_json() == first_format(spec)
    options = FrameOptions(stride=2, image_size="480x640", jpeg_quality=90, shuffle_seed=0)
    framed = json.loads(replace(spec, frames=options).to_json())
    # The first frame format's options, exactly: ar_points off is not written.
    first_options = {"stride": 2, "image_size": "480x640", "jpeg_quality": 90, "shuffle_seed": 0}
    assert framed.pop("frames") == first_options
    assert framed == json.loads(first_format(spec))
    with_points = json.loads(replace(spec, frames=replace(options, ar_points=True)).to_json())
    assert with_points["frames"] == {**first_options, "ar_points": True}
