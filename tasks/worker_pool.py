"""Worker processes for CPU-heavy Python work, so it neither holds the calling process's GIL
nor competes with the other builds for one core.

A pool of plain subprocesses (`python -m MODULE`), started on first use and shared by every
thread of the process. Not multiprocessing: its `spawn` would re-import the flow's main module
(Prefect and all, seconds per worker), `fork` is unsafe in a process with running threads, and
neither may be used from a daemonic Dask worker. A worker reads framed requests (kind, length,
payload) from its stdin and answers each (status, length, payload) on its stdout; it leaves when
stdin closes, so when the process that started it exits or is killed, its workers go too.
Where a worker cannot be started or dies, the work runs in the calling thread (`local`), with
the same output; the pool's environment variable set to 0 asks for that from the start.

Used by tasks/objectron/decode_pool.py (the JSON twins) and tasks/frames/video_pool.py (the
frames of a video).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import logging
import os
import queue
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO

# Request: kind, payload length, payload. Reply: status, length, then the result (status OK)
# or the failure's message (status FAILED).
FRAME = struct.Struct(">BQ")
OK, FAILED = 0, 1
_log = logging.getLogger("objectron_wds.worker_pool")


class WorkerGone(Exception):
    """A worker exited or its pipe broke."""


def read_exactly(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise WorkerGone(f"stream ended after {len(data)} of {size} bytes")
    return data


class _Worker:
    def __init__(self, module: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", module], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )

    def call(self, kind: int, payload: bytes) -> tuple[int, bytes]:
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write(FRAME.pack(kind, len(payload)))
            self.process.stdin.write(payload)
            self.process.stdin.flush()
            status, size = FRAME.unpack(read_exactly(self.process.stdout, FRAME.size))
            return status, read_exactly(self.process.stdout, size)
        except (OSError, ValueError) as exc:
            raise WorkerGone(f"{type(exc).__name__}: {exc}") from exc

    def stop(self) -> None:
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()  # the worker's cue to leave
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class WorkerPool:
    """Subprocesses of `module` (see `serve`), `variable` of them (default: one per CPU).

    `local(kind, payload)` does the same work in the calling thread; a worker's FAILED answer
    is raised as `failure(message)`.
    """

    def __init__(
        self,
        module: str,
        variable: str,
        local: Callable[[int, bytes], bytes],
        failure: type[Exception],
        what: str,
    ) -> None:
        self.module, self.variable, self.local, self.failure = module, variable, local, failure
        self.what = what  # for messages: "decode", "frame"
        self._lock = threading.Lock()
        self._owner_pid = 0
        self._threads: ThreadPoolExecutor | None = None
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._workers: list[_Worker] = []
        self._size = 0
        self._disabled_reason: str | None = None
        atexit.register(self.shutdown)

    def wanted_size(self) -> int:
        setting = os.environ.get(self.variable, "").strip()
        if not setting:
            return os.cpu_count() or 1
        try:
            return max(0, int(setting))
        except ValueError:
            raise ValueError(
                f"{self.variable}={setting!r}: give a number of processes (0 = work in the "
                "build thread)"
            ) from None

    def _ready_threads(self) -> ThreadPoolExecutor | None:
        size = self.wanted_size()
        with self._lock:
            if size == 0 or self._disabled_reason is not None:
                return None
            if self._threads is None or self._owner_pid != os.getpid():
                # First use in this process (or in a fork of the process that made it).
                self._threads = ThreadPoolExecutor(size, thread_name_prefix=self.what)
                self._idle = queue.SimpleQueue()
                self._workers, self._size, self._owner_pid = [], size, os.getpid()
            return self._threads

    def _take_worker(self) -> _Worker:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if len(self._workers) < self._size:
                worker = _Worker(self.module)
                self._workers.append(worker)
                return worker
        return self._idle.get()

    def _call(self, kind: int, payload: bytes) -> bytes:
        try:
            worker = self._take_worker()
        except OSError as exc:
            self.disable(f"a {self.what} process could not start ({exc})")
            return self.local(kind, payload)
        try:
            status, result = worker.call(kind, payload)
        except WorkerGone as exc:
            self.disable(f"a {self.what} process failed ({exc})")
            worker.stop()
            return self.local(kind, payload)
        self._idle.put(worker)
        if status == FAILED:
            raise self.failure(result.decode())
        return result

    def disable(self, reason: str) -> None:
        with self._lock:
            if self._disabled_reason is None:
                _log.warning("%s work in the build threads from now on: %s", self.what, reason)
                self._disabled_reason = reason

    def submit(self, kind: int, payload: bytes) -> Future[bytes] | None:
        """The work running in a worker, or None when there are none (call `local`)."""
        threads = self._ready_threads()
        if threads is None:
            return None
        return threads.submit(self._call, kind, payload)

    def process_ids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w.process.poll() is None]

    def shutdown(self) -> None:
        with self._lock:
            threads, self._threads = self._threads, None
            workers, self._workers = self._workers, []
            owned = self._owner_pid == os.getpid()
        if not owned:
            return
        if threads is not None:
            threads.shutdown(wait=True)
        for worker in workers:
            worker.stop()


def serve(
    requests: IO[bytes],
    replies: IO[bytes],
    handle: Callable[[int, bytes], bytes],
    failure: type[Exception],
    collect_every: int = 200,
) -> None:
    """A worker's loop: answer each request with `handle(kind, payload)`, or its `failure`'s
    message. The cyclic garbage collector is off (the work makes many small objects and no
    cycles; it cost ~30 % of a decode) and run every `collect_every` requests instead."""
    gc.disable()
    served = 0
    while True:
        try:
            kind, size = FRAME.unpack(read_exactly(requests, FRAME.size))
            payload = read_exactly(requests, size)
        except WorkerGone:
            return
        try:
            status, result = OK, handle(kind, payload)
        except failure as exc:
            status, result = FAILED, str(exc).encode()
        replies.write(FRAME.pack(status, len(result)))
        replies.write(result)
        replies.flush()
        served += 1
        if served % collect_every == 0:
            gc.collect()
