"""JSON twins decoded in worker processes, so decoding neither holds up a build's I/O nor
competes with the other builds for one core.

Decoding an Objectron sample's geometry and annotation (protobuf parse, then `json.dumps`) is
about 40 ms of pure-Python CPU work per sample. In the build threads of a flow run it would hold
the GIL: the threads streaming other members wait for it, and a 2-core machine decodes on one
core. Here the build hands the raw bytes to a worker process as soon as it has them and streams
the sample's video while the worker decodes; it takes the JSON when it writes the twin.

The workers are plain subprocesses (`python -m tasks.objectron.decode_worker`) of a
tasks/worker_pool.py pool, one per CPU, started on first use and shared by every build thread
of the process. Where a worker cannot be started or dies, decoding runs in the calling thread,
with the same output; `OBJECTRON_WDS_DECODE_PROCESSES=0` asks for that.
"""

from __future__ import annotations

import functools
from typing import Literal

import orjson

from tasks.objectron.decode import DecodeError, decode_annotation, decode_geometry
from tasks.worker_pool import WorkerPool

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
# The twins are lossless: the flattened views and every field of the official schema.
_DECODERS = {
    "geometry": functools.partial(decode_geometry, lossless=True),
    "annotation": functools.partial(decode_annotation, lossless=True),
}


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
        return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    except orjson.JSONEncodeError as exc:  # e.g. a string that is not valid UTF-8
        raise DecodeError(f"{kind}: the decoded content cannot be written as JSON: {exc}") from exc


def _decode_here(kind: int, raw: bytes) -> bytes:
    return decoded_json(KINDS[kind], raw)


_POOL = WorkerPool(
    "tasks.objectron.decode_worker", PROCESSES_VARIABLE, _decode_here, DecodeError, "decode"
)


def decode_process_ids() -> list[int]:
    """The process ids of this process's running decode workers (for benchmarks)."""
    return _POOL.process_ids()


def shutdown_decode_processes() -> None:
    """Stop this process's decode workers and wait for them (they start again when needed);
    for benchmarks, which count the workers' CPU and memory once they have exited."""
    _POOL.shutdown()


class PendingDecode:
    """A JSON twin being made: by a worker process, or (no workers) when it is asked for."""

    def __init__(self, kind: DecodeKind, raw: bytes) -> None:
        self.kind = kind
        self.raw = raw
        self._future = _POOL.submit(KINDS.index(kind), raw)

    def result(self) -> bytes:
        """The twin's bytes. Raises DecodeError for bytes that do not decode."""
        if self._future is not None:
            return self._future.result()
        return decoded_json(self.kind, self.raw)
