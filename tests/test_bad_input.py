"""Bad input: each case gets a message that names the problem, a non-zero exit from the
command, and leaves nothing written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import webdataset as wds

from flows.cli import main
from flows.convert import objectron_to_wds
from tasks.fake_gcs import FakeGcsServer
from tasks.objectron.sample_data import write_sample_dataset
from tasks.parameters import InvalidInput
from tasks.storage import open_storage
from tests.conftest import SourceBucket
from tests.fault_proxy import FaultPlan, FaultProxy

pytestmark = pytest.mark.usefixtures("prefect_server")


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["convert", "--concurrency-limit", "none", *args])
    return code, capsys.readouterr().err


def test_bad_parameters_and_locations_exit_non_zero_and_write_nothing(
    sample_bucket: SourceBucket,
    new_bucket: str,
    fake_gcs: FakeGcsServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake_gcs.create_bucket("bad-input-empty")
    bad_listing = tmp_path / "listing.txt"
    bad_listing.write_text(
        f"{sample_bucket.url}/videos/:\n\n{sample_bucket.url}/videos/x/video.MOV\n"
        "ls: cannot access something\n/etc/passwd\n"
    )
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    src = sample_bucket.url
    cases = [
        (["--source", src, "--dest", new_bucket, "--shard-size", "0"], r"shard_size must be"),
        (["--source", src, "--dest", new_bucket, "--max-shards", "-1"], r"max_shards must be"),
        (["--source", src, "--dest", new_bucket, "--concurrency", "0"], r"concurrency must be"),
        (["--source", "gs://no-such-bucket-x", "--dest", new_bucket], r"no-such-bucket-x.*exist"),
        (["--source", f"{src}/nothing/here", "--dest", new_bucket], r"no samples under"),
        (["--source", "gs://bad-input-empty", "--dest", new_bucket], r"no samples under"),
        (["--source", src, "--dest", f"{src}/shards"], r"inside the source"),
        (["--source", src, "--dest", new_bucket, "--listing-file", str(bad_listing)],
         r"line 4: 'ls: cannot access something'.*line 5: '/etc/passwd'"),
        (["--source", src, "--dest", new_bucket, "--listing-file", str(tmp_path / "nope.txt")],
         r"nope\.txt does not exist"),
        (["--source", src, "--dest", str(a_file / "shards")], r"is a file, not a folder"),
        (["--source", str(tmp_path / "no-such-folder"), "--dest", new_bucket],
         r"no-such-folder does not exist"),
    ]  # fmt: skip
    for args, expected in cases:
        code, err = run_cli(args, capsys)
        assert code == 2, (args, code, err[-1500:])
        assert re.search(expected, err, re.S), (args, err[-1500:])
        assert "Traceback" not in err.splitlines()[-1]
    assert list(open_storage(new_bucket).list()) == []
    assert list(open_storage(f"{src}/shards").list()) == []
    assert not (a_file.parent / "shards").exists()


def test_forbidden_destination_is_refused_before_anything_is_written(
    sample_bucket: SourceBucket, fake_gcs: FakeGcsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_gcs.create_bucket("bad-input-forbidden")
    proxy = FaultProxy(
        fake_gcs.url, FaultPlan(permanent=[(r"/b/bad-input-forbidden($|[/?])", 403)])
    ).start()
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        with pytest.raises(InvalidInput, match="no permission to use bucket gs://bad-input-forb"):
            objectron_to_wds(dest="gs://bad-input-forbidden", source=sample_bucket.url)
        assert proxy.injected["permanent_403"] >= 1
    finally:
        proxy.stop()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs.url)
    assert list(open_storage("gs://bad-input-forbidden").list()) == []


def test_unusual_object_names_are_refused_and_never_become_tar_paths(
    fake_gcs: FakeGcsServer, new_bucket: str, tmp_path: Path
) -> None:
    fake_gcs.create_bucket("weird-names")
    source = open_storage("gs://weird-names")
    write_sample_dataset(source, videos=2, seed=4, video_bytes=2048, placeholders=0)
    weird = ["cup/batch 1/2", "cup/bätch-1/2", "cup/../x", "cup/batch-1/2.mov", "cup/batch-1/..."]
    for key in weird:
        for name, data in (("video.MOV", b"v" * 100), ("geometry.pbdata", b"g" * 10)):
            source.create_bytes(f"videos/{key}/{name}", data)
    source.create_bytes("/videos/cup/batch-1/3/video.MOV", b"leading slash")
    summary = objectron_to_wds(
        dest=new_bucket, source=source.url, shard_size=100, concurrency_limit=None
    )
    left_out = summary["left_out"]
    assert sum(n for reason, n in left_out.items() if reason.startswith("unsafe name")) == len(
        weird
    )
    path = tmp_path / "shard.tar"
    path.write_bytes(open_storage(new_bucket).read_bytes("objectron-000000.tar"))
    import tarfile

    with tarfile.open(path) as tar:
        names = tar.getnames()
    safe = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*/[A-Za-z0-9_-]+/[A-Za-z0-9_-]+\.[a-z.]+$")
    assert names and all(safe.match(name) for name in names), names
    keys = {s["__key__"] for s in wds.WebDataset(str(path), shardshuffle=False)}
    assert not keys & set(weird)
