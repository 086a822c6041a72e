"""`objectron-wds setup`: create what the deployments in prefect.yaml need, idempotently.

Run it against the Prefect server the workers use (PREFECT_API_URL), before
`prefect deploy --all`, and again whenever a setting changes; each run creates what is
missing and updates what it was given, and nothing else:

- the process work pool (created if missing; an existing pool and its job template are kept);
- the tag concurrency limit that bounds shard builds across all runs and workers;
- a result storage block for the build task's cache records: a `LocalFileSystem` block (one
  machine), or a prefect-gcp `GcsBucket` block (any number of machines);
- a prefect-gcp `GcpCredentials` block, when given a service-account key file or told to use
  the machine's application default credentials;
- Prefect variables that prefect.yaml reads at deploy time: the default source and destination
  of the deployments, the result storage block, the credentials block the flow runs' storage
  clients use, and the Dask scheduler address.

Nothing here holds a bucket name or credential of its own: they come from the options.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_POOL = "objectron-wds-process"
DEFAULT_LIMIT = "objectron-wds-build"
DEFAULT_BUILD_SLOTS = 4
RESULTS_BLOCK = "objectron-wds-results"
GCP_CREDENTIALS_BLOCK = "objectron-wds-gcp"
DEFAULT_SOURCE = "gs://objectron"

# Prefect variables read by prefect.yaml (`{{ prefect.variables.NAME }}`) at deploy time.
VAR_SOURCE = "objectron_wds_source"
VAR_DEST = "objectron_wds_dest"
# The frames deployment's destination: its own place, never mixed with video shards.
VAR_FRAMES_DEST = "objectron_wds_frames_dest"
VAR_RESULT_STORAGE = "objectron_wds_result_storage"
VAR_DASK_ADDRESS = "objectron_wds_dask_address"
# The GcpCredentials block the pipeline's storage clients use (tasks/storage/ reads the
# environment variable that prefect.yaml sets from this); empty = application defaults.
VAR_GCP_CREDENTIALS = "objectron_wds_gcp_credentials_block"


class SetupError(ValueError):
    """The options cannot give a working set-up; nothing further was changed."""


@dataclass(frozen=True)
class SetupOptions:
    pool: str = DEFAULT_POOL
    limit_name: str = DEFAULT_LIMIT
    build_slots: int = DEFAULT_BUILD_SLOTS
    source: str | None = None
    dest: str | None = None
    frames_dest: str | None = None
    result_storage: str | None = None
    gcp_key_file: Path | None = None
    gcp_adc: bool = False
    gcp_project: str | None = None
    dask_address: str | None = None


def ensure_process_pool(client: Any, name: str) -> str:
    """Create the process work pool if it is missing; keep an existing one as it is."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.workers.process import ProcessWorker

    try:
        client.create_work_pool(
            WorkPoolCreate(
                name=name,
                type="process",
                base_job_template=ProcessWorker.get_default_base_job_template(),
                description="objectron-wds: flow runs as processes on the worker's machine",
            )
        )
    except ObjectAlreadyExists:
        pool = client.read_work_pool(name)
        if pool.type != "process":
            raise SetupError(
                f"work pool {name!r} exists with type {pool.type!r}, not 'process'; "
                "choose another --pool name"
            ) from None
        return f"work pool {name!r}: exists (kept)"
    return f"work pool {name!r}: created (type process)"


def ensure_concurrency_limit(client: Any, tag: str, slots: int) -> str:
    """Create the concurrency limit on `tag`, or set an existing one to `slots` and activate it.

    It is a tag limit (kept by Prefect 3 as the global limit `tag:TAG`, listed in the UI under
    Concurrency): the task engine takes the slot before a build task run starts running and
    gives it back after the run ends, so the UI's Running build task runs are the slot holders.
    """
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
    )
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    from tasks.policy import tag_limit_name

    if slots < 1:
        raise SetupError(f"--build-slots must be at least 1, got {slots}")
    name = tag_limit_name(tag)
    try:
        # Read first: creating one that exists makes the server log an integrity error.
        client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        try:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=slots, active=True)
            )
            return f"concurrency limit on tag {tag!r}: created with {slots} slots"
        except ObjectAlreadyExists:
            pass  # created meanwhile by another setup: update it below
    client.update_global_concurrency_limit(
        name, GlobalConcurrencyLimitUpdate(limit=slots, active=True)
    )
    return f"concurrency limit on tag {tag!r}: set to {slots} slots"


