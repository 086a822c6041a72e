"""Scaling out the Prefect way: one deployment run with `parallel_runs=3` on three simulated
machines, and the same with one machine lost mid-run.

A `prefect server`, fake-gcs-server behind a proxy that adds 0.1 s to every storage request (so
builds take seconds, as on a real link), `objectron-wds setup`, `prefect deploy --all`, and
three process workers. Each worker is a "machine": its own PREFECT_HOME, temporary folder and
OBJECTRON_WDS_HOST, which the flow runs it starts inherit. Losing a machine is SIGKILL to every
process whose environment carries its OBJECTRON_WDS_HOST: the worker and the flow runs it
started (those may sit in sessions of their own, so the worker's process group is not enough).

Claims live 20 s here (OBJECTRON_WDS_CLAIM_LEASE_SECONDS), a third of the default, to keep the
lost-machine test short; the README states the default.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from deployments.setup import DEFAULT_POOL
from flows.artifacts import PROGRESS_KEY
from tasks.claims import Claim
from tasks.fake_gcs import FakeGcsServer
from tasks.objectron.sample_data import write_sample_dataset
from tasks.storage import Storage, open_storage
from tests.fault_proxy import FaultPlan, FaultProxy
from tests.prefect_processes import (
    BIN,
    ROOT,
    ManagedProcess,
    PrefectServer,
    process_env,
    run_command,
    started,
)

pytestmark = pytest.mark.slow

SOURCE = "gs://scale-source"
LEASE_SECONDS = 20
MACHINES = ("machine-a", "machine-b", "machine-c")
# Shards of one video each, built one at a time per run: 10 shards for 3 children.
PARAMS = ["shard_size=1", "concurrency=1", "chunk_size_mib=1", "concurrency_limit=null"]
SUMMARY_KEY = "objectron-wds-summary"


@dataclass
class Machine:
    name: str
    worker: ManagedProcess
    log: Path


@dataclass
class ScaleStack:
    server: PrefectServer
    env: dict[str, str]
    logs: Path
    machines: dict[str, Machine]

    def run(self, *args: str, timeout: float = 300.0) -> str:
        result = run_command(args, self.env, self.logs / "commands.log", timeout=timeout)
        assert result.returncode == 0, (
            f"{' '.join(args)} exited {result.returncode}:\n" + (result.stdout[-4000:])
        )
        return result.stdout

    def client(self) -> Any:
        from prefect.client.orchestration import SyncPrefectClient

        return SyncPrefectClient(self.server.api_url)

    def machine_of(self, flow_run_id: UUID) -> str | None:
        """The machine whose worker started the flow run: every worker that sees a scheduled
        run tries to submit it, and all but one log that the server aborted theirs."""
        for machine in self.machines.values():
            log = machine.log.read_text(errors="replace")
            if f"submitting flow run '{flow_run_id}'" in log and (
                f"Aborted submission of flow run '{flow_run_id}'" not in log
            ):
                return machine.name
        return None


@pytest.fixture(scope="module")
def scale(
    fake_gcs: FakeGcsServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ScaleStack]:
    logs = ROOT / "test-output" / "scale-out"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    work = tmp_path_factory.mktemp("scale-out")
    for bucket in ("scale-source", "scale-single", "scale-three", "scale-lost", "scale-dask"):
        fake_gcs.create_bucket(bucket)
    write_sample_dataset(
        open_storage(SOURCE), videos=10, seed=3, video_bytes=256 * 1024, placeholders=1,
        unannotated=0, include_no_split_video=False,
    )  # fmt: skip
    link = FaultProxy(fake_gcs.url, FaultPlan(latency_seconds=0.1)).start()
    server = PrefectServer(home=work / "prefect-home", logs=logs, ui=False)
    machines: dict[str, Machine] = {}
    try:
        server.start()
        storage_env = {
            "STORAGE_EMULATOR_HOST": link.url,
            "OBJECTRON_WDS_CLAIM_LEASE_SECONDS": str(LEASE_SECONDS),
        }
        env = process_env(server.home, server.api_url, storage_env)
        stack = ScaleStack(server, env, logs, machines)
        stack.run(
            str(BIN / "objectron-wds"), "setup", "--source", SOURCE, "--dest", "gs://scale-three",
            "--result-storage", str(work / "results"),
        )  # fmt: skip
        stack.run(str(BIN / "prefect"), "--no-prompt", "deploy", "--all")
        for name in MACHINES:
            home = work / name
            (home / "tmp").mkdir(parents=True)
            machine_env = process_env(
                home / "prefect-home", server.api_url,
                {**storage_env, "OBJECTRON_WDS_HOST": name, "TMPDIR": str(home / "tmp")},
            )  # fmt: skip
            log = logs / f"worker-{name}.log"
            # At most two flow runs per machine: a worker takes every scheduled run it sees.
            worker = ManagedProcess(
                f"worker {name}",
                [str(BIN / "prefect"), "worker", "start", "--pool", DEFAULT_POOL,
                 "--name", name, "--limit", "2"],
                machine_env, log,
            ).start()  # fmt: skip
            machines[name] = Machine(name, worker, log)
        yield stack
    finally:
        for machine in machines.values():
            machine.worker.stop()
        server.stop()
        link.stop()


def tars(dest: Storage) -> dict[str, bytes]:
    return {i.name: dest.read_bytes(i.name) for i in dest.list() if i.name.endswith(".tar")}


@pytest.fixture(scope="module")
def single_run(scale: ScaleStack) -> dict[str, bytes]:
    """The shards of one run of the same plan (parallel_runs=1), through the same deployment."""
    output = scale.run(
        str(BIN / "prefect"), "deployment", "run", "objectron-to-wds/manual",
        "--param", "dest=gs://scale-single", *(a for p in PARAMS for a in ("--param", p)),
        "--watch", "--watch-interval", "2",
    )  # fmt: skip
    assert "Completed" in output
    shards = tars(open_storage("gs://scale-single"))
    assert len(shards) == 10
    return shards


def start_fan_out(scale: ScaleStack, dest: str) -> UUID:
    output = scale.run(
        str(BIN / "prefect"), "deployment", "run", "objectron-to-wds/manual",
        "--param", f"dest={dest}", "--param", "parallel_runs=3",
        *(a for p in PARAMS for a in ("--param", p)),
    )  # fmt: skip
    match = re.search(r"UUID:\s*([0-9a-f-]{36})", output)
    assert match, output
    return UUID(match.group(1))


def wait_final(
    scale: ScaleStack,
    run_id: UUID,
    timeout: float,
    while_running: Callable[[], None] | None = None,
) -> Any:
    """The run once it is in a final state; `while_running` is called at each poll before."""
    deadline = time.monotonic() + timeout
    with scale.client() as client:
        while time.monotonic() < deadline:
            run = client.read_flow_run(run_id)
            if run.state is not None and run.state.is_final():
                return run
            if while_running is not None:
                while_running()
            time.sleep(2)
    pytest.fail(f"flow run {run_id} did not finish within {timeout:.0f} s")


def children_of(scale: ScaleStack, parent: UUID) -> list[Any]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with scale.client() as client:
        return list(
            client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent])
                )
            )
        )


def summary_markdown(scale: ScaleStack, run_id: UUID) -> str:
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    with scale.client() as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]),
                key=ArtifactFilterKey(any_=[SUMMARY_KEY]),
            )
        )
    return str(artifact.data)


def progress_of(scale: ScaleStack, run_id: UUID) -> float | None:
    """The run's progress artifact (percent of the plan's shards finished), once it has one."""
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    with scale.client() as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]),
                key=ArtifactFilterKey(any_=[PROGRESS_KEY]),
            )
        )
    return float(found[0].data) if found else None


def test_parallel_runs_builds_the_plan_on_three_machines(
    scale: ScaleStack, single_run: dict[str, bytes]
) -> None:
    parent = start_fan_out(scale, "gs://scale-three")
    readings: list[float | None] = []
    final = wait_final(
        scale,
        parent,
        timeout=400,
        while_running=lambda: readings.append(progress_of(scale, parent)),
    )
    assert final.state.type.value == "COMPLETED", final.state
    # The parent builds nothing while its children do, yet its progress counts the plan's
    # shards as they appear at the destination, whoever built them.
    assert any(p is not None and 0 < p < 100 for p in readings), readings
    assert progress_of(scale, parent) == 100.0
    children = children_of(scale, parent)
    assert len(children) == 3
    assert all(child.state.type.value == "COMPLETED" for child in children)
    machines = {scale.machine_of(child.id) for child in children}
    assert None not in machines and len(machines) > 1, machines
    dest = open_storage("gs://scale-three")
    assert tars(dest) == single_run
    markdown = summary_markdown(scale, parent)
    assert markdown.count("built ") >= 3 and "## Child runs" in markdown
    # The children's own tables account for every shard: each was built once, by one of them.
    built = re.findall(r"objectron-\d{6}\.tar", markdown.split("## Child runs", 1)[1])
    assert sorted(built) == sorted(single_run)
    assert not [i.name for i in dest.list() if i.name.endswith(".claim")]


def _processes_of(machine: str) -> list[int]:
    """Every process whose environment says it runs on `machine`."""
    marker = f"OBJECTRON_WDS_HOST={machine}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def test_a_lost_machine_costs_nothing(scale: ScaleStack, single_run: dict[str, bytes]) -> None:
    dest = open_storage("gs://scale-lost")
    parent = start_fan_out(scale, "gs://scale-lost")
    # Wait until a machine that is not the parent's holds a claim: it is building.
    deadline = time.monotonic() + 240
    victim = None
    while victim is None and time.monotonic() < deadline:
        parent_machine = scale.machine_of(parent)
        for info in dest.list():
            if parent_machine and info.name.endswith(".claim"):
                try:
                    host = Claim.from_json(dest.read_bytes(info.name)).host
                except Exception:
                    continue
                if host != parent_machine:
                    victim = host
                    break
        time.sleep(0.5)
    assert victim is not None, "no child run on another machine started building"
    lost_runs = {
        str(run.id) for run in children_of(scale, parent) if scale.machine_of(run.id) == victim
    }
    pids = _processes_of(victim)
    assert pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    assert len(tars(dest)) < len(single_run), "the plan was complete before the machine was lost"

    final = wait_final(scale, parent, timeout=300)
    took = time.monotonic() - killed_at
    assert final.state.type.value == "COMPLETED", final.state
    # The lease, the parent's grace for children to report, and the confirming pass.
    assert took < LEASE_SECONDS + 90, f"the parent took {took:.0f} s after the loss"
    assert tars(dest) == single_run
    markdown = summary_markdown(scale, parent)
    # The summary names each child the lost machine ran as one that did not report.
    lost_lines = [line for line in markdown.splitlines() if "no report" in line]
    assert lost_runs and sorted(lost_runs) == sorted(
        run for run in lost_runs for line in lost_lines if run in line
    ), (lost_lines, lost_runs)
    assert json.loads(dest.read_bytes("objectron-shardindex.json"))["shardlist"]


def test_dask_cluster_with_a_worker_killed_mid_run(
    scale: ScaleStack, single_run: dict[str, bytes]
) -> None:
    """`--task-runner dask` on a `dask scheduler` and three `dask worker` processes; the worker
    building first is killed (SIGKILL to its process group: nanny and worker) once it builds.
    Dask runs its build again on another worker; the flow's claim on the shard still holds."""
    from tasks.fake_gcs import free_port

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler = ManagedProcess(
        "dask scheduler",
        [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
         "--no-dashboard"],
        scale.env, scale.logs / "dask-scheduler.log",
    )  # fmt: skip
    workers = [_dask_worker(scale, address, n) for n in range(3)]
    dest = open_storage("gs://scale-dask")
    with started(scheduler, *workers):
        _wait_for_dask_workers(address, 3)
        run = ManagedProcess(
            "objectron-wds convert (dask)",
            [str(BIN / "objectron-wds"), "convert", "--task-runner", "dask",
             "--dask-address", address, "--source", SOURCE, "--dest", "gs://scale-dask",
             "--shard-size", "1", "--concurrency", "3", "--chunk-size-mib", "1",
             "--concurrency-limit", "none", "--json", "--no-progress"],
            scale.env, scale.logs / "dask-run.log",
        ).start()  # fmt: skip
        deadline = time.monotonic() + 240
        victim = None
        while victim is None and time.monotonic() < deadline and run.running():
            victim = next(
                (w for w in workers if ": building " in w.log_path.read_text(errors="replace")),
                None,
            )
            time.sleep(0.2)
        assert victim is not None, run.log_tail()
        os.killpg(victim.pid, signal.SIGKILL)
        assert len(tars(dest)) < len(single_run), "the plan was complete before the kill"
        deadline = time.monotonic() + 300
        while run.running() and time.monotonic() < deadline:
            time.sleep(1)
        output = run.log_path.read_text(errors="replace")
        assert run.returncode == 0, output[-3000:]
    summary = json.loads(output[output.rindex('\n{\n "dest"') :])
    assert (summary["shards"], summary["failed"]) == (len(single_run), 0)
    assert tars(dest) == single_run
    assert not [i.name for i in dest.list() if i.name.endswith(".claim")]


def _dask_worker(scale: ScaleStack, address: str, number: int) -> ManagedProcess:
    return ManagedProcess(
        f"dask worker {number}",
        [str(BIN / "dask"), "worker", address, "--nworkers", "1", "--nthreads", "1",
         "--no-dashboard"],
        scale.env, scale.logs / f"dask-worker-{number}.log",
    )  # fmt: skip


def _wait_for_dask_workers(address: str, count: int, timeout: float = 90.0) -> None:
    from distributed import Client

    with Client(address, timeout=timeout) as client:
        client.wait_for_workers(count, timeout=timeout)
