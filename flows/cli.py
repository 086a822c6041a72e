"""The `objectron-wds` command: `convert`, `frames`, `preview`, `verify`, `setup`, `sample-data`
and `demo`.

`convert` and `frames` take every parameter of their flow (`objectron-to-wds`,
`objectron-to-frames`) as an option; the options and
their help text come from the flow's signature and docstring (flows/options.py reads them
without importing Prefect), so the command, the Prefect UI form and the README describe the same
parameters in the same words.

How a command meets a person:
- A bad parameter is refused before Prefect is imported, any server starts or any storage is
  touched: one line naming the parameter, its value and what is allowed; exit 2. The flows run
  the same checks (tasks/parameters.py), so a UI or deployment run fails with the same line.
- Source and destination are checked before the run starts (exit 2, nothing written).
- Without PREFECT_API_URL the command starts a temporary Prefect server of its own, which ends
  with the command, also when the command is killed (flows/server.py).
- While it runs: a live progress display on a terminal, a line every few seconds otherwise;
  Prefect's per-task INFO lines only with -v (warnings and errors always).
- At the end: a short table (or `--json`). Expected failures print their message, never a
  traceback; an unexpected error keeps its traceback.

Exit codes: 0 done; 1 the run ended but is incomplete (shards failed to build, verification
found bad or missing shards, a storage error); 2 refused, nothing written (a bad parameter, an
unusable source or destination, a destination planned differently, no samples); 3 an
unexpected error (its traceback is shown); 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from flows.options import FlowParameter, add_flow_options, flow_parameters
from tasks.parameters import (
    InvalidInput,
    check_concurrency,
    check_parallel_runs,
    validate_frame_parameters,
    validate_parameters,
)

if TYPE_CHECKING:
    from flows.server import TemporaryPrefectServer

EXIT_OK, EXIT_INCOMPLETE, EXIT_REFUSED, EXIT_UNEXPECTED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
# Seconds between progress lines when the output is not a terminal (CI logs, pipes).
DEFAULT_PROGRESS_INTERVAL = 10.0

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


class Refused(Exception):
    """The command will not run as asked; the message says why (exit 2)."""


def convert_parameters() -> list[FlowParameter]:
    return flow_parameters("convert.py", "objectron_to_wds")


def frames_parameters() -> list[FlowParameter]:
    return flow_parameters("frames.py", "objectron_to_frames")


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (and a pointer to --help) instead of the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_REFUSED, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# --- running flows from the command -------------------------------------------------------


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Failures the command explains in a line: their tracebacks help nobody at a terminal."""
    from flows.convert import ShardsFailed
    from flows.verify import VerificationFailed
    from tasks.storage import StorageError

    return (InvalidInput, StorageError, ShardsFailed, VerificationFailed)


