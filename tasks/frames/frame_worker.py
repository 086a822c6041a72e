"""`python -m tasks.frames.frame_worker`: one frame worker of tasks/frames/shard.py.

Answers each request (tasks/worker_pool.py framing; the payload a VideoJob's JSON) with the
video's spooled samples, or the reason it is reported. Leaves when stdin closes. Imports the
decoder, the labels and PyAV, not Prefect, so it starts in a fraction of a second.
"""

from __future__ import annotations

import sys

from tasks.frames.spool import spool_answer
from tasks.worker_pool import serve

if __name__ == "__main__":
    # Any failure (not the video's: a reported video is a normal answer) goes back as text.
    serve(sys.stdin.buffer, sys.stdout.buffer, spool_answer, Exception, collect_every=20)
