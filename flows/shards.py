"""Building every shard of a plan whose specs are written: the part of a flow that `convert`
and `frames` share (the build task, its cache and concurrency limit, claims, progress and the
table).

Runs of one plan on one destination share the work: before submitting a build, the flow claims
the shard (tasks/claims.py). A shard claimed by another live run is put aside, and the run goes
on with the next one; once nothing unclaimed is left, it comes back to the shards put aside,
confirming each that the other run committed and taking over each whose claim died. So N runs
divide the plan between them, and each ends only when the whole plan is complete.
"""

from __future__ import annotations

import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from prefect import get_run_logger
from prefect.futures import PrefectFuture, as_completed

from flows.artifacts import RunReport
from flows.backpressure import ServerBackPressure
from tasks.build import STATUS_CACHED, build, run_owner
from tasks.claims import POLL_SECONDS, HeldClaim, claim_name, release, try_claim
from tasks.policy import existing_tag_limit
from tasks.specs import SpecUpload, shard_prefix
from tasks.stats import ShardStats
from tasks.storage import Storage, open_storage


class ShardsFailed(RuntimeError):
    """Some shards could not be built; the others are complete and a re-run resumes."""


def failed_message(failures: list[str], shards: int) -> str:
    return (
        f"{len(failures)} of {shards} shards failed (the others are complete; "
        f"run again to resume): " + "; ".join(failures[:5])
    )


@dataclass(frozen=True)
class BuildOutcome:
    stats: list[ShardStats]  # of the shards built or found complete, in completion order
    failures: list[str]  # "SHARD: Error: message" of each shard that could not be built


@dataclass(frozen=True)
class _Next:
    """A shard ready to submit: claimed by this run, or found complete (no claim needed)."""

    shard: str
    digest: str
    held: HeldClaim | None


# How old the listing of the destination that tells complete and claimed shards apart may be;
# and how often the claim of a shard another run holds is read again. A run walks the whole
# plan, so what it asks per shard it does not build is what bounds N runs of one plan on a slow
# link (benchmarks/RESULTS.md, 2026-12-04, issue 19).
LISTING_SECONDS = 2.0
RECHECK_SECONDS = 5.0


class _SharedPlan:
    """Which shard this run builds next: unclaimed ones in plan order, then the ones other runs
    held, as each is committed or its claim dies.

    A listing of the destination (one request per 1,000 names, at most every LISTING_SECONDS)
    says which shards are complete and which are claimed, so a shard another run holds costs no
    request of its own; only a shard that looks free is claimed (one small create-only write).
    """

    def __init__(self, dest: Storage, digests: dict[str, str], present: set[str]) -> None:
        self.dest = dest
        self.fresh = deque(digests.items())
        self.present = present
        self.put_aside: dict[str, str] = {}
        self.owner = run_owner()
        self.log = get_run_logger().info
        self._said_waiting = 0.0
        self._prefix = shard_prefix(list(digests))
        self._names: set[str] = set()
        self._listed_at = -math.inf
        self._checked: dict[str, float] = {}

    def remaining(self) -> bool:
        return bool(self.fresh or self.put_aside)

    def _listing(self) -> set[str]:
        if time.monotonic() - self._listed_at >= LISTING_SECONDS:
            self._names = {info.name for info in self.dest.list(self._prefix)}
            self._listed_at = time.monotonic()
        return self._names

    def take(self) -> _Next | None:
        """The next shard to submit, or None when every shard left is held by another run."""
        names = self._listing()
        while self.fresh:
            shard, digest = self.fresh.popleft()
            if shard in self.present or shard in names:
                return _Next(shard, digest, None)
            if claim_name(shard) in names:
                self._put_aside(shard, digest, "another run")
                continue
            attempt = try_claim(self.dest, shard, owner=self.owner, log=self.log)
            if isinstance(attempt, HeldClaim):
                return _Next(shard, digest, attempt)
            self._put_aside(shard, digest, attempt.describe())
        now = time.monotonic()
        for shard, digest in list(self.put_aside.items()):
            if shard in names:
                del self.put_aside[shard]
                return _Next(shard, digest, None)
            if now - self._checked.get(shard, -math.inf) < RECHECK_SECONDS:
                continue
            self._checked[shard] = now
            if claim_name(shard) not in names and self.dest.exists(shard):
                del self.put_aside[shard]  # committed since the listing
                return _Next(shard, digest, None)
            # Live: still theirs. Dead (lease out, or its process gone): taken over here.
            attempt = try_claim(self.dest, shard, owner=self.owner, log=self.log)
            if isinstance(attempt, HeldClaim):
                del self.put_aside[shard]
                return _Next(shard, digest, attempt)
        if self.put_aside and time.monotonic() - self._said_waiting > 60:
            self._said_waiting = time.monotonic()
            waiting = sorted(self.put_aside)
            self.log(
                f"Waiting for {len(waiting)} shard(s) being built by other runs: "
                + ", ".join(waiting[:5])
                + (" ..." if len(waiting) > 5 else "")
            )
        return None

    def _put_aside(self, shard: str, digest: str, holder: str) -> None:
        self.put_aside[shard] = digest
        self._checked[shard] = time.monotonic()
        self.log(
            f"{shard}: already being built by {holder}; building other shards first, then "
            "coming back to it"
        )


