"""What the command shows in a terminal: Prefect's log lines filtered for a person, a live
progress display (or a line every few seconds without a terminal), and a closing table.

Prefect prints every INFO line of every task run (about four per shard) and a traceback for
every failed task run. In the command those are noise: per-task INFO lines are hidden unless
asked for (`-v`), warnings and errors always show, and an *expected* failure (bad input, an
unusable location, failed shards) shows as its message, without the traceback; an unexpected
error keeps its traceback. The Prefect UI still gets every log line with its traceback: only
the terminal's handler is changed.
"""

from __future__ import annotations

import copy
import logging
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from flows.progress import RunProgress, listening


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def human_seconds(seconds: float) -> str:
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return (
        f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
    )


# --- log lines ----------------------------------------------------------------------------


class TerminalLogHandler(logging.Handler):
    """Prefect's log lines, in Prefect's format, printed through the progress display's console
    (so they appear above the bar, not through it), without the traceback of an expected error.

    A copy of the record is changed, never the record itself: Prefect's API handler (which sends
    the traceback to the UI) formats the same record."""

    def __init__(
        self,
        console: Console,
        formatter: logging.Formatter | None,
        expected: tuple[type[BaseException], ...],
        level: int,
    ) -> None:
        super().__init__(level=level)
        self.console = console
        self.expected = expected
        self.setFormatter(formatter or logging.Formatter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            exc = record.exc_info[1] if record.exc_info else None
            if exc is not None and isinstance(exc, self.expected):
                record = copy.copy(record)
                record.exc_info, record.exc_text = None, None
            text = self.format(record)
            self.console.print(text, soft_wrap=True, markup=False, highlight=False)
        except Exception:
            self.handleError(record)


# Loggers whose warnings say nothing a person can act on; shown with -v.
CHATTY_LOGGERS = ("urllib3.connectionpool",)  # "Connection pool is full, discarding connection"


def terminal_console(
    level: int, expected: tuple[type[BaseException], ...], *, quiet: bool = True
) -> Console:
    """Replace Prefect's console handler (on the root logger) by a `TerminalLogHandler` at
    `level`; returns the console (stderr) that the progress display must share."""
    from prefect.logging.handlers import PrefectConsoleHandler

    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR if quiet else logging.NOTSET)

    console = Console(stderr=True)
    root = logging.getLogger()
    formatter = None
    for handler in list(root.handlers):
        if isinstance(handler, PrefectConsoleHandler | TerminalLogHandler):
            formatter = formatter or handler.formatter
            root.removeHandler(handler)
    root.addHandler(TerminalLogHandler(console, formatter, expected, level))
    return console


# --- progress -------------------------------------------------------------------------------


class _Throughput(ProgressColumn):
    """Bytes written per second since the stage started, recomputed at every refresh."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        rate = task.fields.get("bytes", 0) / elapsed if elapsed > 0 else 0.0
        return Text(f"{human_bytes(rate)}/s", style="progress.data.speed")


class ProgressDisplay:
    """Shows `RunProgress` as it is published: a live bar on a terminal, otherwise one line
    every `interval` seconds (and one when a stage ends)."""

    def __init__(self, console: Console, *, live: bool, interval: float, out: IO[str]) -> None:
        self.console = console
        self.live = live
        self.interval = interval
        self.out = out
        self._latest: RunProgress | None = None
        self._started: dict[str, float] = {}
        self._tasks: dict[str, TaskID] = {}
        self._printed: RunProgress | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._progress = Progress(
            TextColumn("[bold]{task.description:<7}"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TextColumn("shards"),
            TextColumn("{task.fields[samples]:,} samples"),
            TextColumn("{task.fields[size]}"),
            _Throughput(),
            TextColumn("ETA"),
            TimeRemainingColumn(compact=True),
            TextColumn("[red]{task.fields[failed_text]}"),
            console=console,
            transient=False,
            refresh_per_second=4,
        )

    def update(self, progress: RunProgress) -> None:
        with self._lock:
            self._started.setdefault(progress.stage, time.monotonic())
            self._latest = progress
            if self.live:
                self._show_live(progress)
            elif progress.done == progress.total and progress != self._printed:
                self._print_line(progress)

    def _show_live(self, progress: RunProgress) -> None:
        fields: dict[str, Any] = {
            "samples": progress.samples,
            "bytes": progress.bytes,
            "size": human_bytes(progress.bytes),
            "failed_text": f"{progress.failed} failed" if progress.failed else "",
        }
        task = self._tasks.get(progress.stage)
        if task is None:
            task = self._tasks[progress.stage] = self._progress.add_task(
                progress.stage, total=progress.total, **fields
            )
        self._progress.update(task, completed=progress.done, total=progress.total, **fields)

    def line(self, progress: RunProgress) -> str:
        elapsed = time.monotonic() - self._started.get(progress.stage, time.monotonic())
        percent = 100.0 if not progress.total else 100.0 * progress.done / progress.total
        rate = progress.bytes / elapsed if elapsed > 0 else 0.0
        if progress.done == progress.total:
            eta = f"done in {human_seconds(elapsed)}"
        elif progress.done:
            eta = f"ETA {human_seconds(elapsed / progress.done * (progress.total - progress.done))}"
        else:
            eta = "ETA unknown"
        return (
            f"{progress.stage}: {progress.done}/{progress.total} shards ({percent:.0f}%), "
            f"{progress.samples:,} samples, {human_bytes(progress.bytes)}, "
            f"{human_bytes(rate)}/s, {progress.failed} failed, {eta}"
        )

    def _print_line(self, progress: RunProgress) -> None:
        print(self.line(progress), file=self.out, flush=True)
        self._printed = progress

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                if self._latest is not None and self._latest != self._printed:
                    self._print_line(self._latest)

    @contextmanager
    def showing(self) -> Iterator[None]:
        """Listen to the flows' progress while the block runs."""
        ticker = None
        if self.live:
            self._progress.start()
        else:
            ticker = threading.Thread(target=self._tick, name="progress-lines", daemon=True)
            ticker.start()
        try:
            with listening(self.update):
                yield
        finally:
            self._stop.set()
            if ticker is not None:
                ticker.join()
            if self.live:
                self._progress.stop()


# --- the closing summary ----------------------------------------------------------------------


def summary_table(title: str, rows: Sequence[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left", box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for name, value in rows:
        table.add_row(name, value)
    return table


def print_table(title: str, rows: Sequence[tuple[str, str]], out: IO[str] = sys.stdout) -> None:
    Console(file=out, soft_wrap=True).print(summary_table(title, rows))
