"""The project run the way Prefect users run it, end to end, with real processes.

A `prefect server` (own PREFECT_HOME, free loopback port) and fake-gcs-server with sample data;
`objectron-wds setup`; `prefect --no-prompt deploy --all` of prefect.yaml; a process worker.
Then: deployment runs from the CLI (`prefect deployment run ... --watch`), a second run that
builds nothing, artifacts read back through the API, upcoming runs of the scheduled
deployment, a run on a Dask cluster compared byte for byte with the thread-pool run, the tag
concurrency limit measured across two simultaneous flow runs, and a run started from the
Prefect UI in headless Chromium.

Every process is started through tests/prefect_processes.py and stopped by its process group
id in a `finally`, also when a test fails. Logs and the UI screenshot stay in
test-output/deployments/.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import webdataset as wds

from deployments.setup import (
    DEFAULT_LIMIT,
    DEFAULT_POOL,
    GCP_CREDENTIALS_BLOCK,
    RESULTS_BLOCK,
    VAR_DEST,
    VAR_RESULT_STORAGE,
    VAR_SOURCE,
)
from flows.artifacts import PROGRESS_KEY, TABLE_KEY
from tasks.fake_gcs import FakeGcsServer, free_port
from tasks.objectron.sample_data import write_sample_dataset
from tasks.storage import Storage, open_storage
from tests.prefect_processes import (
    BIN,
    ROOT,
    ManagedProcess,
    PrefectServer,
    process_env,
    run_command,
    started,
)
from tests.token_server import CLIENT_EMAIL, TokenServer

pytestmark = pytest.mark.slow

SOURCE = "gs://deploy-source"
MANUAL_DEST = "gs://deploy-manual/shards"  # the deployments' default destination (a variable)
FRAMES_DEST = "gs://deploy-manual/shards-frames"  # the frames deployment's: setup's default
BUILD_SLOTS = 2
CHROMIUM = Path("/usr/bin/chromium")
SUMMARY_KEY = "objectron-wds-summary"


@dataclass
class Stack:
    server: PrefectServer
    env: dict[str, str]
    logs: Path
    results: Path
    gcs: FakeGcsServer
    tokens: TokenServer  # the token_uri of the key in the GcpCredentials block

    @property
    def api_url(self) -> str:
        return self.server.api_url

    def client(self) -> Any:
        from prefect.client.orchestration import SyncPrefectClient

        return SyncPrefectClient(self.api_url)

    def run(self, *args: str, timeout: float = 300.0) -> str:
        """Run a command (prefect, objectron-wds ...) against this stack; returns its output,
        fails the test with the output on a non-zero exit."""
        result = run_command(args, self.env, self.logs / "commands.log", timeout=timeout)
        assert result.returncode == 0, (
            f"{' '.join(args)} exited {result.returncode}:\n" + (result.stdout[-4000:])
        )
        return result.stdout


@pytest.fixture(scope="module")
def stack(fake_gcs: FakeGcsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Server, sample data, setup, deploy --all, one process worker; all stopped at the end."""
    logs = ROOT / "test-output" / "deployments"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    work = tmp_path_factory.mktemp("deployments")
    buckets = ("deploy-source", "deploy-manual", "deploy-dask", "deploy-dask-frames", "deploy-ui",
               "deploy-limit")  # fmt: skip
    for bucket in buckets:
        fake_gcs.create_bucket(bucket)
    # Real H.264 videos: the frames deployment decodes them.
    write_sample_dataset(open_storage(SOURCE), videos=12, seed=0)

    server = PrefectServer(home=work / "prefect-home", logs=logs)
    tokens = TokenServer().start()
    worker: ManagedProcess | None = None
    try:
        server.start()
        env = process_env(server.home, server.api_url, {"STORAGE_EMULATOR_HOST": fake_gcs.url})
        stack = Stack(server, env, logs, work / "results", fake_gcs, tokens)
        stack.run(
            str(BIN / "objectron-wds"), "setup",
            "--source", SOURCE,
            "--dest", MANUAL_DEST,
            "--build-slots", str(BUILD_SLOTS),
            "--result-storage", str(stack.results),
            "--gcp-key-file", str(tokens.write_key_file(work / "key.json")),
        )  # fmt: skip
        stack.run(str(BIN / "prefect"), "--no-prompt", "deploy", "--all")
        worker = ManagedProcess(
            "prefect worker",
            [str(BIN / "prefect"), "worker", "start", "--pool", DEFAULT_POOL],
            env,
            logs / "worker.log",
        ).start()
        yield stack
    finally:
        if worker is not None:
            worker.stop()
        server.stop()
        tokens.stop()


