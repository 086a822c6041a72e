"""What a conversion run shows in the Prefect UI while and after it runs: a progress artifact
that moves as shards finish, and a table with one row per shard.

(The markdown summary with the shard index location is written by flows/convert.py.)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import cast
from uuid import UUID

from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from tasks.build import ShardStats

PROGRESS_KEY = "objectron-wds-progress"
TABLE_KEY = "objectron-wds-shards"
STATUS_FAILED = "failed"
# Errors are cut in the table; the run's log and markdown summary have the whole message.
MAX_ERROR_CHARS = 300


@dataclass(frozen=True)
class ShardRow:
    """One row of the shard table."""

    shard: str
    samples: int
    bytes: int
    status: str  # built / exists / cached / failed
    seconds: float
    error: str = ""


class RunReport:
    """Progress and per-shard rows of one flow run, published as Prefect artifacts.

    The progress artifact is updated only when the whole percentage changes, so a run of
    thousands of shards makes at most about a hundred API calls for it.
    """

    def __init__(self, total: int, description: str) -> None:
        self.total = total
        self.description = description
        self.rows: list[ShardRow] = []
        self._shown = 0
        # The sync twin returns the id here (a flow body is not a running event loop).
        self._artifact_id = cast(
            UUID,
            create_progress_artifact(
                progress=0.0, key=PROGRESS_KEY, description=self._progress_text()
            ),
        )

    @property
    def done(self) -> int:
        return len(self.rows)

    @property
    def percent(self) -> float:
        return 100.0 if self.total == 0 else round(100.0 * self.done / self.total, 2)

    def _progress_text(self) -> str:
        failed = sum(row.status == STATUS_FAILED for row in self.rows)
        return f"{self.description}: {self.done} of {self.total} shards finished, {failed} failed"

    def shard_finished(self, stats: ShardStats) -> None:
        self._add(
            ShardRow(stats.shard, stats.samples, stats.tar_bytes, stats.status, stats.seconds)
        )

    def shard_failed(self, shard: str, error: str) -> None:
        self._add(ShardRow(shard, 0, 0, STATUS_FAILED, 0.0, error[:MAX_ERROR_CHARS]))

    def _add(self, row: ShardRow) -> None:
        self.rows.append(row)
        if int(self.percent) != self._shown or self.done == self.total:
            self._shown = int(self.percent)
            update_progress_artifact(
                self._artifact_id, progress=self.percent, description=self._progress_text()
            )

    def publish_table(self) -> None:
        """The shard table, in shard-name order (shards finish in any order)."""
        create_table_artifact(
            table=[asdict(row) for row in sorted(self.rows, key=lambda row: row.shard)],
            key=TABLE_KEY,
            description=f"{self.description}: one row per shard",
        )
