"""Runs as separate processes (`python -m flows.cli convert`, recorded by the session's Prefect
server): two at the same moment on one destination, and one killed with SIGKILL at several
points and then run again."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from flows.convert import objectron_to_wds
from tasks.fake_gcs import FakeGcsServer
from tasks.objectron.sample_data import write_sample_dataset
from tasks.specs import read_spec
from tasks.storage import Storage, open_storage
from tasks.verify import STATUS_OK, load_stats, verify_shard

pytestmark = pytest.mark.usefixtures("prefect_server")

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["--shard-size", "2", "--chunk-size-mib", "1", "--concurrency", "2"]


@pytest.fixture(scope="module")
def slow_source(fake_gcs: FakeGcsServer) -> str:
    """Shards of a few MiB each, uploaded in 1 MiB chunks: builds take long enough to overlap
    and to be killed in the middle."""
    fake_gcs.create_bucket("runs-source")
    write_sample_dataset(
        open_storage("gs://runs-source"), videos=9, seed=9, video_bytes=1200 * 1024,
        placeholders=1, unannotated=1, include_no_split_video=False,
    )  # fmt: skip
    return "gs://runs-source"


@pytest.fixture(scope="module")
def reference(slow_source: str, fake_gcs: FakeGcsServer) -> dict[str, bytes]:
    """The shards of one uninterrupted run."""
    fake_gcs.create_bucket("runs-reference")
    objectron_to_wds(
        dest="gs://runs-reference", source=slow_source, shard_size=2, chunk_size_mib=1,
        concurrency_limit=None,
    )  # fmt: skip
    return tars(open_storage("gs://runs-reference"))


def tars(dest: Storage) -> dict[str, bytes]:
    return {i.name: dest.read_bytes(i.name) for i in dest.list() if i.name.endswith(".tar")}


def start_convert(prefect_server: str, source: str, dest: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server,
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "convert", "--source", source, "--dest", dest, *ARGS,
         "--concurrency-limit", "none", "--verbose", "--json", "--no-progress"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def summary_of(output: str) -> dict[str, Any]:
    start = output.rindex('\n{\n "dest"')
    return dict(json.loads(output[start:]))


def test_two_runs_at_once_build_each_shard_once(
    slow_source: str, reference: dict[str, bytes], fake_gcs: FakeGcsServer, prefect_server: str
) -> None:
    fake_gcs.create_bucket("runs-concurrent")
    runs = [start_convert(prefect_server, slow_source, "gs://runs-concurrent") for _ in range(2)]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    for run, output in zip(runs, outputs, strict=True):
        assert run.returncode == 0, output[-3000:]
        assert "Traceback" not in output, output[-3000:]
    summaries = [summary_of(output) for output in outputs]
    assert summaries[0]["built"] + summaries[1]["built"] == len(reference)
    assert all(s["failed"] == 0 and s["shards"] == len(reference) for s in summaries)
    assert tars(open_storage("gs://runs-concurrent")) == reference
    # The run that did not build a shard said why, plainly.
    said = "\n".join(outputs)
    assert re.search(
        r"already being built by flow run|already exists|exists with the same|state Cached", said
    )


def test_killed_runs_resume_to_identical_output(
    slow_source: str, reference: dict[str, bytes], fake_gcs: FakeGcsServer, prefect_server: str
) -> None:
    fake_gcs.create_bucket("runs-killed")
    dest = open_storage("gs://runs-killed")
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
        run = start_convert(prefect_server, slow_source, "gs://runs-killed")
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

    final = start_convert(prefect_server, slow_source, "gs://runs-killed")
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