@contextlib.contextmanager
def flow_session(
    args: argparse.Namespace, *, preflight: Callable[[], None] | None = None
) -> Iterator[None]:
    """Everything a flow run from the command needs around it: Prefect's server (PREFECT_API_URL,
    or a temporary one started here), the terminal's log handler, the progress display.

    `preflight` (checks of the source and destination) runs while the server starts, so a
    refused run costs no wait for it."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.server import TemporaryPrefectServer

    with contextlib.ExitStack() as stack:
        server = None
        if not _api_url_configured():
            server = TemporaryPrefectServer(Path(args.log_dir)).start()
            stack.callback(_stop_server, server)
            stack.enter_context(temporary_settings(updates={PREFECT_API_URL: server.api_url}))
        if preflight is not None:
            preflight()
        if server is not None:
            server.wait_ready()
        with _terminal(args):
            yield


def _stop_server(server: TemporaryPrefectServer) -> None:
    _flush_to_server()
    server.stop()


@contextlib.contextmanager
def _terminal(args: argparse.Namespace) -> Iterator[None]:
    """Log lines for a person, and the progress display unless --no-progress."""
    from flows.console import ProgressDisplay, terminal_console

    console = terminal_console(_console_level(args), _expected_errors(), quiet=not args.verbose)
    if args.no_progress:
        yield
        return
    display = ProgressDisplay(
        console, live=console.is_terminal, interval=args.progress_interval, out=sys.stderr
    )
    with display.showing():
        yield


def _flush_to_server() -> None:
    """Send the log lines and events still queued to the server before it stops (Prefect's
    workers send them in the background; at exit they would find the server gone)."""
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    EventsWorker.drain_all(timeout=5)


def _console_level(args: argparse.Namespace) -> int:
    if args.log_level:
        return int(logging.getLevelName(args.log_level.upper()))
    return logging.INFO if args.verbose else logging.WARNING


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """Options of every command that runs a flow: what the terminal shows."""
    shown = parser.add_argument_group("what the command shows")
    shown.add_argument(
        "-v", "--verbose", action="store_true",
        help="show Prefect's INFO log lines (each task run's start, end and counts)",
    )  # fmt: skip
    shown.add_argument(
        "--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"), type=str.upper,
        help="the lowest level of log line shown (default WARNING, INFO with -v)",
    )  # fmt: skip
    shown.add_argument("--json", action="store_true", help="print the summary as JSON")
    shown.add_argument(
        "--no-progress", action="store_true", help="no progress display or progress lines"
    )
    shown.add_argument(
        "--progress-interval", type=_positive_seconds, default=DEFAULT_PROGRESS_INTERVAL,
        metavar="SECONDS",
        help="without a terminal, a progress line every this many seconds "
        f"(default {DEFAULT_PROGRESS_INTERVAL:g})",
    )  # fmt: skip
    shown.add_argument(
        "--log-dir", default=str(Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser()),
        help="where the temporary Prefect server's log goes when one is started "
        "(default: PREFECT_HOME)",
    )  # fmt: skip


def _add_task_runner_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--task-runner",
        choices=("threads", "dask"),
        default="threads",
        help="where shard builds run: this process's thread pool, or Dask (prefect-dask) "
        "(default: threads)",
    )
    parser.add_argument(
        "--dask-address",
        metavar="ADDRESS",
        help="with --task-runner dask: an existing Dask scheduler (tcp://HOST:8786); "
        "without it a temporary local cluster is started for the run, one worker process "
        "per CPU with two threads each",
    )


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return int(text)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


# --- convert --------------------------------------------------------------------------------


def _flow_values(args: argparse.Namespace, parameters: list[FlowParameter]) -> dict[str, Any]:
    values = {parameter.name: getattr(args, parameter.name) for parameter in parameters}
    if values.get("classes") == [None]:  # `--classes none`
        values["classes"] = None
    return values


def _check_convert(values: dict[str, Any], args: argparse.Namespace) -> None:
    """The checks that need no I/O, in the flow's own words (tasks/parameters.py)."""
    if not values["dest"].strip():
        raise InvalidInput("dest is empty: give gs://BUCKET/PREFIX or a folder")
    validate_parameters(
        # `frames` plans by videos per shard; the same check, in the flow's words.
        shard_size=values["shard_size"] if "shard_size" in values else values["videos_per_shard"],
        max_shards=values["max_shards"],
        concurrency=values["concurrency"],
        chunk_size_mib=values["chunk_size_mib"],
        series=values["series"],
        shard_size_name="shard_size" if "shard_size" in values else "videos_per_shard",
    )
    check_parallel_runs(values["parallel_runs"], values["build_plan"])
    if values["parallel_runs"] > 1 and not _api_url_configured():
        flow = "objectron-to-frames" if "stride" in values else "objectron-to-wds"
        raise Refused(
            f"--parallel-runs starts runs of the deployment {flow}/manual on its work pool's "
            "workers, which need a Prefect server they can reach: start one (`prefect server "
            "start`), set PREFECT_API_URL, deploy (`prefect --no-prompt deploy --all`) and "
            "start workers on the pool"
        )
    if "stride" in values:
        validate_frame_parameters(
            stride=values["stride"],
            image_size=values["image_size"],
            jpeg_quality=values["jpeg_quality"],
        )
    _check_task_runner(args)


