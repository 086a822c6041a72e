"""JSON twins decoded in worker processes, so decoding neither holds up a build's I/O nor
competes with the other builds for one core.

Decoding an Objectron sample's geometry and annotation (protobuf parse, then `json.dumps`) is
about 40 ms of pure-Python CPU work per sample. In the build threads of a flow run it would hold
the GIL: the threads streaming other members wait for it, and a 2-core machine decodes on one
core. Here the build hands the raw bytes to a worker process as soon as it has them and streams
the sample's video while the worker decodes; it takes the JSON when it writes the twin.

The workers are plain subprocesses (`python -m tasks.objectron.decode_worker`), one per
CPU, started on first use and shared by every build thread of the process. Not
multiprocessing: its `spawn` would re-import the flow's main module (Prefect and all, seconds
per worker), `fork` is unsafe in a process with running threads, and neither may be used
from a daemonic Dask worker. A worker
reads requests from its stdin and leaves when it closes, so when the process that started it
exits or is killed, its workers go too. Where a worker cannot be started or dies, decoding runs
in the calling thread, with the same output; `OBJECTRON_WDS_DECODE_PROCESSES=0` asks for that.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import queue
import struct
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Literal

import orjson

from tasks.objectron.decode import DecodeError, decode_annotation, decode_geometry

__all__ = [
    "PROCESSES_VARIABLE",
    "DecodeKind",
    "PendingDecode",
    "decode_process_ids",
    "decoded_json",
    "shutdown_decode_processes",
]

DecodeKind = Literal["geometry", "annotation"]
# Worker processes for decoding; 0 decodes in the build thread. Default: one per CPU.
PROCESSES_VARIABLE = "OBJECTRON_WDS_DECODE_PROCESSES"
KINDS: tuple[DecodeKind, ...] = ("geometry", "annotation")
_DECODERS = {"geometry": decode_geometry, "annotation": decode_annotation}
# Request: kind index, payload length, then the raw bytes. Reply: status, length, then the
# JSON (status OK) or the DecodeError message (status FAILED).
FRAME = struct.Struct(">BQ")
OK, FAILED = 0, 1
_log = logging.getLogger("objectron_wds.decode_pool")


def decoded_json(kind: DecodeKind, raw: bytes) -> bytes:
    """The JSON twin of a raw member: compact UTF-8, keys in the decoder's fixed order.

    Written with orjson, which formats the ~30,000 floats of a sample 15-40x faster than
    `json.dumps` (that formatting was most of the decode time). Each number is the shortest text
    that reads back as the same double, as with `json.dumps`; only the notation of small
    numbers differs (`0.000028117023248341866` for json's `2.8117023248341866e-05`), and a
    non-finite float (none in well-formed files) is written as null, not as the non-standard
    NaN / Infinity.

    Raises:
        DecodeError: the bytes are not a well-formed file of that kind.
    """
    document = _DECODERS[kind](raw)
    try:
        return orjson.dumps(document)
    except orjson.JSONEncodeError as exc:  # e.g. a string that is not valid UTF-8
        raise DecodeError(f"{kind}: the decoded content cannot be written as JSON: {exc}") from exc


class WorkerGone(Exception):
    """A decode worker exited or its pipe broke."""


def read_exactly(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise WorkerGone(f"stream ended after {len(data)} of {size} bytes")
    return data


class _Worker:
    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tasks.objectron.decode_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def decode(self, kind: DecodeKind, raw: bytes) -> bytes:
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write(FRAME.pack(KINDS.index(kind), len(raw)))
            self.process.stdin.write(raw)
            self.process.stdin.flush()
            status, size = FRAME.unpack(read_exactly(self.process.stdout, FRAME.size))
            payload = read_exactly(self.process.stdout, size)
        except (OSError, ValueError) as exc:
            raise WorkerGone(f"{type(exc).__name__}: {exc}") from exc
        if status == FAILED:
            raise DecodeError(payload.decode())
        return payload

    def stop(self) -> None:
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()  # the worker's cue to leave
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class _Pool:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner_pid = 0
        self._threads: ThreadPoolExecutor | None = None
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._workers: list[_Worker] = []
        self._size = 0
        self._disabled_reason: str | None = None

    @staticmethod
    def _wanted_size() -> int:
        setting = os.environ.get(PROCESSES_VARIABLE, "").strip()
        if not setting:
            return os.cpu_count() or 1
        try:
            return max(0, int(setting))
        except ValueError:
            raise ValueError(
                f"{PROCESSES_VARIABLE}={setting!r}: give a number of processes (0 = decode in "
                "the build thread)"
            ) from None

    def _ready_threads(self) -> ThreadPoolExecutor | None:
        size = self._wanted_size()
        with self._lock:
            if size == 0 or self._disabled_reason is not None:
                return None
            if self._threads is None or self._owner_pid != os.getpid():
                # First use in this process (or in a fork of the process that made it).
                self._threads = ThreadPoolExecutor(size, thread_name_prefix="decode")
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
                worker = _Worker()
                self._workers.append(worker)
                return worker
        return self._idle.get()

    def _decode(self, kind: DecodeKind, raw: bytes) -> bytes:
        try:
            worker = self._take_worker()
        except OSError as exc:
            self.disable(f"a decode process could not start ({exc})")
            return decoded_json(kind, raw)
        try:
            result = worker.decode(kind, raw)
        except WorkerGone as exc:
            self.disable(f"a decode process failed ({exc})")
            worker.stop()
            return decoded_json(kind, raw)
        except DecodeError:
            self._idle.put(worker)
            raise
        self._idle.put(worker)
        return result

    def disable(self, reason: str) -> None:
        with self._lock:
            if self._disabled_reason is None:
                _log.warning("Decoding in the build threads from now on: %s", reason)
                self._disabled_reason = reason

    def submit(self, kind: DecodeKind, raw: bytes) -> Future[bytes] | None:
        threads = self._ready_threads()
        if threads is None:
            return None
        return threads.submit(self._decode, kind, raw)

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


_POOL = _Pool()
atexit.register(_POOL.shutdown)


def decode_process_ids() -> list[int]:
    """The process ids of this process's running decode workers (for benchmarks)."""
    return [w.process.pid for w in _POOL._workers if w.process.poll() is None]


def shutdown_decode_processes() -> None:
    """Stop this process's decode workers and wait for them (they start again when needed);
    for benchmarks, which count the workers' CPU and memory once they have exited."""
    _POOL.shutdown()


class PendingDecode:
    """A JSON twin being made: by a worker process, or (no workers) when it is asked for."""

    def __init__(self, kind: DecodeKind, raw: bytes) -> None:
        self.kind = kind
        self.raw = raw
        self._future = _POOL.submit(kind, raw)

    def result(self) -> bytes:
        """The twin's bytes. Raises DecodeError for bytes that do not decode."""
        if self._future is not None:
            return self._future.result()
        return decoded_json(self.kind, self.raw)
