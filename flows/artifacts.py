"""What a conversion run shows in the Prefect UI while and after it runs: a progress artifact
that moves as shards finish, and a table with one row per shard.

(The markdown summary with the shard index location is written by flows/convert.py.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import cast
from uuid import UUID

from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from flows.progress import RunProgress, publish
from tasks.stats import ShardStats

PROGRESS_KEY = "objectron-wds-progress"
TABLE_KEY = "objectron-wds-shards"
STATUS_FAILED = "failed"
# Errors are cut in the table; the run's log and markdown summary have the whole message.
MAX_ERROR_CHARS = 300
# The progress artifact is updated at most this often (and for the last shard and each
# failure). Each update is a synchronous API call of 20-30 ms in the flow's own thread, which
# submits the builds: once per whole percent it cost about 11 ms per shard at 250 shards.
PROGRESS_EVERY_SECONDS = 5.0


@dataclass(frozen=True)
class ShardRow:
    """One row of the shard table."""

    shard: str
    samples: int
    bytes: int
    status: str  # built / exists / cached / failed
    seconds: float
    error: str = ""
    # Frame shards: the videos that gave no samples, with the reason (shown only for frames).
    reported: str = ""


class RunReport:
    """Progress and per-shard rows of one flow run, published as Prefect artifacts.

    The progress artifact moves when the whole percentage has changed and at least
    PROGRESS_EVERY_SECONDS have passed, at once when a shard fails, and always for the last
    shard; so it is exact at the end and costs the run a call every few seconds at most.
    """

    def __init__(
        self,
        total: int,
        description: str,
        clock: Callable[[], float] = time.monotonic,
        *,
        frames: bool = False,
    ) -> None:
        self.total = total
        self.frames = frames
        self.description = description
        self.rows: list[ShardRow] = []
        self._clock = clock
        self._shown = 0
        self._shown_at = clock()
        self._failed = self._samples = self._bytes = 0
        self._complete_elsewhere = 0
        # The sync twin returns the id here (a flow body is not a running event loop).
        self._artifact_id = cast(
            UUID,
            create_progress_artifact(
                progress=0.0, key=PROGRESS_KEY, description=self._progress_text()
            ),
        )
        publish(self.progress())

    @property
    def done(self) -> int:
        return max(len(self.rows), self._complete_elsewhere)

    @property
    def percent(self) -> float:
        return 100.0 if self.total == 0 else round(100.0 * self.done / self.total, 2)

    def progress(self) -> RunProgress:
        """The counts so far, for the command line's progress display (flows/progress.py)."""
        return RunProgress(
            stage="build",
            total=self.total,
            done=self.done,
            failed=self._failed,
            samples=self._samples,
            bytes=self._bytes,
        )

    def _progress_text(self) -> str:
        return (
            f"{self.description}: {self.done} of {self.total} shards finished, "
            f"{self._failed} failed"
        )

    def shards_complete_elsewhere(self, complete: int) -> None:
        """While other runs build the plan (a fan-out's children): `complete` of its shards are
        at the destination. Counted as finished until this run's own rows catch up."""
        self._complete_elsewhere = complete
        publish(self.progress())
        now = self._clock()
        if int(self.percent) != self._shown and now - self._shown_at >= PROGRESS_EVERY_SECONDS:
            self._shown, self._shown_at = int(self.percent), now
            update_progress_artifact(
                self._artifact_id, progress=self.percent, description=self._progress_text()
            )

    def shard_finished(self, stats: ShardStats) -> None:
        reported = "; ".join(f"{r.video}: {r.reason}" for r in stats.reported)
        self._add(
            ShardRow(
                stats.shard,
                stats.samples,
                stats.tar_bytes,
                stats.status,
                stats.seconds,
                reported=reported[:MAX_ERROR_CHARS],
            )
        )

    def shard_failed(self, shard: str, error: str) -> None:
        self._add(ShardRow(shard, 0, 0, STATUS_FAILED, 0.0, error[:MAX_ERROR_CHARS]))

    def _add(self, row: ShardRow) -> None:
        self.rows.append(row)
        # Running totals: summing the rows on every shard would be quadratic in the run.
        self._failed += row.status == STATUS_FAILED
        self._samples += row.samples
        self._bytes += row.bytes
        publish(self.progress())
        now = self._clock()
        due = int(self.percent) != self._shown and now - self._shown_at >= PROGRESS_EVERY_SECONDS
        if due or row.status == STATUS_FAILED or len(self.rows) == self.total:
            self._shown, self._shown_at = int(self.percent), now
            update_progress_artifact(
                self._artifact_id, progress=self.percent, description=self._progress_text()
            )

    def publish_table(self) -> None:
        """The shard table, in shard-name order (shards finish in any order)."""
        rows = [asdict(row) for row in sorted(self.rows, key=lambda row: row.shard)]
        if not self.frames:
            for row in rows:
                del row["reported"]
        create_table_artifact(
            table=rows,
            key=TABLE_KEY,
            description=f"{self.description}: one row per shard",
        )
