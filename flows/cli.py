"""The `objectron-wds` command: `convert`, `setup`, `sample-data` and `demo`.

`convert` takes every parameter of the `objectron-to-wds` flow as an option; the options and
their help text are generated from the flow's signature and docstring, so the command, the
Prefect UI form and the README describe the same parameters in the same words.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Prefect settings for a quiet, quick start on a machine without internet access. Set before
# Prefect is imported; a user's own environment wins.
OFFLINE_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "NO_GCE_CHECK": "true",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def apply_offline_defaults() -> None:
    for name, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(name, value)


def _flow_parameters() -> tuple[dict[str, dict[str, Any]], set[str]]:
    """The flow's parameters as Prefect's UI sees them: JSON schema with descriptions."""
    from prefect.utilities.callables import parameter_schema

    from flows.convert import objectron_to_wds

    schema = parameter_schema(objectron_to_wds.fn).model_dump()
    return dict(schema["properties"]), set(schema.get("required", []))


def _schema_type(prop: dict[str, Any]) -> str:
    types = [prop.get("type")] + [option.get("type") for option in prop.get("anyOf", [])]
    for candidate in ("boolean", "integer", "array", "string"):
        if candidate in types:
            return candidate
    return "string"


def _add_convert_options(parser: argparse.ArgumentParser) -> None:
    properties, required = _flow_parameters()
    for name, prop in sorted(properties.items(), key=lambda item: item[1].get("position", 0)):
        option = "--" + name.replace("_", "-")
        kind = _schema_type(prop)
        help_text = " ".join(prop.get("description", "").split())
        default = prop.get("default")
        if kind == "boolean":
            parser.add_argument(
                option, dest=name, action=argparse.BooleanOptionalAction, default=default,
                help=f"{help_text} (default: {default})",
            )  # fmt: skip
            continue
        nullable = any(o.get("type") == "null" for o in prop.get("anyOf", []))
        extra = " Pass 'none' for empty." if nullable and default is not None else ""
        parser.add_argument(
            option,
            dest=name,
            required=name in required,
            default=default,
            nargs="+" if kind == "array" else None,
            choices=prop.get("enum"),
            type=_converter(kind, nullable),
            metavar=name.upper(),
            help=f"{help_text}{extra} (default: {default})"
            if name not in required
            else f"{help_text} (required)",
        )


def _converter(kind: str, nullable: bool) -> Any:
    def convert(text: str) -> Any:
        if nullable and text.lower() in ("none", "null", ""):
            return None
        if kind == "integer":
            try:
                return int(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        return text

    return convert


def _command_convert(args: argparse.Namespace) -> int:
    from prefect.settings import PREFECT_API_URL

    from flows.dask_runner import flow_with_task_runner

    if args.task_runner == "dask" and not PREFECT_API_URL.value():
        # Dask workers are other processes: they cannot use the temporary server Prefect starts
        # for one command (they start servers of their own, which outlive the run).
        print(
            "objectron-wds convert: error: the Dask task runner needs a Prefect server that its "
            "workers can reach: start one (`prefect server start`) and set PREFECT_API_URL",
            file=sys.stderr,
        )
        return 2
    properties, _required = _flow_parameters()
    parameters = {name: getattr(args, name) for name in properties}
    summary = flow_with_task_runner(args.task_runner, args.dask_address)(**parameters)
    print(json.dumps(summary, indent=1))
    return 0


def _add_setup_options(parser: argparse.ArgumentParser) -> None:
    from deployments.setup import add_arguments

    add_arguments(parser)


def _command_setup(args: argparse.Namespace) -> int:
    from deployments.setup import SetupError, options_from_args, run_setup

    try:
        run_setup(options_from_args(args))
    except SetupError as exc:
        print(f"objectron-wds setup: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _command_verify(args: argparse.Namespace) -> int:
    from flows.verify import VerificationFailed, verify_shards

    try:
        summary = verify_shards(
            dest=args.dest, series=args.series, repair=args.repair, concurrency=args.concurrency
        )
    except VerificationFailed as exc:
        print(f"objectron-wds verify: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=1))
    return 0


def _command_sample_data(args: argparse.Namespace) -> int:
    from tasks.objectron.sample_data import write_sample_dataset
    from tasks.storage import open_storage

    dataset = write_sample_dataset(
        open_storage(args.dest), videos=args.videos, seed=args.seed, video_bytes=args.video_bytes
    )
    print(
        f"Wrote an Objectron-shaped sample dataset to {args.dest}: "
        f"{len(dataset.annotated)} annotated videos, {len(dataset.unannotated)} without "
        f"annotation, {len(dataset.placeholders)} 0-byte placeholders."
    )
    return 0


def _command_demo(args: argparse.Namespace) -> int:
    from flows.demo import run_demo

    return run_demo(
        videos=args.videos,
        shard_size=args.shard_size,
        max_shards=args.max_shards,
        keep_running=args.keep_running,
        workdir=Path(args.workdir),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="objectron-wds",
        description="Convert Objectron (gs://objectron) into WebDataset shards with Prefect.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    convert = commands.add_parser(
        "convert",
        help="run the objectron-to-wds flow once, here",
        description="Run the objectron-to-wds flow in this process (Prefect's local server or "
        "PREFECT_API_URL records it). Every option is a flow parameter.",
    )
    _add_convert_options(convert)
    convert.add_argument(
        "--task-runner",
        choices=("threads", "dask"),
        default="threads",
        help="where shard builds run: this process's thread pool, or Dask (prefect-dask) "
        "(default: threads)",
    )
    convert.add_argument(
        "--dask-address",
        metavar="ADDRESS",
        help="with --task-runner dask: an existing Dask scheduler (tcp://HOST:8786); "
        "without it a temporary local cluster is started for the run",
    )
    convert.set_defaults(handler=_command_convert)

    setup = commands.add_parser(
        "setup",
        help="create the work pool, concurrency limit, blocks and variables the deployments use",
        description="Idempotent set-up for prefect.yaml's deployments on the Prefect server "
        "at PREFECT_API_URL: run it before `prefect deploy --all`, and again to change a "
        "setting. See deployments/setup.py.",
    )
    _add_setup_options(setup)
    setup.set_defaults(handler=_command_setup)

    verify = commands.add_parser(
        "verify",
        help="check every shard at a destination against its spec (and --repair the bad ones)",
        description="Run the verify-shards flow: stream each shard, check members, sizes, "
        "CRC32C checksums, end-of-archive and webdataset grouping against its spec; write "
        "verification-report.json at the destination; exit 1 naming each bad or missing shard.",
    )
    verify.add_argument("--dest", required=True, help="the destination of a conversion")
    verify.add_argument("--series", default=None, help="only this series (default: all)")
    verify.add_argument(
        "--repair", action="store_true", help="rebuild exactly the bad and missing shards"
    )
    verify.add_argument("--concurrency", type=int, default=4, help="shards checked at once")
    verify.set_defaults(handler=_command_verify)

    sample = commands.add_parser(
        "sample-data",
        help="write an Objectron-shaped sample dataset into a bucket or folder",
        description="Write videos/, annotations/ and v1/index/ like gs://objectron, with "
        "random video bytes, valid geometry and annotation protobufs, 0-byte placeholders and "
        "videos without annotation. Set STORAGE_EMULATOR_HOST for an emulator bucket.",
    )
    sample.add_argument("--dest", required=True, help="gs://BUCKET[/PREFIX] or a local folder")
    sample.add_argument("--videos", type=int, default=24, help="annotated videos (default 24)")
    sample.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sample.add_argument(
        "--video-bytes", type=int, default=256 * 1024, help="approximate bytes per video"
    )
    sample.set_defaults(handler=_command_sample_data)

    demo = commands.add_parser(
        "demo",
        help="start a local GCS emulator, write sample data, convert it, read it back",
        description="Everything local: starts fake-gcs-server on 127.0.0.1, writes a sample "
        "dataset to gs://objectron in it, converts to gs://objectron-wds-demo, reads the "
        "shards back with webdataset and prints how to do the same.",
    )
    demo.add_argument("--videos", type=int, default=24, help="annotated videos (default 24)")
    demo.add_argument("--shard-size", type=int, default=3, help="samples per shard (default 3)")
    demo.add_argument("--max-shards", type=int, default=5, help="shards to build (default 5)")
    demo.add_argument(
        "--keep-running",
        action="store_true",
        help="keep the emulator running after the demo (Ctrl-C stops it)",
    )
    demo.add_argument(
        "--workdir",
        default="demo-output",
        help="folder for the emulator log and a local copy of the shards (default demo-output)",
    )
    demo.set_defaults(handler=_command_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    apply_offline_defaults()
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        print("Interrupted. Completed shards stay; run the same command again to resume.")
        return 130
    except Exception as exc:
        from tasks.checks import InvalidInput

        # Bad input gets its message alone; anything else keeps the traceback in the logs above.
        kind = "error" if isinstance(exc, InvalidInput) else type(exc).__name__
        print(f"objectron-wds {args.command}: {kind}: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, InvalidInput) else 1


if __name__ == "__main__":
    sys.exit(main())
