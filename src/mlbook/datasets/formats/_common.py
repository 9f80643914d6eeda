"""Helpers the format modules share: staged output directories, image sizes, paths."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mlbook.errors import DatasetError

__all__ = ["IMAGE_SUFFIXES", "image_size", "relative_to", "staged_dir"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@contextlib.contextmanager
def staged_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``target``; on success its files move into
    ``target`` (each by an atomic rename), on failure it is removed and ``target`` is
    left as it was."""
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield stage
        for path in sorted(stage.rglob("*")):
            if path.is_file():
                destination = target / path.relative_to(stage)
                destination.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, destination)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def image_size(path: Path) -> tuple[int, int] | None:
    """``(width, height)`` read from the image header (Pillow), or ``None`` when unreadable.

    Raises:
        DatasetError: Pillow is not installed.
    """
    try:
        from PIL import Image
    except ImportError:
        raise DatasetError(
            "reading image sizes needs Pillow; install it with `pip install mlbook[images]`"
        ) from None
    try:
        with Image.open(path) as image:
            return int(image.width), int(image.height)
    except OSError:
        return None


def relative_to(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` as a POSIX string (``..`` allowed)."""
    return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()
