"""Operational policy shared by the Prefect tasks: which failures are retried, and how.

Only transient storage faults (HTTP 408/429/5xx, connection resets, timeouts, reads cut short)
are retried, with growing delays. A missing object, a permission error, a changed source or a
plan conflict fails at once: retrying would only delay the message.
"""

from __future__ import annotations

from typing import Any

from prefect.tasks import exponential_backoff

from tasks.storage import is_transient

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
