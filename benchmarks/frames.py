"""Frames: the frame shard build, and its decoder alone, against the FFmpeg command line a user
would run.

    .venv/bin/python benchmarks/frames.py            # full: 270-frame videos, 3 repetitions
    .venv/bin/python benchmarks/frames.py --quick    # smoke test: small and short
    .venv/bin/python benchmarks/run.py --only frames # the same rows in run.py's table

The videos are made once (PyAV + libx264) into a cache folder and reused: 1440x1920 upright,
stored landscape 1920x1440 with a display matrix that turns them 90 degrees clockwise (as
Objectron's iPhone videos are), 30 fps, ~20 Mbit/s of moving gradients and noise so the decoder
has a real bitstream to chew on. In one run, alternating: `ffmpeg -i video -vf scale=480:640
-q:v 3 DIR/%06d.jpg` (imageio-ffmpeg's binary; its autorotate turns the frames upright) and the
same at full size, against decode_frames at 480x640 and full size (jpeg_quality 90), each JPEG
written to a file in a temporary folder as ffmpeg does, and against the real shard builder,
`tasks.frames.shard.write_frame_samples` (labels and tar included: "build" below), over a local
source folder in Objectron's layout whose video.MOV is the same cached video (hard-linked) and
whose geometry and annotation come from tasks.objectron.sample_data for as many frames (every
frame annotated; the keypoints do not match these pixels, which the build does not need). Then
the peak RSS of a fresh Python process decoding every frame of a 30- and a 1000-frame video,
and of one building the shard of each (VmHWM: ru_maxrss is carried over exec from the forked
parent on Linux).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__ in (None, ""):  # `python benchmarks/frames.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import av
import numpy as np

if TYPE_CHECKING:
    from benchmarks.harness import Bench, Row

ROOT = Path(__file__).resolve().parent.parent

# Stored landscape as Objectron's are; the display matrix turns it upright (portrait).
STORED_WIDTH, STORED_HEIGHT = 1920, 1440
# PyAV's set_display_rotation takes counter-clockwise degrees: -90 = turn 90 degrees clockwise.
DISPLAY_ROTATION_CCW = -90
FPS = 30
BIT_RATE = 20_000_000
# Bump when the generated content changes, so stale cached videos are not reused.
GENERATOR_VERSION = 1


@dataclass(frozen=True)
class FramesConfig:
    """Sizes of a run: `frames` per speed video, repetitions, the RSS videos' lengths."""

    frames: int = 270  # ~9 s at 30 fps, an Objectron video
    reps: int = 3
    rss_frames: tuple[int, ...] = (30, 1000)
    stored_size: tuple[int, int] = (STORED_WIDTH, STORED_HEIGHT)


QUICK = FramesConfig(frames=20, reps=1, rss_frames=(10, 40), stored_size=(480, 360))


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "objectron-wds" / "bench-frames"


# --- the videos ------------------------------------------------------------------------------


def video_path(cache: Path, frames: int, stored_size: tuple[int, int]) -> Path:
    width, height = stored_size
    bit_rate = BIT_RATE * width * height // (STORED_WIDTH * STORED_HEIGHT)
    name = f"v{GENERATOR_VERSION}-{width}x{height}-{frames}f-{bit_rate // 1000}k.mov"
    return cache / name


def ensure_video(cache: Path, frames: int, stored_size: tuple[int, int]) -> Path:
    """The cached video, made first if missing (written to a temporary name, then renamed, so
    an interrupted run leaves no half video behind)."""
    path = video_path(cache, frames, stored_size)
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".partial-{os.getpid()}.mov")
    write_video(partial, frames, stored_size)
    partial.replace(path)
    return path


