"""The traps of the sample dataset: one video shorter than its annotation, one that does not
decode, one whose annotation names the wrong class. Chosen from the seed; `book/batch-3/18`
(annotated, in no split) is never one.
"""

from __future__ import annotations

from tasks.objectron.sample_capture import CLASSES, seeded_rng


def choose_traps(
    seed: int, annotated: list[str], frames: int, real_videos: bool, *, never: str
) -> tuple[list[str], list[str], list[str]]:
    """Pick the short-video, corrupt-video and wrong-category keys (one each, distinct).

    `never` (`book/batch-3/18`, in no split) is never a trap, so that trap stays about one
    thing. The video traps need
    real videos (stand-in bytes decode for nobody) and, for the short one, 2 frames or more.
    """
    candidates = sorted(key for key in annotated if key != never)
    seeded_rng(seed, "traps").shuffle(candidates)
    short: list[str] = []
    corrupt: list[str] = []
    if real_videos:
        if frames >= 2 and candidates:
            short.append(candidates.pop())
        if candidates:
            corrupt.append(candidates.pop())
    wrong = [candidates.pop()] if candidates else []
    return short, corrupt, wrong


def short_video_frames(frames: int) -> int:
    """Frames in the video of the short-video trap: a third fewer than the annotation's."""
    return frames - max(1, frames // 3)


def wrong_category_for(key: str) -> str:
    """The category that the wrong-category trap writes for `key`: the next class's name."""
    cls = key.split("/", 1)[0]
    return CLASSES[(CLASSES.index(cls) + 1) % len(CLASSES)]
