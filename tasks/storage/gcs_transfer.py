"""An object's bytes to and from GCS over a public `AuthorizedSession`: one streaming GET per
read, and a create-only upload from one reused buffer through google-resumable-media's
`ResumableUpload`.

Only public APIs: the JSON API's media URLs built from `client.api_endpoint` and `blob.path`,
the session from the same credentials as the storage client (tasks/storage/gcs.py), and
`ResumableUpload`'s documented methods and properties.
"""

from __future__ import annotations

import base64
import contextlib
import io
from collections.abc import Iterator
from typing import Any, cast

import google_crc32c

from tasks.storage.base import (
    AlreadyExists,
    ObjectNotFound,
    PermissionDenied,
    StorageError,
    TransientStorageError,
)
from tasks.storage.retry import REQUEST_TIMEOUT, is_transient
from tasks.storage.secrets import redact

# Buffer in front of a streaming GCS read: serves small reads without a request-level call each.
STREAM_READ_BUFFER = 256 * 1024


def media_url(endpoint: str, blob: Any) -> str:
    """The JSON API's download URL of `blob` (its generation, if it has one, pinned)."""
    url = f"{endpoint}/download/storage/v1{blob.path}?alt=media"
    return url + (f"&generation={blob.generation}" if blob.generation is not None else "")


def resumable_upload_url(endpoint: str, bucket: Any) -> str:
    """Where a create-only resumable upload into `bucket` is started."""
    return f"{endpoint}/upload/storage/v1{bucket.path}/o?uploadType=resumable&ifGenerationMatch=0"


