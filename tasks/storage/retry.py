"""Which storage errors are worth retrying, and the client-side retry policy of every GCS call."""

from __future__ import annotations

import logging
from typing import Any

from tasks.storage.base import StorageError, TransientStorageError
from tasks.storage.secrets import redact

# Seconds one HTTP request may take (connect, read) before it counts as stalled and is retried.
REQUEST_TIMEOUT = (10.0, 60.0)
_log = logging.getLogger("objectron_wds.storage")


def _log_retry(exc: Exception) -> None:
    """Called by the client's retry loop before each retry: makes retries visible in the flow's
    logs (Prefect's run logger when there is a run, the module logger otherwise)."""
    message = f"transient storage error, retrying: {redact(f'{type(exc).__name__}: {exc}')[:300]}"
    try:
        from prefect import get_run_logger

        get_run_logger().warning(message)
    except Exception:
        _log.warning(message)


def storage_retry() -> Any:
    """The client-side retry of every GCS call: transient errors only, exponential backoff."""
    from google.api_core.retry import Retry

    return Retry(
        predicate=is_transient, initial=0.5, maximum=8.0, multiplier=2.0, timeout=180.0,
        on_error=_log_retry,
    )  # fmt: skip


TRANSIENT_HTTP_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying: HTTP 408/429/5xx, connection resets, timeouts, bodies cut
    short. Looks through the whole exception chain, since client libraries wrap these. Missing
    objects, permissions and changed sources are permanent: retrying would only delay the
    message."""
    import http.client

    import requests
    import urllib3

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StorageError) and not isinstance(current, TransientStorageError):
            return False
        if isinstance(current, TransientStorageError):
            return True
        code = getattr(current, "code", None)
        if isinstance(code, int) and code in TRANSIENT_HTTP_STATUS:
            return True
        status = getattr(getattr(current, "response", None), "status_code", None)
        if isinstance(status, int) and status in TRANSIENT_HTTP_STATUS:
            return True
        if isinstance(
            current,
            ConnectionError
            | TimeoutError
            | http.client.IncompleteRead
            | http.client.BadStatusLine
            | requests.ConnectionError
            | requests.Timeout
            | requests.exceptions.ChunkedEncodingError
            | urllib3.exceptions.ProtocolError
            | urllib3.exceptions.TimeoutError,
        ):
            return True
        current = current.__cause__ or current.__context__
    return False
