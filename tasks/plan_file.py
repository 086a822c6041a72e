"""The plan file: what a run that fans out hands to the runs it starts.

`SERIES.plan.json` at the destination lists every shard of the plan with its spec digest. The
specs themselves are already there (tasks/specs.py), so a child run needs nothing else to build:
it skips listing, assembling and planning, and its parameters stay small (Prefect shows and
stores them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from tasks.parameters import InvalidInput
from tasks.storage import ObjectNotFound, Storage


@dataclass(frozen=True)
class PlanFile:
    series: str
    frames: bool
    digests: dict[str, str]  # shard name (SERIES-NNNNNN.tar) -> spec digest, in plan order


def plan_file_name(series: str) -> str:
    return f"{series}.plan.json"


def write_plan_file(dest: Storage, plan: PlanFile) -> str:
    """Write (or replace: the same plan gives the same bytes) the plan file; returns its name."""
    name = plan_file_name(plan.series)
    document = {"series": plan.series, "frames": plan.frames, "shards": plan.digests}
    dest.replace_bytes(name, (json.dumps(document, indent=1) + "\n").encode())
    return name


def read_plan_file(dest: Storage, name: str) -> PlanFile:
    """The plan file `name` at `dest`.

    Raises:
        InvalidInput: it is missing or is not a plan file.
    """
    try:
        document = json.loads(dest.read_bytes(name))
        return PlanFile(
            series=str(document["series"]),
            frames=bool(document["frames"]),
            digests={str(k): str(v) for k, v in document["shards"].items()},
        )
    except ObjectNotFound:
        raise InvalidInput(
            f"no plan file {dest.url_for(name)}: build_plan names the plan file that a run "
            "with parallel_runs > 1 wrote at the same destination; leave it empty to plan"
        ) from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidInput(f"{dest.url_for(name)} is not a plan file: {exc}") from None