def _check_task_runner(args: argparse.Namespace) -> None:
    if args.dask_address and args.task_runner != "dask":
        raise Refused("--dask-address needs --task-runner dask")
    if args.task_runner == "dask" and not _api_url_configured():
        # Dask workers are other processes: they cannot use a server started for one command.
        raise Refused(
            "the Dask task runner needs a Prefect server that its workers can reach: start one "
            "(`prefect server start`) and set PREFECT_API_URL"
        )


def _api_url_configured() -> bool:
    """PREFECT_API_URL in the environment or in the user's Prefect profile."""
    if os.environ.get("PREFECT_API_URL"):
        return True
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def _check_locations(values: dict[str, Any], flow_name: str) -> None:
    from tasks.checks import check_locations

    check_locations(values["source"], values["dest"], values["listing_file"], remember=True)
    if values["parallel_runs"] > 1:
        from flows.fanout import named_deployment

        named_deployment("objectron-to-frames" if flow_name == "frames" else "objectron-to-wds")


def _run_flow_command(
    args: argparse.Namespace,
    parameters: list[FlowParameter],
    flow_name: str,
    rows: Callable[[dict[str, Any], float], list[tuple[str, str]]],
) -> int:
    """`convert` and `frames`: check, run the flow (threads or Dask), print its summary."""
    values = _flow_values(args, parameters)
    _check_convert(values, args)
    started = time.monotonic()
    with flow_session(args, preflight=lambda: _check_locations(values, flow_name)):
        from flows.convert import objectron_to_wds
        from flows.dask_runner import flow_with_task_runner
        from flows.frames import objectron_to_frames

        flow: Any = objectron_to_frames if flow_name == "frames" else objectron_to_wds
        summary = flow_with_task_runner(args.task_runner, args.dask_address, flow)(**values)
    _print_summary(args, summary, f"objectron-wds {args.command}", rows(summary, started))
    return EXIT_OK


def _command_convert(args: argparse.Namespace) -> int:
    return _run_flow_command(args, convert_parameters(), "convert", _convert_rows)


def _command_frames(args: argparse.Namespace) -> int:
    return _run_flow_command(args, frames_parameters(), "frames", _frames_rows)


def _frames_rows(summary: dict[str, Any], started: float) -> list[tuple[str, str]]:
    from flows.console import human_bytes, human_seconds

    reported = summary.get("reported") or []
    shown = "; ".join(f"{r['video']}: {r['reason']}" for r in reported[:3])
    more = f" (and {len(reported) - 3} more, in the shards' stats)" if len(reported) > 3 else ""
    return [
        ("destination", str(summary["dest"])),
        ("shards", f"{summary['shards']} planned: {summary['built']} built, "
                   f"{summary['skipped']} already there, {summary['failed']} failed"),
        ("frame samples", f"{summary['samples']:,} from {summary['videos']:,} videos"),
        ("reported videos", f"{len(reported)}: {shown}{more}" if reported else "none"),
        ("bytes", f"{summary['tar_bytes']:,} ({human_bytes(summary['tar_bytes'])})"),
        ("shard index", str(summary["index"])),
        ("preview", str(summary["preview"] or "none (no shard holds samples)")),
        ("time", human_seconds(time.monotonic() - started)),
    ]  # fmt: skip


def _convert_rows(summary: dict[str, Any], started: float) -> list[tuple[str, str]]:
    from flows.console import human_bytes, human_seconds

    left_out = summary.get("left_out") or {}
    return [
        ("destination", str(summary["dest"])),
        ("shards", f"{summary['shards']} planned: {summary['built']} built, "
                   f"{summary['skipped']} already there, {summary['failed']} failed"),
        ("samples", f"{summary['samples']:,}"),
        ("bytes", f"{summary['tar_bytes']:,} ({human_bytes(summary['tar_bytes'])})"),
        ("left out", ", ".join(f"{k}: {v}" for k, v in left_out.items()) or "nothing"),
        ("shard index", str(summary["index"])),
        ("time", human_seconds(time.monotonic() - started)),
    ]  # fmt: skip


def _print_summary(
    args: argparse.Namespace, summary: dict[str, Any], title: str, rows: list[tuple[str, str]]
) -> None:
    if args.json:
        print(json.dumps(summary, indent=1))
        return
    from flows.console import print_table

    print_table(title, rows)


