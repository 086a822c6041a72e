"""The installed `objectron-wds` command as a person meets it, run as a subprocess against the
real emulator: refusals in under 2 s with one line and no traceback, expected failures without
a traceback, a live progress display in a real pseudo-terminal, periodic lines without one, a
closing table, and a temporary Prefect server that ends with the command even after SIGKILL."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from prefect.utilities.callables import parameter_schema

from flows.cli import convert_parameters, frames_parameters
from flows.convert import objectron_to_wds
from flows.frames import objectron_to_frames
from tasks.storage import open_storage
from tests.conftest import SourceBucket

COMMAND = str(Path(sys.executable).parent / "objectron-wds")
ROOT = Path(__file__).resolve().parent.parent


def run(
    args: list[str], env: dict[str, str] | None = None, timeout: float = 300
) -> tuple[int, str, float]:
    started = time.monotonic()
    result = subprocess.run(
        [COMMAND, *args], env=env or dict(os.environ), cwd=ROOT, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip
    return result.returncode, result.stdout + result.stderr, time.monotonic() - started


def with_api(prefect_server: str) -> dict[str, str]:
    return {**os.environ, "PREFECT_API_URL": prefect_server}


@pytest.mark.parametrize(
    ("flow", "read_parameters"),
    [(objectron_to_wds, convert_parameters), (objectron_to_frames, frames_parameters)],
    ids=["convert", "frames"],
)
def test_the_options_are_the_flow_parameters_prefect_shows_in_its_form(
    flow: Any, read_parameters: Any
) -> None:
    """flows/options.py reads the signature and docstring without Prefect; Prefect's own schema
    (the UI form) must say the same, and every parameter has a description there."""
    schema = parameter_schema(flow.fn).model_dump()
    properties = schema["properties"]
    ours = read_parameters()
    assert all(properties[name].get("description") for name in properties), properties
    assert [p.name for p in ours] == sorted(properties, key=lambda n: properties[n]["position"])
    for parameter in ours:
        prop = properties[parameter.name]
        assert parameter.description == " ".join(prop.get("description", "").split()), parameter
        assert parameter.required == (parameter.name in schema.get("required", []))
        if not parameter.required:
            assert parameter.default == prop.get("default"), parameter.name
        types = {prop.get("type")} | {o.get("type") for o in prop.get("anyOf", [])}
        assert parameter.kind in types, (parameter.name, types)
        assert parameter.nullable == ("null" in types), parameter.name
        if parameter.choices:
            assert list(parameter.choices) == prop["enum"]


BAD_PARAMETERS = [
    (["--shard-size", "0"], "shard_size must be a whole number of samples >= 1, got 0"),
    (["--shard-size", "x"], "argument --shard-size: 'x' is not a whole number"),
    (["--max-shards", "-1"], "max_shards must be a whole number >= 1"),
    (["--concurrency", "0"], "concurrency must be between 1 and 64, got 0"),
    (["--concurrency", "65"], "concurrency must be between 1 and 64, got 65"),
    (["--chunk-size-mib", "0"], "chunk_size_mib must be between 1 and 256, got 0"),
    (["--series", "a b"], "series 'a b' must be letters, digits"),
    (["--split", "dev"], "argument --split: invalid choice: 'dev'"),
    (["--progress-interval", "0"], "argument --progress-interval: must be more than 0"),
    (["--parallel-runs", "0"], "parallel_runs must be a whole number from 1 to 256, got 0"),
    (["--parallel-runs", "2", "--build-plan", "p"], "give one or the other, not both"),
]


BAD_FRAME_PARAMETERS = [
    (["--stride", "0"], "stride must be a whole number >= 1 (1 = every annotated frame), got 0"),
    (["--image-size", "640"], "image_size must be WIDTHxHEIGHT (e.g. 480x640) or full, got '640'"),
    (["--image-size", "0x640"], "image_size sides must be between 1 and 8192 pixels"),
    (["--jpeg-quality", "0"], "jpeg_quality must be between 1 and 100, got 0"),
    (["--jpeg-quality", "101"], "jpeg_quality must be between 1 and 100, got 101"),
    (["--videos-per-shard", "0"], "videos_per_shard must be a whole number of videos >= 1, got 0"),
]


def test_parallel_runs_without_the_deployment_is_refused_in_one_line(
    sample_bucket: SourceBucket, new_bucket: str, prefect_server: str
) -> None:
    """The session's Prefect server has no deployments: nothing to start the runs of."""
    code, output, _ = run(
        ["convert", "--source", sample_bucket.url, "--dest", f"{new_bucket}/x",
         "--parallel-runs", "2"],
        with_api(prefect_server),
    )  # fmt: skip
    lines = output.strip().splitlines()
    assert code == 2 and len(lines) == 1, output
    assert lines[0].startswith(
        "objectron-wds convert: error: parallel_runs > 1 starts runs of the deployment "
        "'objectron-to-wds/manual', which the Prefect server at "
    ), output
    assert list(open_storage(new_bucket).list()) == []


