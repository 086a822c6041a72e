"""Google Cloud Storage behind the storage seam: a bucket and prefix; credentials and clients."""

from __future__ import annotations

import contextlib
import functools
import io
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, cast

from tasks.storage.base import (
    DEFAULT_CHUNK_SIZE,
    ObjectInfo,
    ObjectNotFound,
    PermissionDenied,
    SourceChanged,
    Storage,
    StorageError,
)
from tasks.storage.gcs_transfer import (
    STREAM_READ_BUFFER,
    CreateOnlyWriter,
    StreamingReader,
    media_url,
)
from tasks.storage.retry import REQUEST_TIMEOUT, storage_retry
from tasks.storage.secrets import redact, register_secret

# An OAuth access token to use as is (e.g. from `gcloud auth print-access-token`), before
# application default credentials.
ACCESS_TOKEN_VARIABLE = "GOOGLE_OAUTH_ACCESS_TOKEN"
# The name of a prefect-gcp GcpCredentials block whose credentials every storage client uses.
# Deployments set it from the Prefect variable `objectron wds setup` writes (prefect.yaml), so
# the key lives in the Prefect server, not on the workers.
CREDENTIALS_BLOCK_VARIABLE = "OBJECTRON_WDS_GCP_CREDENTIALS_BLOCK"
EMULATOR_VARIABLE = "STORAGE_EMULATOR_HOST"
KEY_FILE_VARIABLE = "GOOGLE_APPLICATION_CREDENTIALS"


def gcs_credentials(credentials: Any = None) -> tuple[Any, str | None]:
    """The credentials every GCS request uses, and their project if they name one. First found
    first used: `credentials`; an access token in GOOGLE_OAUTH_ACCESS_TOKEN; the GcpCredentials
    block named in OBJECTRON_WDS_GCP_CREDENTIALS_BLOCK; against the emulator
    (STORAGE_EMULATOR_HOST), none; application default credentials; none (anonymous, enough
    for public buckets such as gs://objectron)."""
    from google.auth.credentials import AnonymousCredentials

    project: str | None = None
    token = os.environ.get(ACCESS_TOKEN_VARIABLE)
    block = os.environ.get(CREDENTIALS_BLOCK_VARIABLE, "").strip()
    if credentials is not None:
        pass
    elif token:
        from google.oauth2.credentials import Credentials

        register_secret(token)
        credentials = Credentials(token=token)
    elif block:
        with _SHARED_CREDENTIALS:  # loaded once, also when threads connect at once
            credentials, project = credentials_from_block(block)
    elif os.environ.get(EMULATOR_VARIABLE):
        # The emulator needs none: no default credentials looked up or refreshed.
        credentials = AnonymousCredentials()
    else:
        with _SHARED_CREDENTIALS:
            credentials, project = default_credentials(os.environ.get(KEY_FILE_VARIABLE))
    return _scoped(credentials), project


@functools.lru_cache(maxsize=4)
def default_credentials(key_file: str | None) -> tuple[Any, str | None]:
    """Application default credentials with the storage scopes, and their project; anonymous
    ones when there are none. Looked up once per process (and key file, `key_file` being
    GOOGLE_APPLICATION_CREDENTIALS): every storage object makes a client, and fresh
    credentials fetch a token before their first request (a round trip to Google's token
    endpoint or the metadata server), which a run would otherwise pay per stage and per shard.
    Shared credentials refresh themselves when their token expires."""
    import google.auth
    from google.auth.credentials import AnonymousCredentials
    from google.auth.exceptions import DefaultCredentialsError

    try:
        credentials, project = google.auth.default(scopes=_storage_scopes())
    except DefaultCredentialsError:
        return AnonymousCredentials(), None
    return _scoped(credentials), project


def make_gcs_client(project: str | None = None, credentials: Any = None, http: Any = None) -> Any:
    """A storage client with `credentials`, or those `gcs_credentials` finds; against the
    emulator (STORAGE_EMULATOR_HOST) when it is set, with the credentials sent as to GCS. Its
    requests go through `http` (a requests session) when given, else a session of its own."""
    import google.cloud.storage as storage

    credentials, found_project = gcs_credentials(credentials)
    project = project or found_project
    emulator = os.environ.get(EMULATOR_VARIABLE)
    if emulator:
        return storage.Client(
            project=project or "objectron-wds",
            credentials=credentials,
            client_options={"api_endpoint": emulator},
            _http=http,
        )
    return storage.Client(project=project, credentials=credentials, _http=http)


# Connections kept open per storage object. requests keeps 10 per host, and the stages that
# issue independent requests at once (specs, index files, stats: 16-64 threads) would otherwise
# open a new connection for most requests and drop it after (urllib3's "Connection pool is
# full"): against GCS a TLS handshake each, i.e. more round trips than the request itself.
POOL_CONNECTIONS = 64


