"""The README's reading example runs as printed, against a shard this project built."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flows.convert import objectron_to_wds
from tests.conftest import SourceBucket

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.usefixtures("prefect_server")
def test_readme_example_prints_class_frames_and_keypoints(
    sample_folder: SourceBucket, tmp_path: Path
) -> None:
    block = re.search(
        r"<!-- example: read-one-sample.*?-->\n```python\n(.*?)```", README.read_text(), re.S
    )
    assert block, "the README lost its example block"
    objectron_to_wds(
        dest=str(tmp_path / "demo-output" / "shards"), source=sample_folder.url, shard_size=6,
        max_shards=1, only_with_anno=True, concurrency_limit=None,
    )  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", block.group(1)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split(": ")[1] in {"bike", "book", "bottle", "camera", "cereal_box",
                                       "chair", "cup", "laptop", "shoe"}  # fmt: skip
    assert int(lines[1].split(": ")[1]) == 12  # the sample generator writes 12 frames
    keypoints = ast.literal_eval(lines[2].split(": ", 1)[1])  # 9 printed [x, y, depth]
    assert len(keypoints) == 9 and all(len(k) == 3 for k in keypoints)
