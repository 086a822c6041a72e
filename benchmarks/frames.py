"""Frames: `tasks.frames.video.decode_frames` against the FFmpeg command line a user would run.

    .venv/bin/python benchmarks/frames.py            # full: 270-frame videos, 3 repetitions
    .venv/bin/python benchmarks/frames.py --quick    # smoke test: small and short
    .venv/bin/python benchmarks/run.py --only frames # the same rows in run.py's table

The videos are made once (PyAV + libx264) into a cache folder and reused: 1440x1920 upright,
stored landscape 1920x1440 with a display matrix that turns them 90 degrees clockwise (as
Objectron's iPhone videos are), 30 fps, ~20 Mbit/s of moving gradients and noise so the decoder
has a real bitstream to chew on. In one run, alternating: `ffmpeg -i video -vf scale=480:640
-q:v 3 DIR/%06d.jpg` (imageio-ffmpeg's binary; its autorotate turns the frames upright) and the
same at full size, against decode_frames at 480x640 and full size (jpeg_quality 90), each JPEG
written to a file in a temporary folder as ffmpeg does. Then the peak RSS (ru_maxrss) of a
fresh Python process decoding every frame of a 30- and a 1000-frame video (its VmHWM:
ru_maxrss is carried over exec from the forked parent on Linux).
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


def vm_hwm_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def measure(cache: Path, config: FramesConfig, log: Any = print) -> dict[str, Any]:
    """All the measurements of one run: speed pairs alternating over `reps`, then RSS."""
    video = ensure_video(cache, config.frames, config.stored_size)
    log(f"Frames: video {video} ({video.stat().st_size / 1e6:.1f} MB, {config.frames} frames)")
    kinds = ["ffmpeg box", "ours box", "ffmpeg full", "ours full"]
    results: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    for rep in range(config.reps):
        order = kinds[rep % len(kinds) :] + kinds[: rep % len(kinds)]
        for kind in order:
            out = Path(tempfile.mkdtemp(prefix="objectron-wds-frames-"))
            try:
                scaled = kind.endswith("box")
                if kind.startswith("ffmpeg"):
                    measured = run_ffmpeg(video, out, scaled)
                else:
                    measured = run_ours(video, out, scaled, config.frames)
            finally:
                shutil.rmtree(out, ignore_errors=True)
            measured["fps"] = measured["frames"] / measured["seconds"]
            results[kind].append(measured)
            log(f"  rep {rep + 1} {kind:11}: {measured['fps']:6.1f} frames/s, "
                f"{measured['seconds']:6.2f} s, cpu {measured['cpu_seconds']:.1f} s, "
                f"{measured['frames']} frames, {measured['bytes'] / 1e6:.1f} MB")  # fmt: skip
    rss: dict[str, dict[str, Any]] = {}
    for frames in config.rss_frames:
        rss_video = ensure_video(cache, frames, config.stored_size)
        for scaled in (True, False):
            out = Path(tempfile.mkdtemp(prefix="objectron-wds-frames-"))
            try:
                measured = run_ours(rss_video, out, scaled, frames)
            finally:
                shutil.rmtree(out, ignore_errors=True)
            key = f"{frames} {'box' if scaled else 'full'}"
            rss[key] = measured
            log(f"  rss {key:9}: {measured['maxrss_kib'] / 1024:6.1f} MiB peak (VmHWM; "
                f"ru_maxrss {measured['ru_maxrss_kib'] / 1024:.1f}), "
                f"{measured['frames']} frames")  # fmt: skip
    return {"speed": results, "rss": rss, "video": str(video), "config": vars(config)}


def make_rows(measured: dict[str, Any]) -> list[Row]:
    from benchmarks.common import median
    from benchmarks.harness import Row, yes

    speed = measured["speed"]
    rows = []
    for label, suffix in (("480x640", "box"), ("full", "full")):
        ours, theirs = speed[f"ours {suffix}"], speed[f"ffmpeg {suffix}"]
        ratio = median([o["fps"] / t["fps"] for o, t in zip(ours, theirs, strict=True)])
        ours_fps = median([o["fps"] for o in ours])
        theirs_fps = median([t["fps"] for t in theirs])
        ours_cpu = median([o["cpu_seconds"] / o["frames"] * 1000 for o in ours])
        theirs_cpu = median([t["cpu_seconds"] / t["frames"] * 1000 for t in theirs])
        rows.append(Row(
            f"F {label}", f"frames {label}: decode_frames (q 90, files) vs "
            f"`ffmpeg -i V{' -vf scale=480:640' if suffix == 'box' else ''} -q:v 3 %06d.jpg`",
            f"{ours_fps:.1f} frames/s, {ours_cpu:.0f} ms CPU/frame, {ours[0]['size']}",
            f"{theirs_fps:.1f} frames/s, {theirs_cpu:.0f} ms CPU/frame",
            f"{ratio:.2f}", f">= {TARGET_RATIO}", yes(ratio >= TARGET_RATIO),
        ))  # fmt: skip
    shortest: dict[str, tuple[str, float]] = {}  # size -> the first (shortest) video's peak
    for key, result in measured["rss"].items():
        frames, size = key.split()
        mib = result["maxrss_kib"] / 1024
        first_frames, first_mib = shortest.setdefault(size, (frames, mib))
        rows.append(Row(
            f"F rss {frames} {size}", f"frames: peak RSS of decode_frames, {frames}-frame video, "
            f"{'480x640' if size == 'box' else 'full size'} (fresh process, VmHWM)",
            f"{mib:.0f} MiB", f"{result['frames']} frames decoded",
            f"{mib / first_mib:.2f}x the {first_frames}-frame video's",
            f"< {RSS_LIMIT_MIB} MiB", yes(mib < RSS_LIMIT_MIB),
        ))  # fmt: skip
    return rows


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