def test_each_bad_parameter_is_refused_in_under_two_seconds_with_one_line(
    sample_bucket: SourceBucket, new_bucket: str
) -> None:
    for extra, expected in BAD_PARAMETERS:
        code, output, seconds = run(
            ["convert", "--source", sample_bucket.url, "--dest", f"{new_bucket}/x", *extra]
        )
        assert code == 2, (extra, code, output)
        assert seconds < 2.0, (extra, f"{seconds:.2f} s")
        lines = output.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], (extra, output)
        assert lines[0].startswith("objectron-wds convert: error: "), output
        assert "Traceback" not in output
    for extra, expected in BAD_FRAME_PARAMETERS:
        code, output, seconds = run(
            ["frames", "--source", sample_bucket.url, "--dest", f"{new_bucket}/x", *extra]
        )
        assert code == 2, (extra, code, output)
        assert seconds < 2.0, (extra, f"{seconds:.2f} s")
        lines = output.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], (extra, output)
        assert lines[0].startswith("objectron-wds frames: error: "), output
    code, output, seconds = run(
        [
            "frames",
            "--source",
            sample_bucket.url,
            "--dest",
            f"{new_bucket}/x",
            "--parallel-runs",
            "3",
        ]
    )
    assert code == 2 and "deployment objectron-to-frames/manual on its work pool" in output
    code, output, seconds = run(["preview", "x.tar"])
    assert code == 2 and "the following arguments are required: --out" in output
    code, output, seconds = run(["convert", "--source", sample_bucket.url])
    assert code == 2 and "the following arguments are required: --dest" in output
    assert seconds < 2.0 and len(output.strip().splitlines()) == 1
    code, output, seconds = run(["verify", "--dest", new_bucket, "--concurrency", "0"])
    assert code == 2 and output.strip() == (
        "objectron-wds verify: error: concurrency must be between 1 and 64, got 0"
    )
    assert seconds < 2.0
    assert list(open_storage(new_bucket).list()) == []


def test_missing_buckets_and_a_destination_planned_differently_fail_without_traceback(
    sample_bucket: SourceBucket, new_bucket: str, prefect_server: str
) -> None:
    env = with_api(prefect_server)
    source = sample_bucket.url
    code, output, _ = run(["convert", "--source", "gs://no-such-source", "--dest", new_bucket], env)
    assert code == 2, output
    assert "objectron-wds convert: error: source gs://no-such-source: bucket" in output
    assert "Traceback" not in output
    code, output, _ = run(["convert", "--source", source, "--dest", "gs://no-such-dest/x"], env)
    assert code == 2, output
    assert "destination gs://no-such-dest/x: bucket gs://no-such-dest does not exist" in output
    assert "Traceback" not in output
    assert list(open_storage(new_bucket).list()) == []

    common = ["--source", source, "--dest", new_bucket, "--concurrency-limit", "none",
              "--max-shards", "2", "--no-progress"]  # fmt: skip
    code, output, _ = run(["convert", *common, "--shard-size", "4"], env)
    assert code == 0, output
    before = {i.name: i.generation for i in open_storage(new_bucket).list()}
    code, output, _ = run(["convert", *common, "--shard-size", "5"], env)
    assert code == 2, output
    assert "objectron-wds convert: error: 2 shard(s) at" in output
    assert "planned differently" in output and "Traceback" not in output
    assert {i.name: i.generation for i in open_storage(new_bucket).list()} == before


