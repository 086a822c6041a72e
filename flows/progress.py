"""How far a run is, told to whoever in this process listens (the command's progress display).

The flows already count finished shards for the progress artifact; they also `publish` each
count here. Publishing is a function call per finished shard, and with no listener (a worker,
a deployment run) it does nothing. Listeners are called in the flow's own thread and must be
quick.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class RunProgress:
    """One moment of a run: shards finished (`done`, of which `failed`) of `total`."""

    stage: str  # what the shards go through: "build", "verify", "repair"
    total: int
    done: int = 0
    failed: int = 0
    samples: int = 0
    bytes: int = 0


Listener = Callable[[RunProgress], None]
_listeners: list[Listener] = []
_lock = threading.Lock()


def publish(progress: RunProgress) -> None:
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        listener(progress)


@contextlib.contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Call `listener` with every `RunProgress` published while the block runs."""
    with _lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(listener)
