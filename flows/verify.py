"""The `verify-shards` flow: check every shard at a destination against its spec, and with
`repair` rebuild exactly the bad and missing ones.

This module only composes; the checks are in `tasks/verify.py`, the rebuild is the build task.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner

from flows.backpressure import ServerBackPressure
from flows.bounded import run_bounded
from flows.progress import RunProgress, publish
from tasks.build import build
from tasks.parameters import MAX_CONCURRENCY, InvalidInput, check_concurrency
from tasks.specs import ShardFiles, read_spec
from tasks.stats import ShardStats
from tasks.storage import StorageError, open_storage
from tasks.verify import (
    STATUS_OK,
    ShardVerdict,
    VerificationReport,
    find_specs,
    now_utc,
    verify,
    write_report,
)


class VerificationFailed(RuntimeError):
    """Some shards are bad or missing; the message names them."""


@flow(
    name="verify-shards",
    flow_run_name="verify-shards {dest}",
    task_runner=ThreadPoolTaskRunner(max_workers=MAX_CONCURRENCY),  # type: ignore[arg-type]
    validate_parameters=True,
)
def verify_shards(
    dest: str,
    series: str | None = None,
    repair: bool = False,
    concurrency: int = 4,
) -> dict[str, Any]:
    """Check every shard at a destination against its spec; optionally rebuild the bad ones.

    Args:
        dest: The destination of a conversion: `gs://BUCKET/PREFIX` or a local folder.
        series: Only shards of this series (e.g. objectron-train); empty = all.
        repair: Rebuild exactly the bad and missing shards from their specs (the sources are
            read at the generations the specs pin), then verify them again.
        concurrency: Shards checked (or rebuilt) at the same time.
    """
    logger = get_run_logger()
    check_concurrency(concurrency)
    storage = open_storage(dest)
    try:
        bases, unplanned = find_specs(storage, series)
    except StorageError as exc:
        raise InvalidInput(f"destination {dest}: {exc}") from exc
    if not bases:
        raise InvalidInput(f"no shard specs (*.spec.json) at {dest}: nothing to verify")
    verdicts = _verify_all(dest, bases, concurrency)
    repaired: list[str] = []
    broken = [v for v in verdicts.values() if v.status != STATUS_OK]
    if repair and broken:
        logger.info("Repairing %d shard(s): %s", len(broken), [v.shard for v in broken])
        repaired = _rebuild(dest, [v.shard.removesuffix(".tar") for v in broken], concurrency)
        verdicts.update(_verify_all(dest, [s.removesuffix(".tar") for s in repaired], concurrency))
    report = VerificationReport(dest, now_utc(), [verdicts[b] for b in bases], unplanned)
    report_url = write_report(storage, report)
    summary = {
        "dest": dest,
        "shards": len(bases),
        "ok": sum(v.status == STATUS_OK for v in report.verdicts),
        "bad": [v.shard for v in report.bad],
        "missing": [v.shard for v in report.missing],
        "unplanned": unplanned,
        "repaired": repaired,
        "report": report_url,
    }
    create_markdown_artifact(
        key="objectron-wds-verification",
        markdown=_report_markdown(report, repaired, report_url),
        description="verify-shards report",
    )
    if not report.ok:
        problems = [f"{v.shard} ({v.status}: {'; '.join(v.problems)[:300]})" for v in report.bad]
        problems += [f"{v.shard} (missing)" for v in report.missing]
        problems += [f"{name} (no spec)" for name in unplanned]
        raise VerificationFailed(
            f"{len(problems)} shard(s) at {dest} failed verification: "
            + "; ".join(problems[:20])
            + ("" if repair else ". Run again with repair=True to rebuild them.")
        )
    logger.info("All %d shards at %s verified; report %s", len(bases), dest, report_url)
    return summary


def _verify_all(dest: str, bases: list[str], concurrency: int) -> dict[str, ShardVerdict]:
    verdicts: dict[str, ShardVerdict] = {}
    progress = RunProgress("verify", total=len(bases))
    publish(progress)

    def done(base: str, future: PrefectFuture[ShardVerdict]) -> None:
        nonlocal progress
        verdict = verdicts[base] = future.result()
        progress = RunProgress(
            "verify",
            total=progress.total,
            done=progress.done + 1,
            failed=progress.failed + (verdict.status != STATUS_OK),
            samples=progress.samples + verdict.samples,
            bytes=progress.bytes + verdict.tar_bytes,
        )
        publish(progress)

    pressure = ServerBackPressure("verify ")
    run_bounded(verify.submit, [(b, (dest, b)) for b in bases], concurrency, done, pressure)
    return verdicts


def _rebuild(dest: str, bases: list[str], concurrency: int) -> list[str]:
    storage = open_storage(dest)
    calls = []
    for base in bases:
        spec = read_spec(storage, base)
        files = ShardFiles(base)
        # The bad tar goes first; the build then writes the shard afresh, create-only.
        storage.delete(files.tar)
        storage.delete(files.stats)
        calls.append((spec.shard, (spec.source_url, dest, spec.shard, spec.digest)))
    rebuilt: list[str] = []
    progress = RunProgress("repair", total=len(calls))
    publish(progress)

    def done(shard: str, future: PrefectFuture[ShardStats]) -> None:
        nonlocal progress
        stats = future.result()
        rebuilt.append(shard)
        progress = RunProgress(
            "repair",
            total=progress.total,
            done=progress.done + 1,
            samples=progress.samples + stats.samples,
            bytes=progress.bytes + stats.tar_bytes,
        )
        publish(progress)

    run_bounded(build.with_options(refresh_cache=True).submit, calls, concurrency, done)
    return sorted(rebuilt)


def _report_markdown(report: VerificationReport, repaired: list[str], url: str) -> str:
    lines = [
        "# verify-shards",
        "",
        f"- destination: `{report.dest}`; report: `{url}`",
        f"- shards: {len(report.verdicts)}; bad: {len(report.bad)}; "
        f"missing: {len(report.missing)}; without spec: {len(report.unplanned)}",
        f"- repaired: {', '.join(repaired) or 'none'}",
    ]
    for verdict in report.bad + report.missing:
        lines.append(f"- **{verdict.shard}** {verdict.status}: {'; '.join(verdict.problems)}")
    return "\n".join(lines) + "\n"
