"""The pipeline's storage clients use the prefect-gcp GcpCredentials block named in
OBJECTRON_WDS_GCP_CREDENTIALS_BLOCK (what the deployments set from `objectron-wds setup`).

The block holds a service-account key whose token_uri is a local token server, so google-auth
performs its real refresh (a JWT signed with the key, checked by the server) and every request
the run sends to the emulator, seen by a proxy, carries the token that refresh returned."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prefect_gcp import GcpCredentials

from flows.convert import objectron_to_wds
from tasks.fake_gcs import FakeGcsServer
from tasks.parameters import InvalidInput
from tasks.storage import CREDENTIALS_BLOCK_VARIABLE, credentials_from_block, open_storage
from tests.conftest import SourceBucket
from tests.fault_proxy import FaultProxy
from tests.token_server import CLIENT_EMAIL, TokenServer

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture
def tokens() -> Iterator[TokenServer]:
    server = TokenServer().start()
    credentials_from_block.cache_clear()
    try:
        yield server
    finally:
        credentials_from_block.cache_clear()
        server.stop()


def test_a_run_authenticates_with_the_named_credentials_block(
    sample_bucket: SourceBucket,
    new_bucket: str,
    fake_gcs: FakeGcsServer,
    tokens: TokenServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    GcpCredentials(service_account_info=tokens.service_account_info()).save(
        "test-converter", overwrite=True
    )
    proxy = FaultProxy(fake_gcs.url).start()
    monkeypatch.setenv(CREDENTIALS_BLOCK_VARIABLE, "test-converter")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
    try:
        summary = objectron_to_wds(
            dest=new_bucket, source=sample_bucket.url, shard_size=8, concurrency_limit=None
        )
    finally:
        proxy.stop()
    assert summary["built"] == summary["shards"] > 1 and summary["failed"] == 0
    # Every request of the run carried the token the block's key was exchanged for.
    assert proxy.requests > 20
    assert proxy.authorizations == {f"Bearer {tokens.token}"}
    assert proxy.without_authorization == 0
    assert tokens.rejected == 0 and {g["iss"] for g in tokens.grants} == {CLIENT_EMAIL}
    # One exchange per process: the block is loaded once and its credentials are shared.
    assert len(tokens.grants) == 1


def test_a_missing_credentials_block_is_a_clear_error_before_anything_is_written(
    sample_bucket: SourceBucket,
    new_bucket: str,
    tokens: TokenServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(CREDENTIALS_BLOCK_VARIABLE, "no-such-block")
    with pytest.raises(InvalidInput, match=r"'no-such-block'.*objectron-wds setup --gcp-key"):
        objectron_to_wds(dest=new_bucket, source=sample_bucket.url, concurrency_limit=None)
    monkeypatch.delenv(CREDENTIALS_BLOCK_VARIABLE)
    assert list(open_storage(new_bucket).list()) == []