def _flow_run_id(output: str) -> UUID:
    match = re.search(r"UUID:\s*([0-9a-f-]{36})", output)
    assert match, f"no flow run id in:\n{output}"
    return UUID(match.group(1))


def _artifacts(stack: Stack, flow_run_id: UUID) -> dict[str, Any]:
    """The flow run's artifacts by key (progress, table, markdown), data decoded."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with stack.client() as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    found: dict[str, Any] = {}
    for artifact in artifacts:
        if artifact.key is None:
            continue  # result records
        data = artifact.data
        found[artifact.key] = json.loads(data) if artifact.type == "table" else data
    return found


def _shards(dest: Storage) -> list[str]:
    return sorted(info.name for info in dest.list() if info.name.endswith(".tar"))


def _read_back(dest: Storage, tmp_path: Path) -> list[dict[str, Any]]:
    """Copy the shards out of the bucket and read them with webdataset."""
    local = []
    for name in _shards(dest):
        path = tmp_path / name
        path.write_bytes(dest.read_bytes(name))
        local.append(str(path))
    return list(wds.WebDataset(local, shardshuffle=False))


@pytest.fixture(scope="module")
def manual_run(stack: Stack) -> UUID:
    """The manual deployment run from the CLI, as a person would type it; its dest is the
    deployment's default (the Prefect variable written by setup)."""
    output = stack.run(
        str(BIN / "prefect"), "deployment", "run", "objectron-to-wds/manual",
        "--param", "shard_size=3", "--param", "max_shards=3",
        "--watch", "--watch-interval", "2",
    )  # fmt: skip
    assert "Completed" in output
    return _flow_run_id(output)


def test_manual_deployment_run_builds_shards_and_reports_them(
    stack: Stack, manual_run: UUID, tmp_path: Path
) -> None:
    dest = open_storage(MANUAL_DEST)
    assert _shards(dest) == [f"objectron-{i:06d}.tar" for i in range(3)]
    samples = _read_back(dest, tmp_path)
    assert len(samples) == 9
    assert all("video.mov" in s and "json" in s for s in samples)

    with stack.client() as client:
        run = client.read_flow_run(manual_run)
    assert run.state is not None and run.state.is_completed()
    assert run.parameters["dest"] == MANUAL_DEST  # from the variable, through prefect.yaml
    assert run.name == f"objectron-to-wds objectron: {SOURCE} -> {MANUAL_DEST}"

    artifacts = _artifacts(stack, manual_run)
    assert float(artifacts[PROGRESS_KEY]) == 100.0
    rows = artifacts[TABLE_KEY]
    assert [row["shard"] for row in rows] == _shards(dest)
    assert {row["status"] for row in rows} == {"built"}
    assert [row["samples"] for row in rows] == [3, 3, 3]
    for row in rows:
        info = dest.stat(row["shard"])
        assert info is not None and row["bytes"] == info.size
        assert row["seconds"] > 0
    summary = artifacts[SUMMARY_KEY]
    assert "built: 3" in summary
    assert f"{MANUAL_DEST}/objectron-shardindex.json" in summary

    # Task runs are named after their shard.
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with stack.client() as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[manual_run]))
        )
    assert {t.name for t in task_runs if t.name.startswith("build ")} == {
        f"build {name}" for name in _shards(dest)
    }
    # The cache records went to the result storage block setup made.
    assert sorted(p.name for p in stack.results.glob("build-shard-*"))[:3], "no cache records"
    # The run's storage clients used the GcpCredentials block setup saved (prefect.yaml hands
    # its name to the run): its key's token was fetched, with the key's signature.
    assert stack.tokens.grants and stack.tokens.rejected == 0
    assert {grant["iss"] for grant in stack.tokens.grants} == {CLIENT_EMAIL}