# --- verify ---------------------------------------------------------------------------------


def _command_verify(args: argparse.Namespace) -> int:
    check_concurrency(args.concurrency)
    if not args.dest.strip():
        raise InvalidInput("dest is empty: give the destination of a conversion")

    def preflight() -> None:
        from tasks.storage import StorageError, open_storage

        try:
            open_storage(args.dest).check_root()
        except (StorageError, ValueError) as exc:
            raise InvalidInput(f"destination {args.dest}: {exc}") from exc

    started = time.monotonic()
    with flow_session(args, preflight=preflight):
        from flows.verify import verify_shards

        summary = verify_shards(
            dest=args.dest, series=args.series, repair=args.repair, concurrency=args.concurrency
        )
    from flows.console import human_seconds

    rows = [
        ("destination", str(summary["dest"])),
        ("shards", f"{summary['shards']}: {summary['ok']} ok"),
        ("repaired", ", ".join(summary["repaired"]) or "none"),
        ("report", str(summary["report"])),
        ("time", human_seconds(time.monotonic() - started)),
    ]
    _print_summary(args, summary, "objectron-wds verify", rows)
    return EXIT_OK


# --- the other commands ---------------------------------------------------------------------


def _command_preview(args: argparse.Namespace) -> int:
    from tasks.frames.preview import NotAFrameShard, preview_shard
    from tasks.storage import StorageError

    try:
        drawn = preview_shard(args.shard, Path(args.out), samples=args.samples)
    except (NotAFrameShard, FileNotFoundError) as exc:
        raise Refused(str(exc)) from exc
    except StorageError as exc:
        raise Refused(f"{args.shard}: {exc}") from exc
    print(f"Wrote {args.out}: {drawn} frames of {args.shard} with their boxes.")
    return EXIT_OK


def _command_setup(args: argparse.Namespace) -> int:
    from deployments.setup import SetupError, options_from_args, run_setup

    try:
        run_setup(options_from_args(args))
    except SetupError as exc:
        raise Refused(str(exc)) from exc
    return EXIT_OK


def _command_sample_data(args: argparse.Namespace) -> int:
    from tasks.objectron.sample_data import write_sample_dataset
    from tasks.storage import open_storage

    try:
        dataset = write_sample_dataset(
            open_storage(args.dest),
            videos=args.videos,
            seed=args.seed,
            video_bytes=args.video_bytes,
            frames=args.frames,
            video_size=args.video_size,
            traps=args.traps,
        )
    except ValueError as exc:  # a bad option, found before anything is written
        raise Refused(str(exc)) from exc
    kind = (
        f"H.264 videos of {args.frames} frames at {args.video_size}"
        if args.video_bytes is None
        else f"random stand-in videos of ~{args.video_bytes:,} bytes"
    )
    print(
        f"Wrote an Objectron-shaped sample dataset to {args.dest} ({kind}): "
        f"{len(dataset.annotated)} annotated videos, {len(dataset.unannotated)} without "
        f"annotation, {len(dataset.placeholders)} 0-byte placeholders; traps: "
        f"short {dataset.short_videos}, corrupt {dataset.corrupt_videos}, "
        f"wrong category {dataset.wrong_category}."
    )
    return EXIT_OK


