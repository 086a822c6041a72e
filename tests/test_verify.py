"""verify-shards: passes on a fresh conversion, names each damaged shard, and repair restores
byte-identical shards. Against fake-gcs-server, and once through the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.convert import objectron_to_wds
from flows.verify import VerificationFailed, verify_shards
from tasks.storage import Storage, open_storage
from tests.conftest import SourceBucket

pytestmark = pytest.mark.usefixtures("prefect_server")


def replace_object(dest: Storage, name: str, data: bytes) -> None:
    dest.delete(name)
    dest.create_bytes(name, data)


def shard(i: int) -> str:
    return f"objectron-{i:06d}.tar"


def test_verify_detects_damage_and_repair_restores_identical_shards(
    sample_bucket: SourceBucket, new_bucket: str, prefect_server: str
) -> None:
    objectron_to_wds(
        dest=new_bucket, source=sample_bucket.url, shard_size=3, max_shards=5,
        concurrency_limit=None,
    )  # fmt: skip
    dest = open_storage(new_bucket)
    originals = {shard(i): dest.read_bytes(shard(i)) for i in range(5)}
    fresh = verify_shards(dest=new_bucket)
    assert (fresh["ok"], fresh["bad"], fresh["missing"]) == (5, [], [])

    # Damage: cut mid-member, flip one byte of the first member's data, delete, and cut off
    # only the end-of-archive blocks (the tar is then still readable by tarfile).
    replace_object(dest, shard(0), originals[shard(0)][: len(originals[shard(0)]) // 2])
    flipped = bytearray(originals[shard(1)])
    flipped[1024 + 512 + 100] ^= 0xFF
    replace_object(dest, shard(1), bytes(flipped))
    dest.delete(shard(2))
    body = originals[shard(3)].rstrip(b"\0")
    replace_object(dest, shard(3), body + bytes(-len(body) % 512))

    with pytest.raises(VerificationFailed) as failure:
        verify_shards(dest=new_bucket)
    message = str(failure.value)
    for i in range(4):
        assert shard(i) in message
    assert shard(4) not in message
    report = json.loads(dest.read_bytes("verification-report.json"))
    assert report["ok"] is False
    assert report["bad"] == [shard(0), shard(1), shard(3)]
    assert report["missing"] == [shard(2)]
    verdicts = {v["shard"]: v for v in report["verdicts"]}
    assert any("CRC32C" in p for p in verdicts[shard(1)]["problems"])
    assert any("end-of-archive" in p for p in verdicts[shard(3)]["problems"])

    # The command line says the same, with a non-zero exit.
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    cli = subprocess.run(
        [sys.executable, "-m", "flows.cli", "verify", "--dest", new_bucket],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert cli.returncode == 1, cli.stderr[-2000:]
    assert shard(0) in cli.stderr and shard(2) in cli.stderr
    assert "Traceback" not in cli.stderr, "an expected failure is told in a line"

    repaired = verify_shards(dest=new_bucket, repair=True)
    assert repaired["repaired"] == [shard(0), shard(1), shard(2), shard(3)]
    assert (repaired["ok"], repaired["bad"], repaired["missing"]) == (5, [], [])
    for name, data in originals.items():
        assert dest.read_bytes(name) == data, f"{name} is not byte-identical after repair"
    assert verify_shards(dest=new_bucket)["ok"] == 5


def test_verify_local_folder_and_unplanned_tar(sample_folder: SourceBucket, tmp_path: Path) -> None:
    dest_dir = tmp_path / "shards"
    summary = objectron_to_wds(
        dest=str(dest_dir), source=sample_folder.url, shard_size=4, concurrency_limit=None
    )
    assert summary["shards"] >= 3
    assert verify_shards(dest=str(dest_dir))["ok"] == summary["shards"]
    # A run killed between committing a shard and writing its stats: still verifiable.
    (dest_dir / "objectron-000001.stats.json").unlink()
    assert verify_shards(dest=str(dest_dir))["ok"] == summary["shards"]
    (dest_dir / "stray-000000.tar").write_bytes(b"\0" * 1024)
    with pytest.raises(VerificationFailed, match=r"stray-000000\.tar"):
        verify_shards(dest=str(dest_dir))
    assert verify_shards(dest=str(dest_dir), series="objectron")["ok"] == summary["shards"]
