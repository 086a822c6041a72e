"""`python -m tasks.objectron.decode_worker`: one decode worker of tasks/objectron/decode_pool.py.

Reads framed requests (kind, length, raw bytes) from stdin and answers each on stdout with
the JSON twin or the DecodeError message. Leaves when stdin closes: the process that started it
has finished with it, or is gone. Imports only the decoder, so it starts in a fraction of a
second.
"""

from __future__ import annotations

import gc
import sys
from typing import IO

from tasks.objectron.decode import DecodeError
from tasks.objectron.decode_pool import (
    FAILED,
    FRAME,
    KINDS,
    OK,
    WorkerGone,
    decoded_json,
    read_exactly,
)

# Decoding builds tens of thousands of small lists per sample and no reference cycles, so the
# cyclic garbage collector only costs time here (~30 % of a decode, benchmarks/RESULTS.md): it
# is off, and run explicitly every so many requests for whatever cycles error paths leave.
COLLECT_EVERY = 200


def serve(requests: IO[bytes], replies: IO[bytes]) -> None:
    gc.disable()
    served = 0
    while True:
        try:
            kind, size = FRAME.unpack(read_exactly(requests, FRAME.size))
            raw = read_exactly(requests, size)
        except WorkerGone:
            return
        try:
            status, payload = OK, decoded_json(KINDS[kind], raw)
        except DecodeError as exc:
            status, payload = FAILED, str(exc).encode()
        replies.write(FRAME.pack(status, len(payload)))
        replies.write(payload)
        replies.flush()
        served += 1
        if served % COLLECT_EVERY == 0:
            gc.collect()


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
