"""`python -m tasks.objectron.decode_worker`: one decode worker of tasks/objectron/decode_pool.py.

Answers each request (tasks/worker_pool.py framing: the kind's index and the raw bytes) with
the JSON twin or the DecodeError message. Leaves when stdin closes: the process that started it
has finished with it, or is gone. Imports only the decoder, so it starts in a fraction of a
second.
"""

from __future__ import annotations

import sys

from tasks.objectron.decode import DecodeError
from tasks.objectron.decode_pool import KINDS, decoded_json
from tasks.worker_pool import serve


def _decode(kind: int, raw: bytes) -> bytes:
    return decoded_json(KINDS[kind], raw)


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer, _decode, DecodeError)
