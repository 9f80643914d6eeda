"""Read any supported format, write any supported format: ``convert`` and its halves."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlbook.datasets.dataset import Dataset
from mlbook.datasets.formats._common import ImageMode, Output
from mlbook.datasets.problems import ErrorPolicy
from mlbook.datasets.registry import detect_format, get_format
from mlbook.errors import DatasetError
from mlbook.progress import NullReporter, Reporter

__all__ = ["NOTHING_WRITTEN", "OutputFactory", "convert", "read_dataset", "write_dataset"]

#: Makes the :class:`Output` a writer writes through; tests pass a failing subclass.
OutputFactory = Callable[..., Output]

#: The hint a failed conversion gives (``ErrorPolicy.hint``).
NOTHING_WRITTEN = "nothing was written; fix them, or convert the good records with --on-error skip"


def read_dataset(
    path: Path | str,
    fmt: str | None = None,
    reporter: Reporter | None = None,
    policy: ErrorPolicy | None = None,
) -> Dataset:
    """Read the dataset at ``path`` in format ``fmt`` (detected when ``None``).

    Args:
        policy: what to do with bad records (default: fail, listing every problem);
            under ``ErrorPolicy("skip")`` they are left out and counted.

    Raises:
        DatasetError: unknown or undetectable format, an unreadable file;
        BadRecordsError: the bad records, when the policy fails.
    """
    source = Path(path)
    if not source.exists():
        raise DatasetError(f"{source}: no such file or directory")
    name = fmt or detect_format(source)
    module: Any = get_format(name)
    dataset: Dataset = module.read(
        source, reporter=reporter or NullReporter(), policy=policy or ErrorPolicy()
    )
    return dataset


def write_dataset(
    dataset: Dataset,
    path: Path | str,
    fmt: str = "mlbook",
    reporter: Reporter | None = None,
    images: ImageMode = "link",
    output: OutputFactory = Output,
) -> Path:
    """Write ``dataset`` to ``path`` in format ``fmt``, all or nothing.

    Every file goes to a staging directory first and is moved into place only when
    the writer has finished. Formats that name images by relative path (mlbook, VOC,
    YOLO, CSV) bring them along as hard links (``images="copy"``: copies).

    Args:
        output: makes the :class:`~mlbook.datasets.formats._common.Output` (a seam for
            tests that need a write to fail).

    Raises:
        DatasetError: unknown format, one that cannot be written, a failed write (the
        target is left as it was); BadRecordsError: records the format cannot hold.
    """
    return _write(dataset, Path(path), fmt, reporter or NullReporter(), images, output)


def _write(
    dataset: Dataset,
    target: Path,
    fmt: str,
    reporter: Reporter,
    images: ImageMode,
    output: OutputFactory,
    masks: bool = False,
) -> Path:
    module: Any = get_format(fmt, for_writing=True)
    suffix = module.FILE_SUFFIX
    single = suffix is not None and target.suffix.lower() == suffix
    with output(target, single_file=single, images=images) as out:
        if masks:
            from mlbook.datasets.formats.coco import render_masks

            render_masks(dataset, out, reporter=reporter)
        module.write(dataset, out, reporter=reporter)
    if fmt == "mlbook":
        dataset.root = target
    return target


def convert(
    src: Path | str,
    dst: Path | str,
    src_format: str | None = None,
    dst_format: str = "mlbook",
    masks: bool = False,
    name: str | None = None,
    reporter: Reporter | None = None,
    policy: ErrorPolicy | None = None,
    images: ImageMode = "link",
    output: OutputFactory = Output,
) -> Dataset:
    """Convert the dataset at ``src`` into ``dst``.

    Args:
        src: a file or directory in ``src_format`` (detected when ``None``).
        dst: the output; for ``mlbook``, the dataset directory.
        dst_format: ``mlbook`` (default), ``coco``, ``voc``, ``yolo`` or ``csv``.
        masks: COCO to mlbook only: render one mask PNG per image from the
            segmentations into ``dst/masks/`` and set each record's ``mask``.
        name: the dataset name (default: the output directory's name).
        policy: what to do with bad records: ``ErrorPolicy()`` (default) lists them all
            and writes nothing; ``ErrorPolicy("skip")`` writes the good ones and keeps
            what it left out in ``policy.problems`` and ``policy.skipped``.
        images: ``"link"`` (default: hard links, copies where the filesystem cannot
            link) or ``"copy"``: how the images come into ``dst``.
        output: see :func:`write_dataset`.

    Returns:
        The converted dataset (for ``mlbook`` output, opened at ``dst``).

    Raises:
        DatasetError: unknown formats, a failed write (nothing half-written);
        BadRecordsError: the bad records, when the policy fails.
    """
    import msgspec

    reporter = reporter or NullReporter()
    policy = policy or ErrorPolicy()
    if not policy.hint:
        policy.hint = NOTHING_WRITTEN
    source_name = src_format or detect_format(Path(src))
    if masks and (source_name != "coco" or dst_format != "mlbook"):
        raise DatasetError("--masks works for COCO to mlbook conversions only")
    target = Path(dst)
    with reporter.task(f"Converting {source_name} to {dst_format}", total=None):
        dataset = read_dataset(src, source_name, reporter=reporter, policy=policy)
        if dst_format == "mlbook":
            new_name = name or target.resolve().name
            dataset.info = msgspec.structs.replace(dataset.info, name=new_name)
        _write(dataset, target, dst_format, reporter, images, output, masks)
    return dataset
