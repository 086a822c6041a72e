"""Reading back what a Prefect server recorded, through its REST API (plain HTTP, so a probe
never shares a client, a thread or an event loop with the flow it watches)."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from typing import Any


def api_url() -> str:
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        raise RuntimeError("PREFECT_API_URL is not set")
    return url.rstrip("/")


def post_json(path: str, body: dict[str, Any], base: str | None = None, timeout: float = 60) -> Any:
    request = urllib.request.Request(
        f"{base or api_url()}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def count_task_runs(
    flow_run_id: Any,
    state_types: list[str] | None = None,
    base: str | None = None,
    name_like: str | None = None,
) -> int:
    """Task runs the server holds for one flow run (optionally only in these state types, or
    only those whose run name contains `name_like`, e.g. "build " for the shard builds)."""
    body: dict[str, Any] = {"flow_runs": {"id": {"any_": [str(flow_run_id)]}}}
    task_runs: dict[str, Any] = {}
    if state_types:
        task_runs["state"] = {"type": {"any_": state_types}}
    if name_like:
        task_runs["name"] = {"like_": name_like}
    if task_runs:
        body["task_runs"] = task_runs
    return int(post_json("/task_runs/count", body, base))


def count_task_runs_settled(
    flow_run_id: Any,
    expected: int,
    base: str | None = None,
    quiet_seconds: float = 15,
    limit_seconds: float = 300,
    name_like: str | None = None,
) -> int:
    """The flow run's task-run count once the server has caught up: polled until it reaches
    `expected`, or stops changing for `quiet_seconds`, or `limit_seconds` pass."""
    deadline = time.monotonic() + limit_seconds
    last, last_change = -1, time.monotonic()
    while True:
        count = count_task_runs(flow_run_id, base=base, name_like=name_like)
        if count != last:
            last, last_change = count, time.monotonic()
        if count >= expected or time.monotonic() - last_change > quiet_seconds:
            return count
        if time.monotonic() > deadline:
            return count
        time.sleep(1)


def find_flow_run_id(name_contains: str, base: str | None = None) -> str | None:
    """The newest flow run whose name contains `name_contains`."""
    runs = post_json(
        "/flow_runs/filter",
        {
            "flow_runs": {"name": {"like_": name_contains}},
            "sort": "EXPECTED_START_TIME_DESC",
            "limit": 1,
        },
        base,
    )
    return str(runs[0]["id"]) if runs else None


def flow_run_state(flow_run_id: str, base: str | None = None) -> str | None:
    request = urllib.request.Request(f"{base or api_url()}/flow_runs/{flow_run_id}")
    with urllib.request.urlopen(request, timeout=60) as response:
        document = json.loads(response.read())
    state = document.get("state") or {}
    return state.get("type")
