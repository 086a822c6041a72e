"""The `objectron-to-wds` flow with its shard builds on Dask (prefect-dask's `DaskTaskRunner`).

The flow itself does not change: only its task runner does, so a run on Dask writes the same,
byte-identical shards as a run on the default thread pool. Two ways in:

- `objectron-wds convert --task-runner dask [--dask-address tcp://HOST:8786] ...`, or
  `flow_with_task_runner("dask", address)` from Python;
- the `dask` deployment in prefect.yaml, whose entry point is `objectron_to_wds_dask` below. A
  deployment cannot take a task runner as a parameter, so this entry point reads the scheduler
  address from the environment variable OBJECTRON_WDS_DASK_ADDRESS when the flow run starts
  (prefect.yaml sets it from the Prefect variable `objectron_wds_dask_address`, which
  `objectron-wds setup --dask-address` writes).

No address means a temporary local cluster, started for the run and stopped after it: one
worker process per CPU (os.cpu_count()), two threads each, so the builds of a big machine run in
as many interpreters as it has cores.

Dask workers need what a Prefect worker needs: this project installed, PREFECT_API_URL (task
runs report to the server), and storage access (credentials, or STORAGE_EMULATOR_HOST). The
tasks take only URLs and names, and create their storage clients inside the task (a client
does not pickle), so nothing but strings travels to the workers.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Literal

# Loaded by path (a deployment entry point): make the project importable.
if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prefect import Flow
from prefect_dask import DaskTaskRunner

from flows.convert import objectron_to_wds

# (This module is not called `distributed`: Prefect puts an entry point's folder on sys.path,
# and the name would then hide Dask's own `distributed` package.)
DASK_ADDRESS_ENV = "OBJECTRON_WDS_DASK_ADDRESS"
TaskRunnerName = Literal["threads", "dask"]
TASK_RUNNERS: tuple[TaskRunnerName, ...] = ("threads", "dask")


def dask_task_runner(
    address: str | None = None, *, workers: int | None = None, threads_per_worker: int = 2
) -> DaskTaskRunner:
    """A task runner on the Dask scheduler at `address`, or on a temporary local cluster of
    `workers` processes (default: one per CPU) with `threads_per_worker` threads each (no
    dashboard)."""
    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": workers or os.cpu_count() or 1,
            "processes": True,
            "threads_per_worker": threads_per_worker,
            "dashboard_address": None,
        }
    )


def flow_with_task_runner(
    task_runner: TaskRunnerName = "threads",
    dask_address: str | None = None,
    flow: Flow[..., dict[str, Any]] = objectron_to_wds,
) -> Flow[..., dict[str, Any]]:
    """A flow (the conversion by default; also the frames flow) with the chosen task runner:
    `threads` (the default thread pool) or `dask` (on `dask_address`, or on a temporary local
    cluster without one)."""
    if task_runner == "threads":
        if dask_address:
            raise ValueError("a Dask scheduler address needs task_runner='dask'")
        return flow
    if task_runner == "dask":
        # Prefect annotates task_runner as invariant in the future type, hence the ignore.
        runner = dask_task_runner(dask_address)
        return flow.with_options(task_runner=runner)  # type: ignore[arg-type]
    raise ValueError(f"task_runner must be one of {', '.join(TASK_RUNNERS)}, not {task_runner!r}")


# The deployment entry point (prefect.yaml, deployment `dask`): same flow name, same parameters.
objectron_to_wds_dask = flow_with_task_runner("dask", os.environ.get(DASK_ADDRESS_ENV) or None)
