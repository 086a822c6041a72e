"""Shared fixtures: a real fake-gcs-server, sample datasets in it, and a Prefect test server.

Everything talks to 127.0.0.1 only, on free ports; each test session gets its own PREFECT_HOME.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Before Prefect is imported anywhere: a private home (database, cache records) and offline
# settings, so tests never touch ~/.prefect and start quickly without internet.
_SESSION_HOME = tempfile.mkdtemp(prefix="objectron-wds-prefect-")
os.environ["PREFECT_HOME"] = _SESSION_HOME
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("NO_GCE_CHECK", "true")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import pytest  # noqa: E402

from tasks.fake_gcs import FakeGcsServer  # noqa: E402
from tasks.objectron.sample_data import SampleDataset, write_sample_dataset  # noqa: E402
from tasks.storage import Storage, open_storage  # noqa: E402
from tests.fault_proxy import FaultProxy  # noqa: E402

_bucket_numbers = itertools.count()


@pytest.fixture(scope="session")
def fake_gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGcsServer]:
    """One emulator for the session; STORAGE_EMULATOR_HOST points every client at it."""
    log = tmp_path_factory.mktemp("fake-gcs") / "server.log"
    with FakeGcsServer(log_path=log) as server:
        previous = os.environ.get("STORAGE_EMULATOR_HOST")
        os.environ["STORAGE_EMULATOR_HOST"] = server.url
        yield server
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous


@pytest.fixture
def new_bucket(fake_gcs: FakeGcsServer) -> Iterator[str]:
    """A fresh, empty bucket; returns its gs:// URL."""
    name = f"test-{os.getpid()}-{next(_bucket_numbers)}"
    fake_gcs.create_bucket(name)
    yield f"gs://{name}"


@pytest.fixture
def proxy(fake_gcs: FakeGcsServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """A fault-injecting proxy (tests/fault_proxy.py) in front of the emulator; every storage
    client created while the test runs goes through it."""
    fault_proxy = FaultProxy(fake_gcs.url).start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fault_proxy.url)
    yield fault_proxy
    fault_proxy.stop()


@dataclass(frozen=True)
class SourceBucket:
    url: str
    storage: Storage
    dataset: SampleDataset


@pytest.fixture(scope="session")
def sample_bucket(fake_gcs: FakeGcsServer) -> SourceBucket:
    """gs://objectron-sample: an Objectron-shaped dataset, shared read-only by the tests."""
    fake_gcs.create_bucket("objectron-sample")
    storage = open_storage("gs://objectron-sample")
    dataset = write_sample_dataset(storage, videos=24, seed=7, video_bytes=64 * 1024)
    return SourceBucket("gs://objectron-sample", storage, dataset)


@pytest.fixture(scope="session")
def sample_folder(tmp_path_factory: pytest.TempPathFactory) -> SourceBucket:
    """The same kind of dataset in a local folder."""
    root = tmp_path_factory.mktemp("objectron-local")
    storage = open_storage(str(root))
    dataset = write_sample_dataset(storage, videos=12, seed=7, video_bytes=64 * 1024)
    return SourceBucket(str(root), storage, dataset)


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """A Prefect test server (SQLite in a temp folder) for the session; yields its API URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield str(PREFECT_API_URL.value())


@pytest.fixture
def output_dir() -> Path:
    """A folder kept after the run (test-output/) for artefacts a person may want to look at."""
    path = Path(__file__).resolve().parent.parent / "test-output"
    path.mkdir(exist_ok=True)
    return path