def test_second_run_skips_or_caches_every_shard(stack: Stack, manual_run: UUID) -> None:
    dest = open_storage(MANUAL_DEST)
    generations = {name: dest.stat(name).generation for name in _shards(dest)}  # type: ignore[union-attr]
    output = stack.run(
        str(BIN / "prefect"), "deployment", "run", "objectron-to-wds/manual",
        "--param", "shard_size=3", "--param", "max_shards=3",
        "--watch", "--watch-interval", "2",
    )  # fmt: skip
    second = _flow_run_id(output)
    assert second != manual_run
    artifacts = _artifacts(stack, second)
    rows = artifacts[TABLE_KEY]
    assert len(rows) == 3
    assert {row["status"] for row in rows} <= {"exists", "cached"}, rows
    assert "built: 0" in artifacts[SUMMARY_KEY]
    assert float(artifacts[PROGRESS_KEY]) == 100.0
    assert {n: dest.stat(n).generation for n in _shards(dest)} == generations  # type: ignore[union-attr]


FRAMES_PARAMS = ("--param", "videos_per_shard=3", "--param", "max_shards=2",
                 "--param", "image_size=96x128")  # fmt: skip


@pytest.fixture(scope="module")
def frames_run(stack: Stack) -> UUID:
    """`prefect deployment run 'objectron-to-frames/manual' --watch`, as a person types it."""
    output = stack.run(
        str(BIN / "prefect"), "deployment", "run", "objectron-to-frames/manual", *FRAMES_PARAMS,
        "--watch", "--watch-interval", "2",
        timeout=600,
    )  # fmt: skip
    assert "Completed" in output
    return _flow_run_id(output)


def test_frames_deployment_run_builds_frame_samples(
    stack: Stack, frames_run: UUID, tmp_path: Path
) -> None:
    """The frames flow on the worker, from the emulator's real H.264 videos to JPEG + labels
    samples in the frames destination setup chose."""
    run_id = frames_run
    dest = open_storage(FRAMES_DEST)
    assert _shards(dest) == [f"objectron-frames-{i:06d}.tar" for i in range(2)]
    samples = _read_back(dest, tmp_path)
    assert samples, "no frame samples"
    for sample in samples:
        assert {k for k in sample if not k.startswith("__")} == {"jpg", "json"}
        labels = json.loads(sample["json"])
        assert labels["key"] == sample["__key__"]
        assert labels["key"] == f"{labels['video']}/{labels['frame_id']:06d}"
        assert (labels["image"]["width"], labels["image"]["height"]) == (96, 128)
        assert sample["jpg"][:2] == b"\xff\xd8"
    artifacts = _artifacts(stack, run_id)
    rows = artifacts[TABLE_KEY]
    assert sum(row["samples"] for row in rows) == len(samples)
    assert {row["status"] for row in rows} == {"built"}
    assert f"{FRAMES_DEST}/objectron-frames-preview.jpg" in artifacts[SUMMARY_KEY]
    assert dest.exists("objectron-frames-preview.jpg")


