"""Small in-memory listings for tests of the pure stage functions."""

from __future__ import annotations

from tasks.storage import ObjectInfo


def video_folder(
    key: str, *, video: int = 1000, geometry: int = 100, annotation: int | None = 50
) -> list[ObjectInfo]:
    """The objects of one video folder as a listing reports them (sizes in bytes)."""
    objects = [
        ObjectInfo(f"videos/{key}/video.MOV", video, "11"),
        ObjectInfo(f"videos/{key}/geometry.pbdata", geometry, "12"),
        ObjectInfo(f"videos/{key}/id.txt", 5, "13"),
    ]
    if annotation is not None:
        objects.append(ObjectInfo(f"annotations/{key}.pbdata", annotation, "14"))
    return objects


def listing(*folders: list[ObjectInfo]) -> list[ObjectInfo]:
    return sorted((info for folder in folders for info in folder), key=lambda i: i.name)


def gsutil_ls_r(root_url: str, names: list[str]) -> str:
    """What `gsutil ls -r ROOT` prints for these object names: a `ROOT/dir/:` header before each
    folder's entries, blank lines between folders."""
    folders: dict[str, list[str]] = {}
    for name in sorted(names):
        folder, _, _ = name.rpartition("/")
        folders.setdefault(folder, []).append(name)
    blocks = []
    for folder, members in sorted(folders.items()):
        header = f"{root_url}/{folder}/:" if folder else f"{root_url}/:"
        blocks.append("\n".join([header, *(f"{root_url}/{m}" for m in members)]))
    return "\n\n".join(blocks) + "\n"
