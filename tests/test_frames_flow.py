"""The frames product end to end on real H.264 videos: `objectron-to-frames` on the sample
dataset (boxes and a frame counter drawn into every frame, half the videos stored landscape with
a rotation tag, a short, a corrupt and a wrongly labelled video among them), read back with
webdataset and checked against the pixels and against the numbers the videos were made from."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from flows.frames import objectron_to_frames
from tasks.frames.labels import project
from tasks.frames.shard import EMPTY_MEMBER, FRAME_PROCESSES_VARIABLE, frame_process_ids
from tasks.objectron import proto as pb
from tasks.objectron.box import EDGES, UNIT_BOX
from tasks.objectron.decode import decode_annotation
from tasks.objectron.sample_data import (
    BOX_COLOUR,
    SampleDataset,
    read_frame_counter,
    sample_values,
    write_sample_dataset,
)
from tasks.specs import read_spec
from tasks.stats import ShardStats
from tasks.storage import open_storage
from tasks.verify import STATUS_OK, load_stats, verify_shard

pytestmark = pytest.mark.usefixtures("prefect_server")

SEED = 11
FRAMES = 12
VIDEOS = 9


@pytest.fixture(scope="module")
def frames_source(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, SampleDataset]:
    root = tmp_path_factory.mktemp("frames-source")
    dataset = write_sample_dataset(
        open_storage(str(root)), videos=VIDEOS, seed=SEED, frames=FRAMES, placeholders=1,
        unannotated=1,
    )  # fmt: skip
    assert dataset.short_videos and dataset.corrupt_videos and dataset.wrong_category
    assert dataset.rotated and set(dataset.annotated) - set(dataset.rotated)
    return str(root), dataset


def run_frames(source: str, dest: Path, **options: Any) -> dict[str, Any]:
    parameters: dict[str, Any] = {"videos_per_shard": 3, "concurrency_limit": None, **options}
    return objectron_to_frames(dest=str(dest), source=source, **parameters)


def shard_paths(dest: Path) -> list[str]:
    return sorted(str(p) for p in dest.glob("*.tar"))


def read_samples(dest: Path) -> Iterator[tuple[str, np.ndarray, dict[str, Any]]]:
    dataset = wds.WebDataset(shard_paths(dest), shardshuffle=False).decode("rgb8")
    for sample in dataset:
        yield sample["__key__"], sample["jpg"], sample["json"]  # json decoded by webdataset


@pytest.fixture(scope="module")
def built(
    frames_source: tuple[str, SampleDataset], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    dest = tmp_path_factory.mktemp("frames-dest")
    return dest, run_frames(frames_source[0], dest)


def _is_box_colour(pixel: np.ndarray) -> bool:
    """Yellow as the videos draw it (BOX_COLOUR), after H.264, scaling and JPEG have blurred
    the chroma of a thin line: bright red and green, clearly less blue. The background and the
    counter (grey, black, white) never pass."""
    r, g, b = (int(c) for c in pixel)
    assert BOX_COLOUR == (255, 255, 0)
    return r > 160 and g > 160 and b < min(r, g) - 60


def _box_seen_near(rgb: np.ndarray, x: float, y: float, radius: int) -> bool:
    xi, yi = round(x), round(y)
    window = rgb[max(0, yi - radius) : yi + radius + 1, max(0, xi - radius) : xi + radius + 1]
    return any(_is_box_colour(p) for row in window for p in row) if window.size else False


def test_every_frame_shows_its_counter_and_its_box_where_the_labels_say(
    built: tuple[Path, dict[str, Any]], frames_source: tuple[str, SampleDataset]
) -> None:
    dest, summary = built
    _, dataset = frames_source
    good = [k for k in dataset.annotated if k not in dataset.short_videos + dataset.corrupt_videos]
    seen: dict[str, set[int]] = {}
    for key, rgb, labels in read_samples(dest):
        video, frame_id = labels["video"], labels["frame_id"]
        assert key == labels["key"] == f"{video}/{frame_id:06d}"
        seen.setdefault(video, set()).add(frame_id)
        height, width = rgb.shape[:2]
        assert (labels["image"]["width"], labels["image"]["height"]) == (width, height)
        # 192x256 upright videos fit the default 480x640 box exactly (aspect 3:4).
        assert (width, height) == (480, 640)
        assert (labels["image"]["source_width"], labels["image"]["source_height"]) == (192, 256)
        assert labels["image"]["rotation"] == (90 if video in dataset.rotated else 0)
        # The pixels are the frame the labels belong to: never shifted by one.
        assert read_frame_counter(rgb) == frame_id, key
        (obj,) = labels["objects"]
        # The drawn box lies where keypoints_2d put it, a few pixels at most after resizing.
        points = [(p[0] * width, p[1] * height) for p in obj["keypoints_2d"]]
        for a, b in EDGES:
            for t in (0.25, 0.5, 0.75):
                x = points[a][0] + t * (points[b][0] - points[a][0])
                y = points[a][1] + t * (points[b][1] - points[a][1])
                assert _box_seen_near(rgb, x, y, radius=4), (key, a, b, t)
    # Every frame of every good video, and nothing of the short and corrupt ones.
    assert seen == {video: set(range(FRAMES)) for video in good}
    assert summary["samples"] == len(good) * FRAMES


def test_labels_are_the_annotation_with_intrinsics_for_the_jpeg(
    built: tuple[Path, dict[str, Any]], frames_source: tuple[str, SampleDataset]
) -> None:
    dest, _ = built
    source, dataset = frames_source
    checked = 0
    for _key, _rgb, labels in read_samples(dest):
        video, frame_id = labels["video"], labels["frame_id"]
        values = sample_values(video, seed=SEED, frames=FRAMES).frames[frame_id]
        (obj,) = labels["objects"]
        assert obj["keypoints_2d"] == values.keypoints_2d
        assert obj["keypoints_3d"] == values.keypoints_3d
        assert obj["keypoint_ids"] == list(range(9))
        assert labels["timestamp"] == values.timestamp
        assert labels["camera"]["extrinsics"] == values.transform
        assert labels["camera"]["view"] == values.view_matrix
        assert labels["camera"]["projection"] == values.projection_matrix
        assert labels["camera"]["tracking_state"] == "NORMAL"
        width, height = labels["image"]["width"], labels["image"]["height"]
        for p3, p2 in zip(obj["keypoints_3d"], obj["keypoints_2d"], strict=True):
            u, v = project(labels["camera"]["intrinsics"], p3)
            assert math.hypot(u - p2[0] * width, v - p2[1] * height) < 1.0
        rotation = np.array(obj["rotation"]).reshape(3, 3)
        for p3, unit in zip(obj["keypoints_3d"], UNIT_BOX, strict=True):
            corner = rotation @ (np.array(obj["scale"]) * np.array(unit)) + obj["translation"]
            assert np.allclose(corner, p3, atol=1e-4)
        # The class is the folder's, also where the annotation's category is wrong.
        assert labels["class"] == video.split("/", 1)[0]
        annotation = decode_annotation(Path(source, "annotations", f"{video}.pbdata").read_bytes())
        assert obj["category"] == annotation["objects"][0]["category"]
        if video in dataset.wrong_category:
            assert obj["category"] != labels["class"]
        assert labels["sources"]["video"]["url"] == f"{source}/videos/{video}/video.MOV"
        assert labels["split"] in {"train", "test", None}
        checked += 1
    assert checked > 0


def test_short_and_corrupt_videos_are_reported_and_the_rest_is_built(
    built: tuple[Path, dict[str, Any]], frames_source: tuple[str, SampleDataset]
) -> None:
    dest, summary = built
    _, dataset = frames_source
    reported = {entry["video"]: entry["reason"] for entry in summary["reported"]}
    assert set(reported) == set(dataset.short_videos + dataset.corrupt_videos)
    for video in dataset.short_videos:
        assert f"{FRAMES} needed" in reported[video], reported[video]
    assert summary["failed"] == 0 and summary["built"] == summary["shards"]
    in_stats = {
        r.video
        for path in dest.glob("*.stats.json")
        for r in ShardStats.from_json(path.read_bytes()).reported
    }
    assert in_stats == set(reported)
    # The shard index counts frames, as wids expects of nsamples.
    index = json.loads((dest / "objectron-frames-shardindex.json").read_text())
    assert sum(s["nsamples"] for s in index["shardlist"]) == summary["samples"]
    # Every shard verifies against its spec and stats.
    storage = open_storage(str(dest))
    for path in shard_paths(dest):
        base = Path(path).name.removesuffix(".tar")
        verdict = verify_shard(storage, read_spec(storage, base), load_stats(storage, base))
        assert verdict.status == STATUS_OK, verdict.problems
    assert summary["preview"] == f"{dest}/objectron-frames-preview.jpg"
    assert Image.open(dest / "objectron-frames-preview.jpg").size[0] > 0


def test_rerun_and_second_destination_are_byte_identical(
    built: tuple[Path, dict[str, Any]],
    frames_source: tuple[str, SampleDataset],
    tmp_path: Path,
) -> None:
    dest, _ = built
    before = {p: Path(p).read_bytes() for p in shard_paths(dest)}
    again = run_frames(frames_source[0], dest)
    assert again["built"] == 0 and again["skipped"] == again["shards"]
    assert {p: Path(p).read_bytes() for p in shard_paths(dest)} == before
    other = tmp_path / "other"
    run_frames(frames_source[0], other)
    assert {Path(p).name: Path(p).read_bytes() for p in shard_paths(other)} == {
        Path(p).name: data for p, data in before.items()
    }


def test_ar_points_obey_the_view_matrix_and_the_intrinsics_on_every_sample(
    built: tuple[Path, dict[str, Any]],
    frames_source: tuple[str, SampleDataset],
    tmp_path: Path,
) -> None:
    """With ar_points, each sample's `points` are the frame's stored feature points (read here
    with protobuf from geometry.pbdata, not through the project's decoder): `camera` is the view
    matrix times the stored point, and the intrinsics project `camera` onto `image` x the JPEG's
    size within a pixel; a null `image` is behind the camera or outside the picture."""
    source, _ = frames_source
    run_frames(source, tmp_path, ar_points=True)
    dest, _ = built
    assert all("points" not in labels for _, _, labels in read_samples(dest))
    counts = {"in": 0, "out": 0, "samples": 0}
    records: dict[str, list[bytes]] = {}
    for _key, _rgb, labels in read_samples(tmp_path):
        video, frame_id = labels["video"], labels["frame_id"]
        if video not in records:
            data = Path(source, "videos", video, "geometry.pbdata").read_bytes()
            records[video] = pb.split_geometry_records(data)
        cloud = pb.ARFrame.FromString(records[video][frame_id]).raw_feature_points
        points = labels["points"]
        assert points["ids"] == list(cloud.identifier) and len(points["ids"]) == cloud.count > 0
        view = np.array(labels["camera"]["view"]).reshape(4, 4)
        width, height = labels["image"]["width"], labels["image"]["height"]
        for stored, camera, place in zip(
            cloud.point, points["camera"], points["image"], strict=True
        ):
            expected = view[:3, :3] @ np.array([stored.x, stored.y, stored.z]) + view[:3, 3]
            assert np.allclose(camera, expected, rtol=0, atol=1e-9), (camera, expected)
            u, v = project(labels["camera"]["intrinsics"], camera)
            inside = camera[2] < 0 and 0 <= u <= width and 0 <= v <= height
            if place is None:
                assert not inside
                counts["out"] += 1
            else:
                assert math.hypot(u - place[0] * width, v - place[1] * height) < 1.0
                counts["in"] += 1
        counts["samples"] += 1
    assert counts["samples"] > 50 and counts["in"] > 100 and counts["out"] > 0, counts


def test_frame_workers_and_a_single_thread_build_the_same_bytes(
    built: tuple[Path, dict[str, Any]],
    frames_source: tuple[str, SampleDataset],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The default build decodes in frame worker processes (the `built` fixture's run started
    them in this process); with OBJECTRON_WDS_FRAME_PROCESSES=0 everything runs in the build
    thread, one video after another: the shards are the same bytes."""
    dest, _ = built
    workers = frame_process_ids()
    assert workers and all(Path(f"/proc/{pid}").exists() for pid in workers)
    monkeypatch.setenv(FRAME_PROCESSES_VARIABLE, "0")
    one_thread = tmp_path / "one-thread"
    run_frames(frames_source[0], one_thread, concurrency=1)
    assert {Path(p).name: Path(p).read_bytes() for p in shard_paths(one_thread)} == {
        Path(p).name: Path(p).read_bytes() for p in shard_paths(dest)
    }


def test_stride_size_and_quality_options(
    frames_source: tuple[str, SampleDataset], tmp_path: Path
) -> None:
    source, _ = frames_source
    summary = run_frames(
        source, tmp_path, stride=5, image_size="full", jpeg_quality=50, max_shards=1,
        shuffle_seed=None,
    )  # fmt: skip
    samples = list(read_samples(tmp_path))
    assert samples and summary["samples"] == len(samples)
    assert {labels["frame_id"] for _, _, labels in samples} == {0, 5, 10}
    for _, rgb, labels in samples:
        assert rgb.shape[:2] == (256, 192)
        assert read_frame_counter(rgb) == labels["frame_id"]
    # Without a seed, frames stay in video and frame order.
    keys = [key for key, _, _ in samples]
    assert keys == sorted(keys)


def test_a_shard_whose_videos_are_all_reported_is_complete_and_empty(
    frames_source: tuple[str, SampleDataset], tmp_path: Path
) -> None:
    source, dataset = frames_source
    broken = dataset.corrupt_videos[0]
    summary = run_frames(source, tmp_path, classes=[broken.split("/", 1)[0]])
    assert summary["failed"] == 0
    assert broken in {entry["video"] for entry in summary["reported"]}
    tars = shard_paths(tmp_path)
    empty = [p for p in tars if not list(wds.WebDataset(p, shardshuffle=False, empty_check=False))]
    assert empty, "expected a shard with no samples"
    import tarfile

    with tarfile.open(empty[0]) as tar:
        assert tar.getnames() == [EMPTY_MEMBER]
    storage = open_storage(str(tmp_path))
    base = Path(empty[0]).name.removesuffix(".tar")
    verdict = verify_shard(storage, read_spec(storage, base), load_stats(storage, base))
    assert verdict.status == STATUS_OK and verdict.samples == 0, verdict.problems
    # The preview comes from the first shard holding samples; with none, there is none.
    if len(empty) == len(tars):
        assert summary["preview"] is None
        assert not (tmp_path / "objectron-frames-preview.jpg").exists()
    else:
        assert summary["preview"] is not None


def test_readme_frames_example_reads_and_batches(
    built: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    import re
    import subprocess
    import sys

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = re.search(r"<!-- example: read-frames.*?-->\n```python\n(.*?)```", readme, re.S)
    assert block, "the README lost its frames example block"
    dest, _ = built
    (tmp_path / "demo-output").mkdir()
    (tmp_path / "demo-output" / "frames").symlink_to(dest)
    result = subprocess.run(
        [sys.executable, "-c", block.group(1)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "images: (8, 640, 480, 3)" in result.stdout, result.stdout
    assert "keypoints: (8, 9, 2)" in result.stdout, result.stdout


def test_preview_command_draws_a_contact_sheet(
    built: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    from flows.cli import main

    dest, _ = built
    out = tmp_path / "sheet.jpg"
    assert main(["preview", shard_paths(dest)[0], "--out", str(out), "--samples", "4"]) == 0
    image = Image.open(io.BytesIO(out.read_bytes()))
    assert image.format == "JPEG" and image.size[0] > 240
    # Not a frame shard: one line, exit 2, nothing written.
    missing = tmp_path / "nothing.jpg"
    assert main(["preview", str(tmp_path / "absent.tar"), "--out", str(missing)]) == 2
    assert not missing.exists()


def test_verify_finds_a_damaged_frame_shard_and_repair_rebuilds_it_identically(
    frames_source: tuple[str, SampleDataset], tmp_path: Path
) -> None:
    from flows.verify import VerificationFailed, verify_shards

    run_frames(frames_source[0], tmp_path, max_shards=2)
    tars = shard_paths(tmp_path)
    original = Path(tars[1]).read_bytes()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0xFF  # one byte inside a JPEG or its labels
    Path(tars[1]).write_bytes(bytes(damaged))
    with pytest.raises(VerificationFailed, match=Path(tars[1]).name):
        verify_shards(dest=str(tmp_path))
    summary = verify_shards(dest=str(tmp_path), repair=True)
    assert summary["repaired"] == [Path(tars[1]).name]
    assert Path(tars[1]).read_bytes() == original
