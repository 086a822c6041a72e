"""Fast checks of the deployment configuration and run options (no servers): prefect.yaml, the
task-runner choice, the CLI options, and how the progress artifact is throttled."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner

from deployments.setup import DEFAULT_POOL, options_from_args
from flows import artifacts
from flows.cli import build_parser
from flows.convert import objectron_to_wds
from flows.dask_runner import flow_with_task_runner
from tasks.stats import ShardStats

ROOT = Path(__file__).resolve().parent.parent


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def test_prefect_yaml_deployments_share_pool_tags_and_hold_no_bucket() -> None:
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    flows = {
        "flows/convert.py:objectron_to_wds": "objectron-to-wds",
        "flows/dask_runner.py:objectron_to_wds_dask": "objectron-to-wds",
        "flows/frames.py:objectron_to_frames": "objectron-to-frames",
        "flows/verify.py:verify_shards": "verify-shards",
    }
    # Deployment names are unique per flow, so `manual` is two deployments.
    deployments = {f"{flows[d['entrypoint']]}/{d['name']}": d for d in config["deployments"]}
    assert set(deployments) == {
        "objectron-to-wds/manual",
        "objectron-to-wds/nightly",
        "objectron-to-wds/dask",
        "objectron-to-frames/manual",
        "verify-shards/verify",
    }
    for deployment in deployments.values():
        assert deployment["work_pool"]["name"] == DEFAULT_POOL
        assert deployment["tags"] == config["definitions"]["tags"]
        path, _, name = deployment["entrypoint"].partition(":")
        assert (
            f"def {name}" in (ROOT / path).read_text() or f"{name} =" in (ROOT / path).read_text()
        )
    nightly = deployments["objectron-to-wds/nightly"]
    assert nightly["schedules"] == [config["definitions"]["schedules"]["nightly"]]
    assert nightly["parameters"]["overwrite"] is False
    # Buckets come from Prefect variables, credentials from blocks: none written here.
    values = _strings(config["deployments"]) + _strings(config["definitions"])
    assert not [v for v in values if v.startswith("gs://") or "key" in v.lower()]
    assert all("{{ prefect.variables." in d["parameters"]["dest"] for d in deployments.values())


def test_task_runner_choice() -> None:
    assert flow_with_task_runner("threads") is objectron_to_wds
    assert isinstance(objectron_to_wds.task_runner, ThreadPoolTaskRunner)
    on_cluster = flow_with_task_runner("dask", "tcp://127.0.0.1:8786")
    assert on_cluster.name == objectron_to_wds.name
    assert isinstance(on_cluster.task_runner, DaskTaskRunner)
    assert on_cluster.task_runner.address == "tcp://127.0.0.1:8786"
    temporary = flow_with_task_runner("dask")
    assert isinstance(temporary.task_runner, DaskTaskRunner)
    assert temporary.task_runner.address is None
    # A temporary cluster uses the machine: one worker process per CPU, not one worker.
    kwargs = temporary.task_runner.cluster_kwargs
    assert (kwargs["n_workers"], kwargs["processes"]) == (os.cpu_count(), True)
    with pytest.raises(ValueError, match="task_runner='dask'"):
        flow_with_task_runner("threads", "tcp://127.0.0.1:8786")
    with pytest.raises(ValueError, match="must be one of"):
        flow_with_task_runner("ray")  # type: ignore[arg-type]


def test_cli_options_for_task_runner_and_setup() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["convert", "--dest", "out", "--task-runner", "dask", "--dask-address", "tcp://h:1"]
    )
    assert (args.task_runner, args.dask_address) == ("dask", "tcp://h:1")
    assert parser.parse_args(["convert", "--dest", "out"]).task_runner == "threads"
    setup = options_from_args(
        parser.parse_args(
            ["setup", "--dest", "gs://b/p", "--build-slots", "3", "--dask-address", "none"]
        )
    )
    assert (setup.dest, setup.build_slots, setup.dask_address, setup.pool) == (
        "gs://b/p", 3, "", DEFAULT_POOL,
    )  # fmt: skip


def test_progress_artifact_is_throttled_and_exact_at_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: dict[str, list[Any]] = {"create": [], "update": [], "table": []}
    monkeypatch.setattr(
        artifacts, "create_progress_artifact", lambda **kw: calls["create"].append(kw) or "id"
    )
    monkeypatch.setattr(
        artifacts,
        "update_progress_artifact",
        lambda artifact_id, **kw: calls["update"].append(kw["progress"]),
    )
    monkeypatch.setattr(artifacts, "create_table_artifact", lambda **kw: calls["table"].append(kw))
    clock = [1000.0]

    report = artifacts.RunReport(250, "objectron -> gs://b", clock=lambda: clock[0])
    for i in reversed(range(249)):
        clock[0] += 0.5  # a shard every half second: an update every 5 s = every 10 shards
        report.shard_finished(ShardStats(f"s-{i:06d}.tar", "d", "built", 3, 1024, 900, 0.5))
    updates_while_running = list(calls["update"])
    assert 20 <= len(updates_while_running) <= 25, updates_while_running
    assert updates_while_running == sorted(updates_while_running)
    report.shard_failed("s-000249.tar", "ConnectionError: " + "x" * 1000)
    assert calls["create"][0]["progress"] == 0.0
    assert calls["update"][-1] == 100.0  # the last shard always shows, failed or not
    # A failure shows at once, between the timed updates.
    report2 = artifacts.RunReport(100, "x", clock=lambda: clock[0])
    calls["update"].clear()
    report2.shard_failed("s-000000.tar", "boom")
    assert calls["update"] == [1.0]
    report.publish_table()
    table = calls["table"][0]["table"]
    assert [row["shard"] for row in table] == [f"s-{i:06d}.tar" for i in range(250)]
    assert table[0] == {
        "shard": "s-000000.tar", "samples": 3, "bytes": 1024, "status": "built", "seconds": 0.5,
        "error": "",
    }  # fmt: skip
    assert table[-1]["status"] == "failed"
    assert len(table[-1]["error"]) == artifacts.MAX_ERROR_CHARS


@pytest.mark.usefixtures("prefect_server")
def test_empty_destination_is_refused_not_taken_for_the_working_directory() -> None:
    """A deployment whose dest variable was never set passes dest="" (not None)."""
    from tasks.parameters import InvalidInput

    with pytest.raises(InvalidInput, match="objectron_wds_dest"):
        objectron_to_wds(dest="", source="gs://objectron")


def test_dask_runner_without_a_prefect_server_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.cli import main

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        code = main(["convert", "--dest", str(tmp_path / "out"), "--task-runner", "dask"])
    assert code == 2
    assert "PREFECT_API_URL" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
