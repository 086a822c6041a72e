"""Google Cloud Storage behind the storage seam: a bucket and prefix."""

from __future__ import annotations

import base64
import contextlib
import functools
import io
import json
import os
import re
import urllib.parse
from collections.abc import Iterator
from typing import IO, Any, cast

import google_crc32c

from tasks.storage.base import (
    DEFAULT_CHUNK_SIZE,
    AlreadyExists,
    ObjectInfo,
    ObjectNotFound,
    PermissionDenied,
    SourceChanged,
    Storage,
    StorageError,
    TransientStorageError,
)
from tasks.storage.retry import REQUEST_TIMEOUT, is_transient, storage_retry
from tasks.storage.secrets import redact, register_secret

# An OAuth access token to use as is (e.g. from `gcloud auth print-access-token`), before
# application default credentials.
ACCESS_TOKEN_VARIABLE = "GOOGLE_OAUTH_ACCESS_TOKEN"
# The name of a prefect-gcp GcpCredentials block whose credentials every storage client uses.
# Deployments set it from the Prefect variable `objectron wds setup` writes (prefect.yaml), so
# the key lives in the Prefect server, not on the workers.
CREDENTIALS_BLOCK_VARIABLE = "OBJECTRON_WDS_GCP_CREDENTIALS_BLOCK"
# Buffer in front of a streaming GCS read: serves small reads without a request-level call each.
STREAM_READ_BUFFER = 256 * 1024


def make_gcs_client(project: str | None = None, credentials: Any = None) -> Any:
    """A storage client. Its credentials, first found first used: `credentials`; an access token
    in GOOGLE_OAUTH_ACCESS_TOKEN; the GcpCredentials block named in
    OBJECTRON_WDS_GCP_CREDENTIALS_BLOCK; application default credentials; none (anonymous,
    enough for public buckets such as gs://objectron). Against the emulator
    (STORAGE_EMULATOR_HOST) default credentials are not looked for: it needs none."""
    import google.cloud.storage as storage
    from google.auth.exceptions import DefaultCredentialsError

    token = os.environ.get(ACCESS_TOKEN_VARIABLE)
    if token and credentials is None:
        from google.oauth2.credentials import Credentials

        register_secret(token)
        credentials = Credentials(token=token)
    block = os.environ.get(CREDENTIALS_BLOCK_VARIABLE, "").strip()
    if block and credentials is None:
        credentials, block_project = credentials_from_block(block)
        project = project or block_project
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    if emulator and credentials is None:
        # The client's anonymous emulator mode: no default credentials looked up or refreshed.
        return storage.Client(project=project or "objectron-wds")
    if emulator:
        # Given credentials are sent (a key's token refreshed at its token_uri) as to GCS.
        return storage.Client(
            project=project or "objectron-wds",
            credentials=credentials,
            client_options={"api_endpoint": emulator},
        )
    if credentials is not None:
        return storage.Client(project=project, credentials=credentials)
    try:
        return storage.Client(project=project)
    except DefaultCredentialsError:
        return storage.Client.create_anonymous_client()


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
    return block.get_credentials_from_service_account(), block.project