def save_gcp_credentials(
    key_file: Path | None, use_adc: bool, project: str | None, block_name: str
) -> str | None:
    """Save a GcpCredentials block from a key file (its contents are stored in the block as a
    secret, so workers need no copy of the file) or from application default credentials.
    Returns None when neither was asked for."""
    from prefect_gcp import GcpCredentials

    if key_file is not None:
        try:
            info = json.loads(Path(key_file).read_text())
        except (OSError, ValueError) as exc:
            raise SetupError(f"--gcp-key-file {key_file}: {exc}") from exc
        credentials = GcpCredentials(service_account_info=info, project=project)
    elif use_adc:
        # Resolves the machine's application default credentials now (google.auth.default).
        credentials = GcpCredentials(project=project)
    else:
        return None
    credentials.save(block_name, overwrite=True)
    return f"gcp-credentials/{block_name}"


def save_result_storage(
    location: str, block_name: str, credentials_block: str | None
) -> tuple[str, str]:
    """Save the result storage block for cache records; returns (block slug, description).

    `location` is a local folder (one machine) or gs://BUCKET[/PREFIX] (shared by all workers,
    needs a GcpCredentials block).
    """
    if location.startswith("gs://"):
        from prefect_gcp import GcpCredentials, GcsBucket

        bucket, _, folder = location.removeprefix("gs://").partition("/")
        if not bucket:
            raise SetupError(f"--result-storage {location!r} names no bucket")
        if credentials_block is None:
            raise SetupError(
                "a gs:// result storage needs GCP credentials: pass --gcp-key-file or --gcp-adc"
            )
        block_name_of_credentials = credentials_block.split("/", 1)[1]
        GcsBucket(
            bucket=bucket,
            bucket_folder=folder.strip("/"),
            gcp_credentials=GcpCredentials.load(block_name_of_credentials),
        ).save(block_name, overwrite=True)
        return f"gcs-bucket/{block_name}", f"GCS {location}"
    from prefect.filesystems import LocalFileSystem

    path = Path(location.removeprefix("file://")).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    LocalFileSystem(basepath=str(path)).save(block_name, overwrite=True)
    return f"local-file-system/{block_name}", f"local folder {path} (this machine only)"


def _read_variable(name: str) -> str | None:
    from prefect.variables import Variable

    value = Variable.get(name, default=None)
    return None if value is None else str(value)


def _set_variable(name: str, value: str) -> None:
    from prefect.variables import Variable

    Variable.set(name, value, overwrite=True)