def test_setup_is_idempotent_and_made_pool_limit_blocks_and_variables(stack: Stack) -> None:
    output = stack.run(str(BIN / "objectron-wds"), "setup", "--build-slots", str(BUILD_SLOTS))
    assert "exists (kept)" in output
    assert f"variable {VAR_DEST} = {MANUAL_DEST!r} (kept)" in output

    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.variables import Variable

    with stack.client() as client:
        assert client.read_work_pool(DEFAULT_POOL).type == "process"
        # A tag limit, as Prefect's own tag API sees it.
        assert client.read_concurrency_limit_by_tag(DEFAULT_LIMIT).concurrency_limit == BUILD_SLOTS
        assert client.read_global_concurrency_limit_by_name(f"tag:{DEFAULT_LIMIT}").active
        credentials = client.read_block_document_by_name(GCP_CREDENTIALS_BLOCK, "gcp-credentials")
        assert credentials.data["project"] == "objectron-wds-test"
        results = client.read_block_document_by_name(RESULTS_BLOCK, "local-file-system")
        assert Path(results.data["basepath"]) == stack.results.resolve()
    with temporary_settings({PREFECT_API_URL: stack.api_url}):
        assert Variable.get(VAR_SOURCE) == SOURCE
        assert Variable.get(VAR_RESULT_STORAGE) == f"local-file-system/{RESULTS_BLOCK}"

        # A gs:// result storage (for workers on several machines) is a GcsBucket block that
        # uses the credentials block; saved under another name so the deployments keep theirs.
        from prefect_gcp import GcsBucket

        from deployments.setup import save_result_storage

        slug, _ = save_result_storage(
            "gs://team-results/cache",
            "objectron-wds-results-gcs",
            "gcp-credentials/objectron-wds-gcp",
        )
        assert slug == "gcs-bucket/objectron-wds-results-gcs"
        bucket = GcsBucket.load("objectron-wds-results-gcs")
        assert (bucket.bucket, bucket.bucket_folder.rstrip("/")) == ("team-results", "cache")
        assert bucket.gcp_credentials.project == "objectron-wds-test"


def test_deployments_from_prefect_yaml_and_upcoming_scheduled_runs(stack: Stack) -> None:
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    with stack.client() as client:
        flow_names = {f.id: f.name for f in client.read_flows()}
        # Deployment names are unique per flow: key them FLOW/NAME, as `prefect deployment run`.
        deployments = {
            f"{flow_names[d.flow_id]}/{d.name}": d
            for d in client.read_deployments()
            if d.work_pool_name == DEFAULT_POOL
        }
        assert set(deployments) == {
            "objectron-to-wds/manual",
            "objectron-to-wds/nightly",
            "objectron-to-wds/dask",
            "objectron-to-frames/manual",
            "verify-shards/verify",
        }
        for deployment in deployments.values():
            assert deployment.work_pool_name == DEFAULT_POOL
            assert set(deployment.tags) == {"objectron-wds", "webdataset"}
            env = deployment.job_variables["env"]
            assert (
                env["PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"] == f"local-file-system/{RESULTS_BLOCK}"
            )
            assert env["OBJECTRON_WDS_GCP_CREDENTIALS_BLOCK"] == GCP_CREDENTIALS_BLOCK
        nightly = deployments["objectron-to-wds/nightly"]
        assert nightly.parameters == {"source": SOURCE, "dest": MANUAL_DEST, "overwrite": False}
        assert [s.schedule.cron for s in nightly.schedules] == ["0 3 * * *"]  # type: ignore[union-attr]
        dask = deployments["objectron-to-wds/dask"]
        assert dask.job_variables["env"]["OBJECTRON_WDS_DASK_ADDRESS"] == ""
        assert deployments["verify-shards/verify"].parameters == {"dest": MANUAL_DEST}
        assert deployments["objectron-to-frames/manual"].parameters == {
            "source": SOURCE,
            "dest": FRAMES_DEST,
        }

        # The scheduler service fills upcoming runs within seconds of the deployment.
        deadline = time.monotonic() + 60
        upcoming: list[Any] = []
        while time.monotonic() < deadline and not upcoming:
            upcoming = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[nightly.id])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(
                        type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])
                    )
                ),
            )
            time.sleep(1)
    assert upcoming, "the nightly deployment has no upcoming runs"
    now = datetime.now(UTC)
    for run in upcoming:
        assert run.expected_start_time is not None and run.expected_start_time > now
        start = run.expected_start_time.astimezone(UTC)
        assert (start.hour, start.minute) == (3, 0)