def write_video(path: Path, frames: int, stored_size: tuple[int, int]) -> None:
    """H.264 (libx264 `veryfast`: CABAC, B-frames, deblocking, as a phone's encoder uses) at
    ~20 Mbit/s for 1920x1440, scaled by area for smaller test sizes.

    The picture is a sum of gradients that drift at different speeds, a fixed noise texture
    that pans (motion the encoder can predict) and fresh per-frame sensor noise (which it
    cannot), so the bitrate is spent as on a real video rather than on a flat picture."""
    width, height = stored_size
    rng = np.random.default_rng(15)
    texture = rng.integers(0, 48, size=(height + 64, width + 64), dtype=np.uint8)
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    xs = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    bit_rate = BIT_RATE * width * height // (STORED_WIDTH * STORED_HEIGHT)
    with av.open(str(path), "w", format="mov") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = bit_rate
        stream.options = {
            "preset": "veryfast",
            "maxrate": str(bit_rate * 3 // 2),
            "bufsize": str(bit_rate * 2),
        }
        stream.set_display_rotation(DISPLAY_ROTATION_CCW)
        for index in range(frames):
            t = index / FPS
            wave = 60 * np.sin(6.0 * xs + 2.0 * t) + 50 * np.cos(4.0 * ys - 1.3 * t)
            dx, dy = (3 * index) % 64, (2 * index) % 64
            luma = 100 + wave + texture[dy : dy + height, dx : dx + width]
            luma += rng.integers(0, 12, size=(height, width), dtype=np.uint8)
            y_plane = np.clip(luma, 16, 235).astype(np.uint8)
            u_plane = (128 + 40 * np.sin(3.0 * xs[:, ::2] + t) + 0 * ys[::2]).astype(np.uint8)
            v_plane = (128 + 40 * np.cos(3.0 * ys[::2] - t) + 0 * xs[:, ::2]).astype(np.uint8)
            yuv = np.concatenate(
                [y_plane, u_plane.reshape(height // 4, width), v_plane.reshape(height // 4, width)]
            )
            frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


# --- measuring ---------------------------------------------------------------------------------

# The box of Objectron's records, and the target of the issue.
BOX = (480, 640)
TARGET_RATIO = 0.9
RSS_LIMIT_MIB = 400
# The frame build's options: the flow's defaults (stride 1, quality 90, seed 0).
JPEG_QUALITY = 90
SHUFFLE_SEED = 0
# The video key of the benchmark's source folder (any valid CLASS/batch-I/J).
SOURCE_KEY = "cup/batch-1/0"
# Objectron's annotated frames ("4M annotated images" in its paper and README), for the cost
# of a full run at stride 1.
OBJECTRON_ANNOTATED_FRAMES = 4_000_000


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_ffmpeg(video: Path, out: Path, scaled: bool) -> dict[str, Any]:
    """The command a user would run (autorotate on, FFmpeg's default threads: all cores)."""
    args = [ffmpeg_exe(), "-v", "error", "-i", str(video)]
    if scaled:
        args += ["-vf", f"scale={BOX[0]}:{BOX[1]}"]
    args += ["-q:v", "3", str(out / "%06d.jpg")]
    cpu = children_cpu()
    started = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True)
    seconds = time.perf_counter() - started
    files = sorted(out.iterdir())
    return {
        "seconds": seconds,
        "cpu_seconds": children_cpu() - cpu,
        "frames": len(files),
        "bytes": sum(f.stat().st_size for f in files),
    }


def run_ours(video: Path, out: Path, scaled: bool, frames: int) -> dict[str, Any]:
    """decode_frames in a fresh Python process (`--child`), every frame written to a file:
    its own timing and CPU (from the call on, as ffmpeg's includes its start but Python's
    imports are not part of a build), and its ru_maxrss (the whole process's peak RSS)."""
    args = [sys.executable, str(Path(__file__).resolve()), "--child", str(video), str(out),
            str(frames), "box" if scaled else "full"]  # fmt: skip
    result = subprocess.run(args, check=True, capture_output=True, text=True)
    measured: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return measured


def child(video: str, out: str, frames: int, size: str) -> dict[str, Any]:
    """What `--child` runs: decode every frame, write each JPEG to OUT/NNNNNN.jpg."""
    from tasks.frames.video import decode_frames

    image_size = BOX if size == "box" else None
    cpu = time.process_time()  # this process's CPU, every thread: not the interpreter's start
    started = time.perf_counter()
    count = total = 0
    width = height = 0
    for frame in decode_frames(
        video, range(frames), needed_frames=frames, image_size=image_size, jpeg_quality=90
    ):
        with open(os.path.join(out, f"{frame.frame_id + 1:06d}.jpg"), "wb") as handle:
            handle.write(frame.jpeg)
        count += 1
        total += len(frame.jpeg)
        width, height = frame.width, frame.height
    return {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,
        "frames": count,
        "bytes": total,
        "size": f"{width}x{height}",
        # VmHWM, the peak of this process's own memory: ru_maxrss would do, but Linux carries
        # it over exec from the forked parent (the benchmark, ~130 MiB with its imports).
        "maxrss_kib": vm_hwm_kib(),
        "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def source_folder(cache: Path, video: Path, frames: int) -> Path:
    """A local source in Objectron's layout holding one annotated video, SOURCE_KEY: the cached
    `video` hard-linked as its video.MOV (copied where a link cannot be made), geometry and
    annotation of `frames` frames from the sample data (every frame annotated). Rewritten
    each run (about a second for 1000 frames), so a changed sample data module is picked up."""
    from tasks.objectron.sample_data import build_annotation, build_geometry, sample_values

    root = cache / f"source-{video.stem}"
    folder = root / "videos" / SOURCE_KEY
    annotation = root / "annotations" / f"{SOURCE_KEY}.pbdata"
    folder.mkdir(parents=True, exist_ok=True)
    annotation.parent.mkdir(parents=True, exist_ok=True)
    values = sample_values(SOURCE_KEY, frames=frames)
    (folder / "geometry.pbdata").write_bytes(build_geometry(values))
    annotation.write_bytes(build_annotation(values))
    movie = folder / "video.MOV"
    if not (movie.exists() and movie.samefile(video)):
        movie.unlink(missing_ok=True)
        try:
            os.link(video, movie)
        except OSError:
            shutil.copyfile(video, movie)
    return root


def run_build(source: Path, out: Path, scaled: bool) -> dict[str, Any]:
    """write_frame_samples in a fresh Python process (`--child-build`), as run_ours."""
    args = [sys.executable, str(Path(__file__).resolve()), "--child-build", str(source),
            str(out), "box" if scaled else "full"]  # fmt: skip
    result = subprocess.run(args, check=True, capture_output=True, text=True)
    measured: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return measured


def child_build(source_root: str, out: str, size: str) -> dict[str, Any]:
    """What `--child-build` runs: plan the source folder's one frame shard as the flow does
    (listing, assemble only_with_anno, plan, make_spec with FrameOptions; not timed), then
    build it as tasks.build.build_shard does (timed): a create-only tar in a local folder
    (fsynced, linked into place) with its digest header, `write_frame_samples`, the tar's end.
    Claims, stats files and the Prefect task around it are left out; they cost milliseconds
    per shard (benchmarks row 6), not per frame."""
    from tasks.frames.shard import write_frame_samples
    from tasks.listing import list_source_api
    from tasks.planning import plan_shards
    from tasks.samples import assemble_samples
    from tasks.specs import FrameOptions, make_spec
    from tasks.storage.local import LocalStorage
    from tasks.tar import DIGEST_COMMENT_PREFIX, TarStreamWriter

    source = LocalStorage(Path(source_root))
    dest = LocalStorage(Path(out))
    samples = assemble_samples(list_source_api(source), only_with_anno=True).samples
    (plan,) = plan_shards(samples, shard_size=1, shuffle_seed=SHUFFLE_SEED, series="frames")
    options = FrameOptions(
        stride=1,
        image_size=f"{BOX[0]}x{BOX[1]}" if size == "box" else "full",
        jpeg_quality=JPEG_QUALITY,
        shuffle_seed=SHUFFLE_SEED,
    )
    spec = make_spec(plan, source.url, frames=options)
    base = vm_status_kib("VmRSS")  # the interpreter with the pipeline's modules imported
    cpu = time.process_time()
    started = time.perf_counter()
    with dest.open_create(spec.shard) as handle:
        tar = TarStreamWriter(handle)
        tar.write_global_header({"comment": f"{DIGEST_COMMENT_PREFIX}{spec.digest}"})
        result = write_frame_samples(tar, source, spec)
        tar.close()
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu
    peak = vm_hwm_kib()
    if result.reported:
        raise RuntimeError(f"the benchmark video was reported: {result.reported}")
    jpeg = [m.size for m in result.members if m.name.endswith(".jpg")]
    labels = [m.size for m in result.members if m.name.endswith(".json")]
    first_labels = next(m.name for m in result.members if m.name.endswith(".json"))
    with tarfile.open(Path(out) / spec.shard) as archive:
        extracted = archive.extractfile(first_labels)
        assert extracted is not None
        image = json.loads(extracted.read())["image"]
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "frames": result.samples,
        "bytes": tar.offset,
        "jpeg_bytes": sum(jpeg),
        "json_bytes": sum(labels),
        "size": f"{image['width']}x{image['height']}",
        "maxrss_kib": peak,
        "base_kib": base,
        "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def vm_hwm_kib() -> int:
    return vm_status_kib("VmHWM")


def vm_status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (VmHWM: peak RSS; VmRSS: now)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def measure(cache: Path, config: FramesConfig, log: Any = print) -> dict[str, Any]:
    """All the measurements of one run: speed triples (ffmpeg, decode_frames, the build) at
    both sizes alternating over `reps`, then RSS of the decoder and of the build."""
    video = ensure_video(cache, config.frames, config.stored_size)
    source = source_folder(cache, video, config.frames)
    log(f"Frames: video {video} ({video.stat().st_size / 1e6:.1f} MB, {config.frames} frames); "
        f"source folder {source}")  # fmt: skip
    kinds = ["ffmpeg box", "ours box", "build box", "ffmpeg full", "ours full", "build full"]
    results: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    for rep in range(config.reps):
        order = kinds[rep % len(kinds) :] + kinds[: rep % len(kinds)]
        for kind in order:
            measured = _measure_one(kind, video, source, config.frames)
            results[kind].append(measured)
            log(f"  rep {rep + 1} {kind:11}: {measured['fps']:6.1f} frames/s, "
                f"{measured['seconds']:6.2f} s, cpu {measured['cpu_seconds']:.1f} s, "
                f"{measured['frames']} frames, {measured['bytes'] / 1e6:.1f} MB")  # fmt: skip
    rss: dict[str, dict[str, Any]] = {}
    for frames in config.rss_frames:
        rss_video = ensure_video(cache, frames, config.stored_size)
        rss_source = source_folder(cache, rss_video, frames)
        for tool in ("ours", "build"):
            for size in ("box", "full"):
                measured = _measure_one(f"{tool} {size}", rss_video, rss_source, frames)
                key = f"{frames} {size}" if tool == "ours" else f"build {frames} {size}"
                rss[key] = measured
                log(f"  rss {key:15}: {measured['maxrss_kib'] / 1024:6.1f} MiB peak (VmHWM; "
                    f"ru_maxrss {measured['ru_maxrss_kib'] / 1024:.1f}), "
                    f"{measured['frames']} frames")  # fmt: skip
    return {"speed": results, "rss": rss, "video": str(video), "config": vars(config)}


def _measure_one(kind: str, video: Path, source: Path, frames: int) -> dict[str, Any]:
    """One measurement of `kind` ("ffmpeg box", "ours full", "build box", ...) into a fresh
    temporary folder, removed afterwards."""
    tool, size = kind.split()
    scaled = size == "box"
    out = Path(tempfile.mkdtemp(prefix="objectron-wds-frames-"))
    try:
        if tool == "ffmpeg":
            measured = run_ffmpeg(video, out, scaled)
        elif tool == "ours":
            measured = run_ours(video, out, scaled, frames)
        else:
            measured = run_build(source, out, scaled)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    measured["fps"] = measured["frames"] / measured["seconds"]
    return measured


def make_rows(measured: dict[str, Any]) -> list[Row]:
    from benchmarks.common import median
    from benchmarks.harness import Row, yes

    speed = measured["speed"]
    rows = []
    for tool, prefix, what in (
        ("ours", "F", "decode_frames (q 90, files)"),
        ("build", "FB", "frame shard build, labels and tar (write_frame_samples, q 90)"),
    ):
        for label, suffix in (("480x640", "box"), ("full", "full")):
            ours, theirs = speed[f"{tool} {suffix}"], speed[f"ffmpeg {suffix}"]
            ratio = median([o["fps"] / t["fps"] for o, t in zip(ours, theirs, strict=True)])
            ours_fps = median([o["fps"] for o in ours])
            theirs_fps = median([t["fps"] for t in theirs])
            ours_cpu = median([o["cpu_seconds"] / o["frames"] * 1000 for o in ours])
            theirs_cpu = median([t["cpu_seconds"] / t["frames"] * 1000 for t in theirs])
            rows.append(Row(
                f"{prefix} {label}", f"frames {label}: {what} vs "
                f"`ffmpeg -i V{' -vf scale=480:640' if suffix == 'box' else ''} -q:v 3 %06d.jpg`",
                f"{ours_fps:.1f} frames/s, {ours_cpu:.0f} ms CPU/frame, {ours[0]['size']}",
                f"{theirs_fps:.1f} frames/s, {theirs_cpu:.0f} ms CPU/frame",
                f"{ratio:.2f}", f">= {TARGET_RATIO}", yes(ratio >= TARGET_RATIO),
            ))  # fmt: skip
    shortest: dict[str, tuple[str, float]] = {}  # tool + size -> the shortest video's peak
    for key, result in measured["rss"].items():
        *tool, frames, size = key.split()
        building = tool == ["build"]
        mib = result["maxrss_kib"] / 1024
        first_frames, first_mib = shortest.setdefault(f"{tool} {size}", (frames, mib))
        rows.append(Row(
            f"{'FB' if building else 'F'} rss {frames} {size}",
            f"frames: peak RSS of {'one shard build' if building else 'decode_frames'}, "
            f"{frames}-frame video, {'480x640' if size == 'box' else 'full size'} "
            "(fresh process, VmHWM)",
            f"{mib:.0f} MiB",
            f"{result['frames']} frames built; {result['base_kib'] / 1024:.0f} MiB before it"
            if building else f"{result['frames']} frames decoded",
            f"{mib / first_mib:.2f}x the {first_frames}-frame video's",
            f"< {RSS_LIMIT_MIB} MiB", yes(mib < RSS_LIMIT_MIB),
        ))  # fmt: skip
    rows.append(cost_row(full_run_cost(speed["build box"])))
    return rows


def full_run_cost(builds: list[dict[str, Any]]) -> dict[str, float]:
    """What building Objectron's annotated frames at stride 1 and 480x640 would cost, from the
    measured builds: CPU per frame (median) x frames = core-hours; mean JPEG + JSON bytes per
    sample x frames = the samples' bytes (the tar adds 2-3 headers and padding per sample,
    so the tar's bytes per frame are given too)."""
    from benchmarks.common import median

    frames = OBJECTRON_ANNOTATED_FRAMES
    cpu_per_frame = median([b["cpu_seconds"] / b["frames"] for b in builds])
    member_bytes = median([(b["jpeg_bytes"] + b["json_bytes"]) / b["frames"] for b in builds])
    return {
        "frames": frames,
        "cpu_ms_per_frame": cpu_per_frame * 1000,
        "core_hours": cpu_per_frame * frames / 3600,
        "jpeg_bytes_per_frame": median([b["jpeg_bytes"] / b["frames"] for b in builds]),
        "json_bytes_per_frame": median([b["json_bytes"] / b["frames"] for b in builds]),
        "member_bytes_per_frame": member_bytes,
        "tar_bytes_per_frame": median([b["bytes"] / b["frames"] for b in builds]),
        "total_bytes": member_bytes * frames,
    }


def cost_row(cost: dict[str, float]) -> Row:
    from benchmarks.harness import Row

    return Row(
        "FB cost", f"a full frames run: Objectron's ~{cost['frames'] / 1e6:.0f}M annotated "
        "frames at stride 1, 480x640, q 90 (from the FB 480x640 builds)",
        f"{cost['core_hours']:.1f} core-hours, {cost['total_bytes'] / 1e9:.0f} GB",
        f"{cost['cpu_ms_per_frame']:.1f} ms CPU/frame; {cost['jpeg_bytes_per_frame'] / 1e3:.1f} "
        f"kB JPEG + {cost['json_bytes_per_frame'] / 1e3:.1f} kB JSON per sample "
        f"({cost['tar_bytes_per_frame'] / 1e3:.1f} kB of tar)",
        "(synthetic video content)", "report", "",
    )  # fmt: skip


def rows(bench: Bench) -> None:
    """run.py's hook (measure "frames"): the quick configuration under --smoke."""
    from benchmarks.harness import SMOKE

    config = QUICK if bench.config is SMOKE else FramesConfig()
    measured = measure(default_cache(), config, bench.log)
    bench.raw["frames"] = measured
    bench.rows.extend(make_rows(measured))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        video, out, frames, size = argv[1:5]
        print(json.dumps(child(video, out, int(frames), size)))
        return 0
    if argv[:1] == ["--child-build"]:
        source, out, size = argv[1:4]
        print(json.dumps(child_build(source, out, size)))
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small, short videos (smoke test)")
    parser.add_argument("--reps", type=int, help="repetitions of each side-by-side pair")
    parser.add_argument("--cache", type=Path, default=None, help="where the videos are kept")
    parser.add_argument("--json", type=Path, help="also write every raw measurement here")
    args = parser.parse_args(argv)
    config = QUICK if args.quick else FramesConfig()
    if args.reps:
        config = dataclasses.replace(config, reps=args.reps)
    from benchmarks.common import machine_facts
    from benchmarks.harness import render

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    facts = machine_facts()
    started = time.monotonic()
    measured = measure(args.cache or default_cache(), config, log)
    facts["duration"] = f"{(time.monotonic() - started) / 60:.1f} min"
    facts["command"] = "benchmarks/frames.py " + " ".join(argv)
    print(f"objectron-wds frames benchmark ({'quick' if args.quick else 'full'}): "
          + "; ".join(f"{k} {v}" for k, v in facts.items()))  # fmt: skip
    print()
    print(render(make_rows(measured)))
    if args.json:
        args.json.write_text(json.dumps({"facts": facts, **measured}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