def run_setup(options: SetupOptions, say: Callable[[str], None] = print) -> None:
    """Create or update everything; `say` gets one line per object."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME

    if options.dest is None and _read_variable(VAR_DEST) is None:
        raise SetupError(
            "--dest is needed the first time: the deployments' default destination "
            "(gs://BUCKET/PREFIX or a folder), stored as the Prefect variable "
            f"{VAR_DEST}"
        )
    say(f"Prefect API: {PREFECT_API_URL.value() or 'none set (a temporary local server)'}")
    with get_client(sync_client=True) as client:
        say(ensure_process_pool(client, options.pool))
        say(ensure_concurrency_limit(client, options.limit_name, options.build_slots))

    credentials = save_gcp_credentials(
        options.gcp_key_file, options.gcp_adc, options.gcp_project, GCP_CREDENTIALS_BLOCK
    )
    say(
        f"block {credentials}: saved"
        if credentials
        else "GCP credentials block: not changed (give --gcp-key-file or --gcp-adc to save one)"
    )

    stored_storage = _read_variable(VAR_RESULT_STORAGE)
    if options.result_storage is not None or not stored_storage:
        location = options.result_storage or str(PREFECT_HOME.value() / "objectron-wds-results")
        slug, where = save_result_storage(location, RESULTS_BLOCK, credentials)
        _set_variable(VAR_RESULT_STORAGE, slug)
        say(f"block {slug}: saved, cache records go to {where}")
    else:
        say(f"result storage: {stored_storage} (kept)")

    dest = options.dest or _read_variable(VAR_DEST) or ""
    for name, value, default in (
        (VAR_SOURCE, options.source, DEFAULT_SOURCE),
        (VAR_DEST, options.dest, None),
        (VAR_FRAMES_DEST, options.frames_dest, default_frames_dest(dest)),
        (VAR_DASK_ADDRESS, options.dask_address, ""),
        (VAR_GCP_CREDENTIALS, credentials.split("/", 1)[1] if credentials else None, ""),
    ):
        current = _read_variable(name)
        if value is not None:
            _set_variable(name, value)
            say(f"variable {name} = {value!r}")
        elif current is None and default is not None:
            _set_variable(name, default)
            say(f"variable {name} = {default!r} (default)")
        else:
            say(f"variable {name} = {current!r} (kept)")
    say("Next: prefect --no-prompt deploy --all, then prefect worker start --pool " + options.pool)


def default_frames_dest(dest: str) -> str:
    """Beside the video shards, not inside them: `gs://b/objectron-wds` -> `gs://b/objectron-wds-frames`."""
    return f"{dest.rstrip('/')}-frames"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pool", default=DEFAULT_POOL, help=f"process work pool name (default {DEFAULT_POOL})"
    )
    parser.add_argument(
        "--limit-name",
        default=DEFAULT_LIMIT,
        help="tag of the concurrency limit on shard builds; the flow's concurrency_limit "
        f"parameter names it (default {DEFAULT_LIMIT})",
    )
    parser.add_argument(
        "--build-slots",
        type=int,
        default=DEFAULT_BUILD_SLOTS,
        help="shard builds at the same time across all runs and workers "
        f"(default {DEFAULT_BUILD_SLOTS})",
    )
    parser.add_argument(
        "--source", help=f"the deployments' default source (first time: {DEFAULT_SOURCE})"
    )
    parser.add_argument(
        "--dest", help="the deployments' default destination: gs://BUCKET/PREFIX or a folder"
    )
    parser.add_argument(
        "--frames-dest",
        help="the frames deployment's default destination (first time: DEST-frames, beside "
        "the video shards)",
    )
    parser.add_argument(
        "--result-storage",
        help="where the build task's cache records go: a folder (one machine) or "
        "gs://BUCKET/PREFIX (all workers; needs GCP credentials). First time: "
        "$PREFECT_HOME/objectron-wds-results",
    )
    parser.add_argument(
        "--gcp-key-file",
        type=Path,
        help=f"service-account JSON key to store in the GcpCredentials block "
        f"{GCP_CREDENTIALS_BLOCK!r}",
    )
    parser.add_argument(
        "--gcp-adc",
        action="store_true",
        help="save the GcpCredentials block with this machine's application default credentials",
    )
    parser.add_argument("--gcp-project", help="GCP project for the GcpCredentials block")
    parser.add_argument(
        "--dask-address",
        help="Dask scheduler for the `dask` deployment (tcp://HOST:8786); 'none' = a temporary "
        "local cluster per run",
    )


def options_from_args(args: argparse.Namespace) -> SetupOptions:
    dask = args.dask_address
    return SetupOptions(
        pool=args.pool,
        limit_name=args.limit_name,
        build_slots=args.build_slots,
        source=args.source,
        dest=args.dest,
        frames_dest=args.frames_dest,
        result_storage=args.result_storage,
        gcp_key_file=args.gcp_key_file,
        gcp_adc=args.gcp_adc,
        gcp_project=args.gcp_project,
        dask_address="" if dask is not None and dask.lower() == "none" else dask,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.setup", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        run_setup(options_from_args(args))
    except SetupError as exc:
        print(f"setup: error: {exc}")
        return 2
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
