"""Runs as separate processes (`python -m flows.cli convert` and `... frames`, recorded by the
session's Prefect server): two at the same moment on one destination, and one killed with
SIGKILL at several points and then run again. Both products go through the same machinery
(specs, claims, create-only commits), so each test runs for each."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from flows.convert import objectron_to_wds
from flows.frames import objectron_to_frames
from tasks.fake_gcs import FakeGcsServer
from tasks.objectron.sample_data import write_sample_dataset
from tasks.specs import read_spec
from tasks.storage import Storage, open_storage
from tasks.verify import STATUS_OK, load_stats, verify_shard
from tests.fault_proxy import FaultPlan, FaultProxy

pytestmark = pytest.mark.usefixtures("prefect_server")

ROOT = Path(__file__).resolve().parent.parent
COMMON = ["--chunk-size-mib", "1", "--concurrency", "2"]
ARGS = {
    "convert": ["--shard-size", "2", *COMMON],
    "frames": ["--videos-per-shard", "2", *COMMON],
}
PRODUCTS = list(ARGS)


@pytest.fixture(scope="module", params=PRODUCTS)
def product(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def slow_source(fake_gcs: FakeGcsServer, product: str) -> str:
    """Builds that take long enough to overlap and to be killed in the middle: for convert,
    shards of a few MiB uploaded in 1 MiB chunks; for frames, videos of 150 frames to decode."""
    bucket = f"runs-source-{product}"
    fake_gcs.create_bucket(bucket)
    size = {"video_bytes": 1200 * 1024} if product == "convert" else {"frames": 150}
    write_sample_dataset(
        open_storage(f"gs://{bucket}"), videos=9 if product == "convert" else 6, seed=9,
        placeholders=1, unannotated=1, include_no_split_video=False, **size,  # type: ignore[arg-type]
    )  # fmt: skip
    return f"gs://{bucket}"


@pytest.fixture(scope="module")
def reference(slow_source: str, fake_gcs: FakeGcsServer, product: str) -> dict[str, bytes]:
    """The shards of one uninterrupted run."""
    bucket = f"runs-reference-{product}"
    fake_gcs.create_bucket(bucket)
    if product == "convert":
        objectron_to_wds(
            dest=f"gs://{bucket}", source=slow_source, shard_size=2, chunk_size_mib=1,
            concurrency_limit=None,
        )  # fmt: skip
    else:
        objectron_to_frames(
            dest=f"gs://{bucket}", source=slow_source, videos_per_shard=2, chunk_size_mib=1,
            concurrency_limit=None,
        )  # fmt: skip
    return tars(open_storage(f"gs://{bucket}"))


def tars(dest: Storage) -> dict[str, bytes]:
    return {i.name: dest.read_bytes(i.name) for i in dest.list() if i.name.endswith(".tar")}


def start_run(product: str, prefect_server: str, source: str, dest: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server,
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", product, "--source", source, "--dest", dest,
         *ARGS[product],
         "--concurrency-limit", "none", "--verbose", "--json", "--no-progress"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def summary_of(output: str) -> dict[str, Any]:
    start = output.rindex('\n{\n "dest"')
    return dict(json.loads(output[start:]))


@pytest.mark.parametrize("runs", [2, 4])
def test_runs_at_once_share_the_plan_and_build_each_shard_once(
    runs: int,
    product: str,
    slow_source: str,
    reference: dict[str, bytes],
    fake_gcs: FakeGcsServer,
    prefect_server: str,
    proxy: FaultProxy,
) -> None:
    bucket = f"gs://runs-concurrent-{product}-{runs}"
    fake_gcs.create_bucket(bucket.removeprefix("gs://"))
    # Every storage request 0.1 s late: builds take seconds, as on a real link, so runs that
    # start a second or two apart overlap (the runs inherit the proxy's address).
    proxy.set_plan(FaultPlan(latency_seconds=0.1))
    started = [start_run(product, prefect_server, slow_source, bucket) for _ in range(runs)]
    outputs = [run.communicate(timeout=600)[0] for run in started]
    for run, output in zip(started, outputs, strict=True):
        assert run.returncode == 0, output[-3000:]
        assert "Traceback" not in output, output[-3000:]
    summaries = [summary_of(output) for output in outputs]
    built = [s["built"] for s in summaries]
    # Each shard built once, by whichever run claimed it first; the work was divided.
    assert sum(built) == len(reference), built
    assert sum(b > 0 for b in built) > 1, f"one run built everything: {built}"
    assert all(s["failed"] == 0 and s["shards"] == len(reference) for s in summaries)
    assert tars(open_storage(bucket)) == reference
    # Every run ended with the whole plan, and wrote the same index.
    dest = open_storage(bucket)
    assert len({s["index"] for s in summaries}) == 1
    index = dest.read_bytes(summaries[0]["index"].rsplit("/", 1)[1])
    assert [(e["url"], e["filesize"]) for e in json.loads(index)["shardlist"]] == [
        (name, len(data)) for name, data in sorted(reference.items())
    ]
    assert len({(s["samples"], s["tar_bytes"]) for s in summaries}) == 1
    # A run that met another's claim said so and went on.
    said = "\n".join(outputs)
    assert "building other shards first, then coming back to it" in said
    names = {i.name for i in dest.list()}
    assert not [n for n in names if n.endswith(".claim")], "claims were left behind"


def test_killed_runs_resume_to_identical_output(
    product: str,
    slow_source: str,
    reference: dict[str, bytes],
    fake_gcs: FakeGcsServer,
    prefect_server: str,
) -> None:
    bucket = f"gs://runs-killed-{product}"
    fake_gcs.create_bucket(bucket.removeprefix("gs://"))
    dest = open_storage(bucket)
    rng = random.Random(42)
    # (log text that marks the stage, then a random extra delay before SIGKILL)
    kill_points = [
        ("Beginning flow run", 0.0),  # pre-flight checks and listing
        ("Plan:", 0.0),  # spec upload
        ("building", rng.uniform(0.0, 0.1)),  # in the middle of the first shard uploads
        ("building", rng.uniform(0.1, 0.5)),
        ("built,", rng.uniform(0.0, 0.3)),
    ]
    killed_at = []
    shards_after_kill = []
    for marker, delay in kill_points:
        run = start_run(product, prefect_server, slow_source, bucket)
        seen = wait_for_line(run, marker, timeout=240)
        if seen is None:
            pytest.fail(f"the run ended before {marker!r} was logged (exit {run.returncode})")
        time.sleep(delay)
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=30)
        killed_at.append(marker)
        assert_no_partial_shard_visible(dest)
        shards_after_kill.append(len(tars(dest)))
    assert len(killed_at) == len(kill_points)
    # Kills during listing and spec upload left no shard; the first mid-upload kill
    # interrupted builds (else this test would prove nothing about them).
    assert shards_after_kill[:2] == [0, 0], shards_after_kill
    assert shards_after_kill[2] < len(reference), shards_after_kill

    final = start_run(product, prefect_server, slow_source, bucket)
    output = final.communicate(timeout=600)[0]
    assert final.returncode == 0, output[-3000:]
    assert tars(dest) == reference
    names = {i.name for i in dest.list()}
    assert not [n for n in names if n.endswith(".claim")], "claims were left behind"


def wait_for_line(process: subprocess.Popen[str], marker: str, timeout: float) -> str | None:
    """Read the process's output until a line contains `marker`; keep draining it afterwards
    so the process never blocks on a full pipe."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    for line in process.stdout:
        if marker in line:
            threading.Thread(target=process.stdout.read, daemon=True).start()
            return line
        if time.monotonic() > deadline:
            break
    return None


def assert_no_partial_shard_visible(dest: Storage) -> None:
    """Every shard a reader can see at its final name is complete and correct."""
    for name in [i.name for i in dest.list() if i.name.endswith(".tar")]:
        base = name.removesuffix(".tar")
        verdict = verify_shard(dest, read_spec(dest, base), load_stats(dest, base))
        assert verdict.status == STATUS_OK, (name, verdict.problems)
