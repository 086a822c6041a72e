"""Row 6: orchestration overhead per shard task: the real flow against a Prefect server vs
the same stages as plain function calls, on tiny objects (so building costs almost nothing),
at two plan sizes (50 and 250 shards in the full run) and concurrency 1 and 8.

The flow runs in a fresh process of its own (this module is its entry point), against
`--prefect-api-url` or a `prefect server` started here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/overhead.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT, PrefectServer, run_convert_flow, run_forked
from benchmarks.flow_runs import count_task_runs_settled
from benchmarks.harness import Bench, Row, yes
from benchmarks.synthetic import full_scale_keys, write_tiny_source
from tasks.build import build_shard
from tasks.index import write_shard_index
from tasks.listing import list_source_api
from tasks.planning import plan_shards
from tasks.samples import assemble_samples, parse_split_index, split_index_names
from tasks.specs import make_spec, read_spec, upload_specs
from tasks.stats import ShardStats
from tasks.storage import Storage, open_storage


def rows(bench: Bench) -> None:
    """The flow against a Prefect server vs the same stages as plain calls, on tiny objects
    (so building costs almost nothing), at two plan sizes: the difference of the two sizes
    is the per-task cost without the fixed per-run costs."""
    c = bench.config
    sources = {}
    for shards in c.overhead_shards:
        keys, annotated = full_scale_keys(shards * 3)
        sources[shards] = bench.work / f"tiny-src-{shards}"
        write_tiny_source(sources[shards], keys, annotated)
    server: PrefectServer | None = None
    api_url = bench.prefect_api_url
    if api_url is None:
        bench.log("Starting a prefect server (SQLite, own PREFECT_HOME)")
        server = PrefectServer(bench.work / "prefect-home").start()
        api_url = server.api_url
    bench.raw["overhead"] = []
    try:
        for concurrency in c.overhead_concurrency:
            runs = {}
            for shards, source in sources.items():
                flow_dest = bench.new_dest("local")
                plain_dest = bench.new_dest("local")
                flow = run_flow_process(api_url, bench.work, str(source), flow_dest, 3, concurrency)
                plain = run_forked(plain_pipeline, str(source), plain_dest, 3, concurrency)
                built = [
                    ShardStats.from_json(p.read_bytes())
                    for p in Path(flow_dest).glob("*.stats.json")
                ]
                run = {
                    "shards": shards, "concurrency": concurrency, "flow": flow, "plain": plain,
                    "build_sum": sum(s.seconds for s in built),
                }  # fmt: skip
                runs[shards] = run
                bench.raw["overhead"].append(run)
                bench.log(
                    f"Overhead c={concurrency}, {shards} shards: flow {flow['seconds']:.2f} s, "
                    f"plain {plain['seconds']:.2f} s, summed build {run['build_sum']:.2f} s, "
                    f"build task runs recorded {flow['task_runs']}/{flow['shards']}"
                )
                shutil.rmtree(flow_dest, ignore_errors=True)
                shutil.rmtree(plain_dest, ignore_errors=True)
            small, big = runs[min(runs)], runs[max(runs)]
            shards = big["shards"]
            per_task = (big["flow"]["seconds"] - big["build_sum"]) / shards * 1000
            vs_plain = (big["flow"]["seconds"] - big["plain"]["seconds"]) / shards * 1000
            span = big["shards"] - small["shards"]
            marginal = (
                (big["flow"]["seconds"] - small["flow"]["seconds"])
                - (big["plain"]["seconds"] - small["plain"]["seconds"])
            ) / span * 1000 if span else float("nan")  # fmt: skip
            if concurrency == 1:
                measure = "(flow - summed build) / shards"
                headline, other = (
                    per_task,
                    f"(flow - same work without Prefect) / shards {vs_plain:.0f} ms",
                )
            else:
                # Overlapping builds make the summed build time exceed the flow's time, so
                # the difference says nothing; compare with the same work without Prefect.
                measure = "(flow - same work without Prefect) / shards"
                headline, other = (
                    vs_plain,
                    f"(flow - summed build) / shards {per_task:.0f} ms: builds overlap",
                )
            bench.rows.append(Row(
                f"6 c={concurrency}",
                f"orchestration overhead per shard task, {shards} tiny shards, concurrency "
                f"{concurrency}: {measure}",
                f"{headline:.0f} ms",
                f"{other}; marginal per extra task ({small['shards']}->{shards} shards) "
                f"{marginal:.0f} ms",
                f"build task runs recorded {big['flow']['task_runs']}/{shards}",
                "< 50 ms", yes(headline < 50),
            ))  # fmt: skip
    finally:
        if server is not None:
            server.stop()


def plain_pipeline(
    source_url: str, dest_url: str, shard_size: int, concurrency: int
) -> dict[str, Any]:
    """The baseline: the flow's stages as plain function calls, no Prefect at all."""
    started = time.perf_counter()
    source: Storage = open_storage(source_url)
    dest = open_storage(dest_url)
    objects = list_source_api(source)
    splits = parse_split_index({n: source.read_bytes(n) for n in split_index_names(objects)})
    samples = assemble_samples(objects, splits).samples
    plans = plan_shards(samples, shard_size=shard_size)
    upload = upload_specs(dest, [make_spec(plan, source.url) for plan in plans])

    def one(shard: str) -> ShardStats:
        spec = read_spec(dest, shard.removesuffix(".tar"))
        return build_shard(open_storage(source_url), open_storage(dest_url), spec)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        stats = list(pool.map(one, upload.digests))
    write_shard_index(dest, "objectron", stats)
    return {"seconds": time.perf_counter() - started, "shards": len(stats)}


def run_flow_process(
    api_url: str, work: Path, source: str, dest: str, shard_size: int, concurrency: int
) -> dict[str, Any]:
    """The real flow in a fresh Python process pointed at the server (`python -m
    benchmarks.overhead`, which runs `flow_child`)."""
    result_file = work / f"flow-{time.monotonic_ns()}.json"
    env = dict(os.environ)
    env["PREFECT_API_URL"] = api_url
    env["PREFECT_HOME"] = str(work / "prefect-client-home")
    params = {"source": source, "dest": dest, "shard_size": shard_size, "concurrency": concurrency}
    with open(work / "flow.log", "ab") as log:
        subprocess.run(
            [sys.executable, "-m", "benchmarks.overhead", json.dumps(params), str(result_file)],
            env=env, stdout=log, stderr=subprocess.STDOUT, check=True, cwd=ROOT, timeout=3600,
        )  # fmt: skip
    result: dict[str, Any] = json.loads(result_file.read_text())
    return result


def flow_child(params_json: str, result_file: str) -> None:
    """`python -m benchmarks.overhead PARAMS RESULT_FILE`: run the flow once, then count its
    recorded task runs."""
    state, seconds = run_convert_flow(json.loads(params_json))
    summary = state.result()
    flow_run_id = state.state_details.flow_run_id
    expected = summary["shards"]
    recorded = count_task_runs_settled(flow_run_id, expected, name_like="build ")
    Path(result_file).write_text(json.dumps({
        "seconds": seconds, "shards": summary["shards"], "built": summary["built"],
        "flow_run_id": str(flow_run_id), "task_runs": recorded, "expected_task_runs": expected,
    }))  # fmt: skip


if __name__ == "__main__":
    flow_child(sys.argv[1], sys.argv[2])
