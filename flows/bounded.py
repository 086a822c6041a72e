"""Submit many task runs with at most `concurrency` in flight.

Submitting thousands of runs at once would queue them all in the task runner and flood the
Prefect server with events; a window keeps the load steady and starts results flowing back
(progress, artifacts) as soon as the first runs finish.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from prefect.futures import PrefectFuture, as_completed

from flows.backpressure import ServerBackPressure

R = TypeVar("R")


def run_bounded(
    submit: Callable[..., PrefectFuture[R]],
    calls: Iterable[tuple[str, tuple[Any, ...]]],
    concurrency: int,
    on_done: Callable[[str, PrefectFuture[R]], None],
    pressure: ServerBackPressure | None = None,
) -> None:
    """Call `submit(*args)` for each `(name, args)`, never more than `concurrency` unfinished,
    and `on_done(name, future)` as each finishes (in completion order). With `pressure`, also
    wait whenever the Prefect server falls too far behind in recording finished runs."""
    in_flight: dict[PrefectFuture[R], str] = {}

    def finish(future: PrefectFuture[R]) -> None:
        if pressure is not None:
            pressure.finished()
        on_done(in_flight.pop(future), future)

    for name, args in calls:
        while len(in_flight) >= concurrency:
            finish(next(as_completed(list(in_flight))))
        if pressure is not None:
            pressure.before_submit()
        in_flight[submit(*args)] = name
    for future in as_completed(list(in_flight)):
        finish(future)
