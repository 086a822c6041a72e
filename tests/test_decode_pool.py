"""JSON twins made in the decode worker processes: the same bytes as decoding in the build
thread, errors come back as DecodeError, and the workers leave with the process that started
them, even when it is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.objectron import decode_pool
from tasks.objectron.decode import DecodeError
from tasks.objectron.decode_pool import PROCESSES_VARIABLE, PendingDecode, decoded_json
from tasks.objectron.sample_data import write_sample_dataset
from tasks.storage import LocalStorage

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def raw_files(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, bytes]]:
    storage = LocalStorage(tmp_path_factory.mktemp("pool-data"))
    write_sample_dataset(storage, videos=4, seed=3, video_bytes=1000, frames=30, placeholders=0)
    files: list[tuple[str, bytes]] = []
    for info in storage.list():
        if info.name.endswith("geometry.pbdata"):
            files.append(("geometry", storage.read_bytes(info.name)))
        elif info.name.startswith("annotations/") and info.name.endswith(".pbdata"):
            files.append(("annotation", storage.read_bytes(info.name)))
    return files


def test_worker_processes_make_the_same_twins_as_the_build_thread(
    raw_files: list[tuple[str, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PROCESSES_VARIABLE, raising=False)
    pending = [PendingDecode(kind, raw) for kind, raw in raw_files]  # type: ignore[arg-type]
    from_workers = [p.result() for p in pending]
    # They really were decoded in other processes.
    workers = decode_pool._POOL._workers
    assert workers and all(w.process.poll() is None for w in workers)

    monkeypatch.setenv(PROCESSES_VARIABLE, "0")
    in_thread = [PendingDecode(kind, raw).result() for kind, raw in raw_files]  # type: ignore[arg-type]
    assert len(from_workers) >= 8
    assert from_workers == in_thread
    assert from_workers == [decoded_json(kind, raw) for kind, raw in raw_files]  # type: ignore[arg-type]


def test_bytes_that_do_not_decode_raise_decode_error_from_a_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(PROCESSES_VARIABLE, raising=False)
    with pytest.raises(DecodeError, match="annotation"):
        PendingDecode("annotation", os.urandom(4096)).result()
    with pytest.raises(DecodeError, match="geometry"):
        PendingDecode("geometry", b"\x00\x00\x00\x09" + b"x" * 3).result()


CHILD = """
import os, sys, time
from tasks.objectron.decode_pool import PendingDecode, _POOL
from tasks.objectron.decode import DecodeError
for pending in [PendingDecode("annotation", b"not an annotation") for _ in range(8)]:
    try:
        pending.result()
    except DecodeError:
        pass
print(" ".join(str(w.process.pid) for w in _POOL._workers), flush=True)
time.sleep(600)
"""


def test_workers_leave_when_the_process_that_started_them_is_killed() -> None:
    env = {**os.environ, PROCESSES_VARIABLE: "2"}
    env.pop("PYTHONPATH", None)
    parent = subprocess.Popen(
        [sys.executable, "-c", CHILD], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    workers: list[int] = []
    try:
        assert parent.stdout is not None
        workers = [int(pid) for pid in parent.stdout.readline().split()]
        assert 1 <= len(workers) <= 2 and all(_alive(pid) for pid in workers)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in workers), "decode workers outlived their parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for pid in workers:  # only if the assertion above failed: they are ours to end
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, already exited, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"