def test_cloud_run_and_kubernetes_pools_from_the_job_templates(stack: Stack) -> None:
    """The example templates make valid pools, and deployments/prefect.remote.yaml deploys to
    them (no worker of those types runs here: nothing is started in a cloud)."""
    from prefect.client.schemas.actions import WorkPoolCreate

    image = "registry.example/objectron-wds:test"
    pools = {
        "objectron-wds-cloud-run": ("cloud-run-v2", "cloud-run-v2.job-template.json"),
        "objectron-wds-kubernetes": ("kubernetes", "kubernetes.job-template.json"),
    }
    with stack.client() as client:
        for name, (kind, template) in pools.items():
            client.create_work_pool(
                WorkPoolCreate(
                    name=name,
                    type=kind,
                    base_job_template=json.loads((ROOT / "deployments" / template).read_text()),
                ),
                overwrite=True,
            )
    stack.run(str(BIN / "prefect"), "variable", "set", "objectron_wds_image", image, "--overwrite")
    stack.run(
        str(BIN / "prefect"), "--no-prompt", "deploy", "--all",
        "--prefect-file", "deployments/prefect.remote.yaml",
    )  # fmt: skip
    with stack.client() as client:
        cloud_run = client.read_work_pool("objectron-wds-cloud-run")
        defaults = cloud_run.base_job_template["variables"]["properties"]
        assert (defaults["memory"]["default"], defaults["timeout"]["default"]) == ("4Gi", 86400)
        flow_names = {f.id: f.name for f in client.read_flows()}
        remote = {
            f"{flow_names[d.flow_id]}/{d.name}": d
            for d in client.read_deployments()
            if d.work_pool_name in pools
        }
    assert set(remote) == {
        "objectron-to-wds/cloud-run",
        "objectron-to-wds/cloud-run-nightly",
        "objectron-to-wds/kubernetes",
        "objectron-to-frames/cloud-run",
        "objectron-to-frames/kubernetes",
    }
    for key, deployment in remote.items():
        assert deployment.job_variables["image"] == image
        assert deployment.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": "/opt/objectron-wds"}}
        ]
        frames = key.startswith("objectron-to-frames/")
        assert deployment.parameters["dest"] == (FRAMES_DEST if frames else MANUAL_DEST)
        assert deployment.job_variables["env"]["OBJECTRON_WDS_GCP_CREDENTIALS_BLOCK"] == (
            GCP_CREDENTIALS_BLOCK
        )