def test_without_a_terminal_progress_comes_as_periodic_lines_then_a_table(
    sample_bucket: SourceBucket, new_bucket: str, prefect_server: str
) -> None:
    code, output, _ = run(
        ["convert", "--source", sample_bucket.url, "--dest", new_bucket, "--shard-size", "1",
         "--concurrency", "1", "--concurrency-limit", "none", "--progress-interval", "0.3"],
        with_api(prefect_server),
    )  # fmt: skip
    assert code == 0, output
    lines = re.findall(r"^build: (\d+)/(\d+) shards .*$", output, re.M)
    total = int(lines[-1][1])
    assert total >= 20 and int(lines[-1][0]) == total, lines
    assert len({done for done, _ in lines}) >= 3, f"progress never moved: {lines}"
    assert "| INFO" not in output, "per-task INFO lines are hidden by default"
    assert "| WARNING | Task run" in output, "warnings still show (the sample's no-split video)"
    table = output[output.index("objectron-wds convert\n") :]
    assert re.search(rf"shards\s+{total} planned: {total} built, 0 already there", table)
    assert "Traceback" not in output


def test_in_a_terminal_the_progress_display_redraws_and_finishes_at_the_total(
    sample_bucket: SourceBucket, new_bucket: str, prefect_server: str
) -> None:
    env = {**with_api(prefect_server), "TERM": "xterm-256color", "COLUMNS": "150"}
    args = ["convert", "--source", sample_bucket.url, "--dest", new_bucket, "--shard-size", "1",
            "--concurrency", "1", "--concurrency-limit", "none"]  # fmt: skip
    pid, fd = pty.fork()
    if pid == 0:  # the child: the command, on the pseudo-terminal
        os.chdir(ROOT)
        os.execve(COMMAND, [COMMAND, *args], env)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if not ready:
            continue
        try:
            data = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    screen = b"".join(chunks).decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, screen[-3000:]
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)  # colours and cursor moves
    counts = [(int(a), int(b)) for a, b in re.findall(r"(\d+)/(\d+) shards", text)]
    total = counts[-1][1]
    assert counts[-1] == (total, total) and total >= 20, counts[-5:]
    assert len({done for done, _ in counts}) >= 3, "the display never moved"
    assert "\x1b[" in screen, "no cursor control: this was not drawn as a live display"
    assert "samples" in text and "ETA" in text and "/s" in text
    assert "objectron-wds convert" in text and "Traceback" not in text


def _processes_with_home(home: Path) -> list[str]:
    """Processes whose environment names this PREFECT_HOME: the command and what it started."""
    found = []
    needle = f"PREFECT_HOME={home}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(f"{entry.name}: {(entry / 'cmdline').read_bytes()[:120]!r}")
        except OSError:
            continue
    return found


def test_a_killed_convert_leaves_no_process_behind(
    sample_bucket: SourceBucket, new_bucket: str, tmp_path: Path
) -> None:
    """No PREFECT_API_URL: the command starts its own server. SIGKILL the command mid-run: the
    server and the decode workers go with it."""
    home = tmp_path / "prefect-home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(home)
    process = subprocess.Popen(
        [COMMAND, "convert", "--source", sample_bucket.url, "--dest", new_bucket,
         "--shard-size", "1", "--concurrency", "1", "--concurrency-limit", "none",
         "--progress-interval", "0.2"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        for line in process.stdout:
            if re.match(r"build: [1-9]\d*/", line):
                break
        else:
            pytest.fail(f"the run ended before any shard was built (exit {process.wait()})")
        started = _processes_with_home(home)
        assert any("uvicorn" in p for p in started), started  # its own temporary server
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    deadline = time.monotonic() + 15
    while (left := _processes_with_home(home)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert left == [], f"left running after SIGKILL: {left}"


@pytest.mark.usefixtures("prefect_server")
def test_a_ui_or_deployment_run_fails_with_the_same_line_as_its_state_message(
    new_bucket: str,
) -> None:
    """The flow runs the command's checks itself: a run started from the UI or a deployment
    with a bad value fails with the line the command prints, and writes nothing."""
    for parameters, line in [
        ({"shard_size": 0}, "shard_size must be a whole number of samples >= 1, got 0"),
        ({"concurrency": 65}, "concurrency must be between 1 and 64, got 65"),
    ]:
        state = objectron_to_wds(dest=new_bucket, return_state=True, **parameters)
        assert state.is_failed()
        assert state.message is not None and line in state.message, state.message
    assert list(open_storage(new_bucket).list()) == []
