"""Operational policy shared by the Prefect tasks: which failures are retried, and how.

Only transient storage faults (HTTP 408/429/5xx, connection resets, timeouts, reads cut short)
are retried, with growing delays. A missing object, a permission error, a changed source or a
plan conflict fails at once: retrying would only delay the message.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from prefect.tasks import exponential_backoff

from tasks.storage import StorageError, TransientStorageError, is_transient, redact

F = TypeVar("F", bound=Callable[..., Any])

TRANSIENT_RETRIES = 4


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """`retry_condition_fn` for Prefect tasks: retry only transient storage errors."""
    try:
        state.result()
    except Exception as exc:
        return is_transient(exc)
    return False


RETRY_POLICY: dict[str, Any] = {
    "retries": TRANSIENT_RETRIES,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_if_transient,
}


def tag_limit_name(tag: str) -> str:
    """The global concurrency limit behind a tag limit: Prefect 3 keeps tag limits as global
    limits named `tag:TAG`, and the task engine takes a slot of each of a task run's tags before
    the run enters Running and gives it back after the run's final state."""
    return f"tag:{tag}"


def existing_tag_limit(tag: str | None) -> str | None:
    """`tag` if an active concurrency limit on that tag exists on the Prefect server, else None.

    The flow tags build task runs only when a limit is behind the tag, and says so once when
    there is none, so that a name with no limit is visible instead of silently bounding nothing.
    """
    if not tag:
        return None
    from prefect import get_run_logger
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(tag_limit_name(tag))
        except ObjectNotFound:
            get_run_logger().warning(
                "No concurrency limit on tag %r: builds are bounded only by this run's "
                "`concurrency`. `objectron-wds setup` creates it.",
                tag,
            )
            return None
    if not limit.active:
        get_run_logger().warning("The concurrency limit on tag %r is inactive: not used", tag)
        return None
    return tag


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not e for e in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def redact_errors(fn: F) -> F:
    """Task functions raise no credential: an exception whose text (or whose causes' text, which
    Prefect logs with the traceback and keeps in the task's state) holds a token or key is
    replaced by a redacted copy, transient-ness kept, its chain cut. Server error bodies are the
    usual carrier: some echo request headers."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            chain = _chain(exc)
            if all(redact(str(e)) == str(e) for e in chain):
                raise
            message = redact(f"{type(exc).__name__}: {exc}")
            if isinstance(exc, StorageError) and not isinstance(exc, TransientStorageError):
                raise type(exc)(redact(str(exc))) from None
            if is_transient(exc):
                raise TransientStorageError(message) from None
            raise StorageError(message) from None

    return wrapper  # type: ignore[return-value]