def test_dask_runner_on_a_running_cluster_gives_byte_identical_shards(
    stack: Stack, manual_run: UUID, frames_run: UUID
) -> None:
    """`objectron-wds convert --task-runner dask --dask-address ...` against a `dask scheduler`
    and `dask worker` started here: the builds run on the Dask worker and the shards equal the
    thread-pool run's byte for byte."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler = ManagedProcess(
        "dask scheduler",
        [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
         "--no-dashboard"],
        stack.env,
        stack.logs / "dask-scheduler.log",
    )  # fmt: skip
    worker = ManagedProcess(
        "dask worker",
        [str(BIN / "dask"), "worker", address, "--nworkers", "1", "--nthreads", "2",
         "--no-dashboard"],
        stack.env,
        stack.logs / "dask-worker.log",
    )  # fmt: skip
    with started(scheduler, worker):
        _wait_for_dask_worker(address, scheduler, worker)
        output = stack.run(
            str(BIN / "objectron-wds"), "convert",
            "--task-runner", "dask", "--dask-address", address,
            "--source", SOURCE, "--dest", "gs://deploy-dask",
            "--shard-size", "3", "--max-shards", "3", "--json",
        )  # fmt: skip
        # The frames product on the same cluster, with the frames deployment run's parameters.
        frames_output = stack.run(
            str(BIN / "objectron-wds"), "frames",
            "--task-runner", "dask", "--dask-address", address,
            "--source", SOURCE, "--dest", "gs://deploy-dask-frames",
            "--videos-per-shard", "3", "--max-shards", "2", "--image-size", "96x128", "--json",
        )  # fmt: skip
    frames_summary = json.loads(frames_output[frames_output.index("{\n") :])
    assert (frames_summary["shards"], frames_summary["built"]) == (2, 2)
    on_workers, by_deployment = open_storage("gs://deploy-dask-frames"), open_storage(FRAMES_DEST)
    assert _shards(on_workers) == _shards(by_deployment)
    for name in _shards(by_deployment):
        assert on_workers.read_bytes(name) == by_deployment.read_bytes(name), name
    summary = json.loads(output[output.index("{\n") :])
    assert (summary["shards"], summary["built"]) == (3, 3)
    # The build task runs logged from the Dask worker process, not from the flow's process.
    worker_log = worker.log_path.read_text(errors="replace")
    for i in range(3):
        assert f"build objectron-{i:06d}.tar" in worker_log

    threads, dask = open_storage(MANUAL_DEST), open_storage("gs://deploy-dask")
    assert _shards(dask) == _shards(threads) == [f"objectron-{i:06d}.tar" for i in range(3)]
    for name in _shards(threads):
        assert dask.read_bytes(name) == threads.read_bytes(name), name


def _wait_for_dask_worker(
    address: str, scheduler: ManagedProcess, worker: ManagedProcess, timeout: float = 90.0
) -> None:
    from distributed import Client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in (scheduler, worker):
            assert process.running(), f"{process.name} exited:\n{process.log_tail()}"
        try:
            with Client(address, timeout=5) as client:
                client.wait_for_workers(1, timeout=max(1.0, deadline - time.monotonic()))
                return
        except (OSError, TimeoutError):
            time.sleep(0.5)
    raise AssertionError(f"no Dask worker joined {address} within {timeout:.0f} s")


def test_global_limit_caps_concurrent_builds_across_two_flow_runs(stack: Stack) -> None:
    """Two flow runs of the manual deployment at once, each allowed 4 builds in flight, share
    a limit of 2. Measured from Prefect's own records of each build task run: its creation
    (when the flow submitted it), its start (when it entered Running) and its end.

    So that the runs really compete (tiny builds end in milliseconds, and one run's process
    may start seconds after the other's), the test first takes both slots itself and gives
    them back only when both runs have submitted their builds."""
    limit_name = f"tag:{DEFAULT_LIMIT}"
    with stack.client() as client:
        lease = client.increment_concurrency_slots_with_lease(
            names=[limit_name], slots=BUILD_SLOTS, mode="concurrency", lease_duration=300
        ).json()["lease_id"]
        released_at: float | None = None
        try:
            deployment = client.read_deployment_by_name("objectron-to-wds/manual")
            runs = [
                client.create_flow_run_from_deployment(
                    deployment.id,
                    parameters={
                        "dest": f"gs://deploy-limit/{name}",
                        "shard_size": 1,
                        "max_shards": 8,
                        "concurrency": 4,
                    },
                ).id
                for name in ("a", "b")
            ]
            _wait_until_builds_submitted(stack, runs, timeout=180)
        finally:
            released_at = time.time()
            client.release_concurrency_slots_with_lease(lease)
        states = _wait_final(client, runs, timeout=300)
    assert all(state == "COMPLETED" for state in states.values()), states

    task_runs = _build_task_runs(stack, runs)
    assert len(task_runs) == 16
    assert all(DEFAULT_LIMIT in t["tags"] for t in task_runs)
    tables = {
        row["shard"] + str(run): row for run in runs for row in _artifacts(stack, run)[TABLE_KEY]
    }
    assert len(tables) == 16 and {row["status"] for row in tables.values()} == {"built"}

    waiting_or_running = [(t["created"], t["end"]) for t in task_runs]
    running = [(t["start"], t["end"]) for t in task_runs]
    measured: dict[str, Any] = {
        "limit": BUILD_SLOTS,
        "slots_released_by_the_test_at": released_at,
        "most_build_task_runs_submitted_at_once": _max_overlap(waiting_or_running),
        "most_build_task_runs_running_at_once": _max_overlap(running),
        "builds": [
            {
                "task_run": t["id"],
                "flow_run": str(t["flow_run_id"]),
                "created": t["created"],
                "running": [t["start"], t["end"]],
            }
            for t in sorted(task_runs, key=lambda t: t["start"])
        ],
    }
    (stack.logs / "concurrency-limit-measurement.json").write_text(json.dumps(measured, indent=1))
    # While the test held the slots, no build ran, though both runs had builds waiting...
    assert min(t["start"] for t in task_runs) >= released_at, measured
    assert measured["most_build_task_runs_submitted_at_once"] >= 2 * 4, measured
    # ...and once they competed, never more than BUILD_SLOTS builds ran at once.
    assert measured["most_build_task_runs_running_at_once"] <= BUILD_SLOTS, sorted(running)


def _wait_until_builds_submitted(stack: Stack, runs: list[UUID], timeout: float) -> None:
    """Until both flow runs have submitted their builds. A build task run waiting for a tag
    slot is not recorded by the server yet, so the sign is the step before: each run's
    upload-specs task run has completed, and the submission that follows it had 3 s."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout
    done: set[UUID] = set()
    while time.monotonic() < deadline:
        with stack.client() as client:
            task_runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=runs))
            )
        done = {
            t.flow_run_id
            for t in task_runs
            if t.name.startswith("upload-specs") and t.state is not None and t.state.is_completed()
            and t.flow_run_id is not None
        }  # fmt: skip
        if done == set(runs):
            time.sleep(3)
            return
        time.sleep(0.5)
    raise AssertionError(f"flow runs with their specs uploaded after {timeout:.0f} s: {done}")