class GcsStorage(Storage):
    """A bucket (and optional prefix) through google-cloud-storage."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        client: Any = None,
    ) -> None:
        # GCS resumable uploads need chunks in multiples of 256 KiB.
        quantum = 256 * 1024
        self.chunk_size = max(quantum, chunk_size // quantum * quantum)
        self.bucket_name = bucket
        self.prefix = prefix
        self.url = f"gs://{bucket}/{prefix}" if prefix else f"gs://{bucket}"
        self._client = client
        self._retry = storage_retry()

    @property
    def client(self) -> Any:
        # Created lazily, in the process and thread that uses it: clients do not pickle, and
        # tasks may run on Dask workers.
        if self._client is None:
            self._client = make_gcs_client()
        return self._client

    @property
    def bucket(self) -> Any:
        return self.client.bucket(self.bucket_name)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_client"] = None
        return state

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
        stream = _StreamingReader(
            blob._get_transport(self.client),
            blob._get_download_url(self.client),
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
        writer = _CreateOnlyWriter(
            blob, self.client, self.chunk_size, self._retry, self.url_for(name)
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


class _StreamingReader(io.RawIOBase):
    """An object's bytes from one streaming GET, read in the caller's pieces.

    The library's `blob.open("rb")` fetches a whole chunk per request and holds it (plus copies)
    in memory; this holds only the piece asked for, whatever the chunk size or the object's
    size, and asks once per object. A transient error mid-body (reset, stall, 5xx) is retried
    with the storage retry policy, resuming with a Range request where the body broke off; the
    bytes are the object's as stored (no transcoding), so sizes and CRC32C match the listing.
    """

    def __init__(self, transport: Any, media_url: str, *, retry: Any, url: str) -> None:
        super().__init__()
        self._transport = transport
        self._media_url = media_url
        self._url = url
        self._retry = retry
        self._offset = 0
        self._response: Any = None
        self.size: int | None = None  # stored bytes, from the first response's headers
        self.generation: str | None = None

    def start(self) -> None:
        """Send the GET (with retries) and read size and generation from its headers; resumed
        requests then ask for that generation, so a read never mixes two versions."""
        self._response = self._retry(self._open)()
        headers = self._response.headers
        self.generation = headers.get("x-goog-generation")
        stored = headers.get("x-goog-stored-content-length")
        if stored is None and not headers.get("content-encoding"):
            stored = headers.get("content-length")
        self.size = int(stored) if stored is not None else None
        if self.generation and "generation=" not in self._media_url:
            self._media_url += f"&generation={self.generation}"
        if self.size == 0:
            self._drop()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        """Fill `buffer` (fewer bytes after a broken connection: the next read resumes); 0 only
        at the end. Each arriving piece is copied once, straight into `buffer`: this is the
        build's per-byte path (io.BufferedReader hands its 1 MiB reads here)."""
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), self._remaining())
        if wanted <= 0:
            return 0
        return cast(int, self._retry(self._readinto_once)(view[:wanted]))

    def read(self, size: int | None = -1) -> bytes:
        """Up to `size` bytes, as `readinto`; without a size, everything up to the end."""
        if size is None or size < 0:
            return self.readall()
        buffer = bytearray(min(size, self._remaining()))
        return bytes(memoryview(buffer)[: self.readinto(buffer)])

    def readall(self) -> bytes:
        buffer = bytearray(self._remaining())
        view = memoryview(buffer)
        filled = 0
        while filled < len(buffer) and (count := self.readinto(view[filled:])):
            filled += count
        return bytes(view[:filled])

    def _remaining(self) -> int:
        return max((self.size or 0) - self._offset, 0)

    def _readinto_once(self, view: memoryview) -> int:
        if self._response is None:
            self._response = self._open()
        got = 0
        try:
            while got < len(view):
                piece = self._response.raw.read1(len(view) - got, decode_content=False)
                if not piece:
                    break
                view[got : got + len(piece)] = piece
                got += len(piece)
        except Exception as exc:
            self._drop()
            if not got or not is_transient(exc):
                raise
            # Keep what arrived before the break (a short read); the next read resumes after it.
        if not got:
            self._drop()
            raise TransientStorageError(
                f"{self._url}: the download ended after {self._offset} of {self.size} bytes"
            )
        self._offset += got
        if self._offset == self.size:
            self._drop()
        return got

    def _open(self) -> Any:
        headers = {"Range": f"bytes={self._offset}-"} if self._offset else {}
        response = self._transport.request(
            "GET", self._media_url, headers=headers, stream=True, timeout=REQUEST_TIMEOUT
        )
        if response.status_code == (206 if self._offset else 200):
            return response
        _raise_for_status(response, f"GET {self._url}")
        response.close()
        raise TransientStorageError(f"{self._url}: the range request was not honoured")

    def _drop(self) -> None:
        response, self._response = self._response, None
        if response is None:
            return
        if getattr(response.raw, "length_remaining", None) == 0:
            response.raw.release_conn()  # read to its end: the connection can be reused
        else:
            response.close()

    def close(self) -> None:
        self._drop()
        super().close()