def _command_demo(args: argparse.Namespace) -> int:
    from flows.demo import run_demo

    with flow_session(args):
        return run_demo(
            videos=args.videos,
            shard_size=args.shard_size,
            max_shards=args.max_shards,
            keep_running=args.keep_running,
            workdir=Path(args.workdir),
        )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="objectron-wds",
        description="Convert Objectron (gs://objectron) into WebDataset shards with Prefect.",
        epilog="Exit codes: 0 done; 1 finished incomplete (failed shards, bad shards found); "
        "2 refused, nothing written; 3 unexpected error; 130 interrupted.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    convert = commands.add_parser(
        "convert",
        help="run the objectron-to-wds flow once, here",
        description="Run the objectron-to-wds flow in this process (recorded by the Prefect "
        "server at PREFECT_API_URL, or by a temporary one that ends with the command). Every "
        "option before the last groups is a flow parameter.",
    )
    add_flow_options(convert, convert_parameters())
    _add_task_runner_options(convert)
    _add_run_options(convert)
    convert.set_defaults(handler=_command_convert)

    frames = commands.add_parser(
        "frames",
        help="run the objectron-to-frames flow once, here: a JPEG and labels per annotated frame",
        description="Run the objectron-to-frames flow in this process: decode the annotated "
        "videos and write one sample (KEY.jpg, KEY.json) per selected frame, recorded like "
        "convert. Every option before the last groups is a flow parameter.",
    )
    add_flow_options(frames, frames_parameters())
    _add_task_runner_options(frames)
    _add_run_options(frames)
    frames.set_defaults(handler=_command_frames)

    preview = commands.add_parser(
        "preview",
        help="draw a contact sheet of a frame shard's samples with their boxes",
        description="Read the first samples of a frame shard (a local path or gs:// URL) and "
        "draw them in a grid with each object's 12 box edges from its labels: the picture to "
        "look at to trust the labels.",
    )
    preview.add_argument("shard", help="a frame shard: path or gs://BUCKET/PATH/NAME.tar")
    preview.add_argument("--out", required=True, help="the JPEG to write (e.g. preview.jpg)")
    preview.add_argument(
        "--samples", type=_positive_int, default=16, help="frames to draw (default 16)"
    )
    preview.set_defaults(handler=_command_preview)

    setup = commands.add_parser(
        "setup",
        help="create the work pool, concurrency limit, blocks and variables the deployments use",
        description="Idempotent set-up for prefect.yaml's deployments on the Prefect server "
        "at PREFECT_API_URL: run it before `prefect deploy --all`, and again to change a "
        "setting. See deployments/setup.py.",
    )
    from deployments.setup import add_arguments

    add_arguments(setup)
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
    verify.add_argument(
        "--concurrency", type=int, default=4, help="shards checked at once (default 4)"
    )
    _add_run_options(verify)
    verify.set_defaults(handler=_command_verify)

    sample = commands.add_parser(
        "sample-data",
        help="write an Objectron-shaped sample dataset into a bucket or folder",
        description="Write videos/, annotations/ and v1/index/ like gs://objectron: real "
        "H.264 videos (the annotated box and a frame counter drawn in every frame, about half "
        "stored landscape with a rotation tag), valid geometry and annotation protobufs, 0-byte "
        "placeholders, videos without annotation, and traps (a video shorter than its "
        "annotation, one that does not decode, a wrong category). Set STORAGE_EMULATOR_HOST "
        "for an emulator bucket.",
    )
    sample.add_argument("--dest", required=True, help="gs://BUCKET[/PREFIX] or a local folder")
    sample.add_argument("--videos", type=int, default=24, help="annotated videos (default 24)")
    sample.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sample.add_argument(
        "--frames", type=int, default=12, help="frames per video (default 12; at most 1024)"
    )
    sample.add_argument(
        "--video-size",
        default="192x256",
        help="upright WIDTHxHEIGHT of the videos (default 192x256; Objectron's is 1440x1920)",
    )
    sample.add_argument(
        "--video-bytes",
        type=int,
        default=None,
        help="random stand-in bytes of about this size instead of real videos (for benchmarks "
        "that only move bytes)",
    )
    sample.add_argument(
        "--traps",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a short video, a corrupt video and a wrong category (default on)",
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
    _add_run_options(demo)
    demo.set_defaults(handler=_command_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    apply_offline_defaults()
    args = build_parser().parse_args(argv)
    prog = f"objectron-wds {args.command}"
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        print(
            f"{prog}: interrupted. Completed shards stay; run the same command again to resume.",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except (InvalidInput, Refused) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except Exception as exc:
        if isinstance(exc, _expected_errors()):
            print(f"{prog}: {exc}", file=sys.stderr)
            return EXIT_INCOMPLETE
        traceback.print_exc()
        print(f"{prog}: unexpected error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_UNEXPECTED


if __name__ == "__main__":
    sys.exit(main())