def _wait_final(client: Any, run_ids: list[UUID], timeout: float) -> dict[UUID, str]:
    deadline = time.monotonic() + timeout
    states: dict[UUID, str] = {}
    while time.monotonic() < deadline:
        states = {}
        for run_id in run_ids:
            state = client.read_flow_run(run_id).state
            states[run_id] = state.type.value if state is not None else "NONE"
        if all(s in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") for s in states.values()):
            return states
        time.sleep(1)
    raise AssertionError(f"flow runs not finished after {timeout:.0f} s: {states}")


def _build_task_runs(stack: Stack, runs: list[UUID]) -> list[dict[str, Any]]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with stack.client() as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=runs))
        )
    return [
        {
            "id": str(t.id),
            "flow_run_id": t.flow_run_id,
            "tags": t.tags,
            "created": t.created.timestamp(),
            "start": t.start_time.timestamp(),
            "end": t.end_time.timestamp(),
        }
        for t in task_runs
        if t.task_key and t.name.startswith("build ") and t.start_time and t.end_time
    ]


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one moment."""
    points: list[tuple[float, int]] = []
    for start, end in intervals:
        points.append((start, 1))
        points.append((end, -1))
    # At equal times, ends before starts: touching intervals do not overlap.
    points.sort(key=lambda point: (point[0], point[1]))
    current = best = 0
    for _, step in points:
        current += step
        best = max(best, current)
    return best


def test_run_from_the_prefect_ui_custom_run_form(stack: Stack, tmp_path: Path) -> None:
    """As a person does it: Deployments -> manual -> Run -> Custom run; the form shows every
    parameter with its description; change dest, shard_size and max_shards; Submit; View run.
    The run completes with max_shards shards; a screenshot of the finished run's artifacts is
    kept in test-output/deployments/."""
    assert CHROMIUM.exists(), "Chromium is missing: `make browser` installs Debian's package"
    from playwright.sync_api import expect, sync_playwright

    with stack.client() as client:
        deployment = client.read_deployment_by_name("objectron-to-wds/manual")
        schema = deployment.parameter_openapi_schema
    descriptions = {
        name: " ".join(prop["description"].split()) for name, prop in schema["properties"].items()
    }
    base = stack.server.url
    dest, max_shards = "gs://deploy-ui/shards", 3
    screenshot = stack.logs / "ui-flow-run-artifacts.png"
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            headless=True,
            viewport={"width": 1400, "height": 1100},
            args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
            ],
        )  # fmt: skip
        try:
            page = browser.new_page()
            page.set_default_timeout(60_000)
            # Two flows have a `manual` deployment: open the conversion's by its id.
            page.goto(f"{base}/deployments/deployment/{deployment.id}")
            page.get_by_role("button", name="Run", exact=True).click()
            page.get_by_text("Custom run").first.click()
            page.wait_for_url("**/run**")

            def field(name: str) -> Any:
                label = page.locator("span.schema-form-property__label").filter(
                    has_text=re.compile(rf"^\s*{name}( \(Optional\))?\s*$")
                )
                return page.locator("div.schema-form-property").filter(has=label)

            for name, description in descriptions.items():
                expect(field(name)).to_have_count(1)
                # Markdown in the description is rendered: compare the words only.
                words = re.sub(r"[`*]", "", description)
                expect(field(name)).to_contain_text(words[:60])
            expect(field("dest").locator("textarea, input").first).to_have_value(MANUAL_DEST)
            field("dest").locator("textarea, input").first.fill(dest)
            field("shard_size").locator("input").fill("2")
            field("max_shards").get_by_role("button", name="int", exact=True).click()
            field("max_shards").locator("input").fill(str(max_shards))
            page.screenshot(path=str(stack.logs / "ui-custom-run-form.png"), full_page=True)
            # The form posts to the deployment's create_flow_run endpoint; its answer names the
            # new run. (The UI's "View run" toast re-renders while it animates in, too unsteady
            # to click on a busy machine; it links to the same page opened here.)
            # A SQLite-backed server can answer 503 while it is busy; a person sees the error
            # toast and submits again, and so does the test (twice at most).
            for attempt in range(3):
                with page.expect_response(
                    lambda r: r.url.endswith("/create_flow_run") and r.request.method == "POST"
                ) as created:
                    page.get_by_role("button", name="Submit", exact=True).click()
                if created.value.status != 503 or attempt == 2:
                    break
                time.sleep(2)
            assert created.value.ok, created.value.text()
            run_id = UUID(created.value.json()["id"])
            page.goto(f"{base}/runs/flow-run/{run_id}")

            with stack.client() as client:
                state = _wait_final(client, [run_id], timeout=180)[run_id]
                run = client.read_flow_run(run_id)
                from_form = [
                    r.id for r in client.read_flow_runs() if r.parameters.get("dest") == dest
                ]
            assert from_form == [run_id], "Submit should create exactly one flow run"
            assert state == "COMPLETED", state
            assert run.parameters["max_shards"] == max_shards
            assert run.parameters["dest"] == dest

            page.reload()
            expect(page.get_by_text("Completed", exact=True).first).to_be_visible()
            page.locator("li.p-tab", has_text="Artifacts").click()
            for key in (SUMMARY_KEY, TABLE_KEY, PROGRESS_KEY):
                expect(page.get_by_text(key, exact=True).first).to_be_visible()
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()

    assert screenshot.stat().st_size > 10_000
    assert _shards(open_storage(dest)) == [f"objectron-{i:06d}.tar" for i in range(max_shards)]
    table = _artifacts(stack, run_id)[TABLE_KEY]
    assert [row["samples"] for row in table] == [2] * max_shards