@dataclass(frozen=True)
class GcsConnection:
    """A storage client (metadata, listings, small uploads) and an authorized session (media
    reads, resumable uploads): the client sends its requests through the same session, so they
    share one credentials object (a token is fetched once for both) and one pool of
    connections; and the endpoint both talk to."""

    client: Any  # google.cloud.storage.Client
    session: Any  # google.auth.transport.requests.AuthorizedSession
    endpoint: str  # e.g. https://storage.googleapis.com, or the emulator's URL


def connect_gcs(project: str | None = None, credentials: Any = None) -> GcsConnection:
    """A client and a session on the credentials `gcs_credentials` resolves (once, for both)."""
    from google.auth.transport.requests import AuthorizedSession
    from requests.adapters import HTTPAdapter

    credentials, found_project = gcs_credentials(credentials)
    _first_token(credentials)
    session = AuthorizedSession(credentials, refresh_timeout=REQUEST_TIMEOUT[1])
    for scheme in ("https://", "http://"):  # http: the emulator
        session.mount(scheme, HTTPAdapter(pool_maxsize=POOL_CONNECTIONS))
    client = make_gcs_client(project or found_project, credentials, http=session)
    return GcsConnection(client=client, session=session, endpoint=str(client.api_endpoint))


# Held while shared credentials are looked up or fetch their first token.
_SHARED_CREDENTIALS = threading.RLock()


def _first_token(credentials: Any) -> None:
    """Fetch the first token of credentials that have none, once: the same credentials serve
    every client of the process (a block's, application default ones), and threads connecting
    at the same moment (the source and destination checks, the builds of a run) would each
    fetch one. Later refreshes (an expired token) happen per request, as before."""
    if credentials.valid or getattr(credentials, "token", "") is not None:
        return
    from google.auth.transport.requests import Request

    with _SHARED_CREDENTIALS:
        if not credentials.valid:
            # Retried as the request it comes before would have been.
            storage_retry()(credentials.refresh)(Request())


@functools.lru_cache(maxsize=8)
def credentials_from_block(name: str) -> tuple[Any, str | None]:
    """(google-auth credentials, project) of the GcpCredentials block `name`; loaded once per
    process, since every task makes clients and a load is a Prefect API call."""
    from prefect_gcp import GcpCredentials

    try:
        block = GcpCredentials.load(name)
    except ValueError as exc:
        raise StorageError(
            f"GCP credentials block {name!r} (named by {CREDENTIALS_BLOCK_VARIABLE}) could not "
            f"be loaded: {exc}. Save it with `objectron-wds setup --gcp-key-file KEY.json` (or "
            f"--gcp-adc), or unset {CREDENTIALS_BLOCK_VARIABLE} to use default credentials."
        ) from exc
    # Scoped here, once: a copy scoped per client would fetch a token per client.
    return _scoped(block.get_credentials_from_service_account()), block.project


def _storage_scopes() -> tuple[str, ...]:
    import google.cloud.storage as storage

    return tuple(storage.Client.SCOPE)


def _scoped(credentials: Any) -> Any:
    """`credentials` with the storage scopes if they need scopes, else the same object: the
    client scopes what it is given in the same way, so it keeps this very object and shares
    its token with the session."""
    from google.auth.credentials import with_scopes_if_required

    return with_scopes_if_required(credentials, _storage_scopes())


