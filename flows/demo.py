"""`objectron-wds demo`: both products on this machine, with nothing to configure.

Starts fake-gcs-server on 127.0.0.1, writes an Objectron-shaped sample dataset (real H.264
videos) into its `gs://objectron`, converts it into video shards at
`gs://objectron-wds-demo/shards` and into frame samples at `gs://objectron-wds-demo/frames`,
copies both to a local folder, reads them back with webdataset, and prints how to do each step
by hand.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from tasks.fake_gcs import FakeGcsServer
from tasks.storage import Storage

SOURCE_BUCKET = "objectron"
DEST_BUCKET = "objectron-wds-demo"


def copy_folder(source: Storage, local: Path) -> None:
    """Every object at `source` (shards, specs, index, preview) into the folder `local`."""
    local.mkdir(parents=True, exist_ok=True)
    for info in source.list():
        target = local / info.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes(info.name))


def run_demo(
    *, videos: int, shard_size: int, max_shards: int | None, keep_running: bool, workdir: Path
) -> int:
    import webdataset as wds

    from flows.convert import objectron_to_wds
    from flows.frames import objectron_to_frames
    from tasks.objectron.sample_data import write_sample_dataset
    from tasks.storage import open_storage

    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    server = FakeGcsServer(log_path=workdir / "fake-gcs-server.log")
    with server:
        os.environ["STORAGE_EMULATOR_HOST"] = server.url
        print(f"fake-gcs-server is running at {server.url} (log: {server.log_path})")
        for bucket in (SOURCE_BUCKET, DEST_BUCKET):
            server.create_bucket(bucket)
        source_url, dest_url = f"gs://{SOURCE_BUCKET}", f"gs://{DEST_BUCKET}/shards"
        dataset = write_sample_dataset(open_storage(source_url), videos=videos, seed=0)
        print(
            f"Sample dataset in {source_url}: {len(dataset.annotated)} annotated videos, "
            f"{len(dataset.unannotated)} without annotation, "
            f"{len(dataset.placeholders)} 0-byte placeholders"
        )
        summary = objectron_to_wds(
            dest=dest_url,
            source=source_url,
            shard_size=shard_size,
            max_shards=max_shards,
            concurrency_limit=None,
        )
        dest = open_storage(dest_url)
        local = workdir / "shards"
        local.mkdir(exist_ok=True)
        shards = sorted(info.name for info in dest.list() if info.name.endswith(".tar"))
        copy_folder(dest, local)
        urls = [str(local / name) for name in shards]
        samples = list(wds.WebDataset(urls, shardshuffle=False))
        first = samples[0]
        print()
        print(f"Converted: {summary['shards']} shards, {summary['samples']} samples at {dest_url}")
        print(f"Copied to {local}; webdataset reads {len(samples)} samples from them.")
        fields = sorted(k for k in first if not k.startswith("__"))
        print(f"First sample: key {first['__key__']}, fields {fields}")
        print()
        print("Read them yourself:")
        print("  import webdataset as wds")
        print(f"  ds = wds.WebDataset('{local}/objectron-{{000000..{len(shards) - 1:06d}}}.tar')")
        print("  for sample in ds: print(sample['__key__'], len(sample['video.mov']))")

        frames_url = f"gs://{DEST_BUCKET}/frames"
        frames = objectron_to_frames(
            dest=frames_url,
            source=source_url,
            videos_per_shard=shard_size,
            max_shards=max_shards,
            concurrency_limit=None,
            ar_points=True,
        )
        frames_local = workdir / "frames"
        copy_folder(open_storage(frames_url), frames_local)
        frame_shards = sorted(str(p) for p in frames_local.glob("*.tar"))
        frame_samples = list(wds.WebDataset(frame_shards, shardshuffle=False).decode("rgb8"))
        print()
        print(
            f"Frames: {frames['shards']} shards, {frames['samples']} frame samples (KEY.jpg, "
            f"KEY.json) from {frames['videos']} videos at {frames_url}; "
            f"{len(frames['reported'])} videos reported (no samples):"
        )
        for entry in frames["reported"]:
            print(f"  {entry['video']}: {entry['reason']}")
        if frame_samples:
            image, labels = frame_samples[0]["jpg"], frame_samples[0]["json"]
            seen = sum(place is not None for place in labels["points"]["image"])
            print(
                f"Copied to {frames_local}; first sample {labels['key']}: image "
                f"{image.shape[1]}x{image.shape[0]}, class {labels['class']}, "
                f"{len(labels['objects'])} object(s), {len(labels['points']['ids'])} AR feature "
                f"points ({seen} in the picture; ar_points=true)"
            )
        print(
            "Preview (frames with their boxes and feature points): "
            f"{frames_local / 'objectron-frames-preview.jpg'}"
        )
        print("  .venv/bin/objectron-wds preview FRAME_SHARD.tar --out preview.jpg")
        if keep_running:
            print()
            print(f"The emulator keeps running: STORAGE_EMULATOR_HOST={server.url}")
            print("Ctrl-C stops it.")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    return 0
