"""JSON twins decoded in worker processes, so decoding neither holds up a build's I/O nor
competes with the other builds for one core.

Decoding an Objectron sample's geometry and annotation (protobuf parse, then `json.dumps`) is
about 40 ms of pure-Python CPU work per sample. In the build threads of a flow run it would hold
the GIL: the threads streaming other members wait for it, and a 2-core machine decodes on one
core. Here the build hands the raw bytes to a small process pool as soon as it has them and
streams the sample's video while the workers decode; it takes the JSON when it writes the twin.

The pool is one per process (shared by every build thread), started on first use with the
`spawn` method (forking a process with running threads can deadlock the child). Its workers
leave when the process that started them is gone, also after a SIGKILL, so a killed flow run
leaves no decoder behind. Where worker processes cannot be started (a daemonic process such as a
Dask worker, or `OBJECTRON_WDS_DECODE_PROCESSES=0`), decoding runs in the calling thread, with
the same output.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Literal

from tasks.decode import decode_annotation, decode_geometry

__all__ = ["PROCESSES_VARIABLE", "DecodeKind", "PendingDecode", "decoded_json"]

DecodeKind = Literal["geometry", "annotation"]
# Worker processes for decoding; 0 decodes in the build thread. Default: one per CPU.
PROCESSES_VARIABLE = "OBJECTRON_WDS_DECODE_PROCESSES"
_DECODERS = {"geometry": decode_geometry, "annotation": decode_annotation}
_log = logging.getLogger("objectron_wds.decode_pool")


def decoded_json(kind: DecodeKind, raw: bytes) -> bytes:
    """The JSON twin of a raw member: compact, keys in the decoder's fixed order.

    Raises:
        DecodeError: the bytes are not a well-formed file of that kind.
    """
    return json.dumps(_DECODERS[kind](raw), separators=(",", ":")).encode()


def _leave_with_parent(parent_pid: int) -> None:
    """Worker initializer: exit as soon as the process that started the pool is gone (its
    queues would otherwise keep an orphaned worker waiting for ever)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="leave-with-parent", daemon=True).start()


class _Pool:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None
        self._owner_pid = 0
        self._disabled_reason: str | None = None

    def _workers(self) -> int:
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

    def _executor_or_none(self) -> ProcessPoolExecutor | None:
        workers = self._workers()
        with self._lock:
            if workers == 0 or self._disabled_reason is not None:
                return None
            if self._executor is not None and self._owner_pid == os.getpid():
                return self._executor
            if multiprocessing.current_process().daemon:
                self._disabled_reason = "this is a daemonic process, which cannot have children"
                _log.info("Decoding in the build threads: %s", self._disabled_reason)
                return None
            self._executor = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_leave_with_parent,
                initargs=(os.getpid(),),
            )
            self._owner_pid = os.getpid()
            return self._executor

    def disable(self, reason: str) -> None:
        with self._lock:
            if self._disabled_reason is None:
                _log.warning("Decoding in the build threads from now on: %s", reason)
            self._disabled_reason = reason
            self._executor = None

    def submit(self, kind: DecodeKind, raw: bytes) -> Future[bytes] | None:
        executor = self._executor_or_none()
        if executor is None:
            return None
        try:
            return executor.submit(decoded_json, kind, raw)
        except Exception as exc:  # the workers could not start, or the pool broke
            self.disable(f"the decode processes failed ({type(exc).__name__}: {exc})")
            return None


_POOL = _Pool()


class PendingDecode:
    """A JSON twin being made: in a worker process, or (no pool) when it is asked for."""

    def __init__(self, kind: DecodeKind, raw: bytes) -> None:
        self.kind = kind
        self.raw = raw
        self._future = _POOL.submit(kind, raw)

    def result(self) -> bytes:
        """The twin's bytes. Raises DecodeError for bytes that do not decode."""
        if self._future is not None:
            try:
                return self._future.result()
            except BrokenProcessPool as exc:  # a worker died (e.g. killed); decode here
                _POOL.disable(f"a decode process died ({exc})")
        return decoded_json(self.kind, self.raw)
