"""objectron-wds benchmarks: the shard build against the physical limit and the alternatives.

    .venv/bin/python benchmarks/run.py            # full run, about 15-25 min on 2 cores
    .venv/bin/python benchmarks/run.py --smoke    # tiny version (what the smoke test runs)

The script sets up everything itself (a fake-gcs-server with the filesystem backend, local
folders, a `prefect server` with its own PREFECT_HOME unless --prefect-api-url is given) and
prints one table of ratios. Every ratio compares two things measured side by side in the same
run, alternating, each in a fresh forked process (so its peak RSS is its own): on a shared
2-core machine absolutes move with the load, ratios much less.

Rows, one module per measure (see README.md for what each compares and why):
  throughput.py (1a-3s) build vs raw copy of the same bytes, same client, chunk size and
                       concurrency (fake-gcs-server; local folders); vs GNU `tar -cf` over the
                       same local files (and with an fsync of the tar); vs webdataset.TarWriter
                       reading each member into memory (speed and peak RSS); vs the
                       reference-style shell pipeline (curl to files, tar | curl upload)
  memory.py (4)        peak RSS of one shard build with a 10 MB, 200 MB and 1 GB member
  planning.py (5, 5f)  planning time for a full-scale listing file (20,088 videos, ~210,000 lines),
                       as convert plans it (5) and as the frames flow does (5f: its 14,584
                       annotated videos, 10 per shard, frame specs); `--only planning-frames`
  overhead.py (6)      orchestration overhead per shard task (Prefect flow vs the same work
                       without Prefect)
  scaling.py (7)       build throughput at concurrency 1, 2, 4, 8 on fake-gcs-server (CPU use)
  frames.py (F, FB)    frames: decode_frames (F) and the frame shard build with labels and
                       tar (FB) vs the ffmpeg command line at 480x640 and full size, their
                       peak RSS on a 30- and a 1000-frame video, and what a full frames run
                       costs (also a script of its own: `benchmarks/frames.py [--quick]`)

`--only` takes the measures' names:
throughput,memory,planning,planning-frames,overhead,scaling,frames.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import frames, memory, overhead, planning, scaling, throughput
from benchmarks.common import MB, machine_facts
from benchmarks.harness import SMOKE, Bench, Config, render
from tasks.fake_gcs import FakeGcsServer

# The measures in the table's order: name (for --only) -> the function that adds its rows.
MEASURES: dict[str, Callable[[Bench], None]] = {
    "throughput": throughput.rows,
    "memory": memory.rows,
    "planning": planning.rows,
    "planning-frames": planning.frame_rows,
    "overhead": overhead.rows,
    "scaling": scaling.rows,
    "frames": frames.rows,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # SIGTERM unwinds like an exception, so the emulator and servers this started are stopped.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one repetition (seconds)")
    parser.add_argument(
        "--prefect-api-url", help="use this Prefect API for row 6 instead of starting a server"
    )
    parser.add_argument("--only", help=f"comma-separated measures: {','.join(MEASURES)}")
    parser.add_argument("--reps", type=int, help="repetitions of each side-by-side pair")
    parser.add_argument("--chunk-mib", type=int, help="upload/download chunk size (default 16)")
    parser.add_argument("--member-sizes", help="row 4 member sizes in MB, e.g. 10,200,1000")
    parser.add_argument("--json", type=Path, help="also write every raw measurement here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    config = SMOKE if args.smoke else Config()
    if args.reps:
        config.reps = args.reps
    if args.chunk_mib:
        config.chunk_mib = args.chunk_mib
    if args.member_sizes:
        config.member_sizes = tuple(int(float(x) * MB) for x in args.member_sizes.split(","))
    chosen = list(MEASURES)
    if args.only:
        chosen = [name for name in args.only.split(",") if name]
        unknown = sorted(set(chosen) - set(MEASURES))
        if unknown:
            parser.error(
                f"--only: no measure {', '.join(unknown)} (there are {', '.join(MEASURES)})"
            )

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    facts = machine_facts()
    work = Path(tempfile.mkdtemp(prefix="objectron-wds-bench-"))
    fake = FakeGcsServer(
        root=work / "fake-gcs", log_path=work / "fake-gcs.log", parent_death_signal=signal.SIGTERM
    ).start()
    os.environ["STORAGE_EMULATOR_HOST"] = fake.url
    bench = Bench(config, work, fake, args.prefect_api_url, log)
    started = time.monotonic()
    try:
        log(f"Work folder {work}; fake-gcs-server {fake.url} (filesystem backend)")
        for name, rows in MEASURES.items():  # in the table's order, whatever --only's
            if name in chosen:
                rows(bench)
    finally:
        fake.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    facts["duration"] = f"{(time.monotonic() - started) / 60:.1f} min"
    facts["command"] = "benchmarks/run.py " + " ".join(argv)
    print(f"objectron-wds benchmarks ({'smoke' if args.smoke else 'full'}): "
          + "; ".join(f"{k} {v}" for k, v in facts.items()))  # fmt: skip
    print()
    print(render(bench.rows))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "facts": facts,
                    "config": vars(config),
                    "rows": [vars(r) for r in bench.rows],
                    "raw": bench.raw,
                },
                indent=1,
                default=str,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
