"""Turn command-line arguments (files, folders, glob patterns) into the image files to classify."""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

# The formats the ensemble's contract lists (docs/design.md), plus TIFF, which Pillow also decodes.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"})
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class Missing:
    """An argument that names no file: reported as a failure for that argument."""

    argument: str
    reason: str


def _folder_images(folder: Path, recursive: bool) -> list[Path]:
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(path for path in candidates if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)


def expand_inputs(arguments: list[str], recursive: bool = False) -> list[Path | Missing]:
    """Expand each argument in order, dropping duplicates.

    A file is taken as it is, whatever its name (so a bad file gets the server's verdict on it).
    A folder contributes its image files by suffix (sorted; subfolders only with `recursive`).
    A glob pattern (quoted, so the shell leaves it alone; `**` matches subfolders) contributes
    what it matches. An argument that matches nothing becomes a Missing entry.
    """
    found: list[Path | Missing] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        if path.resolve() not in seen:
            seen.add(path.resolve())
            found.append(path)

    for argument in arguments:
        path = Path(argument)
        if path.is_file():
            add(path)
        elif path.is_dir():
            images = _folder_images(path, recursive)
            if not images:
                found.append(Missing(argument, f"folder holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})"))
            for image in images:
                add(image)
        elif _GLOB_CHARS & set(argument):
            matches = [Path(match) for match in sorted(glob.glob(argument, recursive=True))]
            files = [match for match in matches if match.is_file()]
            for folder in (match for match in matches if match.is_dir()):
                files += _folder_images(folder, recursive)
            if not files:
                found.append(Missing(argument, "no files match this pattern"))
            for file in files:
                add(file)
        else:
            found.append(Missing(argument, "no such file or folder"))
    return found
