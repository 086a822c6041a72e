"""Fan-out: one run plans, `parallel_runs` runs of its deployment build.

The parent checks, lists, plans and writes the specs once, writes the plan file
(tasks/plan_file.py), then starts N runs of its own deployment (`FLOW/manual` when it was
started from the command line) with `build_plan` set: Prefect's `run_deployment`, so they are
its child runs in the UI and land on whatever workers the pool has. Each child builds from the
plan file, sharing the plan through claims (flows/shards.py) with its siblings.

The parent decides from the destination, not from the children's states: it watches the shards
appear (counting them in its progress), and finishes when every shard is complete, even if a
child never reports back (its machine died: Prefect leaves that run Running). When the children
are gone (all ended) or nobody has made progress or held a live claim for a whole lease, it
builds what is left itself, taking over dead claims. Either way it ends by confirming every
shard (the same build loop), so its table, index and summary cover the whole plan.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run

from flows.artifacts import TABLE_KEY, RunReport
from flows.shards import BuildOutcome, ShardsFailed, build_planned_shards, failed_message
from tasks.build import STATUS_BUILT, existing_shard_stats, recorded_shard_stats
from tasks.claims import Claim, configured_lease_seconds, is_live
from tasks.parameters import InvalidInput
from tasks.plan_file import PlanFile, read_plan_file, write_plan_file
from tasks.specs import SpecUpload, read_spec, shard_prefix
from tasks.stats import ShardStats
from tasks.storage import ObjectNotFound, Storage, open_storage

FINISHED_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
WATCH_SECONDS = 2.0
# After the plan is complete, how long children get to end and publish their tables; one
# still running then is reported as lost (or slow), and the parent does not wait for it.
CHILD_GRACE_SECONDS = 20.0


class NoDeployment(InvalidInput):
    """parallel_runs > 1, but there is no deployment to start the runs of."""


@dataclass(frozen=True)
class ChildReport:
    """One child run as the parent saw it at the end."""

    name: str
    id: str
    state: str  # Prefect's state name: Completed, Failed, Running (no report) ...
    built: list[str]  # the shards its table says it built

    @property
    def reported(self) -> bool:
        return self.state.upper() in FINISHED_STATES

    def line(self) -> str:
        who = f"{self.name} ({self.id})"
        if not self.reported:
            return (
                f"{who}: {self.state}, no report (its machine may be lost; "
                "its shards were built by others)"
            )
        return f"{who}: {self.state}, built {len(self.built)} shard(s)"


@dataclass(frozen=True)
class FanOutOutcome:
    build: BuildOutcome
    children: list[ChildReport]


def fan_out_deployment(flow_name: str) -> UUID:
    """The deployment whose runs build: this run's own, or `FLOW/manual` for a run started
    elsewhere (the command line).

    Raises:
        NoDeployment: there is none on the Prefect server.
    """
    from prefect.runtime import deployment

    deployment_id = deployment.id
    if deployment_id:
        return UUID(str(deployment_id))
    return named_deployment(flow_name)


def named_deployment(flow_name: str) -> UUID:
    """The id of `FLOW/manual` on the Prefect server this process uses.

    Raises:
        NoDeployment: the server has no such deployment.
    """
    from prefect.exceptions import ObjectNotFound as PrefectObjectNotFound

    name = f"{flow_name}/manual"
    with get_client(sync_client=True) as client:
        try:
            return client.read_deployment_by_name(name).id
        except PrefectObjectNotFound:
            raise NoDeployment(
                f"parallel_runs > 1 starts runs of the deployment {name!r}, which the Prefect "
                f"server at {client.api_url} does not have: run `prefect --no-prompt deploy "
                "--all` in the project folder and start workers on its pool (README, "
                "Scaling out), or use parallel_runs=1"
            ) from None


def build_with_children(
    source: str,
    dest: str,
    specs: SpecUpload,
    *,
    parallel_runs: int,
    deployment: UUID,
    series: str,
    frames: bool,
    description: str,
    concurrency: int,
    concurrency_limit: str | None,
    overwrite: bool,
    chunk_size_mib: int,
) -> FanOutOutcome:
    """Start `parallel_runs` child runs of `deployment` that build the plan in `specs`, watch
    the destination until the plan is complete (or the children are gone), then confirm every
    shard, building what is left."""
    logger = get_run_logger()
    storage = open_storage(dest)
    plan_name = write_plan_file(storage, PlanFile(series, frames, dict(specs.digests)))
    parameters: dict[str, Any] = {
        **flow_run.parameters,
        "parallel_runs": 1,
        "build_plan": plan_name,
    }
    children = _start_children(deployment, parameters, parallel_runs)
    logger.info(
        "Started %d child runs to build %d shards: %s",
        len(children), len(specs.digests), ", ".join(name for _, name in children),
    )  # fmt: skip
    report = RunReport(len(specs.digests), description, frames=frames)
    why = _watch(storage, list(specs.digests), [run_id for run_id, _ in children], report)
    names = {info.name for info in storage.list(shard_prefix(list(specs.digests)))}
    present = [shard for shard in specs.digests if shard in names]
    missing = {shard: d for shard, d in specs.digests.items() if shard not in names}
    logger.info("%s; %d shards complete, %d to build here", why, len(present), len(missing))
    # The children checked and committed these: read their stats (in parallel, no task run
    # each), so the table, index and summary cover the whole plan.
    with ThreadPoolExecutor(16, thread_name_prefix="read stats") as pool:
        complete = list(pool.map(lambda s: _complete_stats(storage, s, specs.digests[s]), present))
    for stats in complete:
        report.shard_finished(stats)
    outcome = BuildOutcome([], [])
    if missing:
        outcome = build_planned_shards(
            source,
            dest,
            SpecUpload(digests=missing, written=[], unchanged=[], replaced=[], existing_shards=[]),
            description=description,
            concurrency=concurrency,
            concurrency_limit=concurrency_limit,
            overwrite=overwrite,
            chunk_size_mib=chunk_size_mib,
            frames=frames,
            report=report,
        )
    else:
        report.publish_table()
    outcome = BuildOutcome(complete + outcome.stats, outcome.failures)
    reports = _child_reports(children)
    for child in reports:
        (logger.info if child.reported else logger.warning)("Child run %s", child.line())
    return FanOutOutcome(outcome, reports)


def _complete_stats(storage: Storage, shard: str, digest: str) -> ShardStats:
    """The stats of a shard a child committed: its stats file, or what its spec and tar say."""
    base = shard.removesuffix(".tar")
    recorded = recorded_shard_stats(storage, base, digest)
    return recorded or existing_shard_stats(storage, read_spec(storage, base), digest)


def build_for_parent(
    source: str,
    dest: str,
    build_plan: str,
    *,
    concurrency: int,
    concurrency_limit: str | None,
    overwrite: bool,
    chunk_size_mib: int,
) -> dict[str, Any]:
    """A child run's whole work: build (sharing) the plan in the plan file `build_plan`.
    Returns its summary.

    Raises:
        ShardsFailed: some shards could not be built.
    """
    plan = read_plan_file(open_storage(dest), build_plan)
    specs = SpecUpload(
        digests=plan.digests, written=[], unchanged=[], replaced=[], existing_shards=[]
    )
    outcome = build_planned_shards(
        source,
        dest,
        specs,
        description=f"{plan.series} -> {dest} (a child run)",
        concurrency=concurrency,
        concurrency_limit=concurrency_limit,
        overwrite=overwrite,
        chunk_size_mib=chunk_size_mib,
        frames=plan.frames,
    )
    if outcome.failures:
        raise ShardsFailed(failed_message(outcome.failures, len(plan.digests)))
    built = sorted(s.shard for s in outcome.stats if s.status == STATUS_BUILT)
    return {
        "dest": dest,
        "build_plan": build_plan,
        "series": plan.series,
        "shards": len(plan.digests),
        "built": len(built),
        "built_shards": built,
        "skipped": len(outcome.stats) - len(built),
        "failed": 0,
    }


def build_shards(
    source: str,
    dest: str,
    specs: SpecUpload,
    *,
    deployment: UUID | None,
    parallel_runs: int,
    series: str,
    frames: bool,
    concurrency: int,
    concurrency_limit: str | None,
    overwrite: bool,
    chunk_size_mib: int,
) -> FanOutOutcome:
    """The build stage of a flow: in this run, or (with a `deployment` to start runs of) in
    `parallel_runs` child runs watched by this one."""
    description = f"{series} -> {dest}"
    if deployment is None:
        outcome = build_planned_shards(
            source, dest, specs, description=description, concurrency=concurrency,
            concurrency_limit=concurrency_limit, overwrite=overwrite,
            chunk_size_mib=chunk_size_mib, frames=frames,
        )  # fmt: skip
        return FanOutOutcome(outcome, [])
    return build_with_children(
        source, dest, specs, parallel_runs=parallel_runs, deployment=deployment, series=series,
        frames=frames, description=description, concurrency=concurrency,
        concurrency_limit=concurrency_limit, overwrite=overwrite, chunk_size_mib=chunk_size_mib,
    )  # fmt: skip


def _start_children(
    deployment: UUID, parameters: dict[str, Any], count: int
) -> list[tuple[UUID, str]]:
    from prefect.deployments import run_deployment

    parent = flow_run.get_id()
    children = []
    for number in range(1, count + 1):
        child: Any = run_deployment(
            name=deployment,
            parameters=parameters,
            flow_run_name=f"{flow_run.name} [build {number}/{count}]",
            timeout=0,
            as_subflow=True,
            # A retried parent finds its children instead of starting a second set.
            idempotency_key=f"{parent}-build-{number}",
        )
        children.append((child.id, child.name))
    return children


def _watch(storage: Storage, shards: list[str], children: list[UUID], report: RunReport) -> str:
    """Wait until every shard is at the destination, or the children are gone; say which."""
    lease = configured_lease_seconds()
    prefix = shard_prefix(shards)
    last_activity = time.monotonic()
    complete = 0
    while True:
        names = {info.name for info in storage.list(prefix)}
        now_complete = sum(shard in names for shard in shards)
        if now_complete > complete:
            complete, last_activity = now_complete, time.monotonic()
            report.shards_complete_elsewhere(complete)
        if complete == len(shards):
            return "Every shard of the plan is at the destination"
        states = _states(children)
        if all(state in FINISHED_STATES for state in states):
            return f"The child runs ended ({', '.join(sorted(set(states)))}) with shards missing"
        missing = [shard for shard in shards if shard not in names]
        if any(
            _live_claim(storage, f"{shard}.claim") for shard in missing if f"{shard}.claim" in names
        ):
            last_activity = time.monotonic()
        elif time.monotonic() - last_activity > lease:
            return (
                f"No child run has completed a shard or held a live claim for {lease:.0f} s "
                f"({len(missing)} shards missing): building them here"
            )
        time.sleep(WATCH_SECONDS)


def _live_claim(storage: Storage, name: str) -> bool:
    try:
        return is_live(Claim.from_json(storage.read_bytes(name)))
    except (ObjectNotFound, ValueError, TypeError):
        return False


def _states(children: list[UUID]) -> list[str]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=children))
        )
    return [str(run.state_type.value) if run.state_type else "PENDING" for run in runs]


def _child_reports(children: list[tuple[UUID, str]]) -> list[ChildReport]:
    """Each child's state and the shards it built (from its table artifact), after giving the
    children CHILD_GRACE_SECONDS to end."""
    deadline = time.monotonic() + CHILD_GRACE_SECONDS
    ids = [run_id for run_id, _ in children]
    while time.monotonic() < deadline and not all(s in FINISHED_STATES for s in _states(ids)):
        time.sleep(1.0)
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    reports = []
    with get_client(sync_client=True) as client:
        for run_id, name in children:
            run = client.read_flow_run(run_id)
            built: list[str] = []
            tables = client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]),
                    key=ArtifactFilterKey(any_=[TABLE_KEY]),
                )
            )
            for table in tables:
                data: Any = table.data
                rows = json.loads(data) if isinstance(data, str) else data or []
                built += [row["shard"] for row in rows if row.get("status") == STATUS_BUILT]
            state = str(run.state.name) if run.state else "Pending"
            reports.append(ChildReport(run.name or name, str(run_id), state, sorted(built)))
    return reports


def children_markdown(children: list[dict[str, Any]]) -> list[str]:
    """The summary's section on the child runs (none without a fan-out)."""
    if not children:
        return []
    lines = ["", "## Child runs", ""]
    for child in children:
        report = ChildReport(**child)
        lines.append(f"- {report.line()}: " + (", ".join(report.built) or "no shards"))
    return lines
