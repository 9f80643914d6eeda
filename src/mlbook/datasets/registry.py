"""Format name -> module, loaded on first use; detection of a source's format.

Every format module has ``NAME``, ``detect(path) -> bool``, and ``read(path, reporter)``
and/or ``write(dataset, path, reporter)``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from mlbook.errors import DatasetError

__all__ = ["FORMATS", "detect_format", "get_format", "readable", "writable"]

# name -> (module, can read, can write). Detection tries them in this order.
FORMATS: dict[str, tuple[str, bool, bool]] = {
    "mlbook": ("mlbook.datasets.formats.native", True, True),
    "coco": ("mlbook.datasets.formats.coco", True, True),
    "voc": ("mlbook.datasets.formats.voc", True, True),
    "yolo": ("mlbook.datasets.formats.yolo", True, True),
    "labelme": ("mlbook.datasets.formats.labelme", True, True),
    "csv": ("mlbook.datasets.formats.csv", True, True),
}


def readable() -> list[str]:
    """Names of the formats that can be read."""
    return [name for name, (_, can_read, _) in FORMATS.items() if can_read]


def writable() -> list[str]:
    """Names of the formats that can be written."""
    return [name for name, (_, _, can_write) in FORMATS.items() if can_write]


def get_format(name: str, for_writing: bool = False) -> ModuleType:
    """Import the module of format ``name``.

    Raises:
        DatasetError: unknown format, or one that cannot be written.
    """
    entry = FORMATS.get(name)
    if entry is None:
        raise DatasetError(f"unknown dataset format {name!r}; known: {', '.join(FORMATS)}")
    module_name, _, can_write = entry
    if for_writing and not can_write:
        raise DatasetError(
            f"format {name!r} can be read but not written; write one of: {', '.join(writable())}"
        )
    return importlib.import_module(module_name)


def detect_format(path: Path) -> str:
    """The name of the first format whose ``detect`` accepts ``path``.

    Raises:
        DatasetError: nothing at ``path``, or no format recognises it.
    """
    if not path.exists():
        raise DatasetError(f"{path}: no such file or directory")
    for name in FORMATS:
        if get_format(name).detect(path):
            return name
    raise DatasetError(
        f"{path}: cannot tell the dataset format; pass --from ({', '.join(readable())})"
    )
