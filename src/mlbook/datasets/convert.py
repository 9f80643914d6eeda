"""Read any supported format, write any supported format: ``convert`` and its halves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlbook.datasets.dataset import Dataset
from mlbook.datasets.registry import detect_format, get_format
from mlbook.errors import DatasetError
from mlbook.progress import NullReporter, Reporter

__all__ = ["convert", "read_dataset", "write_dataset"]


def read_dataset(
    path: Path | str, fmt: str | None = None, reporter: Reporter | None = None
) -> Dataset:
    """Read the dataset at ``path`` in format ``fmt`` (detected when ``None``).

    Raises:
        DatasetError: unknown or undetectable format, or bad input.
    """
    source = Path(path)
    if not source.exists():
        raise DatasetError(f"{source}: no such file or directory")
    name = fmt or detect_format(source)
    module: Any = get_format(name)
    dataset: Dataset = module.read(source, reporter=reporter or NullReporter())
    return dataset


def write_dataset(
    dataset: Dataset, path: Path | str, fmt: str = "mlbook", reporter: Reporter | None = None
) -> Path:
    """Write ``dataset`` to ``path`` in format ``fmt``; every file is written atomically.

    Raises:
        DatasetError: unknown format, or one that cannot be written.
    """
    module: Any = get_format(fmt, for_writing=True)
    written: Path = module.write(dataset, Path(path), reporter=reporter or NullReporter())
    return written


def convert(
    src: Path | str,
    dst: Path | str,
    src_format: str | None = None,
    dst_format: str = "mlbook",
    masks: bool = False,
    name: str | None = None,
    reporter: Reporter | None = None,
) -> Dataset:
    """Convert the dataset at ``src`` into ``dst``.

    Args:
        src: a file or directory in ``src_format`` (detected when ``None``).
        dst: the output; for ``mlbook``, the dataset directory.
        dst_format: ``mlbook`` (default), ``coco``, ``voc``, ``yolo`` or ``csv``.
        masks: COCO to mlbook only: render one mask PNG per image from the
            segmentations into ``dst/masks/`` and set each record's ``mask``.
        name: the dataset name (default: the output directory's name).

    Returns:
        The converted dataset (for ``mlbook`` output, opened at ``dst``).

    Raises:
        DatasetError: bad input, unknown formats, or a failed write (nothing half-written).
    """
    import msgspec

    reporter = reporter or NullReporter()
    source_name = src_format or detect_format(Path(src))
    if masks and (source_name != "coco" or dst_format != "mlbook"):
        raise DatasetError("--masks works for COCO to mlbook conversions only")
    target = Path(dst)
    with reporter.task(f"Converting {source_name} to {dst_format}", total=None):
        dataset = read_dataset(src, source_name, reporter=reporter)
        if dst_format == "mlbook":
            new_name = name or target.resolve().name
            dataset.info = msgspec.structs.replace(dataset.info, name=new_name)
        if masks:
            from mlbook.datasets.formats.coco import render_masks

            dataset.save(target)
            render_masks(dataset, reporter=reporter)
        write_dataset(dataset, target, dst_format, reporter=reporter)
    return dataset
