"""A planted credential travels on the wire (Authorization header) to a server that echoes it
in its error bodies; it must appear in no log, file, artifact, state or error message."""

from __future__ import annotations

import logging
import os
import re
import uuid
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter
from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL

from flows.convert import ShardsFailed, objectron_to_wds
from flows.verify import VerificationFailed, verify_shards
from tasks.fake_gcs import FakeGcsServer
from tasks.storage import ACCESS_TOKEN_VARIABLE, open_storage
from tests.conftest import SourceBucket
from tests.fault_proxy import FaultPlan, FaultProxy

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_planted_token_is_never_written_anywhere(
    sample_bucket: SourceBucket,
    fake_gcs: FakeGcsServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    secret = f"planted-{uuid.uuid4().hex}"
    fake_gcs.create_bucket("secrets-dest")
    victim = next(
        i.name for i in sample_bucket.storage.list("videos/") if i.name.endswith("video.MOV")
    )
    proxy = FaultProxy(
        fake_gcs.url,
        FaultPlan(
            rate=0.15,
            seed=11,
            stall_seconds=0.1,
            error_text="request had Authorization: {authorization}",
            permanent=[(re.escape(victim), 403)],
        ),
    ).start()
    monkeypatch.setenv(ACCESS_TOKEN_VARIABLE, secret)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
    errors: list[str] = []
    try:
        with caplog.at_level(logging.DEBUG):
            state = objectron_to_wds(
                dest="gs://secrets-dest", source=sample_bucket.url, shard_size=2,
                concurrency_limit=None, return_state=True,
            )  # fmt: skip
            with pytest.raises(ShardsFailed) as failure:
                state.result()
            errors += [str(failure.value), repr(failure.value)]
            with pytest.raises(VerificationFailed) as verification:
                verify_shards(dest="gs://secrets-dest")
            errors += [str(verification.value)]
    finally:
        proxy.stop()
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs.url)
    # The secret was really in play: sent by the client, and echoed by the server.
    assert f"Bearer {secret}" in proxy.authorizations
    assert proxy.injected["permanent_403"] >= 1 and sum(proxy.injected.values()) > 5
    assert "permission" in errors[0].lower()

    flow_run_id = state.state_details.flow_run_id
    texts = {"errors": "\n".join(errors), "caplog": caplog.text}
    out, err = capfd.readouterr()
    texts["console"] = out + err
    assert "[redacted]" in texts["caplog"] + texts["console"], "no echoed error was exercised"
    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id={"any_": [flow_run_id]}), limit=200
        )
        texts["api logs"] = "\n".join(log.message for log in logs)
        artifacts = client.read_artifacts()
        texts["artifacts"] = "\n".join(str(a.data) + str(a.description) for a in artifacts)
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
        texts["flow state"] = "\n".join(str(r.state) for r in runs)
        task_runs = client.read_task_runs()
        texts["task states"] = "\n".join(f"{t.state}" for t in task_runs)
    assert texts["api logs"], "no logs were read back"

    dest = open_storage("gs://secrets-dest")
    texts["destination objects"] = "\n".join(
        dest.read_bytes(i.name).decode("latin-1") for i in dest.list()
    )
    # Everything Prefect stored: its database (logs, states, artifacts) and result storage.
    database = str(PREFECT_API_DATABASE_CONNECTION_URL.value()).split("///", 1)[-1]
    files = [Path(database), Path(database + "-wal"), *Path(os.environ["PREFECT_HOME"]).rglob("*")]
    for path in files:
        if path.is_file():
            texts[str(path)] = path.read_bytes().decode("latin-1")
    assert any(name.endswith(".db") for name in texts), "the Prefect database was not searched"

    leaks = [where for where, text in texts.items() if secret in text]
    assert not leaks, f"the planted secret appears in: {leaks}"
