"""The benchmark script keeps working: its tiny mode runs end to end and prints every row.

No timing is asserted (benchmarks are not timed tests); the figures themselves are in
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CELL = re.compile(r"(?<!\\)\|")  # a table cell boundary: a `|` not escaped as `\|`


@pytest.mark.slow
def test_benchmark_script_smoke(prefect_server: str, tmp_path: Path) -> None:
    env = dict(os.environ)
    env.pop("STORAGE_EMULATOR_HOST", None)  # the script starts its own emulator
    report = tmp_path / "bench.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "--smoke",
            # frames.py's rows have their own smoke test below (they would run twice).
            "--only",
            "throughput,memory,planning,planning-frames,overhead,scaling",
            "--prefect-api-url",
            prefect_server,
            "--json",
            str(report),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    rows = [[cell.strip() for cell in CELL.split(line.strip()[1:-1])] for line in table]
    keys = {row[0] for row in rows[1:]}  # rows[0] is the header
    expected = {"1a", "1b", "1c", "1d", "2", "2n", "2nx", "2nf", "2f", "3", "3l", "3s", "5", "5f"}
    expected |= {"4 1 MB", "4 3 MB"}
    expected |= {"6 c=2", "7 c=1", "7 c=2"}
    assert expected <= keys, f"rows missing: {sorted(expected - keys)}\n{result.stdout}"
    assert report.exists()
    # Every row has all seven columns filled in up to the target (the verdict may be blank).
    for row in rows[1:]:
        assert len(row) == 7, row
        assert all(row[:6]), row


@pytest.mark.slow
def test_frames_benchmark_quick(tmp_path: Path) -> None:
    """benchmarks/frames.py --quick: makes its videos and source folders, runs ffmpeg,
    decode_frames and the frame shard build side by side and prints every row (no timing
    asserted; the RSS rows are whole numbers of MiB; the build wrote every frame)."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "frames.py"), "--quick",
         "--cache", str(tmp_path / "cache"), "--json", str(tmp_path / "frames.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    rows = {row[0]: row for row in ([c.strip() for c in CELL.split(line.strip()[1:-1])]
                                    for line in table[1:])}  # fmt: skip
    expected = {"F 480x640", "F full", "FB 480x640", "FB full", "FB cost"} | {
        f"{p} rss {n} {s}" for p in ("F", "FB") for n in (10, 40) for s in ("box", "full")
    }
    assert expected <= set(rows), f"rows missing: {sorted(expected - set(rows))}\n{result.stdout}"
    for prefix in ("F", "FB"):
        assert "480x640" in rows[f"{prefix} 480x640"][2]  # the quick 360x480 scaled up to the box
        assert "360x480" in rows[f"{prefix} full"][2]  # upright: stored 480x360, 90-degree matrix
    for n in (10, 40):  # the build decoded and wrote every frame of the video
        assert rows[f"FB rss {n} box"][3].startswith(f"{n} frames built"), rows[f"FB rss {n} box"]
    assert re.search(r"[\d.]+ core-hours, \d+ GB", rows["FB cost"][2]), rows["FB cost"]
    for key in expected:  # every cell up to the target filled, as run.py's table wants
        assert len(rows[key]) == 7 and all(rows[key][:6]), rows[key]
        if key == "FB cost":
            continue
        assert re.fullmatch(r"\d+ MiB", rows[key][2]) or "frames/s" in rows[key][2], rows[key]
    assert (tmp_path / "frames.json").exists()