def _release(held: HeldClaim) -> None:
    try:
        release(held)
    except Exception as exc:  # its lease ends it anyway
        get_run_logger().warning("could not remove the claim %s: %s", held.name, exc)


def build_planned_shards(
    source: str,
    dest: str,
    specs: SpecUpload,
    *,
    description: str,
    concurrency: int,
    concurrency_limit: str | None,
    overwrite: bool,
    chunk_size_mib: int,
    frames: bool = False,
    report: RunReport | None = None,
) -> BuildOutcome:
    """Build (or confirm) every shard in `specs`, at most `concurrency` at a time, sharing the
    plan with any other run building it, publishing progress and the shard table as
    artifacts (through `report`, when the caller has made one already)."""
    logger = get_run_logger()
    plan = _SharedPlan(open_storage(dest), dict(specs.digests), set(specs.existing_shards))
    limit_tag = existing_tag_limit(concurrency_limit)
    if report is None:
        report = RunReport(len(specs.digests), description, frames=frames)

    # A shard missing at the destination is always built, even if a cache record says it was
    # built once (it may have been deleted since); a present one may be answered from the cache.
    tags = {limit_tag} if limit_tag else set()
    build_present = build.with_options(tags=tags)
    build_missing = build.with_options(tags=tags, refresh_cache=True)
    stats: list[ShardStats] = []
    failures: list[str] = []
    in_flight: dict[PrefectFuture[ShardStats], _Next] = {}
    pressure = ServerBackPressure("build ")
    releaser = ThreadPoolExecutor(4, thread_name_prefix="release claims")

    def collect(future: PrefectFuture[ShardStats]) -> None:
        pressure.finished()
        item = in_flight.pop(future)
        try:
            result = future.result()
        except Exception as exc:
            failures.append(f"{item.shard}: {type(exc).__name__}: {exc}")
            report.shard_failed(item.shard, f"{type(exc).__name__}: {exc}")
            return
        finally:
            if item.held is not None:
                # Off the submitting thread: two requests each, the next build need not wait.
                releaser.submit(_release, item.held)
        if future.state.name == "Cached":
            # The record is from the run that built it; this run did not build it again.
            result = replace(result, status=STATUS_CACHED, seconds=0.0)
            logger.info("%s: already exists (cached result of the run that built it)", item.shard)
        stats.append(result)
        report.shard_finished(result)

    def submit(item: _Next) -> None:
        pressure.before_submit()
        if item.held is None:
            future = build_present.submit(
                source, dest, item.shard, item.digest, overwrite, chunk_size_mib
            )
        else:
            future = build_missing.submit(
                source, dest, item.shard, item.digest, overwrite, chunk_size_mib, claimed=True
            )
        in_flight[future] = item

    try:
        while plan.remaining() or in_flight:
            while len(in_flight) >= concurrency:
                collect(next(as_completed(list(in_flight))))
            item = plan.take() if plan.remaining() else None
            if item is not None:
                submit(item)
                continue
            # Nothing to submit now: wait for a build of ours, or a while for other runs'.
            try:
                if in_flight:
                    collect(next(as_completed(list(in_flight), timeout=POLL_SECONDS)))
                else:
                    time.sleep(POLL_SECONDS)
            except TimeoutError:
                pass
    finally:
        for item in in_flight.values():  # only when interrupted: release what is left
            if item.held is not None:
                releaser.submit(_release, item.held)
        releaser.shutdown(wait=True)
    if pressure.waited_seconds >= 1:
        logger.info("Waited %.0f s for the Prefect server to record runs", pressure.waited_seconds)
    report.publish_table()
    return BuildOutcome(stats, failures)