class _CreateOnlyWriter:
    """Fills one chunk-sized buffer; an object that fits in it is uploaded in one multipart
    request (the only create-only write fake-gcs-server enforces), a larger one as a resumable
    upload, one chunk per request, the buffer reused for each.

    Our own resumable upload rather than `blob.open("wb")`: that writer copies every chunk
    into its buffer, out of it, and into the request (three chunks held at once: 48 MiB at the
    default chunk; benchmarks/RESULTS.md, row 4); here the request body is the buffer itself.
    The finished object's size and CRC32C, as the service reports them, are checked against
    what was sent: a chunk stored twice (fake-gcs-server appends a resent chunk whose first
    response was lost) or a corrupted body is an error, and the bad object is deleted."""

    def __init__(self, blob: Any, client: Any, chunk_size: int, retry: Any, url: str) -> None:
        self.blob = blob
        self.client = client
        self.transport = blob._get_transport(client)
        self.retry = retry
        self.url = url
        # bytearray(n) is calloc'd: a small object touches only the pages it fills.
        self.buffer = bytearray(chunk_size)
        self.filled = 0
        self.sent = 0  # bytes of the object the service has acknowledged
        self.session: str | None = None  # the resumable upload's URL, once started
        # Of everything written (hardware CRC32C: ~1 ms per 16 MiB); the library takes only
        # immutable bytes, which is what the build writes.
        self.checksum = google_crc32c.Checksum()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.checksum.update(data if isinstance(data, bytes) else bytes(data))
        view = memoryview(data).cast("B")
        total = len(view)
        while view:
            if self.filled == len(self.buffer):
                # More is coming: this chunk is not the last one.
                with self._request_errors():
                    self._send_chunk(final=False)
            count = min(len(self.buffer) - self.filled, len(view))
            self.buffer[self.filled : self.filled + count] = view[:count]
            self.filled += count
            view = view[count:]
        return total

    def commit(self) -> None:
        with self._request_errors():
            if self.session is None:
                self.blob.upload_from_string(
                    bytes(memoryview(self.buffer)[: self.filled]),
                    if_generation_match=0,
                    content_type="application/octet-stream",
                    retry=self.retry,
                    timeout=REQUEST_TIMEOUT,
                )
            else:
                self._send_chunk(final=True)
        self.buffer = bytearray()

    def abort(self) -> None:
        # Real GCS cancels the session; fake-gcs-server ignores the DELETE, but an unfinished
        # session is never visible at the object's name either way.
        if self.session is not None:
            with contextlib.suppress(Exception):
                self.transport.request("DELETE", self.session, timeout=REQUEST_TIMEOUT)
        self.buffer = bytearray()

    @contextlib.contextmanager
    def _request_errors(self) -> Iterator[None]:
        """The HTTP errors of this writer's own requests as storage errors. Only around them:
        an error of the code writing into the writer (a source read) is never renamed."""
        from google.api_core import exceptions as gexc

        try:
            yield
        except gexc.PreconditionFailed as exc:
            raise AlreadyExists(f"{self.url} was created by someone else meanwhile") from exc
        except gexc.NotFound as exc:
            raise ObjectNotFound(f"bucket gs://{self.blob.bucket.name} does not exist") from exc
        except gexc.Forbidden as exc:
            raise PermissionDenied(f"no permission to write {self.url}") from exc

    def _start_session(self) -> None:
        # fake-gcs-server ignores ifGenerationMatch=0 on resumable uploads, and on GCS a
        # conflict would only show at the end of a long upload: ask first, once, here
        # (small objects need no extra request: their one request is create-only).
        if self.blob.exists(retry=self.retry, timeout=REQUEST_TIMEOUT):
            raise AlreadyExists(f"{self.url} exists already")
        base = self.client._connection.API_BASE_URL
        bucket = urllib.parse.quote(self.blob.bucket.name, safe="")
        initiate = f"{base}/upload/storage/v1/b/{bucket}/o?uploadType=resumable&ifGenerationMatch=0"
        metadata = json.dumps({"name": self.blob.name, "contentType": "application/octet-stream"})

        def attempt() -> str:
            response = self.transport.request(
                "POST",
                initiate,
                data=metadata,
                headers={"Content-Type": "application/json; charset=UTF-8"},
                timeout=REQUEST_TIMEOUT,
            )
            _raise_for_status(response, f"starting the upload of {self.url}")
            return str(response.headers["Location"])

        self.session = cast(str, self.retry(attempt)())

    def _send_chunk(self, *, final: bool) -> None:
        """Send the buffer as the object's next bytes (the last ones if `final`), resending
        whatever part the service says it did not keep; on return the buffer is free."""
        if self.session is None:
            self._start_session()
        chunk = memoryview(self.buffer)[: self.filled]
        start, end = self.sent, self.sent + self.filled
        total = str(end) if final else "*"
        session = cast(str, self.session)

        def attempt() -> Any:
            unchanged = 0  # 308s in a row that kept nothing new
            while True:
                # From what the service holds: all of this chunk is new, unless a 308 said it
                # kept only part of it.
                body = chunk[self.sent - start :]
                span = f"{self.sent}-{end - 1}" if len(body) else "*"
                response = self.transport.request(
                    "PUT",
                    session,
                    data=body,
                    headers={"Content-Range": f"bytes {span}/{total}"},
                    timeout=REQUEST_TIMEOUT,
                )
                if response.status_code in (404, 410):
                    response.close()
                    raise StorageError(
                        f"{self.url}: the upload session has expired; write the object again"
                    )
                if response.status_code != 308:
                    _raise_for_status(response, f"uploading {self.url}")
                    return response  # the last chunk: the object, as stored
                held = _persisted_end(response)
                response.close()
                if held < start or held > end:
                    raise StorageError(
                        f"{self.url}: the upload session reports {held} bytes stored after "
                        f"{end} were sent ({start} acknowledged before); write it again"
                    )
                if held == end and not final:
                    return response
                unchanged = unchanged + 1 if held == self.sent else 0
                if unchanged == 3 or (unchanged and not len(body)):
                    # Back to the retry policy (backoff, then give up), not a tight loop.
                    raise TransientStorageError(
                        f"{self.url}: the service keeps {held} of {end} bytes and takes no more"
                    )
                self.sent = held

        response = self.retry(attempt)()
        self.sent = end
        self.filled = 0
        if final:
            self._check_stored(response.json(), end)

    def _check_stored(self, stored: dict[str, Any], size: int) -> None:
        crc32c = base64.b64encode(self.checksum.digest()).decode()
        if int(stored.get("size", -1)) == size and stored.get("crc32c", crc32c) == crc32c:
            return
        generation = stored.get("generation")
        with contextlib.suppress(Exception):
            self.blob.delete(
                if_generation_match=int(generation) if generation else None,
                retry=self.retry,
                timeout=REQUEST_TIMEOUT,
            )
        raise TransientStorageError(
            f"{self.url}: the service stored {stored.get('size')} bytes (CRC32C "
            f"{stored.get('crc32c')}) of the {size} sent (CRC32C {crc32c}); the object was "
            "deleted and must be written again"
        )


def _persisted_end(response: Any) -> int:
    """How many bytes a 308 says the service holds (`Range: bytes=0-N` -> N+1; none -> 0)."""
    value = str(response.headers.get("Range") or "")
    match = re.fullmatch(r"bytes=0-(\d+)", value.strip())
    return int(match.group(1)) + 1 if match else 0


def _raise_for_status(response: Any, doing: str) -> None:
    from google.api_core import exceptions as gexc

    if response.status_code < 300:
        return
    text = redact(response.text[:300])
    response.close()
    raise gexc.from_http_status(response.status_code, f"{doing}: {text}")