class GcsStorage(Storage):
    """A bucket (and optional prefix) through google-cloud-storage."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        # GCS resumable uploads need chunks in multiples of 256 KiB.
        quantum = 256 * 1024
        self.chunk_size = max(quantum, chunk_size // quantum * quantum)
        self.bucket_name = bucket
        self.prefix = prefix
        self.url = f"gs://{bucket}/{prefix}" if prefix else f"gs://{bucket}"
        self._connection: GcsConnection | None = None
        self._connecting = threading.Lock()
        self._retry = storage_retry()

    @property
    def connection(self) -> GcsConnection:
        # Created lazily, in the process that uses it: clients do not pickle, and tasks may run
        # on Dask workers. Once: the stages that issue requests from many threads at once would
        # otherwise each make a client (and look up credentials) of their own.
        if self._connection is None:
            with self._connecting:
                if self._connection is None:
                    self._connection = connect_gcs()
        return self._connection

    @property
    def client(self) -> Any:
        return self.connection.client

    @property
    def bucket(self) -> Any:
        return self.client.bucket(self.bucket_name)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_connection"] = None
        del state["_connecting"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._connecting = threading.Lock()

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _info(self, blob: Any, name: str) -> ObjectInfo:
        return ObjectInfo(
            name=name,
            size=int(blob.size or 0),
            generation=str(blob.generation),
            md5=blob.md5_hash,
            crc32c=blob.crc32c,
        )

    def check_root(self) -> None:
        from google.api_core import exceptions as gexc

        try:
            exists = self.bucket.exists(retry=self._retry, timeout=REQUEST_TIMEOUT)
        except gexc.Forbidden as exc:
            raise PermissionDenied(f"no permission to use bucket gs://{self.bucket_name}") from exc
        except gexc.RetryError as exc:
            # Unreachable all along (no network, a wrong emulator address): a usage problem to
            # name, not a traceback after the retry policy gave up.
            raise StorageError(
                f"could not reach the storage service for gs://{self.bucket_name} "
                f"({redact(str(exc.cause))[:200]}); check the network, or STORAGE_EMULATOR_HOST "
                "when an emulator is meant"
            ) from exc
        if not exists:
            raise ObjectNotFound(f"bucket gs://{self.bucket_name} does not exist")

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        from google.api_core import exceptions as gexc

        key_prefix = self._key(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        # Large pages: fake-gcs-server rescans the bucket per page, and GCS allows 5,000.
        try:
            for blob in self.client.list_blobs(
                self.bucket_name,
                prefix=key_prefix,
                page_size=5000,
                retry=self._retry,
                timeout=REQUEST_TIMEOUT,
            ):
                if blob.name.endswith("/"):
                    continue  # "folder" placeholder objects made by some tools
                yield self._info(blob, blob.name[strip:])
        except gexc.NotFound as exc:
            raise ObjectNotFound(f"bucket gs://{self.bucket_name} does not exist") from exc
        except gexc.Forbidden as exc:
            raise PermissionDenied(f"no permission to list gs://{self.bucket_name}") from exc

    def stat(self, name: str) -> ObjectInfo | None:
        blob = self.bucket.get_blob(self._key(name), retry=self._retry, timeout=REQUEST_TIMEOUT)
        return None if blob is None else self._info(blob, name)

    def open_read(self, name: str, generation: str | None = None) -> IO[bytes]:
        from google.api_core import exceptions as gexc

        blob = self.bucket.blob(self._key(name), generation=int(generation) if generation else None)
        # One request per object: the media GET's headers carry the size and the generation,
        # so no metadata request goes first (on GCS that is a round trip per member).
        stream = StreamingReader(
            self.connection.session,
            media_url(self.connection.endpoint, blob),
            retry=self._retry,
            url=self.url_for(name),
        )
        try:
            stream.start()
        except gexc.NotFound as exc:
            if generation is not None and self.stat(name) is not None:
                raise SourceChanged(
                    f"{self.url_for(name)} changed since it was planned "
                    f"(generation {generation} was overwritten)"
                ) from exc
            raise ObjectNotFound(f"{self.url_for(name)} does not exist") from exc
        except gexc.Forbidden as exc:
            raise PermissionDenied(f"no permission to read {self.url_for(name)}") from exc
        if stream.size is None:  # no stored length in the headers (a transcoded object)
            blob.reload(retry=self._retry, timeout=REQUEST_TIMEOUT)
            stream.size = int(blob.size or 0)
        if generation is not None and stream.generation not in (None, generation):
            stream.close()
            raise SourceChanged(
                f"{self.url_for(name)} changed since it was planned "
                f"(generation {generation}, now {stream.generation})"
            )
        # Small reads (tarfile's 10 KiB records when verifying) come from the buffer; reads of
        # a buffer or more (the build's 1 MiB pieces) go straight to the stream.
        return cast(IO[bytes], io.BufferedReader(stream, buffer_size=STREAM_READ_BUFFER))

    def read_head(self, name: str, length: int) -> bytes:
        blob = self.bucket.blob(self._key(name))
        head: bytes = blob.download_as_bytes(
            start=0, end=length - 1, raw_download=True, retry=self._retry,
            timeout=REQUEST_TIMEOUT, checksum=None,
        )  # fmt: skip
        return head

    @contextlib.contextmanager
    def open_create(self, name: str, *, durable: bool = True) -> Iterator[IO[bytes]]:
        blob = self.bucket.blob(self._key(name))
        # Small objects go through one multipart request (buffered here); large ones stream as
        # a resumable upload that GCS finalizes atomically when the writer is closed.
        # if_generation_match=0 makes both create-only. The writer cancels the upload when the
        # block raises, so an interrupted shard leaves nothing at its final name.
        connection = self.connection
        writer = CreateOnlyWriter(
            blob,
            connection.session,
            connection.endpoint,
            self.chunk_size,
            self._retry,
            self.url_for(name),
        )
        try:
            yield cast(IO[bytes], writer)
            writer.commit()
        except BaseException:
            writer.abort()  # a session left unfinished is never visible at the name
            raise

    def replace_bytes(self, name: str, data: bytes) -> None:
        # A single-request upload replaces the object atomically.
        self.bucket.blob(self._key(name)).upload_from_string(
            data,
            content_type="application/json" if name.endswith(".json") else "text/plain",
            retry=self._retry,
            timeout=REQUEST_TIMEOUT,
        )

    def delete(self, name: str) -> None:
        from google.api_core import exceptions as gexc

        with contextlib.suppress(gexc.NotFound):
            self.bucket.blob(self._key(name)).delete(retry=self._retry, timeout=REQUEST_TIMEOUT)