class StreamingReader(io.RawIOBase):
    """An object's bytes from one streaming GET, read in the caller's pieces.

    The library's `blob.open("rb")` fetches a whole chunk per request and holds it (plus copies)
    in memory; this holds only the piece asked for, whatever the chunk size or the object's
    size, and asks once per object. A transient error mid-body (reset, stall, 5xx) is retried
    with the storage retry policy, resuming with a Range request where the body broke off; the
    bytes are the object's as stored (no transcoding), so sizes and CRC32C match the listing.
    """

    def __init__(self, session: Any, media_url: str, *, retry: Any, url: str) -> None:
        super().__init__()
        self._session = session
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
        response = self._session.request(
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


class CreateOnlyWriter:
    """Fills one chunk-sized buffer; an object that fits in it is uploaded in one multipart
    request (the only create-only write fake-gcs-server enforces), a larger one as a resumable
    upload (`ResumableUpload`), one chunk per request, the buffer reused for each.

    Not `blob.open("wb")`: that writer copies every chunk into its buffer, out of it, and into
    the request (three chunks held at once: 48 MiB at the default chunk; benchmarks/RESULTS.md,
    row 4); here the request body is a view of the buffer itself. The finished object's size
    and CRC32C, as the service reports them, are checked against what was sent: a chunk stored
    twice (fake-gcs-server appends a resent chunk whose first response was lost) or a corrupted
    body is an error, and the bad object is deleted. (The library's own checksum option cannot
    do this: google_crc32c takes only read-only buffers, and the chunks are views of a
    bytearray.)"""

    def __init__(
        self, blob: Any, session: Any, endpoint: str, chunk_size: int, retry: Any, url: str
    ) -> None:
        self.blob = blob
        self.session = session
        self.transport = _OneAttemptTransport(session, url)
        self.upload_url = resumable_upload_url(endpoint, blob.bucket)
        self.retry = retry
        self.url = url
        # bytearray(n) is calloc'd: a small object touches only the pages it fills.
        self.buffer = bytearray(chunk_size)
        self.filled = 0
        self.start = 0  # the object's offset of buffer[0]: what the service has acknowledged
        self.size = 0  # bytes written
        self.resumable = False  # a resumable upload was begun (the object is over one chunk)
        self.upload: Any = None  # the ResumableUpload session, while one is open
        self.window = _BufferWindow(self)
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
                    self._send(final=False)
            count = min(len(self.buffer) - self.filled, len(view))
            self.buffer[self.filled : self.filled + count] = view[:count]
            self.filled += count
            self.size += count
            view = view[count:]
        return total

    def commit(self) -> None:
        with self._request_errors():
            if not self.resumable:
                self.blob.upload_from_string(
                    bytes(memoryview(self.buffer)[: self.filled]),
                    if_generation_match=0,
                    content_type="application/octet-stream",
                    retry=self.retry,
                    timeout=REQUEST_TIMEOUT,
                )
            else:
                self._send(final=True)
        self.buffer = bytearray()

    def abort(self) -> None:
        # Real GCS cancels the session; fake-gcs-server ignores the DELETE, but an unfinished
        # session is never visible at the object's name either way.
        if self.upload is not None:
            self._cancel(self.upload)
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

    def _send(self, *, final: bool) -> None:
        """Send the buffer as the object's next bytes (the last ones if `final`); on return the
        buffer has room for more (not `final`) or the object is stored and checked (`final`).

        A 308 that kept only part of a chunk moves the unacknowledged rest to the front of the
        buffer, and the next chunk goes when the buffer is full again: `ResumableUpload` takes
        a short read of its stream as the end of the object, so a chunk that is not the last
        must always be a whole one."""
        if not self.resumable:
            # fake-gcs-server ignores ifGenerationMatch=0 on resumable uploads, and on GCS a
            # conflict would only show at the end of a long upload: ask first, once, here
            # (small objects need no extra request: their one request is create-only).
            if self.blob.exists(retry=self.retry, timeout=REQUEST_TIMEOUT):
                raise AlreadyExists(f"{self.url} exists already")
            self.resumable = True

        def attempt() -> Any:
            unchanged = 0  # answers in a row that kept nothing new
            while True:
                upload = self._open_upload()
                before = self.start
                self.window.seek(before)
                response = self._transmit(upload)
                if upload.finished:
                    return response  # the last chunk: the object, as stored
                held = self._held(upload)
                self._acknowledged(held)
                if not final and self.filled < len(self.buffer):
                    return None
                unchanged = unchanged + 1 if held == before else 0
                if unchanged == 3 or (unchanged and not self.filled):
                    # Back to the retry policy (backoff, then give up), not a tight loop.
                    raise TransientStorageError(
                        f"{self.url}: the service keeps {held} of {before + self.filled} bytes "
                        "and takes no more"
                    )

        response = self.retry(attempt)()
        if final:
            self.filled = 0
            self._check_stored(response.json(), self.size)

    def _open_upload(self) -> Any:
        """The upload session, started (create-only) if there is none."""
        from google.resumable_media.requests import ResumableUpload

        if self.upload is None:
            upload = ResumableUpload(self.upload_url, len(self.buffer), checksum=None)
            self.window.seek(0)
            upload.initiate(
                self.transport,
                self.window,
                {"name": self.blob.name, "contentType": "application/octet-stream"},
                "application/octet-stream",
                stream_final=False,
                timeout=REQUEST_TIMEOUT,
            )
            self.upload = upload
        return self.upload

    def _transmit(self, upload: Any) -> Any:
        """The next chunk from the window; None if the library refused the answer (the upload
        is then `invalid`: `_held` decides what that means)."""
        from google.resumable_media.common import InvalidResponse

        try:
            return upload.transmit_next_chunk(self.transport, timeout=REQUEST_TIMEOUT)
        except InvalidResponse:
            if not upload.invalid:
                raise
            return None

    def _held(self, upload: Any) -> int:
        """How many bytes of the object the service holds after the last answer.

        An answer the library refused is, in practice, a 308 without a Range header: GCS's way
        to say it holds nothing. The library's `recover()` would ask with `Content-Range:
        bytes */*`, but fake-gcs-server (v1.54.0) takes that as the end of the upload and
        stores the object as it is (empty); so, with nothing acknowledged yet, a new session
        is started instead (the abandoned one holds nothing and is cancelled)."""
        if not upload.invalid:
            return cast(int, upload.bytes_uploaded)
        if self.start:
            raise StorageError(
                f"{self.url}: the upload session gave an answer without the bytes it holds "
                f"after {self.start} were acknowledged; write the object again"
            )
        self._cancel(upload)
        self.upload = None
        return 0

    def _acknowledged(self, held: int) -> None:
        """Drop from the buffer what the service holds now (`held` bytes of the object)."""
        kept = held - self.start
        if not 0 <= kept <= self.filled:
            raise StorageError(
                f"{self.url}: the upload session reports {held} bytes stored after "
                f"{self.start + self.filled} were sent ({self.start} acknowledged before); "
                "write the object again"
            )
        if kept:
            view = memoryview(self.buffer)
            view[: self.filled - kept] = view[kept : self.filled]  # no copy of the rest
            self.filled -= kept
            self.start = held

    def _cancel(self, upload: Any) -> None:
        if upload.resumable_url is not None:
            with contextlib.suppress(Exception):
                self.session.request("DELETE", upload.resumable_url, timeout=REQUEST_TIMEOUT)

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


class _BufferWindow:
    """The stream `ResumableUpload` reads the object from: the part of it still in the writer's
    buffer, at the object's offsets. Reads are views of the buffer, not copies, so a request
    body costs no memory of its own."""

    def __init__(self, writer: CreateOnlyWriter) -> None:
        self._writer = writer
        self._position = 0

    def tell(self) -> int:
        return self._position

    def seek(self, position: int, whence: int = io.SEEK_SET) -> int:
        start, filled = self._writer.start, self._writer.filled
        if whence != io.SEEK_SET or not start <= position <= start + filled:
            raise StorageError(
                f"{self._writer.url}: the upload needs bytes from {position}, and only "
                f"{start}-{start + filled} are still held; write the object again"
            )
        self._position = position
        return position

    def read(self, size: int = -1) -> memoryview:
        writer = self._writer
        begin = self._position - writer.start
        end = writer.filled if size < 0 else min(writer.filled, begin + size)
        self._position += end - begin
        return memoryview(writer.buffer)[begin:end]


class _OneAttemptTransport:
    """The session as `ResumableUpload`'s transport, one attempt per request.

    The library retries failed requests itself (its own backoff, for up to 10 minutes, not
    logged); every failure here is an exception it does not catch, so the storage retry policy
    is the only one (backoff, deadline, a log line per retry), and the library sees only the
    answers it handles itself (200, 308)."""

    def __init__(self, session: Any, url: str) -> None:
        self._session = session
        self._url = url

    def request(
        self,
        method: str,
        url: str,
        data: Any = None,
        headers: Any = None,
        timeout: Any = REQUEST_TIMEOUT,
        **kwargs: Any,
    ) -> Any:
        try:
            response = self._session.request(
                method, url, data=data, headers=headers, timeout=timeout, **kwargs
            )
        except Exception as exc:
            if not is_transient(exc):
                raise
            raise TransientStorageError(
                f"{self._url}: the upload's {method} request failed: "
                f"{redact(f'{type(exc).__name__}: {exc}')[:300]}"
            ) from exc
        if method == "PUT" and response.status_code in (404, 410):
            response.close()
            raise StorageError(
                f"{self._url}: the upload session has expired; write the object again"
            )
        if response.status_code >= 400:
            _raise_for_status(response, f"uploading {self._url}")
        return response


def _raise_for_status(response: Any, doing: str) -> None:
    from google.api_core import exceptions as gexc

    if response.status_code < 300:
        return
    text = redact(response.text[:300])
    response.close()
    raise gexc.from_http_status(response.status_code, f"{doing}: {text}")
